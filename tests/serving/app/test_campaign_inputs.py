"""What the campaign measurement reads (``serving.app.campaign_inputs``): the proved log's
re-engagement events of the outbox's learners give the effect the whole validated log gives."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import pandas as pd
import pytest

from features.simulator import SimulationConfig, simulate
from features.validation import load_valid_inputs
from serving.app.campaign_effect import EFFECT_COLUMNS
from serving.app.campaign_inputs import LOG_END, measured_effect, reengagement_events
from serving.core.messages import SENT, SUPPRESSED, message_key

CONFIG = SimulationConfig(customers=300, days=60, seed=11, truth_share=0.0)
AS_OF = CONFIG.end - timedelta(days=1)
NOW = datetime.combine(CONFIG.end, time(), UTC)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("campaign-inputs")
    simulate(CONFIG, out)
    return out


class _Records:
    """The state store's two reads, from frames (the outbox's measured columns, feedback)."""

    def __init__(self, outbox: pd.DataFrame) -> None:
        self.outbox = outbox
        self.asked: list[date | None] = []

    def measured_outbox(self, until: date | None = None) -> pd.DataFrame:
        self.asked.append(until)
        return self.outbox

    def feedback_frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {"message_id": pd.Series(dtype=str), "kind": pd.Series(dtype=str),
             "recorded_at": pd.Series(dtype="datetime64[us, UTC]")}
        )  # fmt: skip


def _outbox(customers: list[str]) -> pd.DataFrame:
    """A campaign for every learner in two waves (days 20 and 40 of the log), a third in its
    control, a few of them in other variants."""
    rows = []
    for i, customer in enumerate(customers):
        due = CONFIG.start + timedelta(days=20 if i % 2 else 40)
        control = i % 3 == 0
        rows.append(
            {"message_id": message_key(due, customer, "CP_13", 0), "planned_on": due,
             "due_on": due, "customer_id": customer, "campaign_id": "CP_13", "step": 0,
             "channel": "email", "template_id": "we_miss_you", "variant": "ab"[i % 2],
             "control": control, "state": SUPPRESSED if control else SENT, "context": ""}
        )  # fmt: skip
    frame = pd.DataFrame(rows)
    for column in ("planned_on", "due_on"):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
    return frame


def test_a_proved_file_measures_what_the_whole_validated_log_measures(log_dir):
    # given the simulator's log as parquet files and as validated frames, and an outbox of
    # every learner (the first wave due 20 days into the log)
    events_path, customers_path = log_dir / "events.parquet", log_dir / "customers.parquet"
    events, _ = load_valid_inputs(events_path, customers_path, now=NOW)
    customers = sorted(pd.read_parquet(customers_path)["customer_id"])
    records = _Records(_outbox(customers))
    # when the effect is measured from the file and from the frame
    from_file = measured_effect(records, events_path, AS_OF)
    from_frame = measured_effect(records, events, AS_OF)
    # then the tables are the same, and measure something on both arms
    pd.testing.assert_frame_equal(from_file, from_frame)
    assert list(from_file.columns) == list(EFFECT_COLUMNS)
    assert from_file["treated_converted"].sum() > 0 and from_file["control_converted"].sum() > 0
    assert records.asked == [AS_OF, AS_OF]  # the outbox up to the day asked


@pytest.mark.parametrize("zone", [None, "UTC", "America/New_York"])
def test_reengagement_events_are_the_learners_kinds_from_the_day_and_the_logs_end(tmp_path, zone):
    # given a log of two learners with every kind of event around midnight UTC of day 2,
    # stored in nanoseconds, naive (UTC) or in a zone; its last event is another learner's
    moments = pd.to_datetime(
        ["2026-01-01 23:59:59.999999999", "2026-01-02 00:00:00", "2026-01-02 00:00:00.5",
         "2026-01-03 08:00", "2026-01-04 09:00"], format="ISO8601"
    )  # fmt: skip
    stamps = moments if zone is None else moments.tz_localize("UTC").tz_convert(zone)
    kinds = ["session", "lesson_completed", "quiz_attempted", "session", "video_watched"]
    learners = ["a", "a", "b", "a", "c"]
    log = pd.DataFrame({"customer_id": learners, "ts": stamps, "event_type": kinds})
    path = tmp_path / "events.parquet"
    log.to_parquet(path)
    # when a and b's re-engagement events from day 2 on are read
    read = reengagement_events(path, ["a", "b"], since=date(2026, 1, 2))
    # then a's session and lesson from midnight UTC on, not b's quiz nor c's video, and the
    # log's last instant in a row of its own
    expected = pd.DataFrame(
        {"customer_id": ["a", "a", ""],
         "ts": pd.to_datetime(["2026-01-02 00:00", "2026-01-03 08:00", "2026-01-04 09:00"]),
         "event_type": ["lesson_completed", "session", LOG_END]}
    )  # fmt: skip
    got = read.sort_values("ts", ignore_index=True)
    assert got["customer_id"].tolist() == expected["customer_id"].tolist()
    assert got["event_type"].tolist() == expected["event_type"].tolist()
    assert (got["ts"] == expected["ts"].dt.tz_localize("UTC")).all()
    # and without a day, the event a nanosecond before midnight is read too
    assert len(reengagement_events(path, ["a", "b"])) == 4


def test_a_missing_log_is_no_events_and_a_missing_file_to_measure_is_an_error(tmp_path):
    # given no file, when the events are read, then there are none (the dashboard's case)
    assert reengagement_events(tmp_path / "events.parquet", ["a"]) is None
    # and a measure from a missing file names it
    records = _Records(_outbox(["a"]))
    with pytest.raises(FileNotFoundError, match=r"events: no such file .*events\.parquet"):
        measured_effect(records, tmp_path / "events.parquet", AS_OF)


def test_a_log_with_text_instants_is_read_whole_for_the_learners(tmp_path):
    # given an event store whose instants are ISO text (a log the validation accepts)
    log = pd.DataFrame(
        {"customer_id": ["a", "a", "b"], "ts": ["2026-01-01T10:00:00Z", "2026-01-03T08:00:00Z",
         "2026-01-04T09:00:00Z"], "event_type": ["session", "video_watched", "lesson_completed"]}
    )  # fmt: skip
    path = tmp_path / "events.parquet"
    log.to_parquet(path)
    # when the dashboard reads a's and b's re-engagement events, from a day or not
    for since in (None, date(2026, 1, 2)):
        read = reengagement_events(path, ["a", "b"], since=since)
        # then every re-engagement event is read (no day bound on text), and the log's end
        assert read["event_type"].tolist() == ["session", "lesson_completed", LOG_END]
        assert read["ts"].iloc[-1] == pd.Timestamp("2026-01-04 09:00", tz="UTC")
