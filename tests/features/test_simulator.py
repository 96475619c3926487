"""Tests of the learner simulator: output contract, determinism, realism and honest ground truth."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from features import simulator
from features.simulator import (
    ChunkResult,
    DynamicsParameters,
    InterventionEffect,
    LearnerState,
    SimulationConfig,
    advance_day,
    apply_contacts,
    estimate_label_probability,
    simulate,
    simulate_chunk,
)
from features.simulator import files as simulator_files
from features.validation import validate_inputs
from features.vocabulary import CANONICAL_EVENT_TYPES, CHANNELS

FILES = ("events.parquet", "customers.parquet", "truth.parquet", "meta.json")

# Realism checks need a population large enough for stable rates; it is simulated once per module.
POPULATION = SimulationConfig(customers=2000, days=130, seed=7, truth_paths=48)
# Contract and determinism checks run the whole writer on a small population, several times.
SMALL = SimulationConfig(customers=300, days=75, seed=3, truth_paths=16)

EXPECTED_SCHEMAS = {
    "events.parquet": pa.schema(
        [
            ("customer_id", pa.string()),
            ("ts", pa.timestamp("us", tz="UTC")),
            ("event_type", pa.string()),
            ("duration_s", pa.float64()),
            ("channel", pa.string()),
            ("item", pa.string()),
        ]
    ),
    "customers.parquet": pa.schema(
        [
            ("customer_id", pa.string()),
            ("product_tag", pa.string()),
            ("enrolled_at", pa.timestamp("us", tz="UTC")),
            ("mrr", pa.float64()),
        ]
    ),
    "truth.parquet": pa.schema(
        [
            ("customer_id", pa.string()),
            ("as_of", pa.date32()),
            ("p_true", pa.float64()),
            ("engagement", pa.float64()),
            ("state", pa.string()),
            ("y", pa.int8()),
        ]
    ),
}

# event type -> (duration_s present, channel present, item pattern or None when item is null)
EVENT_SHAPES = {
    "session": (True, True, None),
    "lesson_completed": (False, True, r"L\d{3}"),
    "milestone_completed": (False, True, r"M\d{2}"),
    "quiz_attempted": (False, True, r"Q\d{3}"),
    "quiz_passed": (False, True, r"Q\d{3}"),
    "feature_used": (False, True, r"[a-z][a-z_]+"),
    "community_post": (False, True, None),
    "community_reply": (False, True, None),
    "video_watched": (True, True, r"V\d{4}"),
    "subscription_cancelled": (False, False, None),
}


@dataclass(frozen=True)
class Population:
    """The simulated population as frames, with day indices, plus the latent chunk result."""

    chunk: ChunkResult
    events: pd.DataFrame
    customers: pd.DataFrame
    truth: pd.DataFrame
    event_days: pd.DataFrame  # one row per (customer_id, day) with an event; whether it cancelled
    learners: pd.DataFrame  # per customer_id: active days, sessions, traits


def _day_index(values: pd.Series, start: date) -> pd.Series:
    """Whole days since ``start`` (00:00 UTC) of timestamps or dates."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return (values - pd.Timestamp(start, tz="UTC")).dt.days
    return (pd.to_datetime(values) - pd.Timestamp(start)).dt.days


@pytest.fixture(scope="module")
def population() -> Population:
    seed = np.random.SeedSequence(POPULATION.seed).spawn(1)[0]
    chunk = simulate_chunk(POPULATION, seed, 0, POPULATION.customers)
    events = chunk.events.to_pandas()
    events["day"] = _day_index(events.ts, POPULATION.start)
    customers = chunk.customers.to_pandas()
    customers["enrol_day"] = chunk.final_state.enrol_day
    customers["churn_day"] = chunk.churn_day
    truth = chunk.truth.to_pandas()
    truth["day"] = _day_index(truth.as_of, POPULATION.start)
    events["cancel"] = events.event_type == "subscription_cancelled"
    event_days = events.groupby(["customer_id", "day"], as_index=False).cancel.any()
    learners = pd.DataFrame(
        {
            "active_days": event_days.groupby("customer_id").size(),
            "sessions": events[events.event_type == "session"].groupby("customer_id").size(),
        }
    ).reindex(customers.customer_id, fill_value=0)
    for trait in ("mobile", "community", "video", "explore"):
        learners[trait] = getattr(chunk.profile, trait)
    return Population(chunk, events, customers, truth, event_days, learners)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("small") / "run"
    simulate(SMALL, out_dir)
    return out_dir


@pytest.fixture(scope="module")
def no_truth_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("no-truth") / "run"
    simulate(SMALL.model_copy(update={"truth_share": 0.0}), out_dir)
    return out_dir


def _learner_state(size: int, **overrides: np.ndarray | float | int | bool) -> LearnerState:
    """``size`` identical Pro learners enrolled on day 0, at their base level, unless overridden."""
    defaults: dict[str, np.ndarray] = {
        "tier": np.full(size, simulator.PRO, dtype=np.int8),
        "enrol_day": np.zeros(size, dtype=np.int32),
        "base": np.zeros(size),
        "pace": np.ones(size),
        "decline_hazard": np.zeros(size),
        "lessons_per_milestone": np.full(size, 5, dtype=np.int32),
        "z": np.zeros(size),
        "z_slow": np.zeros(size),
        "decline_rate": np.zeros(size),
        "decline_offset": np.zeros(size),
        "pause_left": np.zeros(size, dtype=np.int16),
        "churned": np.zeros(size, dtype=bool),
        "lessons": np.zeros(size, dtype=np.int32),
        "milestones": np.zeros(size, dtype=np.int32),
        "mastered": np.zeros(size, dtype=bool),
    }
    for name, value in overrides.items():
        defaults[name] = np.full(size, value, dtype=defaults[name].dtype)
    return LearnerState(**defaults)


def _run_days(state: LearnerState, days: range, params: DynamicsParameters, seed: int = 0):
    """Step ``state`` through ``days`` (day 0 a Monday); return the final state and outcomes."""
    rng = np.random.default_rng(seed)
    outcomes = []
    for day in days:
        state, outcome = advance_day(state, day, day % 7, rng, params)
        outcomes.append(outcome)
    return state, outcomes


NO_CHURN = DynamicsParameters(churn_intercept=(-40.0, -40.0, -40.0))


def replace_params(**changes: float) -> DynamicsParameters:
    """The no-churn dynamics with some constants changed."""
    return NO_CHURN.model_copy(update=changes)


# --- configuration --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"customers": 0},
        {"customers": 10_000_000},
        {"days": 0},
        {"horizon_days": 0},
        {"truth_every_days": 0},
        {"truth_share": 1.5},
        {"truth_paths": 0},
        {"colour": "blue"},
    ],
)
def test_config_rejects_bad_values(bad: dict) -> None:
    # Given a config value outside the contract, when the config is built, then it is refused.
    with pytest.raises(ValidationError):
        SimulationConfig(**bad)


def test_config_is_frozen_and_lists_truth_days() -> None:
    # Given the demo-size config
    config = SimulationConfig(days=60, truth_every_days=7)
    # Then truth as_of dates start 30 days in, every 7 days, strictly before the end
    assert config.truth_days == (30, 37, 44, 51, 58)
    assert config.end == date(2026, 3, 2)
    with pytest.raises(ValidationError):
        config.days = 10  # type: ignore[misc]


# --- files, schemas, determinism ------------------------------------------------------------------


def test_same_config_writes_identical_bytes(small_run: Path, tmp_path: Path) -> None:
    # Given a second run of the same config and a run with another seed
    simulate(SMALL, tmp_path / "again")
    simulate(SMALL.model_copy(update={"seed": SMALL.seed + 1}), tmp_path / "other")
    # Then every file is byte-identical to the first run, and another seed gives other events
    for name in FILES:
        assert (tmp_path / "again" / name).read_bytes() == (small_run / name).read_bytes(), name
    other = (tmp_path / "other" / "events.parquet").read_bytes()
    assert other != (small_run / "events.parquet").read_bytes()


def test_computing_truth_does_not_change_the_events(small_run: Path, no_truth_run: Path) -> None:
    # Given the same config with and without truth rows: events and customers are the same bytes
    for name in ("events.parquet", "customers.parquet"):
        assert (no_truth_run / name).read_bytes() == (small_run / name).read_bytes(), name


def test_truth_share_zero_writes_an_empty_truth_file_with_the_schema(no_truth_run: Path) -> None:
    truth = pq.read_table(no_truth_run / "truth.parquet")
    assert truth.num_rows == 0
    assert truth.schema.equals(EXPECTED_SCHEMAS["truth.parquet"])


@pytest.mark.parametrize("name", sorted(EXPECTED_SCHEMAS))
def test_files_have_exactly_the_contract_schema(small_run: Path, name: str) -> None:
    # When a written file's schema is read, then it has exactly the contract's columns and types
    schema = pq.read_schema(small_run / name)
    assert schema.equals(EXPECTED_SCHEMAS[name]), schema
    assert schema.metadata is None  # built from arrow arrays: no pandas index metadata
    assert pq.read_table(small_run / name).num_rows > 0


def test_event_values_follow_the_contract(small_run: Path) -> None:
    events = pq.read_table(small_run / "events.parquet").to_pandas()
    customers = pq.read_table(small_run / "customers.parquet").to_pandas()
    assert events.customer_id.str.fullmatch(r"C\d{7}").all()
    assert set(events.customer_id) <= set(customers.customer_id)
    assert set(events.event_type) <= set(CANONICAL_EVENT_TYPES)
    assert set(events.channel.dropna()) <= set(CHANNELS)
    assert (events.duration_s.dropna() >= 0).all()
    for event_type, (has_duration, has_channel, item_pattern) in EVENT_SHAPES.items():
        rows = events[events.event_type == event_type]
        assert len(rows) > 0, f"no {event_type} events"
        assert rows.duration_s.notna().all() == has_duration, event_type
        assert rows.duration_s.isna().all() != has_duration, event_type
        assert rows.channel.notna().all() == has_channel, event_type
        if item_pattern is None:
            assert rows["item"].isna().all(), event_type
        else:
            assert rows["item"].str.fullmatch(item_pattern).all(), event_type


def test_no_two_events_are_exact_duplicates(population: Population) -> None:
    # The validator drops exact duplicates: a simulated log must not contain any
    columns = ["customer_id", "ts", "event_type", "duration_s", "channel", "item"]
    assert not population.events.duplicated(subset=columns).any()
    # Nor do two events of one learner share an instant, even around midnight
    assert not population.events.duplicated(subset=["customer_id", "ts"]).any()


def test_events_are_sorted_by_customer_then_time(small_run: Path) -> None:
    events = pq.read_table(small_run / "events.parquet", columns=["customer_id", "ts"]).to_pandas()
    resorted = events.sort_values(["customer_id", "ts"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(events, resorted)


def test_meta_and_summary_describe_the_run(tmp_path: Path) -> None:
    # Given a run with a non-default start
    config = SMALL.model_copy(update={"start": date(2025, 6, 2), "customers": 50, "days": 40})
    summary = simulate(config, tmp_path)
    meta = json.loads((tmp_path / "meta.json").read_text(encoding="utf-8"))
    # Then meta.json holds the config and the end of the log, and the summary matches the files
    assert SimulationConfig(**meta["config"]) == config
    assert meta["data_end"] == "2025-07-12"
    assert summary.end == date(2025, 7, 12)
    assert summary.events == pq.read_metadata(tmp_path / "events.parquet").num_rows
    assert summary.truth_rows == pq.read_metadata(tmp_path / "truth.parquet").num_rows
    assert summary.customers == 50
    assert {path.name for path in summary.files} == set(FILES)
    assert not list(tmp_path.glob(".*.partial"))


def test_chunks_continue_the_ids_and_report_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given chunks of 40 learners and 100 learners to simulate
    monkeypatch.setattr(simulator_files, "CHUNK_SIZE", 40)
    finished: list[int] = []
    config = SimulationConfig(customers=100, days=40, seed=1, truth_paths=8)
    # When simulated
    simulate(config, tmp_path, progress=finished.append)
    # Then progress came per chunk, ids run on across chunks, one row group per chunk
    assert finished == [40, 40, 20]
    customers = pq.read_table(tmp_path / "customers.parquet").to_pandas()
    assert customers.customer_id.tolist() == [f"C{n:07d}" for n in range(1, 101)]
    assert pq.ParquetFile(tmp_path / "events.parquet").num_row_groups == 3


def test_simulate_writes_what_the_chunk_simulation_produces(small_run: Path) -> None:
    # Given the one chunk of the small config simulated in memory
    seed = np.random.SeedSequence(SMALL.seed).spawn(1)[0]
    chunk = simulate_chunk(SMALL, seed, 0, SMALL.customers)
    # Then the files hold exactly its tables
    assert pq.read_table(small_run / "events.parquet").equals(chunk.events)
    assert pq.read_table(small_run / "truth.parquet").equals(chunk.truth)


# --- the population -------------------------------------------------------------------------------


def test_tiers_mrr_and_enrolment_are_plausible(population: Population) -> None:
    customers = population.customers
    shares = customers.product_tag.value_counts(normalize=True)
    assert shares["PT_001"] == pytest.approx(0.35, abs=0.04)
    assert shares["PT_002"] == pytest.approx(0.10, abs=0.03)
    assert shares["PT_003"] == pytest.approx(0.55, abs=0.04)
    mrr = customers.groupby("product_tag").mrr.agg(["min", "max"])
    assert (customers.loc[customers.product_tag == "PT_003", "mrr"] == 0).all()
    assert mrr.loc["PT_001", "min"] >= 29 and mrr.loc["PT_001", "max"] <= 99
    assert mrr.loc["PT_002", "min"] >= 200 and mrr.loc["PT_002", "max"] <= 1500
    # Enrolment is spread uniformly over the period: each quarter holds about a quarter.
    quarter = customers.enrol_day * 4 // POPULATION.days
    assert quarter.value_counts(normalize=True).between(0.2, 0.3).all()


def test_no_event_before_enrolment_and_one_on_the_enrolment_day(population: Population) -> None:
    events = population.events.merge(population.customers, on="customer_id")
    assert (events.ts >= events.enrolled_at).all()
    first_day = events.groupby("customer_id").day.min()
    enrol_day = population.customers.set_index("customer_id").enrol_day
    assert (first_day == enrol_day.loc[first_day.index]).all()
    assert len(first_day) == POPULATION.customers


def test_no_event_after_churn(population: Population) -> None:
    events = population.events.merge(population.customers, on="customer_id")
    churned = events[events.churn_day >= 0]
    assert (churned.day <= churned.churn_day).all()
    # A cancellation is a learner's last event
    last_type = population.events.groupby("customer_id").event_type.last()
    cancelled = population.events.loc[
        population.events.event_type == "subscription_cancelled", "customer_id"
    ]
    assert (last_type.loc[cancelled] == "subscription_cancelled").all()
    # A learner the truth file calls churned at as_of has no event at or after as_of
    churned_at = population.truth[population.truth.state == "churned"]
    later = churned_at.merge(population.events, on="customer_id", suffixes=("_truth", ""))
    assert len(churned_at) > 0
    assert not (later.day >= later.day_truth).any()


def test_only_paid_learners_cancel_and_most_paid_churners_do(population: Population) -> None:
    cancels = population.events[population.events.event_type == "subscription_cancelled"]
    tiers = population.customers.set_index("customer_id").product_tag
    assert set(tiers.loc[cancels.customer_id]) <= {"PT_001", "PT_002"}
    assert cancels.customer_id.is_unique
    churners = population.customers[population.customers.churn_day >= 0]
    paid_churners = churners[churners.product_tag != "PT_003"]
    assert paid_churners.customer_id.isin(cancels.customer_id).mean() > 0.8
    free_churners = churners[churners.product_tag == "PT_003"]
    assert len(free_churners) > 0
    assert not free_churners.customer_id.isin(cancels.customer_id).any()


def _monthly_churn(customers: pd.DataFrame) -> float:
    """Churns per 30 learner-days at risk (enrolment to churn or to the end of the log)."""
    at_risk_until = customers.churn_day.where(customers.churn_day >= 0, POPULATION.days)
    exposure_days = (at_risk_until - customers.enrol_day).sum()
    return (customers.churn_day >= 0).sum() / exposure_days * 30


def test_monthly_churn_is_in_band_and_paid_tiers_churn_less(population: Population) -> None:
    customers = population.customers
    by_tier = {tag: _monthly_churn(group) for tag, group in customers.groupby("product_tag")}
    assert 0.05 <= _monthly_churn(customers) <= 0.40
    assert by_tier["PT_001"] < by_tier["PT_003"]
    assert by_tier["PT_002"] < by_tier["PT_003"]


def test_engagement_and_activity_fall_before_churn(population: Population) -> None:
    truth = population.truth.merge(population.customers[["customer_id", "churn_day"]])
    before = truth.churn_day - truth.day
    late = truth[before.between(1, 14)].groupby("customer_id").engagement.mean()
    early = truth[before.between(35, 49)].groupby("customer_id").engagement.mean()
    both = late.index.intersection(early.index)
    assert len(both) >= 100
    assert late.loc[both].mean() < early.loc[both].mean() - 0.04
    # Events in the two weeks before churn are fewer than in weeks 5-6 before it
    long_lived = population.customers.query("churn_day >= 0 and churn_day - enrol_day >= 42")
    events = population.events.merge(long_lived, on="customer_id")
    before_churn = events.churn_day - events.day
    ids = long_lived.customer_id
    recent = events[before_churn.between(1, 14)].groupby("customer_id").size().reindex(ids)
    earlier = events[before_churn.between(29, 42)].groupby("customer_id").size().reindex(ids)
    assert recent.fillna(0).mean() < 0.85 * earlier.fillna(0).mean()


def test_some_learners_go_quiet_for_two_weeks_and_come_back(population: Population) -> None:
    event_days = population.event_days
    gaps = event_days.groupby("customer_id").day.diff()
    returned = event_days.loc[gaps >= 14, "customer_id"].nunique()
    assert returned >= 0.03 * POPULATION.customers
    # Paused learners are a part of them: many come back within the label window
    paused = population.truth[(population.truth.state == "paused") & population.truth.y.notna()]
    assert len(paused) >= 50
    assert 0.05 < paused.y.mean() < 0.95


def test_weekends_are_quieter(population: Population) -> None:
    per_day = population.events.groupby("day").size()
    weekday = (POPULATION.start.weekday() + per_day.index) % 7
    week = per_day.index // 7
    frame = pd.DataFrame({"events": per_day.to_numpy(), "weekend": weekday >= 5, "week": week})
    full_weeks = frame.groupby("week").filter(lambda days: len(days) == 7 and days.week.iat[0] > 0)
    means = full_weeks.groupby(["week", "weekend"]).events.mean().unstack()
    assert (means[True] / means[False]).mean() < 0.9


def test_event_volume_per_live_learner_day(population: Population) -> None:
    customers = population.customers
    live_until = customers.churn_day.where(customers.churn_day >= 0, POPULATION.days)
    live_days = (live_until - customers.enrol_day).sum()
    assert 1.5 <= len(population.events) / live_days <= 3.0


TRAIT_EFFECTS = [
    # (trait, event types counted, what a learner's count is divided by)
    ("mobile", ["session"], "sessions"),
    ("community", ["community_post", "community_reply"], "active_days"),
    ("video", ["video_watched"], "active_days"),
    ("explore", ["feature_used"], "active_days"),
]


@pytest.mark.parametrize(("trait", "event_types", "per"), TRAIT_EFFECTS)
def test_traits_shape_behaviour(
    population: Population, trait: str, event_types: list[str], per: str
) -> None:
    # Given each regular learner's rate of the behaviour the trait drives
    events = population.events
    counted = events[events.event_type.isin(event_types)]
    if trait == "mobile":
        counted = counted[counted.channel == "mobile"]
    learners = population.learners
    count = counted.groupby("customer_id").size().reindex(learners.index, fill_value=0)
    regular = learners.assign(rate=count / learners[per])[learners.active_days >= 10]
    # Then the rate rises with the trait (rank correlation)
    assert len(regular) >= 200
    assert regular[trait].rank().corr(regular["rate"].rank()) > 0.4


def test_engaged_learners_have_longer_sessions(population: Population) -> None:
    sessions = population.events[population.events.event_type == "session"]
    minutes = sessions.groupby("customer_id").duration_s.median() / 60
    engagement = population.truth.groupby("customer_id").engagement.mean()
    both = minutes.index.intersection(engagement.index)
    assert minutes.loc[both].rank().corr(engagement.loc[both].rank()) > 0.3
    assert 2 < minutes.median() < 60


def test_lessons_make_milestones_and_milestones_make_mastery(population: Population) -> None:
    state = population.chunk.final_state
    counts = population.events.groupby(["customer_id", "event_type"]).size().unstack(fill_value=0)
    counts = counts.reindex(population.customers.customer_id, fill_value=0)
    # The lesson events are the dynamics' lessons, one milestone per 4-6 lessons
    assert (counts.lesson_completed.to_numpy() == state.lessons).all()
    assert (counts.milestone_completed.to_numpy() == state.milestones).all()
    assert (state.milestones == state.lessons // state.lessons_per_milestone).all()
    # Mastery once enough milestones; a minority but a real share gets there
    assert (state.mastered == (state.milestones >= simulator.DYNAMICS.mastery_milestones)).all()
    assert 0.02 < state.mastered.mean() < 0.6


def test_quiz_passes_follow_attempts_and_pace_helps(population: Population) -> None:
    quizzes = population.events[population.events.event_type.str.startswith("quiz")]
    attempts = quizzes[quizzes.event_type == "quiz_attempted"]
    passes = quizzes[quizzes.event_type == "quiz_passed"]
    # Every pass follows an attempt of the same quiz by the same learner the same day
    firsts = attempts.groupby(["customer_id", "item", "day"]).ts.min().rename("attempted")
    matched = passes.join(firsts, on=["customer_id", "item", "day"])
    assert (matched.attempted <= matched.ts).all()
    pace = pd.Series(population.chunk.final_state.pace, index=population.customers.customer_id)
    rate = (
        passes.groupby("customer_id").size().reindex(pace.index, fill_value=0)
        / attempts.groupby("customer_id").size().reindex(pace.index)
    ).dropna()
    fast = rate[pace.loc[rate.index] > pace.quantile(2 / 3)].mean()
    slow = rate[pace.loc[rate.index] < pace.quantile(1 / 3)].mean()
    assert 0.2 < slow < fast < 0.95


# --- ground truth ---------------------------------------------------------------------------------


def test_truth_rows_are_the_eligible_learners(population: Population) -> None:
    # Given the DESIGN §4 eligible set recomputed from the events and customers
    event_days, customers = population.event_days, population.customers
    for day, rows in population.truth.groupby("day"):
        recent = event_days[(event_days.day >= day - 30) & (event_days.day < day)].customer_id
        enrolled = customers[customers.enrol_day < day].customer_id
        eligible = set(enrolled) & set(recent)
        # Then the truth rows at that as_of are exactly those learners
        assert set(rows.customer_id) == eligible, day
    assert sorted(population.truth.day.unique()) == list(POPULATION.truth_days)


def test_truth_labels_are_the_realised_labels(population: Population) -> None:
    horizon = POPULATION.horizon_days
    truth, event_days = population.truth, population.event_days
    for day, rows in truth.groupby("day"):
        if day + horizon > POPULATION.days:
            assert rows.y.isna().all(), day
            continue
        window = event_days[(event_days.day >= day) & (event_days.day < day + horizon)]
        active = set(window.customer_id)
        cancelled = set(window.loc[window.cancel, "customer_id"])
        expected = [int(c not in active or c in cancelled) for c in rows.customer_id]
        assert rows.y.tolist() == expected, day


def test_truth_probabilities_are_valid_and_calibrated(population: Population) -> None:
    truth = population.truth
    assert truth.p_true.between(0, 1).all() and truth.engagement.between(0, 1).all()
    assert set(truth.state) == {"active", "paused", "churned"}
    assert (truth.loc[truth.state == "churned", "p_true"] == 1).all()
    labelled = truth[truth.y.notna()]
    assert labelled.y.mean() == pytest.approx(labelled.p_true.mean(), abs=0.015)
    # Binned by p_true, the realised rate follows the predicted one within a few points. The
    # tolerance covers the realised labels' noise (about 1.5 points per bin here) and the pull of
    # binning on a 48-path Monte-Carlo estimate (rows land in a bin partly by their MC noise).
    quintile = pd.qcut(labelled.p_true.rank(method="first"), 5, labels=False)
    bins = labelled.groupby(quintile).agg(p=("p_true", "mean"), y=("y", "mean"))
    assert (bins.p - bins.y).abs().max() < 0.05, bins
    assert bins.p.iloc[0] < 0.05 and bins.p.iloc[-1] > 0.5  # the truth discriminates
    # Binned by a latent quantity the Monte-Carlo noise does not steer, the match is tighter
    by_engagement = pd.qcut(labelled.engagement.rank(method="first"), 5, labels=False)
    bins = labelled.groupby(by_engagement).agg(p=("p_true", "mean"), y=("y", "mean"))
    assert (bins.p - bins.y).abs().max() < 0.035, bins


def test_truth_share_samples_a_fixed_subset(small_run: Path, tmp_path: Path) -> None:
    # Given half of the learners sampled for truth
    simulate(SMALL.model_copy(update={"truth_share": 0.5}), tmp_path)
    half = pq.read_table(tmp_path / "truth.parquet").to_pandas()
    full = pq.read_table(small_run / "truth.parquet").to_pandas()
    # Then the sampled learners' rows are a subset of the full truth rows, about half of them
    assert set(half.customer_id) < set(full.customer_id)
    assert 0.35 < half.customer_id.nunique() / full.customer_id.nunique() < 0.65
    same = half.merge(full, on=["customer_id", "as_of"], suffixes=("_half", "_full"))
    assert len(same) == len(half)
    assert (same.y_half.fillna(-1) == same.y_full.fillna(-1)).all()
    assert (same.engagement_half == same.engagement_full).all()


# --- the transition function ----------------------------------------------------------------------


def test_learners_are_active_on_their_enrolment_day_and_never_before() -> None:
    state = _learner_state(200, enrol_day=5)
    _, outcomes = _run_days(state, range(7), NO_CHURN)
    assert not any(outcome.active.any() for outcome in outcomes[:5])
    assert outcomes[5].active.all()


def test_churned_learners_never_act_again() -> None:
    state = _learner_state(500, churned=True, z=2.0)
    final, outcomes = _run_days(state, range(1, 60), DynamicsParameters())
    assert not any(o.active.any() or o.cancelled.any() for o in outcomes)
    assert (final.z == 2.0).all()


def test_paused_learners_are_silent_until_the_pause_ends() -> None:
    state = _learner_state(300, pause_left=10, z=1.0)
    final, outcomes = _run_days(state, range(1, 21), replace_params(pause_hazard=0.0))
    assert not any(outcome.active.any() for outcome in outcomes[:10])
    assert np.mean([outcome.active.mean() for outcome in outcomes[10:]]) > 0.4
    assert (final.pause_left == 0).all()


def test_mastered_learners_hold_a_higher_level() -> None:
    # Given learners without noise, shocks or milestones, half of them mastered
    quiet = replace_params(volatility=0.0, shock_probability=0.0, pause_hazard=0.0)
    state = _learner_state(100, lessons_per_milestone=10**6, z=-1.0)
    state = replace(state, mastered=np.arange(100) < 50)
    # When they run for a year
    final, _ = _run_days(state, range(1, 366), quiet)
    # Then each settles at its level: base + the mastery lift, or base
    assert final.z[:50] == pytest.approx(quiet.mastery_lift, abs=0.01)
    assert final.z[50:] == pytest.approx(0.0, abs=0.01)


def test_a_slow_decline_lowers_engagement_and_raises_churn() -> None:
    # Given two like groups, one of which has started a slow decline
    declining = _learner_state(2000, decline_rate=0.05)
    steady = _learner_state(2000)
    params = DynamicsParameters(pause_hazard=0.0)
    # When 40 days pass
    declined, _ = _run_days(declining, range(1, 41), params, seed=1)
    stayed, _ = _run_days(steady, range(1, 41), params, seed=1)
    # Then the decliners' engagement fell and more of them churned
    assert declined.z.mean() < stayed.z.mean() - 1.0
    assert declined.churned.mean() > 2 * stayed.churned.mean()


def test_weekend_days_are_less_active() -> None:
    state = _learner_state(20_000)
    rng = np.random.default_rng(0)
    _, tuesday = advance_day(state, 1, 1, rng, NO_CHURN)
    _, saturday = advance_day(state, 1, 5, rng, NO_CHURN)
    assert saturday.active.mean() < tuesday.active.mean() - 0.1


@pytest.mark.parametrize(
    ("overrides", "low", "high"),
    [
        ({"churned": True}, 1.0, 1.0),  # no event can ever come
        ({"pause_left": 30}, 1.0, 1.0),  # silent through the whole window
        ({"z": 4.0, "tier": simulator.FREEMIUM}, 0.0, 0.01),  # very engaged
        ({"z": 0.0}, 0.01, 0.5),  # in between
    ],
)
def test_estimated_label_probability_in_clear_cases(
    overrides: dict, low: float, high: float
) -> None:
    state = _learner_state(3, **overrides)
    p = estimate_label_probability(state, 40, 30, 400, 0, np.random.default_rng(0))
    assert p.shape == (3,)
    assert ((p >= low) & (p <= high)).all(), p


def test_estimated_probability_matches_simulated_futures() -> None:
    # Given one middling learner, the share of futures simulated by hand with the same step
    state = _learner_state(4000, z=-0.5, z_slow=0.0)
    final, outcomes = _run_days(state, range(40, 70), DynamicsParameters(), seed=5)
    silent = ~np.any([o.active for o in outcomes], axis=0)
    cancelled = np.any([o.cancelled for o in outcomes], axis=0)
    by_hand = (silent | cancelled).mean()
    # When the estimator runs its own futures, then it agrees within Monte-Carlo noise
    single = _learner_state(1, z=-0.5, z_slow=0.0)
    p = estimate_label_probability(single, 40, 30, 4000, 0, np.random.default_rng(9))
    assert p[0] == pytest.approx(by_hand, abs=0.03)
    assert 0.05 < by_hand < 0.95
    assert final.size == 4000


# --- the intervention effect (issue 12) -----------------------------------------------------------

CONTACTED = SimulationConfig(customers=1500, days=90, seed=21, truth_share=0.0)
CONTACT_DAY = CONTACTED.start + timedelta(days=60)


@pytest.fixture(scope="module")
def base_log() -> pa.Table:
    seed = np.random.SeedSequence(CONTACTED.seed).spawn(1)[0]
    return simulate_chunk(CONTACTED, seed, 0, CONTACTED.customers).events


def _contacts(ids: list[str], day: date = CONTACT_DAY, channel: str = "email") -> pd.DataFrame:
    return pd.DataFrame({"customer_id": ids, "day": day, "channel": channel})


def _ids(events: pa.Table) -> list[str]:
    return sorted(set(events["customer_id"].to_pylist()))


def test_effect_off_leaves_the_log_identical(base_log: pa.Table) -> None:
    # given contacts for half the learners, when the switched-off effect is applied
    contacts = _contacts(_ids(base_log)[::2])
    events, outcomes = apply_contacts(base_log, contacts, InterventionEffect(), CONTACTED.end)
    # then the log is the same, byte for byte, and nobody re-engaged
    assert events.equals(base_log)
    assert len(outcomes) == len(contacts) and not outcomes["re_engaged"].any()


def test_effect_on_changes_only_re_engaged_contacted_learners(base_log: pa.Table) -> None:
    # given contacts for every other learner and a strong effect
    contacted = _ids(base_log)[::2]
    effect = InterventionEffect(effect=0.8, within_days=3)
    events, outcomes = apply_contacts(base_log, _contacts(contacted), effect, CONTACTED.end)
    before, after = base_log.to_pandas(), events.to_pandas()
    # then learners not contacted keep exactly their rows
    untouched = ~before.customer_id.isin(contacted)
    pd.testing.assert_frame_equal(
        before[untouched].reset_index(drop=True),
        after[~after.customer_id.isin(contacted)].reset_index(drop=True),
    )
    # and contacted learners keep every row and gain a session and a lesson when re-engaged
    merged = after.merge(before, how="left", indicator=True)
    added = merged[merged["_merge"] == "left_only"]
    hits = outcomes[outcomes.re_engaged]
    assert len(hits) > 0
    assert len(before) + len(added) == len(after)
    assert sorted(added.customer_id) == sorted([*hits.customer_id, *hits.customer_id])
    assert set(added.event_type) == {"session", "lesson_completed"}
    days = (added.ts.dt.tz_localize(None).dt.floor("D") - pd.Timestamp(CONTACT_DAY)).dt.days
    assert days.between(1, 3).all()
    # and the log stays sorted by customer then time
    order = after.sort_values(["customer_id", "ts"], kind="stable").index
    assert (order == after.index).all()


def test_re_engagement_follows_responsiveness_and_the_effect(base_log: pa.Table) -> None:
    # given every learner contacted by email (60% respond) with a 50% effect
    ids = _ids(base_log)
    effect = InterventionEffect(effect=0.5)
    outcomes = simulator.contact_outcomes(_contacts(ids), base_log, effect, CONTACTED.end)
    # then about 60% respond, about half the responsive reachable ones re-engage, none other
    assert outcomes.responsive.mean() == pytest.approx(0.6, abs=0.04)
    eligible = outcomes.responsive & outcomes.reachable
    assert outcomes[eligible].re_engaged.mean() == pytest.approx(0.5, abs=0.05)
    assert not outcomes[~eligible].re_engaged.any()
    # and a learner's responsiveness is a trait: the same in any subset, other for another channel
    subset = simulator.responds_to(ids[100:200], "email", effect)
    assert (subset == outcomes.responsive.to_numpy()[100:200]).all()
    assert (simulator.responds_to(ids, "push", effect) != outcomes.responsive).any()


def test_cancelled_or_unenrolled_learners_and_contacts_at_the_log_end_do_not_re_engage(
    base_log: pa.Table,
) -> None:
    # given learners who cancelled before the contact or enrolled after it, and contacts too
    # close to the log end
    frame = base_log.to_pandas()
    cancels = frame[frame.event_type == "subscription_cancelled"]
    gone = cancels[cancels.ts.dt.date < CONTACT_DAY].customer_id.tolist()
    first_day = frame.groupby("customer_id").ts.min().dt.date
    gone += first_day[first_day > CONTACT_DAY].index.tolist()  # not enrolled yet
    certain = InterventionEffect(effect=1.0, responsiveness={"csm_task": 1.0})
    late = CONTACTED.end - timedelta(days=2)
    contacts = pd.concat(
        [_contacts(gone, channel="csm_task"), _contacts(_ids(base_log)[:5], late, "csm_task")]
    )
    # when contacted with a certain effect, then none of them re-engages
    events, outcomes = apply_contacts(base_log, contacts, certain, CONTACTED.end)
    assert gone and not outcomes.re_engaged.any() and events.equals(base_log)


def test_a_re_engaged_learner_takes_their_next_lesson_on_their_channel(base_log: pa.Table) -> None:
    # given a learner with lessons behind them, contacted by push with a certain effect
    frame = base_log.to_pandas()
    before = frame[frame.ts.dt.date < CONTACT_DAY]
    lessons = before[before.event_type == "lesson_completed"].groupby("customer_id").size()
    learner = lessons.index[0]
    certain = InterventionEffect(effect=1.0, responsiveness={"push": 1.0}, within_days=1)
    events, _ = apply_contacts(
        base_log, _contacts([learner], channel="push"), certain, CONTACTED.end
    )
    # then the day after, a mobile session and the next lesson appear (its number continues on)
    day = CONTACT_DAY + timedelta(days=1)
    after = events.to_pandas()
    new = after.merge(frame, how="left", indicator=True).query("_merge == 'left_only'")
    assert (new.ts.dt.date == day).all() and set(new.channel) == {"mobile"}
    lesson = new[new.event_type == "lesson_completed"].item.iloc[0]
    on_that_day = after[(after.customer_id == learner) & (after.ts < new.ts.min())]
    done = (on_that_day.event_type == "lesson_completed").sum()
    assert lesson == f"L{done % simulator.COURSE_LESSONS + 1:03d}"


@pytest.mark.parametrize(
    ("contacts", "message"),
    [
        (pd.DataFrame({"customer_id": ["C1"], "day": [date(2026, 3, 1)]}), "missing column"),
        (_contacts(["C1"], channel="sms"), "unknown channel"),
    ],
)
def test_bad_contacts_are_named(base_log: pa.Table, contacts: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=f"contacts: {message}"):
        apply_contacts(base_log, contacts, InterventionEffect(effect=0.5), CONTACTED.end)


def test_responsiveness_names_only_known_channels() -> None:
    with pytest.raises(ValidationError, match="unknown channel"):
        InterventionEffect(responsiveness={"sms": 0.5})
    with pytest.raises(ValidationError, match="outside"):
        InterventionEffect(responsiveness={"email": 1.5})


def test_contacts_applied_to_a_run_rewrite_its_log_once(tmp_path: Path) -> None:
    # given a small simulated run and its log
    run = tmp_path / "run"
    simulate(SMALL.model_copy(update={"truth_share": 0.0}), run)
    before = pq.read_table(run / "events.parquet")
    ids = _ids(before)[:100]
    certain = InterventionEffect(effect=1.0, responsiveness={"in_app": 1.0})
    contacts = _contacts(ids, SMALL.start + timedelta(days=40), "in_app")
    # when contacts with a certain effect are applied to the run
    outcomes = simulator.apply_contacts_to_run(run, contacts, certain)
    # then the file holds the re-engagements and meta.json says what was applied
    after = pq.read_table(run / "events.parquet")
    re_engaged = int(outcomes.re_engaged.sum())
    assert re_engaged > 0 and after.num_rows == before.num_rows + 2 * re_engaged
    meta = json.loads((run / "meta.json").read_text())
    assert meta["events"] == after.num_rows and meta["intervention"]["re_engaged"] == re_engaged
    # and the rewritten log still passes the input contract
    report = validate_inputs(
        run / "events.parquet", run / "customers.parquet", now=pd.Timestamp("2027-01-01", tz="UTC")
    ).report
    assert report.ok, report
    # and a second application is refused, leaving the file as it is
    with pytest.raises(ValueError, match="already applied"):
        simulator.apply_contacts_to_run(run, contacts, certain)
    assert pq.read_table(run / "events.parquet").equals(after)
