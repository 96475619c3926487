"""Kept labels (serving/app/kept_labels.py): a kept label is used only while the events its window
read are, by the file's very version or by the inputs' proof, the ones it was computed from."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.kept_proof import ProofRecord, SameAs, kept_record, prove_kept
from serving.app import kpi_inputs
from serving.app.kept_labels import (
    LabelsKey,
    keep_labels,
    kept_labels,
    labels_key,
    labels_path,
    trusted_until,
)
from serving.app.kpi_inputs import StoredEvents, risk_move_labels

HORIZON = 5
START = date(2026, 1, 1)
NOW = datetime(2026, 6, 1, tzinfo=UTC)
LEARNERS = [f"L{index}" for index in range(12)]
QUIET = "L11"
"""The learner with no random events (``full_log``): each of its events is placed by a test."""


def full_log(seed: int, days: int) -> pd.DataFrame:
    """A seeded log: each learner active on a day with their own odds (some seldom seen), now and
    then a cancellation, in contract form (naive UTC timestamps)."""
    rng = np.random.default_rng(seed)
    odds = rng.uniform(0.15, 0.9, len(LEARNERS))
    rows = []
    for day in range(days):
        for learner, chance in zip(LEARNERS, odds, strict=True):
            if learner == QUIET:
                continue
            if rng.random() < chance:
                moment = pd.Timestamp(START) + pd.Timedelta(days=day, minutes=rng.integers(1440))
                kind = "subscription_cancelled" if rng.random() < 0.03 else "session"
                rows.append((learner, moment, kind))
    return events_of(rows)


def events_of(rows: list[tuple[str, pd.Timestamp, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [learner for learner, _, _ in rows],
            "ts": pd.to_datetime([moment for _, moment, _ in rows]).astype("datetime64[us]"),
            "event_type": [kind for _, _, kind in rows],
            "duration_s": 60.0,
            "channel": "web",
            "item": pd.Series([None] * len(rows), dtype="str"),  # text with no value
        }
    )


def risk_moves(seed: int, days: int) -> pd.DataFrame:
    """Automatic moves into ST_004 on random days, with manual ones and moves elsewhere."""
    rng = np.random.default_rng(seed + 100)
    picked = rng.integers(len(LEARNERS), size=3 * days)
    on = rng.integers(1, days, size=3 * days)
    kinds = rng.choice(["auto", "manual", "elsewhere"], size=3 * days, p=[0.7, 0.15, 0.15])
    return pd.DataFrame(
        {
            "customer_id": [LEARNERS[index] for index in picked],
            "as_of": [pd.Timestamp(START) + pd.Timedelta(days=int(day)) for day in on],
            "to_tag": ["ST_002" if kind == "elsewhere" else "ST_004" for kind in kinds],
            "rule_id": [None if kind == "manual" else "R_RISK" for kind in kinds],
        }
    )


def customers_file(path: Path) -> Path:
    pd.DataFrame(
        {
            "customer_id": LEARNERS,
            "product_tag": "PT_001",
            "enrolled_at": pd.Timestamp("2025-12-01", tz="UTC"),
            "mrr": 49.0,
        }
    ).to_parquet(path, index=False)
    return path


def the_day(offset: int) -> date:
    return START + timedelta(days=offset)


def labels(data_dir: Path | None, log: Path, moves: pd.DataFrame, day: date) -> pd.DataFrame:
    known = moves[moves["as_of"] <= pd.Timestamp(day)]
    return risk_move_labels(StoredEvents(log, NOW), known, day, HORIZON, kept=data_dir)


def one_move(learner: str, day: date) -> pd.DataFrame:
    """One automatic move into ST_004."""
    return pd.DataFrame(
        {"customer_id": [learner], "as_of": [pd.Timestamp(day)], "to_tag": ["ST_004"],
         "rule_id": ["R_RISK"]}
    )  # fmt: skip


@pytest.fixture
def labelled(monkeypatch) -> list[pd.DataFrame]:
    """The spines the KPIs labelled from the log (each call's), recorded."""
    calls: list[pd.DataFrame] = []
    compute = kpi_inputs.compute_labels

    def recorded(events, spine, **kwargs):
        calls.append(spine.copy())
        return compute(events, spine, **kwargs)

    monkeypatch.setattr(kpi_inputs, "compute_labels", recorded)
    return calls


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_labels_kept_day_after_day_are_those_read_anew(tmp_path, labelled, seed):
    # Given a log appended day after day and proved before each day as `lstep score` does, with
    # a quiet learner moved on days 12 and 15 (windows 12-16 and 15-19) whose only events are a
    # session on day 14, gone from the log from day 27 on (its past changed), and one on day 18
    # that arrives a day late, on day 20 (after the window 15-19 was complete and labelled)
    days = 40
    log, moves = full_log(seed, days), risk_moves(seed, days)
    moves = pd.concat([moves, one_move(QUIET, the_day(12)), one_move(QUIET, the_day(15))])
    gone, late = (
        events_of([(QUIET, pd.Timestamp(the_day(day)) + pd.Timedelta(seconds=36017), "session")])
        for day in (14, 18)
    )
    data_dir, path = tmp_path / "data", tmp_path / "events.parquet"
    customers = customers_file(tmp_path / "customers.parquet")
    quiet_labels = set()
    for offset in range(8, days):
        day = the_day(offset)
        file = pd.concat([log, *([gone] if offset < 27 else []), *([late] if offset >= 20 else [])])
        file[file["ts"] < pd.Timestamp(day + timedelta(days=1))].to_parquet(path, index=False)
        assert prove_kept(path, customers, now=NOW, directory=data_dir / "carry").clean
        proof = kept_record(data_dir / "carry")
        labelled.clear()
        # When the labels are read with the kept ones and read anew
        kept = labels(data_dir, path, moves, day)
        computed = pd.concat(labelled, ignore_index=True)
        labelled.clear()
        anew = labels(None, path, moves, day)
        # Then they are the same labels, in the same order
        pd.testing.assert_frame_equal(kept, anew)
        # and only labels whose window ends after what the proof vouches for were read again
        vouched = pd.Timestamp(proof.same_as.before) if proof.same_as else None
        if offset > 8 and vouched is not None:
            ends = computed["as_of"] + pd.Timedelta(days=HORIZON)
            assert (ends > vouched).all(), (offset, computed, vouched)
        quiet = kept[kept["customer_id"] == QUIET].set_index("as_of")["churned"]
        quiet_labels.add(tuple(quiet.get(pd.Timestamp(the_day(move))) for move in (12, 15)))
    # and both changes moved the quiet learner's labels while they were kept
    assert quiet_labels == {(None, None), (0, None), (0, 1), (0, 0), (1, 0)}


def test_a_label_the_late_event_changes_is_read_again(tmp_path, labelled):
    # Given L0 moved on day 10 (window days 10-14), its events file ending with day 14 empty
    # of L0's events, then the next file with L0's session on day 14 arriving a day late
    moves = one_move("L0", the_day(10))
    base = [(LEARNERS[1], pd.Timestamp(the_day(day)) + pd.Timedelta(hours=8), "session")
            for day in range(0, 17)]  # fmt: skip
    data_dir, path = tmp_path / "data", tmp_path / "events.parquet"
    customers = customers_file(tmp_path / "customers.parquet")
    events_of(base[:15]).to_parquet(path, index=False)
    assert prove_kept(path, customers, now=NOW, directory=data_dir / "carry").clean
    first = labels(data_dir, path, moves, the_day(14))
    assert first["churned"].tolist() == [1]  # no event of L0 in days 10-14: churned
    # When the next day's file holds the late session, proved before its day
    late = (LEARNERS[0], pd.Timestamp(the_day(14)) + pd.Timedelta(hours=23), "session")
    events_of([*base[:16], late]).to_parquet(path, index=False)
    assert prove_kept(path, customers, now=NOW, directory=data_dir / "carry").clean
    labelled.clear()
    second = labels(data_dir, path, moves, the_day(15))
    # Then the kept label was not trusted: read again, L0 did not churn
    assert second["churned"].tolist() == [0]
    assert pd.concat(labelled)["customer_id"].tolist() == ["L0"]


def test_a_label_whose_past_changed_is_read_again(tmp_path, labelled):
    # Given L0 moved on day 10 (window days 10-14) with one session on day 12, labelled and kept
    moves = one_move("L0", the_day(10))
    other = [(LEARNERS[1], pd.Timestamp(the_day(day)) + pd.Timedelta(hours=8), "session")
             for day in range(0, 31)]  # fmt: skip
    session = (LEARNERS[0], pd.Timestamp(the_day(12)) + pd.Timedelta(hours=10), "session")
    data_dir, path = tmp_path / "data", tmp_path / "events.parquet"
    customers = customers_file(tmp_path / "customers.parquet")
    for last, rows in ((16, [*other[:17], session]), (17, [*other[:18], session]), (30, other)):
        # When each day's file is proved, the last one without L0's session of day 12
        events_of(rows).to_parquet(path, index=False)
        assert prove_kept(path, customers, now=NOW, directory=data_dir / "carry").clean
        found = labels(data_dir, path, moves, the_day(last))
    # Then the last day's label is read again from the changed log: L0 churned
    assert found["churned"].tolist() == [1]


def key(**changes: object) -> LabelsKey:
    fields = dict(events_path="/data/events.parquet", events_size=100, events_mtime_ns=7,
                  horizon_days=30, code="c0de")  # fmt: skip
    return LabelsKey(**{**fields, **changes})


def proof_of(size: int, mtime: int, then: tuple[int, int] | None, before: str) -> ProofRecord:
    same_as = None
    if then is not None:
        same_as = SameAs(events_size=then[0], events_mtime_ns=then[1], before=before)
    return ProofRecord(
        version="v", events_path="/data/events.parquet", events_size=size, events_mtime_ns=mtime,
        now=datetime(2026, 3, 1), before=datetime(2026, 2, 27), rows=1, fingerprint=1,
        learners=1, days={}, same_as=same_as,
    )  # fmt: skip


VOUCHED = pd.Timestamp("2026-02-28")
APPENDED = key(events_size=120, events_mtime_ns=9)


@pytest.mark.parametrize(
    ("now", "proof", "expected"),
    [
        pytest.param(key(), None, pd.Timestamp.max, id="the very file"),
        pytest.param(
            key(), proof_of(100, 7, (1, 1), "2026-01-01"), pd.Timestamp.max, id="it, any proof"
        ),
        pytest.param(APPENDED, None, None, id="appended, no proof"),
        pytest.param(
            APPENDED, proof_of(120, 9, (100, 7), "2026-02-28"), VOUCHED, id="appended, proved"
        ),
        pytest.param(APPENDED, proof_of(120, 9, None, ""), None, id="appended, proved in full"),
        pytest.param(
            APPENDED, proof_of(120, 8, (100, 7), "2026-02-28"), None, id="proof of another file"
        ),
        pytest.param(
            APPENDED, proof_of(120, 9, (100, 6), "2026-02-28"), None, id="proof since another"
        ),
        pytest.param(key(events_path="/other.parquet"), None, None, id="another log"),
        pytest.param(key(horizon_days=14), None, None, id="another horizon"),
        pytest.param(key(code="beef"), None, None, id="other label code"),
    ],
)
def test_kept_labels_hold_until_where_the_file_or_its_proof_says(now, proof, expected):
    assert trusted_until(key(), now, proof) == expected


def stored(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [learner for learner, _, _ in rows],
            "as_of": pd.to_datetime([day for _, day, _ in rows]).astype("datetime64[us]"),
            "churned": np.array([churned for _, _, churned in rows], dtype="int8"),
        }
    )


def test_only_the_labels_whose_window_ends_by_the_vouched_midnight_are_kept(tmp_path):
    # Given labels kept for a file version, windows ending Feb 27, Feb 28 and Mar 1
    rows = [("a", "2026-01-28", 1), ("b", "2026-01-29", 0), ("c", "2026-01-30", 1)]
    assert keep_labels(tmp_path, key(), stored(rows[:0]), stored(rows))
    # When the next version's proof vouches for the events before Feb 28
    proof = proof_of(120, 9, (100, 7), "2026-02-28")
    kept = kept_labels(tmp_path, key(events_size=120, events_mtime_ns=9), proof)
    # Then a and b are kept, c (its window reaches Feb 28) is not
    assert kept["customer_id"].tolist() == ["a", "b"] and kept["churned"].tolist() == [1, 0]
    # and the very version keeps them all, with no proof
    assert len(kept_labels(tmp_path, key(), None)) == 3


def test_a_file_holding_them_already_is_not_written_again(tmp_path):
    rows = stored([("a", "2026-01-28", 1)])
    assert keep_labels(tmp_path, key(), rows.iloc[:0], rows)
    written = labels_path(tmp_path).stat().st_mtime_ns
    # When the same version keeps the same labels with nothing new, then the file is left
    assert keep_labels(tmp_path, key(), kept_labels(tmp_path, key(), None), rows.iloc[:0])
    assert labels_path(tmp_path).stat().st_mtime_ns == written
    # and something new is written
    assert keep_labels(tmp_path, key(), rows, stored([("b", "2026-01-29", 0)]))
    assert len(kept_labels(tmp_path, key(), None)) == 2


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda path: path.write_bytes(b"not parquet"), id="unreadable"),
        pytest.param(lambda path: stored([("a", "2026-01-28", 1)]).to_parquet(path), id="no key"),
        pytest.param(lambda path: path.unlink(), id="missing"),
    ],
)
def test_a_kept_file_that_cannot_tell_keeps_nothing(tmp_path, spoil):
    assert keep_labels(tmp_path, key(), stored([]), stored([("a", "2026-01-28", 1)]))
    spoil(labels_path(tmp_path))
    assert kept_labels(tmp_path, key(), None).empty


def test_a_workspace_that_cannot_be_written_costs_only_speed(tmp_path):
    # Given a data directory that is a file: nothing can be kept under it
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    assert not keep_labels(blocked, key(), stored([]), stored([("a", "2026-01-28", 1)]))
    assert kept_labels(blocked, key(), None).empty


def test_the_key_is_the_files_version_and_the_label_code(tmp_path):
    path = tmp_path / "events.parquet"
    path.write_bytes(b"12345")
    found = labels_key(path, 30)
    assert (found.events_size, found.horizon_days) == (5, 30)
    assert found.events_path == str(path.resolve()) and len(found.code) == 16
