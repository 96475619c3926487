"""Tests of the measured campaign effect: counts, rates, interval, p-value, pending, variants."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time, timedelta

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import (
    confint_proportions_2indep,
    proportion_confint,
    proportions_ztest,
)

from serving.app.campaign_effect import (
    ALL_VARIANTS,
    EFFECT_COLUMNS,
    EffectSettings,
    campaign_effect,
    effect_summary,
    first_runs,
    learner_outcomes,
    minimum_detectable_effect,
    two_proportion_p_value,
    uplift_interval,
    wilson_interval,
)
from serving.app.campaign_inputs import measured_effect
from serving.core.messages import MESSAGE_COLUMNS, SENT, SUPPRESSED, message_key

DUE = date(2026, 5, 1)
LATER = DUE + timedelta(days=40)  # an event this late says the log covers every window here
WINDOW = EffectSettings().conversion_days


def message(
    customer: str,
    *,
    campaign: str = "CP_01",
    planned: date = DUE,
    delay: int = 0,
    step: int = 0,
    control: bool | None = False,
    variant: str = "",
    state: str | None = None,
) -> dict:
    """One outbox row: the message contract plus its state (control rows are suppressed)."""
    row = {
        "message_id": message_key(planned, customer, campaign, step),
        "planned_on": planned,
        "due_on": planned + timedelta(days=delay),
        "customer_id": customer,
        "campaign_id": campaign,
        "step": step,
        "channel": "email",
        "template_id": f"{campaign}_email",
        "variant": variant,
        "control": control,
        "context": "{}",
        "state": state or (SUPPRESSED if control else SENT),
    }
    assert list(row)[: len(MESSAGE_COLUMNS)] == list(MESSAGE_COLUMNS)
    return row


def event(customer: str, day: date, kind: str = "session", hour: int = 12) -> dict:
    ts = datetime.combine(day, time(hour), tzinfo=UTC)
    return {"customer_id": customer, "ts": ts, "event_type": kind}


def frames(messages: list[dict], events: list[dict], feedback: list[tuple] = ()):
    outbox = pd.DataFrame(messages)
    log = pd.DataFrame([*events, event("Z_LATE", LATER)])
    kinds = pd.DataFrame(
        [(m, k, datetime(2026, 12, 1, tzinfo=UTC)) for m, k in feedback],
        columns=["message_id", "kind", "recorded_at"],
    )
    return outbox, kinds, log


def only(table: pd.DataFrame, **where: str) -> dict:
    rows = table
    for column, value in where.items():
        rows = rows[rows[column] == value]
    assert len(rows) == 1, rows
    return rows.iloc[0].to_dict()


def test_counts_rates_and_conversion_window_per_learner():
    # given four treated learners (one whose message went dead) and three in the control group
    messages = [message(c) for c in "ABC"] + [message("D", state="dead")]
    messages += [message(c, control=True) for c in "EFG"]
    events = [
        event("A", DUE + timedelta(days=2)),  # inside the window
        event("B", DUE + timedelta(days=WINDOW - 1), "lesson_completed"),  # last day inside
        event("C", DUE + timedelta(days=WINDOW)),  # the day after the window
        event("D", DUE + timedelta(days=1), "video_watched"),  # not a re-engagement kind
        event("E", DUE - timedelta(days=1)),  # before the message
        event("F", DUE),  # the due day counts: the message goes out once day D is done
    ]
    ids = {m["customer_id"]: m["message_id"] for m in messages}
    feedback = [(ids["A"], "opened"), (ids["A"], "clicked"), (ids["C"], "opened")]
    feedback += [(ids["D"], "converted"), (ids["A"], "opened")]  # a duplicate changes nothing
    # when the effect is measured well after every window closed
    table = campaign_effect(*frames(messages, events, feedback), as_of=LATER)
    # then the counts are per learner, the rates compare log conversions, D converts by feedback
    row = only(table, campaign_id="CP_01")
    assert (row["treated"], row["sent"], row["suppressed"], row["pending"]) == (4, 3, 3, 0)
    assert (row["opened"], row["clicked"], row["converted"]) == (2, 1, 3)
    assert (row["treated_converted"], row["control_converted"]) == (2, 1)
    assert row["treated_rate"] == pytest.approx(2 / 4)
    assert row["control_rate"] == pytest.approx(1 / 3)
    assert row["uplift"] == pytest.approx(2 / 4 - 1 / 3)
    assert row["ci_low"] < row["uplift"] < row["ci_high"]
    assert not row["enough"]  # seven learners cannot tell a 5-point effect
    assert list(table.columns) == list(EFFECT_COLUMNS)


def test_a_campaign_window_overrides_the_default():
    # given a conversion on the 10th day after the message
    messages = [message("A"), message("B", control=True)]
    events = [event("A", DUE + timedelta(days=9))]
    # when the campaign's window is 7 days instead of 14, then the conversion is outside it
    short = campaign_effect(*frames(messages, events), as_of=LATER, windows={"CP_01": 7})
    default = campaign_effect(*frames(messages, events), as_of=LATER)
    assert only(short)["treated_converted"] == 0
    assert only(default)["treated_converted"] == 1


def test_learners_whose_window_is_open_are_pending_not_counted():
    # given messages due on two days; the later ones' windows close one day after the first's
    early = [message("A"), message("B", control=True)]
    late = [
        message("C", planned=DUE + timedelta(days=1)),
        message("D", planned=DUE + timedelta(days=1), control=True),
    ]
    events = [event(c, DUE + timedelta(days=3)) for c in "ABCD"]
    outbox, feedback, log = frames(early + late, events)
    # when asked on the last day of the early window (complete by the end of that day)
    as_of = DUE + timedelta(days=WINDOW - 1)
    row = only(campaign_effect(outbox, feedback, log, as_of=as_of))
    # then the early learners count and the late ones are pending
    assert (row["treated"], row["suppressed"], row["pending"]) == (1, 1, 2)
    # and a day later every window is complete
    row = only(campaign_effect(outbox, feedback, log, as_of=as_of + timedelta(days=1)))
    assert (row["treated"], row["suppressed"], row["pending"]) == (2, 2, 0)


def test_a_log_that_ends_early_leaves_windows_pending():
    # given a log whose last event is a week after the messages, and a question asked much later
    outbox = pd.DataFrame([message("A"), message("B", control=True)])
    log = pd.DataFrame([event("A", DUE + timedelta(days=7))])
    feedback = pd.DataFrame(columns=["message_id", "kind", "recorded_at"])
    # when measured, then nothing is counted yet: the log does not cover the windows
    row = only(campaign_effect(outbox, feedback, log, as_of=LATER))
    assert (row["treated"], row["suppressed"], row["pending"]) == (0, 0, 2)
    assert math.isnan(row["uplift"]) and math.isinf(row["mde"]) and not row["enough"]


def test_only_the_first_run_of_a_campaign_counts_with_its_whole_cadence():
    # given A's first run (a day-0 email and a day-3 push, both opened later) and a second run
    second = DUE + timedelta(days=20)
    messages = [
        message("A"),
        message("A", step=1, delay=3),
        message("A", planned=second),
        message("B", control=True),
        message("B", planned=second, control=True),
    ]
    events = [event("A", second + timedelta(days=1)), event("B", DUE + timedelta(days=1))]
    step_one = message_key(DUE, "A", "CP_01", 1)
    feedback = [(step_one, "opened"), (message_key(second, "A", "CP_01", 0), "clicked")]
    outcomes = learner_outcomes(*frames(messages, events, feedback), as_of=LATER)
    # then one row per learner: the first run, opened by its second step, not the later click
    assert sorted(outcomes["customer_id"]) == ["A", "B"]
    first = outcomes.set_index("customer_id").loc["A"]
    assert first["due_on"] == pd.Timestamp(DUE)
    assert bool(first["opened"]) and not bool(first["clicked"])
    assert not bool(first["log_converted"])  # the return came after the first run's window


def test_variants_share_the_campaign_control_and_get_a_total_row():
    # given an A/B campaign: variant a converts 2 of 2, b 0 of 2, and a control of 4 with 1
    messages = [message(c, variant="a") for c in ("A1", "A2")]
    messages += [message(c, variant="b") for c in ("B1", "B2")]
    messages += [message(c, control=True, variant="ab"[i % 2]) for i, c in enumerate("WXYZ")]
    events = [event(c, DUE + timedelta(days=1)) for c in ("A1", "A2", "W")]
    table = campaign_effect(*frames(messages, events), as_of=LATER)
    # then each variant is compared with the whole control, and the total row pools the variants
    assert sorted(table["variant"]) == sorted(["a", "b", ALL_VARIANTS])
    a, b, total = (only(table, variant=v) for v in ("a", "b", ALL_VARIANTS))
    assert (a["treated_rate"], b["treated_rate"], total["treated_rate"]) == (1.0, 0.0, 0.5)
    assert a["control_rate"] == b["control_rate"] == total["control_rate"] == 0.25
    assert a["suppressed"] == total["suppressed"] == 4
    assert a["uplift"] > 0 > b["uplift"]


@pytest.mark.parametrize(
    ("treated", "control"),
    [((30, 100), (20, 100)), ((5, 40), (9, 35)), ((0, 20), (3, 25)), ((412, 1000), (380, 990))],
)
def test_interval_and_p_value_match_statsmodels(treated, control):
    # given two arms' counts, when the uplift's interval and the test's p-value are computed
    diff, low, high = uplift_interval(treated, control)
    p_value = two_proportion_p_value(treated, control)
    # then they agree with statsmodels' Newcombe interval and pooled z-test
    ref_low, ref_high = confint_proportions_2indep(
        treated[0], treated[1], control[0], control[1], method="newcomb", compare="diff"
    )
    _, ref_p = proportions_ztest([treated[0], control[0]], [treated[1], control[1]])
    assert diff == pytest.approx(treated[0] / treated[1] - control[0] / control[1])
    assert (low, high) == pytest.approx((ref_low, ref_high), abs=1e-9)
    assert p_value == pytest.approx(ref_p, rel=1e-9)


def test_the_table_carries_the_reference_interval_for_its_counts():
    # given 6 of 10 treated and 2 of 8 control learners converted
    messages = [message(f"T{i}") for i in range(10)]
    messages += [message(f"K{i}", control=True) for i in range(8)]
    events = [event(f"T{i}", DUE) for i in range(6)] + [event(f"K{i}", DUE) for i in range(2)]
    row = only(campaign_effect(*frames(messages, events), as_of=LATER))
    low, high = confint_proportions_2indep(6, 10, 2, 8, method="newcomb", compare="diff")
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
    assert row["p_value"] == pytest.approx(proportions_ztest([6, 2], [10, 8])[1])


def test_no_difference_when_nobody_converts_has_p_value_one():
    assert two_proportion_p_value((0, 50), (0, 40)) == 1.0


@pytest.mark.parametrize(("rate", "n1", "n2"), [(0.3, 400, 400), (0.1, 2000, 500), (0.5, 50, 80)])
def test_the_minimum_detectable_effect_has_the_asked_power(rate, n1, n2):
    # given a pooled rate and two arm sizes, when the MDE at 80% power is computed
    mde = minimum_detectable_effect(rate, n1, n2, alpha=0.05, power=0.8)
    # then statsmodels' normal power at that standardised effect is 80% (plus the far tail)
    standardised = mde / math.sqrt(rate * (1 - rate))
    power = NormalIndPower().power(standardised, nobs1=n1, alpha=0.05, ratio=n2 / n1)
    assert power == pytest.approx(0.8, abs=1e-3)


def test_enough_to_tell_depends_on_the_sample_and_the_smallest_effect():
    # given the same 30% vs 20% rates measured on 20 and on 2,000 learners per arm
    def table(size: int, settings: EffectSettings) -> dict:
        messages = [message(f"T{i}") for i in range(size)]
        messages += [message(f"K{i}", control=True) for i in range(size)]
        events = [event(f"T{i}", DUE) for i in range(size * 3 // 10)]
        events += [event(f"K{i}", DUE) for i in range(size // 5)]
        return only(campaign_effect(*frames(messages, events), as_of=LATER, settings=settings))

    default = EffectSettings()
    # then only the large sample can tell a 5-point effect; nothing can tell a 1-point one
    assert not table(20, default)["enough"]
    assert table(2000, default)["enough"]
    assert not table(2000, EffectSettings(min_effect=0.01))["enough"]


def test_missing_columns_are_named():
    outbox, feedback, log = frames([message("A")], [])
    with pytest.raises(ValueError, match=r"outbox: missing column\(s\) state"):
        campaign_effect(outbox.drop(columns="state"), feedback, log, as_of=LATER)
    with pytest.raises(ValueError, match=r"events: missing column\(s\) event_type"):
        campaign_effect(outbox, feedback, log.drop(columns="event_type"), as_of=LATER)


def test_no_messages_give_an_empty_table():
    outbox = pd.DataFrame(columns=[*MESSAGE_COLUMNS, "state"])
    _, feedback, log = frames([], [])
    table = campaign_effect(outbox, feedback, log, as_of=LATER)
    assert table.empty and list(table.columns) == list(EFFECT_COLUMNS)


def test_messages_planned_after_the_day_asked_are_not_seen():
    outbox, feedback, log = frames([message("A", planned=LATER)], [])
    assert campaign_effect(outbox, feedback, log, as_of=DUE).empty


def test_summary_is_readable_percentages():
    messages = [message(f"T{i}") for i in range(10)]
    messages += [message(f"K{i}", control=True) for i in range(8)]
    events = [event(f"T{i}", DUE) for i in range(6)] + [event(f"K{i}", DUE) for i in range(2)]
    summary = effect_summary(campaign_effect(*frames(messages, events), as_of=LATER))
    row = summary.iloc[0]
    assert (row["Treated %"], row["Control %"], row["Uplift pts"]) == (60.0, 25.0, 35.0)
    assert row["Variant"] == "-" and row["Enough to tell"] == "no"
    assert row["Interval"].startswith("[") and row["Interval"].endswith("]")


class FrameRecords:
    """The CampaignRecords contract over two frames."""

    def __init__(self, outbox: pd.DataFrame, feedback: pd.DataFrame) -> None:
        self._outbox, self._feedback = outbox, feedback

    def measured_outbox(self, until: date | None = None) -> pd.DataFrame:
        planned = pd.to_datetime(self._outbox["planned_on"])
        return self._outbox if until is None else self._outbox[planned <= pd.Timestamp(until)]

    def feedback_frame(self) -> pd.DataFrame:
        return self._feedback


def test_the_measured_effect_reads_the_records_up_to_the_day():
    # given records holding 3 of 4 treated and 1 of 4 control learners converted
    messages = [message(f"T{i}") for i in range(4)]
    messages += [message(f"K{i}", control=True) for i in range(4)]
    events = [event(f"T{i}", DUE) for i in range(3)] + [event("K0", DUE)]
    outbox, feedback, log = frames(messages, events)
    # when the effect is measured from them, as the report and lstep campaigns measure it
    report = effect_summary(measured_effect(FrameRecords(outbox, feedback), log, LATER))
    # then it is the summary of the effect of those frames, MDE included
    assert report.equals(effect_summary(campaign_effect(outbox, feedback, log, as_of=LATER)))
    assert (report.iloc[0]["Treated %"], report.iloc[0]["Control %"]) == (75.0, 25.0)
    assert report.iloc[0]["MDE pts"] > 50  # eight learners cannot see less than 50 points


def test_the_first_run_is_the_earliest_trigger_even_when_a_later_one_is_due_sooner():
    # given A's first run (planned D, first step due D+5) and a re-trigger planned D+2 under a
    # changed cadence (due at once)
    retrigger = DUE + timedelta(days=2)
    messages = [message("A", delay=5), message("A", planned=retrigger)]
    messages += [message("B", control=None, state=SUPPRESSED)]  # a control flag the store lost
    outcomes = learner_outcomes(*frames(messages, []), as_of=LATER).set_index("customer_id")
    # then A's run is the one planned on D, and the suppressed B is in the control group
    assert outcomes.loc["A", "due_on"] == pd.Timestamp(DUE + timedelta(days=5))
    assert not outcomes.loc["A", "control"] and outcomes.loc["B", "control"]


@pytest.mark.parametrize(("converted", "total"), [(0, 10), (3, 10), (10, 10), (412, 1000)])
def test_wilson_interval_matches_statsmodels(converted, total):
    assert wilson_interval(converted, total) == pytest.approx(
        proportion_confint(converted, total, method="wilson"), abs=1e-12
    )


def test_adjusted_p_values_follow_benjamini_hochberg_and_keep_the_unknown():
    from statsmodels.stats.multitest import multipletests

    from serving.app.campaign_effect import adjusted_p_values

    # given a table's p-values, one row without a test (no control learner)
    p_values = np.array([0.008, 0.2, np.nan, 0.04, 0.5])
    # when they are adjusted for the table's comparisons
    adjusted = adjusted_p_values(p_values)
    # then they are statsmodels' Benjamini-Hochberg values, larger than the raw ones,
    # and the row without a test stays without one
    reference = multipletests(p_values[[0, 1, 3, 4]], method="fdr_bh")[1]
    np.testing.assert_allclose(adjusted[[0, 1, 3, 4]], reference, rtol=1e-12)
    assert np.isnan(adjusted[2]) and adjusted[0] > p_values[0]


# --- the vectorised runs against a plain reference, on random small outboxes ----------------------


def random_records(seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """A random small outbox (re-triggers, cadences, exact ties, lost control flags), feedback
    on some of its messages, and a log of a few learners (some with no message)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(int(rng.integers(0, 50))):
        control = bool(rng.random() < 0.3)
        row = message(
            f"L{rng.integers(8)}",
            campaign=f"CP_0{rng.integers(1, 4)}",
            planned=DUE + timedelta(days=int(rng.integers(0, 6))),
            delay=int(rng.integers(0, 4)),
            step=int(rng.integers(0, 3)),
            control=None if rng.random() < 0.1 else control,
            variant=str(rng.choice(["", "a", "b"])),
            state=str(rng.choice([SENT, SENT, "pending", "dead", SUPPRESSED, "cancelled"])),
        )
        rows.append(row)
    rows += [dict(rows[i]) for i in rng.integers(0, len(rows), 3)] if rows else []  # exact ties
    outbox = pd.DataFrame(rows, columns=[*MESSAGE_COLUMNS, "state"])
    ids = outbox["message_id"].tolist()
    kinds = ["opened", "clicked", "converted", "delivered"]
    picked = [(str(rng.choice(ids)), str(rng.choice(kinds))) for _ in range(len(ids) // 2)]
    _, feedback, _ = frames([], [], [*picked, ("no-such-message", "opened")])
    events = [
        event(
            f"L{rng.integers(10)}",
            DUE + timedelta(days=int(rng.integers(-3, 26))),
            str(rng.choice(["session", "lesson_completed", "video_watched"])),
            hour=int(rng.integers(0, 24)),
        )
        for _ in range(int(rng.integers(1, 80)))
    ]
    return outbox, feedback, pd.DataFrame(events).sample(frac=1.0, random_state=seed)


def reference_outcomes(
    outbox: pd.DataFrame, feedback: pd.DataFrame, events: pd.DataFrame, as_of: date, windows
) -> list[dict]:
    """``learner_outcomes`` as the module docstring says it, one message at a time."""
    stamps = pd.to_datetime(events["ts"], utc=True).dt.tz_localize(None)
    until = min(pd.Timestamp(as_of), stamps.max().floor("D")) + timedelta(days=1)
    active = {
        (customer, stamp.floor("D"))
        for customer, stamp, kind in zip(
            events["customer_id"], stamps, events["event_type"], strict=True
        )
        if kind in ("session", "lesson_completed")
    }
    heard = set(zip(feedback["message_id"], feedback["kind"], strict=True))
    pairs: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    for position, row in enumerate(outbox.to_dict("records")):
        if pd.Timestamp(row["planned_on"]) <= pd.Timestamp(as_of):
            pairs.setdefault((row["customer_id"], row["campaign_id"]), []).append((position, row))
    outcomes = []
    for (customer, campaign), messages in sorted(pairs.items()):
        order = [(r["planned_on"], r["due_on"], r["step"], p) for p, r in messages]
        first = messages[order.index(min(order))][1]
        run = [r for _, r in messages if r["planned_on"] == first["planned_on"]]
        due = pd.Timestamp(first["due_on"])
        end = due + timedelta(days=(windows or {}).get(campaign, WINDOW))
        flags = {k: any((r["message_id"], k) in heard for r in run) for k in ("opened", "clicked")}
        outcomes.append(
            {
                "customer_id": customer,
                "campaign_id": campaign,
                "variant": first["variant"],
                "control": bool(first["control"]) or first["state"] == SUPPRESSED,
                "due_on": due,
                "sent": any(r["state"] == SENT for r in run),
                "complete": end <= until,
                **flags,
                "feedback_converted": any((r["message_id"], "converted") in heard for r in run),
                "log_converted": any(c == customer and due <= d < end for c, d in active),
                "message_ids": [r["message_id"] for r in run],
            }
        )
    return outcomes


@pytest.mark.parametrize("seed", range(40))
def test_learner_outcomes_and_first_runs_match_a_plain_reference(seed):
    # given a random small outbox, its feedback and a shuffled log, asked on a random day
    outbox, feedback, events = random_records(seed)
    as_of = DUE + timedelta(days=int(np.random.default_rng(seed).integers(-1, 30)))
    windows = {"CP_02": 3} if seed % 2 else None
    # when the outcomes are measured, then they are the reference's, row for row
    expected = reference_outcomes(outbox, feedback, events, as_of, windows)
    outcomes = learner_outcomes(outbox, feedback, events, as_of, windows=windows)
    assert outcomes.to_dict("records") == [
        {k: v for k, v in row.items() if k != "message_ids"} for row in expected
    ]
    # and the first runs carry each run's message ids in the outbox's order
    runs = first_runs(outbox, as_of)
    assert runs["message_ids"].tolist() == [row["message_ids"] for row in expected]
    assert isinstance(runs.index, pd.RangeIndex) and outcomes.index.equals(runs.index)
