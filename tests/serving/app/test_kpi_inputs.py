"""``kpis_at``: the KPIs from a store, the batch's snapshots and the event log, in data days."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from serving.app.kpi_inputs import StoredEvents, kpis_at, load_decision_days
from serving.app.kpis import compute_kpis
from serving.infra.snapshots import snapshot_path, write_feature_snapshot
from tests.serving.app.test_kpis import customers_frame
from tests.serving.batches import FIRST_DAY, apply, at, set_override
from tests.serving.fixtures import packaged_ruleset

DAY_1, DAY_2, DAY_3 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)
DAY_4 = date(2024, 4, 10)  # a's label window (March 3 - April 1) is complete by then


def _snapshot(data_dir, day: date, at_risk: set[str]) -> None:
    """A day's feature snapshot: only the risk indicator count matters here."""
    frame = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c"],
            "as_of": pd.Timestamp(day),
            "risk_indicator_count": [12.0 if c in at_risk else 0.0 for c in "abc"],
        }
    )
    write_feature_snapshot(frame, data_dir, day)


def batch_days(store, data_dir, second_day: list) -> None:
    """March 1 (a, b, c tagged), March 2 (``second_day``'s moves), March 3 (a moved into ST_004),
    each with its snapshot; a meets a risk condition from March 2."""
    apply(store, DAY_1, FIRST_DAY)
    apply(store, DAY_2, second_day)
    apply(store, DAY_3, [("a", "ST_001", "ST_004")])
    for day, at_risk in ((DAY_1, set()), (DAY_2, {"a"}), (DAY_3, {"a"})):
        _snapshot(data_dir, day, at_risk)


def _events(rows: list[tuple[str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": [c for c, _ in rows],
            "ts": pd.to_datetime([ts for _, ts in rows]).tz_localize(UTC),
            "event_type": "session",
            "duration_s": 60.0,
            "channel": "web",
            "item": None,
        }
    )


@pytest.fixture
def three_days(store, tmp_path, monkeypatch):
    """a, b, c tagged on March 1; a meets a risk condition from March 2, moved on March 3.

    The clock is pinned years away from the data: nothing may depend on it.
    """
    monkeypatch.setenv("LSTEP_NOW", "2031-01-01T00:00:00Z")
    batch_days(store, tmp_path, [("a", "ST_001", "ST_001")])
    # a is never seen again (churned); b's event on April 5 shows the log runs until then
    events = _events([("a", "2024-03-02 10:00"), ("b", "2024-04-05 10:00")])
    return store, tmp_path, events


def _kpis(store, data_dir, events, as_of: date) -> dict:
    customers = customers_frame({"a": "2024-02-20", "b": "2024-02-20", "c": "2024-02-20"})
    found = kpis_at(
        store, as_of, customers=customers, events=events, ruleset=packaged_ruleset(),
        data_dir=data_dir,
    )  # fmt: skip
    return {kpi.id: kpi for kpi in found}


def test_detection_speed_is_read_from_the_snapshots_and_scores_of_the_batch_days(three_days):
    store, data_dir, events = three_days
    kpis = _kpis(store, data_dir, events, date(2024, 4, 10))
    # Then a's move on March 3 came 1 day after it first met the risk condition (March 2)
    assert kpis["risk_detection_days"].value == pytest.approx(1.0)
    assert kpis["risk_detection_days"].meets_target is True


def test_automation_accuracy_gets_the_labels_of_the_event_log_once_complete(three_days):
    store, data_dir, events = three_days
    # When judged on April 10: a's label window March 3 - April 1 is complete, a churned
    late = _kpis(store, data_dir, events, date(2024, 4, 10))["automation_accuracy"]
    assert late.value == pytest.approx(100.0)
    assert "1 confirmed, 0 refuted, 0 without a complete label" in late.detail
    # When judged on March 20, the window is not complete: the label is not used yet
    early = _kpis(store, data_dir, events, date(2024, 3, 20))["automation_accuracy"]
    assert "0 confirmed, 0 refuted, 1 without a complete label" in early.detail


def test_a_missing_snapshot_is_named_and_the_run_through_it_not_measured(three_days):
    store, data_dir, events = three_days
    # Given March 2's snapshot lost
    snapshot_path(data_dir, DAY_2).unlink()
    decisions = load_decision_days(
        data_dir, store.scores_frame(), packaged_ruleset(), [DAY_1, DAY_2, DAY_3]
    )
    assert decisions.missing == (DAY_2,)
    # Then detection speed has no value and says which day is missing
    detection = _kpis(store, data_dir, events, date(2024, 4, 10))["risk_detection_days"]
    assert detection.value is None
    assert "snapshots missing for 1 batch days (2024-03-02)" in detection.detail


def test_snapshots_with_different_columns_are_read_as_each_day_alone_would_be(three_days):
    store, data_dir, _ = three_days
    # Given March 2's snapshot written with a column the others lack, and as an integer there
    days = [DAY_1, DAY_2, DAY_3]
    frame = pd.read_parquet(snapshot_path(data_dir, DAY_2))
    write_feature_snapshot(frame.assign(lessons_total=[3, 0, 7]), data_dir, DAY_2)
    # When the decision days are loaded for a and c
    decisions = load_decision_days(
        data_dir, store.scores_frame(), packaged_ruleset(), days, customer_ids=["a", "c"]
    )
    # Then the rows are those of reading each day alone, in day order, lessons_total null on
    # the days without it
    inputs = decisions.inputs
    assert inputs[["customer_id", "as_of"]].values.tolist() == [
        [customer, pd.Timestamp(day)] for day in days for customer in ("a", "c")
    ]
    assert inputs["lessons_total"].isna().tolist() == [True, True, False, False, True, True]
    assert inputs.loc[inputs["as_of"] == pd.Timestamp(DAY_2), "lessons_total"].tolist() == [3, 7]
    assert inputs.loc[inputs["customer_id"] == "a", "risk_indicator_count"].tolist() == [0, 12, 12]


@pytest.fixture
def staggered(store, tmp_path):
    """a, b, c tagged on March 1; b moved into ST_002 on March 2, a into ST_004 on March 3."""
    batch_days(store, tmp_path, [("b", "ST_001", "ST_002")])
    return store, tmp_path


def test_the_kpis_of_the_narrow_reads_equal_those_of_every_learners_every_day(staggered):
    store, data_dir = staggered
    customers = customers_frame({"a": "2024-02-20", "b": "2024-02-20", "c": "2024-02-20"})
    ruleset = packaged_ruleset()
    # when the KPIs are computed as kpis_at reads the store (each day's learners only) and from
    # every learner's scores and decision inputs of every day
    narrow = kpis_at(
        store, DAY_3, customers=customers, events=None, ruleset=ruleset, data_dir=data_dir
    )
    scores = store.scores_frame()
    every = load_decision_days(data_dir, scores, ruleset, [DAY_1, DAY_2, DAY_3])
    full = compute_kpis(store.transitions_frame(), scores, customers, as_of=DAY_3, decisions=every)
    # then they are the same KPIs, a's detection measured from its run
    assert narrow == full
    assert {kpi.id: kpi for kpi in narrow}["risk_detection_days"].value == pytest.approx(1.0)


def test_recovery_reads_the_control_flag_on_the_day_of_a_manual_entry(store, tmp_path):
    # given bz (control) put at risk by hand from March 2 (not a move the run-based KPIs
    # measure) and back in ST_001 by rule on March 3, a (treated) never at risk
    apply(store, DAY_1, [("a", None, "ST_001"), ("bz", None, "ST_001")])
    set_override(store, "bz", "ST_004", actor="kim", reason="call", days=1, now=at(DAY_1, 9))
    apply(store, DAY_2, [("a", "ST_001", "ST_001"), ("bz", "ST_004", "ST_004")])
    apply(store, DAY_3, [("bz", "ST_004", "ST_001")])
    customers = customers_frame({"a": "2024-02-20", "bz": "2024-02-20"})
    # when kpis_at reads the store (each day's scores of the learners moved that day)
    found = kpis_at(
        store, DAY_3, customers=customers, events=None, ruleset=packaged_ruleset(),
        data_dir=tmp_path,
    )  # fmt: skip
    # then bz's ended episode counts on the control side, as from every learner's scores
    recovery = {kpi.id: kpi for kpi in found}["recovery_rate"]
    assert "treated 0/0, control 1/1" in recovery.detail
    full = compute_kpis(store.transitions_frame(), store.scores_frame(), customers, as_of=DAY_3)
    assert recovery == {kpi.id: kpi for kpi in full}["recovery_rate"]


def test_no_learner_to_keep_loads_no_rows_instead_of_failing(three_days):
    # given a store whose days have no automatic move to judge (no learner to keep)
    store, data_dir, _ = three_days
    # when the decision days are loaded for no learner
    decisions = load_decision_days(
        data_dir, store.scores_frame(), packaged_ruleset(), [DAY_1, DAY_2, DAY_3], customer_ids=[]
    )
    # then there are no rows, and the days are still the loaded ones (nothing missing)
    assert decisions.inputs.empty
    assert decisions.loaded == (DAY_1, DAY_2, DAY_3) and decisions.missing == ()


def test_the_stored_log_read_for_the_moved_learners_gives_the_labels_of_the_whole_log(
    three_days, tmp_path
):
    # Given the event log as the store's parquet file; b (never moved) is the one whose event
    # on April 5 says how far the log runs
    store, data_dir, events = three_days
    path = tmp_path / "events.parquet"
    events.to_parquet(path)
    stored = StoredEvents(path, datetime(2031, 1, 1, tzinfo=UTC))
    for day in (date(2024, 4, 10), date(2024, 3, 20), date(2024, 4, 3)):
        # When the KPIs read the file lazily and the validated frame whole
        lazy = _kpis(store, data_dir, stored, day)["automation_accuracy"]
        whole = _kpis(store, data_dir, events, day)["automation_accuracy"]
        # Then they agree (on April 3 only b's event makes a's window complete)
        assert (lazy.value, lazy.detail) == (whole.value, whole.detail)
    assert (
        "1 confirmed"
        in _kpis(store, data_dir, stored, date(2024, 4, 3))["automation_accuracy"].detail
    )


@pytest.mark.parametrize(
    ("a_event", "event_type"),
    [
        ("2024-03-02 23:59", "session"),  # the day before the window: not in it
        ("2024-03-03 00:00", "session"),  # the window's first instant
        ("2024-04-01 23:59", "session"),  # its last minute
        ("2024-04-02 00:00", "session"),  # the first instant after it
        ("2024-03-15 12:00", "subscription_cancelled"),
    ],
)
def test_the_stored_log_read_within_the_label_windows_gives_the_labels_of_the_whole_log(
    three_days, tmp_path, a_event, event_type
):
    # Given a stored log where a (moved on March 3: window March 3 - April 1) has one event
    # at or near the window's edges, and b's event on April 5 dates how far the log runs
    store, data_dir, _ = three_days
    events = _events([("a", a_event), ("b", "2024-04-05 10:00")]).assign(
        event_type=[event_type, "session"]
    )
    path = tmp_path / "events.parquet"
    events.to_parquet(path)
    # When the KPIs read only the window's events of the file, and the validated frame whole
    lazy = _kpis(store, data_dir, StoredEvents(path, datetime(2031, 1, 1, tzinfo=UTC)), DAY_4)
    whole = _kpis(store, data_dir, events, DAY_4)
    # Then the labels agree: a churned unless a session fell inside the window
    kept = a_event.startswith(("2024-03-03", "2024-04-01")) and event_type == "session"
    accuracy = lazy["automation_accuracy"]
    assert (accuracy.value, accuracy.detail) == (
        whole["automation_accuracy"].value,
        whole["automation_accuracy"].detail,
    )
    assert ("0 confirmed, 1 refuted" if kept else "1 confirmed, 0 refuted") in accuracy.detail


def test_a_moved_learners_event_that_breaks_the_contract_is_refused_by_name(three_days, tmp_path):
    # Given a stored log whose event of a (the moved learner), inside a's complete label
    # window, has an unknown type
    store, data_dir, _ = three_days
    path = tmp_path / "events.parquet"
    events = _events([("a", "2024-03-10 10:00"), ("b", "2024-04-05 10:00")])
    events.assign(event_type=["teleported", "session"]).to_parquet(path)
    # When the KPIs read it, then the error names the file, the column and the value
    with pytest.raises(ValueError, match=r"events\.parquet: column event_type: .*'teleported'"):
        _kpis(store, data_dir, StoredEvents(path, datetime(2031, 1, 1, tzinfo=UTC)), DAY_4)


def test_only_the_columns_a_label_reads_are_read_and_checked(three_days, tmp_path):
    # Given a stored log whose event of a (moved) inside a's window has a channel no contract
    # allows: a column the labels do not read
    store, data_dir, _ = three_days
    path = tmp_path / "events.parquet"
    events = _events([("a", "2024-03-10 10:00"), ("b", "2024-04-05 10:00")])
    events.assign(channel=["carrier pigeon", None]).to_parquet(path)
    stored = StoredEvents(path, datetime(2031, 1, 1, tzinfo=UTC))
    # When the KPIs read it, then a's session keeps a in: the move is refuted, no error
    kpis = _kpis(store, data_dir, stored, DAY_4)
    assert "0 confirmed, 1 refuted" in kpis["automation_accuracy"].detail
    # and a read of every column refuses that channel by name
    with pytest.raises(ValueError, match=r"channel"):
        stored.of_learners(["a"])


def test_events_outside_every_complete_label_window_are_not_read(three_days, tmp_path):
    # Given a stored log whose only events out of a's window (March 3 - April 1) break the
    # contract: a's before it, c's (never moved) inside it; b's dates the log
    store, data_dir, _ = three_days
    path = tmp_path / "events.parquet"
    rows = [("a", "2024-03-02 10:00"), ("c", "2024-03-10 10:00"), ("b", "2024-04-05 10:00")]
    _events(rows).assign(event_type=["teleported", "teleported", "session"]).to_parquet(path)
    # When the KPIs read it
    kpis = _kpis(store, data_dir, StoredEvents(path, datetime(2031, 1, 1, tzinfo=UTC)), DAY_4)
    # Then the labels were computed from the window's rows only (none: a churned); the
    # batch, which reads the whole log, is where those rows are refused
    assert "1 confirmed, 0 refuted" in kpis["automation_accuracy"].detail


def test_no_learner_to_read_reads_no_row_of_the_log(tmp_path, monkeypatch):
    # Given a stored log, and a scan that would fail if the file's rows were read
    import pyarrow.dataset as ds

    path = tmp_path / "events.parquet"
    _events([("a", "2024-03-02 10:00")]).to_parquet(path)
    opened = ds.dataset

    class NoScan:
        def __init__(self, *args, **kwargs) -> None:
            self.schema = opened(*args, **kwargs).schema

        def to_table(self, *_args, **_kwargs):
            raise AssertionError("the log's rows were read")

    monkeypatch.setattr(ds, "dataset", NoScan)
    # When no learner's events are asked for, then none come, typed as the validated log's
    events = StoredEvents(path, datetime(2031, 1, 1, tzinfo=UTC)).of_learners([])
    assert events.empty and list(events.columns)[:3] == ["customer_id", "ts", "event_type"]


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param(lambda ts: ts, id="naive nanoseconds"),
        pytest.param(lambda ts: ts.dt.tz_localize("UTC").dt.tz_convert("Asia/Tokyo"), id="zoned"),
        pytest.param(lambda ts: ts.astype("datetime64[ms]"), id="milliseconds"),
        pytest.param(lambda ts: ts.astype(str), id="text"),
    ],
)
def test_the_logs_last_event_is_its_latest_instant_in_utc(tmp_path, typed):
    # Given a log whose latest event is not its last row, its instants typed as writers type them
    moments = pd.Series(
        pd.to_datetime(["2024-03-05 10:00", "2024-04-05 23:59:58", "2024-03-01"], format="ISO8601")
    )
    frame = _events(
        [("a", "2024-03-05 10:00"), ("b", "2024-04-05 10:00"), ("c", "2024-03-01 10:00")]
    )
    path = tmp_path / "events.parquet"
    frame.assign(ts=typed(moments)).to_parquet(path)
    # When its last event is asked for, then it is the latest instant, naive UTC
    last = StoredEvents(path, datetime(2031, 1, 1, tzinfo=UTC)).last_event()
    assert last == pd.Timestamp("2024-04-05 23:59:58") and last.tzinfo is None


@pytest.mark.parametrize(
    "id_type", [pa.string(), pa.large_string(), pa.dictionary(pa.int32(), pa.string())]
)
def test_the_moved_learners_rows_are_read_whatever_type_stores_their_ids(
    three_days, tmp_path, id_type
):
    # Given a stored log whose ids are plain, large or dictionary-encoded text; a's session
    # inside its window (March 3 - April 1) keeps it from churning, c (never moved) has events
    store, data_dir, _ = three_days
    rows = [("a", "2024-03-10 10:00"), ("c", "2024-03-11 10:00"), ("b", "2024-04-05 10:00")]
    table = pa.Table.from_pandas(_events(rows), preserve_index=False)
    column = table.schema.get_field_index("customer_id")
    table = table.set_column(column, "customer_id", table.column("customer_id").cast(id_type))
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    stored = StoredEvents(path, datetime(2031, 1, 1, tzinfo=UTC))
    # When a's events are read, then they are a's alone, and its label is refuted
    assert stored.of_learners(["a"])["customer_id"].tolist() == ["a"]
    accuracy = _kpis(store, data_dir, stored, DAY_4)["automation_accuracy"]
    assert "0 confirmed, 1 refuted" in accuracy.detail
