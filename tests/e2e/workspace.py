"""A small report workspace: three batch days over the session's simulated log and champion.

Shared by ``tests/serving/app/test_report.py`` and the browser test: the state store, the feature
snapshots and the settings that point at the session's MLflow store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

from serving.app.report import ReportInputs
from serving.infra.champion import Champion
from serving.infra.store import StateStore
from serving.settings import Settings
from tests.serving.fixtures import FIRST_DAY, SimulatedLog, packaged_ruleset, run_batch_day

BATCH_DAYS = (FIRST_DAY, FIRST_DAY + timedelta(days=7), FIRST_DAY + timedelta(days=14))
"""Three weekly batch days: enough for a tag history and an earliest-vs-latest drift."""


@dataclass(frozen=True)
class ReportWorkspace:
    """A store after the batch days, and settings pointing at its snapshots and MLflow."""

    settings: Settings
    store: StateStore
    log: SimulatedLog
    last_day: date

    def inputs(self, champion: Champion | None) -> ReportInputs:
        """What the report reads besides the store: this champion, the rules, the log."""
        rules = packaged_ruleset(champion)
        return ReportInputs(champion, rules, self.log.events, self.log.customers)


def build_workspace(
    root: Path, log: SimulatedLog, champion: Champion | None, tracking_uri: str
) -> ReportWorkspace:
    """Run the batch days into a fresh LSTEP_HOME under ``root``."""
    settings = Settings(
        home=root, data_dir=root / "data", mlflow_tracking_uri=tracking_uri, reports_dir=root / "r"
    )
    store = StateStore.from_settings(settings)
    ruleset = packaged_ruleset(champion)  # as the batch job loads them: the champion's points
    for day in BATCH_DAYS:
        run_batch_day(
            day, log, store, champion, ruleset, run_id=f"report-{day}",
            data_dir=settings.data_path,
        )  # fmt: skip
    return ReportWorkspace(settings, store, log, BATCH_DAYS[-1])
