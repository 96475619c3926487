"""``run_ledger``: the measured moves' runs, kept day by day beside the KPIs."""

from __future__ import annotations

import os
import shutil
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from serving.app import decision_runs
from serving.app.decision_runs import ledger_dir, measured_moves, run_ledger
from serving.app.kpi_files import code_digest
from serving.app.kpi_inputs import kpis_at, load_decision_days
from serving.app.kpis import compute_kpis
from serving.app.qualifying import qualifying_runs
from serving.infra.snapshots import FEATURES_SUBDIR, snapshot_path, write_feature_snapshot
from tests.serving.app.test_kpis import customers_frame
from tests.serving.batches import FIRST_DAY, apply, at, decisions
from tests.serving.fixtures import packaged_ruleset

START = date(2024, 3, 1)
MODEL = ["p_churn", "confidence"]


def _snapshot(data_dir, day: date, risk: dict[str, float]) -> None:
    """A day's feature snapshot of a, b, c: the risk indicator count is what matters here."""
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "as_of": pd.Timestamp(day),
            "risk_indicator_count": [risk.get(c, 0.0) for c in "abc"],
        }
    )
    write_feature_snapshot(frame, data_dir, day)


def _days(count: int) -> list[date]:
    return [START + timedelta(days=offset) for offset in range(count)]


def _ledger(store, data_dir, ruleset=None, *, until: date | None = None, without=(), progress=None):
    """``run_ledger`` as ``load_kpi_inputs`` calls it, over the completed days up to ``until``
    (less those ``without``)."""
    runs = store.runs()
    completed = runs[runs["status"] == "completed"]
    days = list(zip(completed["as_of"].dt.date, completed["run_id"], strict=True))
    days = [(day, run) for day, run in days if (until is None or day <= until)]
    days = [(day, run) for day, run in days if day not in without]
    return run_ledger(
        data_dir, ruleset or packaged_ruleset(), days, measured_moves(store.transitions_frame()),
        lambda day: store.scores_frame(day, columns=["customer_id", "as_of", *MODEL]),
        code=code_digest(), progress=progress,
    )  # fmt: skip


def _counted_reads(monkeypatch) -> list[date]:
    """The days whose snapshot the ledger reads from now on."""
    read: list[date] = []
    original = decision_runs._day_inputs

    def counting(path, wanted, scores):
        read.append(date.fromisoformat(path.stem.split("=")[1]))
        return original(path, wanted, scores)

    monkeypatch.setattr(decision_runs, "_day_inputs", counting)
    return read


def _three_learners(store, data_dir) -> list[date]:
    """a tagged on day 1, qualifying for ST_004 (a risk count of 12) on days 3-4, moved on day
    4; b qualifying on days 2-5 but never moved; c moved into ST_002 on day 5 unqualified."""
    days = _days(5)
    apply(store, days[0], FIRST_DAY)
    stay = [(learner, "ST_001", "ST_001") for learner in "abc"]
    for day in days[1:3]:
        apply(store, day, stay)
    apply(store, days[3], [("a", "ST_001", "ST_004"), *stay[1:]])
    apply(store, days[4], [("a", "ST_004", "ST_004"), stay[1], ("c", "ST_001", "ST_002")])
    for offset, day in enumerate(days):
        _snapshot(data_dir, day, {"a": 12.0 if offset in (2, 3) else 0.0, "b": 12.0 * (offset > 0)})
    return days


def test_a_moves_run_starts_on_its_first_qualifying_day(store, tmp_path):
    days = _three_learners(store, tmp_path)
    # when the ledger is built
    found = _ledger(store, tmp_path)
    # then a's move on day 4 is measured from day 3, c's move (not qualifying) has no run, and
    # b, never moved, is in no move's run
    runs = qualifying_runs(found, "ST_004")
    assert runs[["customer_id", "as_of", "from_tag", "run_start"]].values.tolist() == [
        ["a", pd.Timestamp(days[3]), "ST_001", pd.Timestamp(days[2])]
    ]
    assert qualifying_runs(found, "ST_002").empty
    assert found.loaded == tuple(days) and found.missing == ()
    # and each day's open runs are kept: b's from day 2 is still open on day 5
    open_last = pd.read_parquet(ledger_dir(tmp_path, packaged_ruleset(), code_digest()) / (
        f"as_of={days[4].isoformat()}.open.parquet"))  # fmt: skip
    b_runs = open_last.set_index("customer_id").loc["b"]
    assert b_runs["ST_004|ST_001"] == days[1] and pd.isna(b_runs["ST_002|ST_001"])


def test_a_missing_snapshot_ends_every_open_run_and_is_listed(store, tmp_path):
    # given a moved on day 3 after qualifying on days 1-3, and day 2's snapshot lost
    days = _days(3)
    apply(store, days[0], FIRST_DAY)
    apply(store, days[1], [("a", "ST_001", "ST_001")])
    apply(store, days[2], [("a", "ST_001", "ST_004")])
    for day in days:
        _snapshot(tmp_path, day, {"a": 12.0})
    snapshot_path(tmp_path, days[1]).unlink()
    found = _ledger(store, tmp_path)
    # then a's run starts on day 3 (day 2 holds no inputs) and day 2 is listed as missing
    assert qualifying_runs(found, "ST_004")["run_start"].tolist() == [pd.Timestamp(days[2])]
    assert found.missing == (days[1],) and found.loaded == (days[0], days[2])


def test_a_new_day_reads_only_its_own_snapshot(store, tmp_path, monkeypatch):
    # given the ledger built up to day 4
    days = _three_learners(store, tmp_path)
    _ledger(store, tmp_path, until=days[3])
    read = _counted_reads(monkeypatch)
    # when day 5 is added, then asked again
    _ledger(store, tmp_path)
    _ledger(store, tmp_path)
    # then only day 5's snapshot was read, once
    assert read == [days[4]]


def test_the_days_the_ledger_computes_are_told_as_each_is_written(store, tmp_path):
    # given five stored days, and where progress goes
    days = _three_learners(store, tmp_path)
    told: list[object] = []

    def started(total: int):
        told.append(total)
        return told.append

    # when the ledger is built up to day 4, then extended to day 5, then asked again
    _ledger(store, tmp_path, until=days[3], progress=started)
    first = list(told)
    told.clear()
    _ledger(store, tmp_path, progress=started)
    extended = list(told)
    told.clear()
    _ledger(store, tmp_path, progress=started)
    # then the first build tells its four days, the extension its one, a held ledger nothing
    assert first == [4, *days[:4]]
    assert extended == [1, days[4]]
    assert told == []


def test_a_data_directory_copied_with_its_times_keeps_its_ledger(store, tmp_path, monkeypatch):
    # given the ledger of five days, then the data directory copied (a backup restored)
    _three_learners(store, tmp_path)
    _ledger(store, tmp_path)
    copy = tmp_path / "copy"
    for name in (FEATURES_SUBDIR, "kpis"):
        shutil.copytree(tmp_path / name, copy / name)
    read = _counted_reads(monkeypatch)
    # when the copy's runs are asked for
    found = _ledger(store, copy)
    # then no snapshot is read again and a's run is the same
    assert read == []
    assert len(qualifying_runs(found, "ST_004")) == 1


def test_a_rewritten_snapshot_recomputes_from_its_day(store, tmp_path, monkeypatch):
    # given the ledger of five days, then day 3's snapshot rewritten: a no longer qualifying
    days = _three_learners(store, tmp_path)
    _ledger(store, tmp_path)
    _snapshot(tmp_path, days[2], {"b": 12.0})
    read = _counted_reads(monkeypatch)
    found = _ledger(store, tmp_path)
    # then days 3-5 are read again and a's run now starts on its move's day
    assert read == days[2:]
    assert qualifying_runs(found, "ST_004")["run_start"].tolist() == [pd.Timestamp(days[3])]


def test_a_replaced_run_recomputes_from_its_day(store, tmp_path, monkeypatch):
    # given the ledger of five days, then the last day run again (another run id): a back in
    # ST_001 and moved into ST_004 again on it
    days = _three_learners(store, tmp_path)
    _ledger(store, tmp_path)
    again = [("a", "ST_004", "ST_004"), ("b", "ST_001", "ST_004"), ("c", "ST_001", "ST_001")]
    apply(store, days[4], again, run_id="again", replace=True)
    read = _counted_reads(monkeypatch)
    found = _ledger(store, tmp_path)
    # then only that day is read again, and b's new move is measured from the run begun on day 2
    assert read == [days[4]]
    b_move = qualifying_runs(found, "ST_004").query("customer_id == 'b'")
    assert b_move["run_start"].tolist() == [pd.Timestamp(days[1])]


def test_a_day_gone_from_the_completed_ones_recomputes_the_days_after_it(
    store, tmp_path, monkeypatch
):
    # given the ledger of five days, then asked without day 3 (its run no longer completed)
    days = _three_learners(store, tmp_path)
    _ledger(store, tmp_path)
    read = _counted_reads(monkeypatch)
    found = _ledger(store, tmp_path, without={days[2]})
    # then the days after it are computed again (their keys chain through it), and a's run
    # starts on its move's day
    assert read == days[3:]
    assert qualifying_runs(found, "ST_004")["run_start"].tolist() == [pd.Timestamp(days[3])]


def test_other_rules_keep_their_own_ledger(store, tmp_path):
    # given the packaged rules' ledger, then rules without the rules into ST_004
    _three_learners(store, tmp_path)
    ruleset = packaged_ruleset()
    _ledger(store, tmp_path)
    fewer = ruleset.model_copy(update={"rules": [r for r in ruleset.rules if r.to != "ST_004"]})
    found = _ledger(store, tmp_path, fewer)
    # then they are measured in a ledger of their own, where a's move has no run, and the
    # packaged rules' ledger still measures it
    code = code_digest()
    assert ledger_dir(tmp_path, fewer, code) != ledger_dir(tmp_path, ruleset, code)
    assert qualifying_runs(found, "ST_004").empty
    assert len(qualifying_runs(_ledger(store, tmp_path), "ST_004")) == 1


def test_a_ledger_left_unwritten_for_a_week_before_this_one_is_removed(store, tmp_path):
    # given two other ledgers: one last written 8 days before, one 6 days before
    days = _three_learners(store, tmp_path)
    _ledger(store, tmp_path, until=days[3])
    folder = ledger_dir(tmp_path, packaged_ruleset(), code_digest())
    now = folder.stat().st_mtime
    stale, recent = folder.parent / "stale", folder.parent / "recent"
    for other, age_days in ((stale, 8), (recent, 6)):
        other.mkdir()
        (other / "as_of=2024-03-01.open.parquet").write_bytes(b"")
        os.utime(other, (now - age_days * 86400, now - age_days * 86400))
    # when a new day is written into this ledger
    _ledger(store, tmp_path)
    # then the stale ledger is gone and the recent one kept
    assert not stale.exists() and recent.exists()


def test_a_workspace_that_cannot_be_written_still_measures(store, tmp_path):
    # given a data directory whose kpis entry is a file: no ledger can be written
    days = _three_learners(store, tmp_path)
    (tmp_path / "kpis").write_text("not a directory")
    found = _ledger(store, tmp_path)
    # then the runs are still found, in memory
    assert qualifying_runs(found, "ST_004")["run_start"].tolist() == [pd.Timestamp(days[2])]


def _random_store(store, data_dir, seed: int, learners: int, count: int) -> list[date]:
    """``count`` batch days of random moves (by rule, between ST_001, ST_002, ST_004, new
    learners arriving), random risk counts, milestones and churn scores, a snapshot lost."""
    rng = np.random.default_rng(seed)
    ids = [f"l{index:03d}" for index in range(learners)]
    tags: dict[str, str | None] = dict.fromkeys(ids)
    days = _days(count)
    for day in days:
        moves = []
        for learner in ids:
            tag, draw = tags[learner], rng.random()
            if tag is None:
                to = None if draw < 0.3 else ("ST_001" if draw < 0.8 else "ST_004")
            elif draw < 0.15:
                to = {"ST_001": "ST_002", "ST_002": "ST_004", "ST_004": "ST_001"}[tag]
            elif draw < 0.25 and tag != "ST_004":
                to = "ST_004"
            else:
                to = tag
            if to is not None:
                moves.append((learner, tag, to))
                tags[learner] = to
        frame = decisions(day, moves)
        frame["p_churn"] = rng.choice([0.2, 0.5, 0.7], len(frame))
        frame["confidence"] = rng.choice([0.2, 0.6], len(frame))
        store.apply_batch(day, frame, None, run_id=f"run-{day}", model_version=None,
                          rules_only=True, now=at(day))  # fmt: skip
        scored = [learner for learner, _, _ in moves]
        snapshot = pd.DataFrame(
            {
                "customer_id": scored,
                "as_of": pd.Timestamp(day),
                "risk_indicator_count": rng.choice([0.0, 1.0, 2.0, 5.0], len(scored)),
                "milestones_total": rng.choice([0.0, 1.0, 3.0], len(scored)),
                "milestones_30d": rng.choice([0.0, 1.0], len(scored)),
            }
        )
        write_feature_snapshot(snapshot, data_dir, day)
    snapshot_path(data_dir, days[count // 2]).unlink()
    return days


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_kpis_of_the_ledger_equal_those_of_every_learners_every_day(store, tmp_path, seed):
    # given a random store of 40 learners over 12 days, one snapshot lost
    days = _random_store(store, tmp_path, seed, learners=40, count=12)
    ruleset = packaged_ruleset()
    customers = customers_frame({f"l{index:03d}": "2024-02-20" for index in range(40)})
    scores = store.scores_frame()
    for as_of in days:
        # when the KPIs are computed day after day as kpis_at reads the store (the ledger grows
        # a day at a time), and from every learner's scores and decision inputs of every day
        kept = kpis_at(
            store, as_of, customers=customers, events=None, ruleset=ruleset, data_dir=tmp_path
        )
        every = load_decision_days(tmp_path, scores, ruleset, [d for d in days if d <= as_of])
        full = compute_kpis(
            store.transitions_frame(), scores, customers, as_of=as_of, decisions=every
        )
        # then they are the same KPIs, details included
        assert kept == full
    by_id = {kpi.id: kpi for kpi in kept}
    assert "median of" in by_id["risk_detection_days"].detail
    # and a ledger built at once on the last day (a copy without it) gives the same KPIs
    fresh = tmp_path / "fresh"
    shutil.copytree(tmp_path / FEATURES_SUBDIR, fresh / FEATURES_SUBDIR)
    at_once = kpis_at(
        store, days[-1], customers=customers, events=None, ruleset=ruleset, data_dir=fresh
    )
    assert at_once == kept
