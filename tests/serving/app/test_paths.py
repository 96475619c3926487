"""Every path to a learner's record gives the same record: one ``assess`` behind them all.

For the same learners, day and stored state, in model and in rules-only mode: the daily batch
(its day's assessment), the service's day answers, the service's on-demand path (features
assembled from the event store, as the service does) and ``lstep explain``'s path (one
learner's features built alone) agree on every field of the record; the report's call list quotes
the batch's reasons.

One field differs by design: the day's capacity for personal outreach is a cut over a whole day,
so the batch and the day's answers apply it (``over_capacity`` true or false) and an on-demand
decision of a few learners does not (``over_capacity`` null, the rules' own priority and action).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pandas as pd
import pytest

import serving.core.assess as assess_module
from features.windows import build_features
from rules.columns import Columns
from rules.schemas import conform, scored_schema, state_schema, validate_frame
from serving.app.answers import DayAnswers
from serving.app.online import OnlineScoring
from serving.core.asks import LearnerAsk
from serving.core.assess import AssessOptions, assess
from serving.core.records import rule_wording
from serving.infra.learners import LearnerData, day_features
from serving.infra.store import StateStore
from tests.serving.fixtures import FIRST_DAY, NOW, assert_same, limited_ruleset, run_batch_day

DAY = FIRST_DAY + timedelta(days=1)
"""The day every path assesses: the day after a batch day, so learners have a stored state."""
LEARNERS = 12
SOURCE_FIELDS = ("feature_source", "applied", "not_applied_reason")


@pytest.fixture(scope="module", params=["model", "rules-only"])
def mode(request, champion):
    """The champion, or None for rules-only."""
    return champion if request.param == "model" else None


@pytest.fixture(scope="module")
def world(mode, simulated_log, ruleset, tmp_path_factory):
    """A store after one batch day, the next day run dry, and the event store as files."""
    home = tmp_path_factory.mktemp("paths")
    store = StateStore(f"sqlite:///{home / 'state.db'}")
    run_batch_day(FIRST_DAY, simulated_log, store, mode, ruleset, run_id="day-one")
    batch = run_batch_day(DAY, simulated_log, store, mode, ruleset, run_id="dry", dry_run=True)
    data = LearnerData.open(simulated_log.events_path.parent)
    ids = batch.assessment.scores["customer_id"].iloc[:: len(batch.assessment) // LEARNERS]
    yield store, batch, data, list(ids[:LEARNERS])
    store.close()


def without_source(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in SOURCE_FIELDS}


def decided_alone(record: dict) -> dict:
    """An on-demand record as the batch would give it for a learner its capacity did not move."""
    assert record["over_capacity"] is None  # decided without the day: the capacity not applied
    return without_source(record) | {"over_capacity": False}


def test_batch_answers_online_and_explain_give_the_same_records(
    world, mode, ruleset, simulated_log
):
    store, batch, data, ids = world
    expected = batch.assessment.records(ids)
    state = store.state_frame(DAY)
    # the day's answers, built on the batch's features of the day
    answers = DayAnswers.build(
        batch.assessment.features, champion=mode, ruleset=ruleset, state=state, as_of=DAY
    )
    rows = store.state_rows(ids, DAY)
    from_answers = [answers.record(c, rows.get(c)) for c in ids]

    # the on-demand path, features from the event store (the service's in-process assembly)
    async def fetch(asks):
        return day_features(asks, data)

    online = OnlineScoring(champion=mode, ruleset=ruleset, store=store, fetch=fetch)
    asks = [LearnerAsk(c, DAY, NOW) for c in ids]
    from_online = asyncio.run(online.score(asks, apply=False, now=NOW)).records
    # lstep explain's path: one learner's features built alone, on their stored state
    from_explain = []
    for customer_id in ids:
        spine = pd.DataFrame({"customer_id": [customer_id], "as_of": [pd.Timestamp(DAY)]})
        row = build_features(data.events_path, simulated_log.customers, spine=spine)
        mine = store.state_frame(DAY, customer_ids=[customer_id])
        one = assess(row, champion=mode, ruleset=ruleset, state=mine, as_of=DAY)
        from_explain.append(one.records()[0])
    # then every path gives the batch's record, field for field, the rule's words included
    # (the day's capacity moved none of these learners; on demand it is not applied, and the
    # record says so)
    assert len(expected) == LEARNERS
    assert not any(record["over_capacity"] for record in expected)
    assert any(record["why"] for record in expected), "no learner's rule fired: why untested"
    # and the lifetime projection is in every record: within the cap with a model, null without
    months = [record["expected_months"] for record in expected]
    assert all(1.0 <= m <= 24.0 if mode else m is None for m in months), months
    assert_same([without_source(record) for record in from_answers], expected)
    for path in (from_online, from_explain):
        assert_same([decided_alone(record) for record in path], expected)
    assert {record["feature_source"] for record in from_answers} == {"snapshot"}
    assert {record["feature_source"] for record in from_online} == {"event_store"}


def test_every_mode_quotes_reasons_and_the_call_list_says_why(world, mode):
    _, batch, _, ids = world
    records = batch.assessment.records(ids)
    # reason codes with a model, none without; the risk indicators in both modes
    assert all(bool(record["reasons"]) == (mode is not None) for record in records)
    assert any(record["risk_indicators"] for record in records)
    # and every learner of the call list has a "why", the batch summary's
    assert batch.top_learners
    for learner in batch.top_learners:
        position = batch.assessment.positions[learner.customer_id]
        texts = batch.assessment.reason_texts(position)
        assert learner.reasons == (texts or learner.reasons)
        assert learner.reasons


def test_the_batch_and_the_day_answers_apply_the_capacity_and_on_demand_does_not(
    world, mode, simulated_log, tmp_path
):
    # given the same day decided with a capacity of 5 calls
    store, _, _, _ = world
    ruleset = limited_ruleset(tmp_path, personal_outreach_per_day=5)
    batch = run_batch_day(DAY, simulated_log, store, mode, ruleset, run_id="cut", dry_run=True)
    decisions = batch.assessment.decisions
    called = decisions["priority"].isin(["P1", "P2"]) & ~decisions["control"]
    moved = decisions.loc[decisions["over_capacity"], "customer_id"].tolist()
    # then the call list holds 5 learners and the others were moved (and counted)
    assert called.sum() == 5 and len(moved) == batch.over_capacity > 0
    # when the day's answers and the on-demand path give the records of two moved learners
    ids = moved[:2]
    expected = batch.assessment.records(ids)
    answers = DayAnswers.build(
        batch.assessment.features,
        champion=mode,
        ruleset=ruleset,
        state=store.state_frame(DAY),
        as_of=DAY,
    )
    from_answers = [answers.record(c, store.state_rows(ids, DAY).get(c)) for c in ids]
    alone = assess(
        answers.features_of(ids), champion=mode, ruleset=ruleset, state=store.state_frame(DAY),
        as_of=DAY,
    ).records(ids)  # fmt: skip
    # then the answers are the batch's records: moved to P3 with an automated action
    assert_same([without_source(record) for record in from_answers], expected)
    assert all(r["over_capacity"] and r["priority"] == "P3" for r in expected)
    # and on demand the capacity is not applied: the rules' own P1/P2, over_capacity null
    assert all(r["over_capacity"] is None and r["priority"] in ("P1", "P2") for r in alone)


def on_demand_frames(world) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The features and the state the on-demand path assesses the world's learners on."""
    store, _, data, ids = world
    features = day_features([LearnerAsk(c, DAY, NOW) for c in ids], data).frame
    return features, store.state_of(ids, DAY)


def with_overrides(state: pd.DataFrame) -> pd.DataFrame:
    """``state`` with, on its first three learners, a hold without expiry, a campaign and a
    hold that expired on the day (each on the learner's stored tag, as the store keeps them)."""
    state = state.copy()
    kinds = ["hold", "campaign", "hold"]
    expires = [pd.NaT, pd.Timestamp(DAY + timedelta(days=5)), pd.Timestamp(DAY)]
    state.loc[:2, "override_tag"] = state.loc[:2, "tag"].to_numpy()
    state.loc[:2, "override_kind"] = kinds
    state.loc[:2, "override_expires"] = expires
    return state


@pytest.mark.parametrize("overrides", [False, True], ids=["stored state", "overrides"])
def test_on_demand_frames_decide_the_same_with_and_without_the_input_checks(
    world, mode, ruleset, overrides
):
    # given the features and state the on-demand path assesses learners on
    features, state = on_demand_frames(world)
    assert len(state) == LEARNERS  # every learner has a stored tag after the batch day
    state = with_overrides(state) if overrides else state
    # when they are assessed with the rules engine's input checks and without (the scorer's way)
    assessments = {}
    for check in (True, False):
        options = AssessOptions(explain=True, check_inputs=check)
        assessments[check] = assess(
            features, champion=mode, ruleset=ruleset, state=state, as_of=DAY, options=options
        )
    # then the decisions are the same frame, and the records the same values of the same types
    pd.testing.assert_frame_equal(assessments[False].decisions, assessments[True].decisions)
    records = {check: assessments[check].records() for check in assessments}
    assert [repr(record) for record in records[False]] == [repr(r) for r in records[True]]


def test_the_scorer_hands_the_engine_frames_that_keep_its_contract(
    world, mode, ruleset, monkeypatch
):
    # given the on-demand scorer, with the rules engine's inputs recorded
    store, _, _, _ = world
    features, _ = on_demand_frames(world)
    seen = {}

    def recording(ruleset, state, scored, as_of, **options):
        seen.update(state=state, scored=scored, options=options)
        return decide(ruleset, state, scored, as_of, **options)

    decide = assess_module.decide
    monkeypatch.setattr(assess_module, "decide", recording)
    online = OnlineScoring(champion=mode, ruleset=ruleset, store=store, fetch=None)
    # when it assesses the learners
    online._assess(features, DAY)
    # then it asked for no input checks, and its frames pass them: validation only coerces,
    # to the very frames the engine's unchecked path builds
    assert seen["options"]["check_inputs"] is False
    schemas = {
        "scored": scored_schema(ruleset, rule_wording().columns),
        "state": state_schema(ruleset, pd.Timestamp(DAY)),
    }
    for name, schema in schemas.items():
        # the scorer hands the engine its columns (rules.columns), not a frame: as one frame
        given = seen[name].frame() if isinstance(seen[name], Columns) else seen[name]
        valid = validate_frame(schema, given)
        pd.testing.assert_frame_equal(conform(schema, given)[valid.columns], valid)
