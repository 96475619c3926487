"""``load_run_days``: the run-based KPIs read each measured move's run, walked back from it."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from serving.app.decision_runs import load_run_days, measured_moves
from serving.app.kpi_inputs import kpis_at, load_decision_days
from serving.app.kpis import compute_kpis
from serving.app.qualifying import DecisionDays, qualifying_days
from serving.infra.snapshots import snapshot_path, write_feature_snapshot
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


def _scores_of(store):
    return lambda day, learners: store.scores_frame(
        day, columns=["customer_id", "as_of", *MODEL], learners=lambda _: learners
    )


def _days(count: int) -> list[date]:
    return [START + timedelta(days=offset) for offset in range(count)]


def test_a_moves_run_is_read_back_to_the_day_that_ends_it_and_no_further(store, tmp_path):
    # given a tagged on day 1, qualifying for ST_004 (a risk count of 12) on days 3 and 4 and
    # moved on day 4; b qualifying on days 2-5 but never moved; c moved into ST_002 on day 5
    days = _days(5)
    apply(store, days[0], FIRST_DAY)
    stay = [(learner, "ST_001", "ST_001") for learner in "abc"]
    for day in days[1:3]:
        apply(store, day, stay)
    apply(store, days[3], [("a", "ST_001", "ST_004"), *stay[1:]])
    apply(store, days[4], [("a", "ST_004", "ST_004"), stay[1], ("c", "ST_001", "ST_002")])
    for offset, day in enumerate(days):
        a_risk = 12.0 if offset in (2, 3) else 0.0
        _snapshot(tmp_path, day, {"a": a_risk, "b": 12.0 if offset else 0.0})
    moves = measured_moves(store.transitions_frame())
    # when the run days are loaded
    found = load_run_days(tmp_path, packaged_ruleset(), days, moves, _scores_of(store))
    # then a is read on its move's day, the day before (qualifying) and the one before that
    # (not qualifying: the run's first day is known), c on its move's day only, b never
    rows = found.inputs[["customer_id", "as_of"]].values.tolist()
    assert sorted(rows) == sorted(
        [["a", pd.Timestamp(days[day])] for day in (1, 2, 3)] + [["c", pd.Timestamp(days[4])]]
    )
    assert found.loaded == tuple(days) and found.missing == ()
    # and the scores the rules read are joined to them (apply stores p_churn 0.4)
    assert found.inputs["p_churn"].tolist() == [0.4] * 4


def test_a_missing_snapshot_ends_every_open_run_and_is_listed(store, tmp_path):
    # given a moved on day 3 after qualifying on days 1-3, and day 2's snapshot lost
    days = _days(3)
    apply(store, days[0], FIRST_DAY)
    apply(store, days[1], [("a", "ST_001", "ST_001")])
    apply(store, days[2], [("a", "ST_001", "ST_004")])
    for day in days:
        _snapshot(tmp_path, day, {"a": 12.0})
    snapshot_path(tmp_path, days[1]).unlink()
    moves = measured_moves(store.transitions_frame())
    found = load_run_days(tmp_path, packaged_ruleset(), days, moves, _scores_of(store))
    # then the walk stops at the gap: day 1 is not read, day 2 is missing
    assert found.inputs[["customer_id", "as_of"]].values.tolist() == [["a", pd.Timestamp(days[2])]]
    assert found.missing == (days[1],) and found.loaded == (days[0], days[2])


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
def test_the_kpis_of_the_walked_runs_equal_those_of_every_learners_every_day(store, tmp_path, seed):
    # given a random store of 40 learners over 12 days, one snapshot lost
    days = _random_store(store, tmp_path, seed, learners=40, count=12)
    ruleset = packaged_ruleset()
    customers = customers_frame({f"l{index:03d}": "2024-02-20" for index in range(40)})
    for as_of in (days[4], days[-1]):
        # when the KPIs are computed as kpis_at reads the store (the walked runs) and from every
        # learner's scores and decision inputs of every day
        walked = kpis_at(
            store, as_of, customers=customers, events=None, ruleset=ruleset, data_dir=tmp_path
        )
        scores = store.scores_frame()
        every = load_decision_days(tmp_path, scores, ruleset, [d for d in days if d <= as_of])
        full = compute_kpis(
            store.transitions_frame(), scores, customers, as_of=as_of, decisions=every
        )
        # then they are the same KPIs, details included, and the runs measured some moves
        assert walked == full
    by_id = {kpi.id: kpi for kpi in walked}
    assert "median of" in by_id["risk_detection_days"].detail
    # and fewer learner-days were read than every learner's every day
    moves = measured_moves(store.transitions_frame())
    walked_days = load_run_days(tmp_path, ruleset, days, moves, _scores_of(store))
    assert 0 < len(walked_days.inputs) < len(every.inputs)
    # and the qualifying days the walk found day by day are those of its inputs found at once
    anew = DecisionDays(ruleset, walked_days.inputs)
    for target in ("ST_002", "ST_004"):
        assert len(walked_days.found[target])
        pd.testing.assert_frame_equal(walked_days.found[target], qualifying_days(anew, target))
