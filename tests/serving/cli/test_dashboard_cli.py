"""``lstep dashboard --out``: learner pages explained with the version that scored the day (the
model cache ``lstep explain`` uses), and without the override form (a file cannot post)."""

from __future__ import annotations

import html
import re
import shutil

from typer.testing import CliRunner

from serving.cli import app
from serving.infra.store import StateStore
from serving.settings import TELEMETRY_ENV, Settings
from tests.serving.fixtures import NOW, run_batch_day
from tests.serving.service_fixtures import SNAPSHOT_DAY


def test_the_export_explains_each_learner_and_has_no_override_form(
    tmp_path, simulated_log, champion_tracking_uri, champion, ruleset
):
    # given a home with one batch day scored by the session's champion
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    for source in (simulated_log.events_path, simulated_log.customers_path):
        shutil.copy(source, data_dir / source.name)
    settings = Settings(
        home=tmp_path / "home", data_dir=data_dir, mlflow_tracking_uri=champion_tracking_uri
    )
    with StateStore.from_settings(settings) as store:
        run_batch_day(
            SNAPSHOT_DAY, simulated_log, store, champion, ruleset, run_id="batch", data_dir=data_dir
        )
    environment = {
        **TELEMETRY_ENV, "LSTEP_HOME": str(settings.home), "LSTEP_DATA_DIR": str(data_dir),
        "MLFLOW_TRACKING_URI": champion_tracking_uri, "LSTEP_NOW": NOW.isoformat(),
    }  # fmt: skip
    # when the dashboard is exported with two learner pages
    out = tmp_path / "out"
    result = CliRunner().invoke(
        app, ["dashboard", "--out", str(out), "--learners", "2"], env=environment
    )
    assert result.exit_code == 0, result.output
    # then each page lists the version's reasons and draws the waterfall, and has no form
    pages = sorted(out.glob("learner-*.html"))
    assert len(pages) == 2
    for page in pages:
        text = html.unescape(page.read_text())
        assert f"(model version {champion.version})" in text
        assert len(re.findall(r" pts</td></tr>", text)) >= 3
        assert '"id":"waterfall-chart"' in text
        assert "override-form" not in text and 'id="override-static"' in text
