"""The KPIs of many days at once (``serving.app.kpi_days``) against each day's log rebuilt.

The hand-built histories of ``test_kpis`` (whose values are counted by hand there) are measured
on every day they span: the day masks over what was found once must give the very KPIs, details
and splits included, that rebuilding each day's log gives.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from serving.app.kpi_days import kpi_history, kpis_day_by_day, kpis_on_days, unique_ids
from serving.app.kpis import compute_kpis_on_days
from tests.serving.app.test_kpis import (
    CONTROL_FLAGS,
    ENROLLED,
    HISTORY,
    RUN_HISTORY,
    RUN_INPUTS,
    customers_frame,
    decision_days,
    labels_frame,
    scores_frame,
    transitions_frame,
)

# b's risk move did not churn, c's did, a's label is for a non-risk move; i's is complete late.
LABELS = [("b", "2024-03-20", 0), ("c", "2024-05-01", 1), ("a", "2024-03-12", 1)]
LABELS += [("i", "2024-06-28", 0)]


def _days(first: str, last: str) -> list[date]:
    return [stamp.date() for stamp in pd.date_range(first, last)]


def _history(history, decisions=None, labels=LABELS, enrolled=ENROLLED, until=date(2024, 8, 1)):
    return kpi_history(
        transitions_frame(history), scores_frame(CONTROL_FLAGS), customers_frame(enrolled),
        until=until, outcomes=None if labels is None else labels_frame(labels),
        decisions=decisions, horizon_days=30,
    )  # fmt: skip


def test_every_day_of_the_hand_built_history_gives_the_kpis_of_its_log_rebuilt():
    # Given the hand-built history (Jan 2 - Jul 2), its control flags and labels
    history = _history(HISTORY)
    assert history.in_day_order
    # When the KPIs of every fifth day from before the log to August, and of the days around
    # a revert window's or a label window's end, are computed at once
    edges = ["2024-03-26", "2024-03-27", "2024-04-17", "2024-04-18", "2024-05-29", "2024-05-30"]
    edges += ["2024-06-16", "2024-06-17", "2024-07-26", "2024-07-27", "2024-07-02", "2024-07-03"]
    days = sorted(
        {*_days("2024-01-01", "2024-08-01")[::5], *(date.fromisoformat(d) for d in edges)}
    )
    at_once = kpis_on_days(history, days)
    # Then each day's six KPIs are those of that day's log rebuilt, to the detail
    assert at_once == kpis_day_by_day(history, days)
    # and the days do differ (active rate, recovery, accuracy move over the months)
    for position in (0, 4, 5):
        assert len({kpis[position].detail for kpis in at_once.values()}) > 5
    # the label of b's risk move (Mar 20) counts from Apr 18, its window's last day
    accuracy = {day: kpis[5].detail for day, kpis in at_once.items()}
    assert "0 refuted" in accuracy[date(2024, 4, 17)] and "1 refuted" in accuracy[date(2024, 4, 18)]


def test_the_run_based_kpis_of_every_day_equal_those_of_the_days_log_rebuilt():
    # Given the runs' history of June 1-10 and its decision inputs (with the days they loaded,
    # and without: the days are then those present in the inputs)
    decisions = decision_days(RUN_INPUTS)
    for given in (decisions, replace(decisions, loaded=tuple(_days("2024-06-01", "2024-06-10")))):
        history = _history(RUN_HISTORY, decisions=given, labels=None)
        days = _days("2024-05-31", "2024-06-12")
        # When every day is computed at once / Then it is each day's log rebuilt
        at_once = kpis_on_days(history, days)
        assert at_once == kpis_day_by_day(history, days)
        # and detection speed is measured on June 8 (r and s, 3.5 days: test_kpis counts it)
        assert at_once[date(2024, 6, 8)][3].value == pytest.approx(3.5)
        assert at_once[date(2024, 6, 7)][3].value is None


def test_a_learner_s_history_alone_is_the_history_of_that_learner_s_rows():
    # Given the whole history's KPI inputs found once, without and with decision inputs
    runs = decision_days(RUN_INPUTS)
    cases = [
        (HISTORY, None, LABELS, {"b", "c", "i"}, _days("2024-01-01", "2024-08-01")[::6]),
        (RUN_HISTORY, runs, None, {"r", "q"}, _days("2024-06-01", "2024-06-10")),
    ]
    for rows, decisions, labels, chosen, days in cases:
        whole = _history(rows, decisions=decisions, labels=labels)
        # When narrowed to some learners
        narrowed = whole.of_learners(sorted(chosen))
        # Then their KPIs are those of a history of their rows alone, every day
        own = None
        if decisions is not None:
            own = replace(
                decisions, inputs=decisions.inputs[decisions.inputs["customer_id"].isin(chosen)]
            )
        alone = _history(
            [row for row in rows if row[0] in chosen], decisions=own,
            labels=None if labels is None else [row for row in labels if row[0] in chosen],
            enrolled={key: day for key, day in ENROLLED.items() if key in chosen},
        )  # fmt: skip
        assert kpis_on_days(narrowed, days) == kpis_on_days(alone, days)
        assert kpis_on_days(narrowed, days) != kpis_on_days(whole, days)


def test_the_learners_chosen_are_the_same_whatever_sequence_names_them():
    # Given the whole history found once
    whole = _history(HISTORY)
    days = _days("2024-01-01", "2024-08-01")[::6]
    listed = kpis_on_days(whole.of_learners(["b", "c", "i"]), days)
    # When the same learners come as Arrow strings with repeats and an id nobody has, as a
    # generator, or narrowed twice
    arrow = pd.Series(["i", "c", "b", "c", "nobody"], dtype="string[pyarrow]")
    named = [
        whole.of_learners(arrow),
        whole.of_learners(key for key in "icb"),
        whole.of_learners(["a", "b", "c", "i"]).of_learners(["b", "c", "i", "e"]),
    ]
    # Then each gives the KPIs of the plain list, and only those learners are chosen
    for narrowed in named:
        assert kpis_on_days(narrowed, days) == listed
        assert set(narrowed.chosen) - {"nobody"} == {"b", "c", "i"}
    assert listed != kpis_on_days(whole, days)


def _ids(chosen: pd.Index | None) -> set[str]:
    return set() if chosen is None else set(chosen)  # None: history found again for them


def test_learners_narrowed_by_position_give_the_kpis_of_those_narrowed_by_id():
    # Given whole histories (labels; decision inputs; a log going back within a learner) and
    # learners named with repeats and an id nobody has
    back = [
        ("x", "2024-06-10", None, "ST_001", "R01", "2024-06-10 01:00"),
        ("x", "2024-06-05", "ST_001", "ST_004", "R04", "2024-06-11 01:00"),
        ("y", "2024-06-01", None, "ST_001", "R01", "2024-06-01 01:00"),
    ]
    runs, june = decision_days(RUN_INPUTS), date(2024, 6, 20)
    cases = [
        (_history(HISTORY), ["i", "c", "b", "c", "nobody"], _days("2024-01-01", "2024-08-01")[::6]),
        (_history(RUN_HISTORY, runs, None), ["q", "r"], _days("2024-06-01", "2024-06-10")),
        (_history(back, None, None, until=june), ["x"], _days("2024-06-01", "2024-06-20")),
    ]  # fmt: skip
    for whole, named, days in cases:
        # When narrowed by their positions in the history's ids
        positions = whole.positions_of(pd.Series(named, dtype="str"))
        by_position = whole.of_positions(positions)
        # Then the KPIs and the learners chosen are those narrowed by their ids
        by_id = whole.of_learners(named)
        assert kpis_on_days(by_position, days) == kpis_on_days(by_id, days)
        assert kpis_on_days(by_position, days) != kpis_on_days(whole, days)
        assert _ids(by_position.chosen) == _ids(by_id.chosen) - {"nobody"}
        assert (positions == -1).tolist() == [name == "nobody" for name in named]
    # And a history already narrowed is narrowed again by id (what both keep)
    whole = cases[0][0]
    twice = whole.of_learners(["a", "b"]).of_positions(whole.positions_of(pd.Index(["b", "c"])))
    assert list(twice.chosen) == ["b"]


def test_unique_ids_keep_the_first_of_each_id_in_order():
    # Given ids with repeats, as a list, Arrow strings, a numpy array and a set
    ids = ["b", "a", "b", "c", "a"]
    # When made unique
    found = [
        unique_ids(ids),
        unique_ids(pd.Series(ids, dtype="string[pyarrow]")),
        unique_ids(pd.Series(ids, dtype=object).to_numpy()),
    ]
    # Then each is the ids first seen first, as strings
    for index in found:
        assert index.tolist() == ["b", "a", "c"]
        assert index.dtype == "str"
    assert sorted(unique_ids({"x", "y"})) == ["x", "y"]
    assert unique_ids([]).empty


def test_a_log_whose_days_go_back_within_a_learner_is_measured_day_by_day():
    # Given x's second transition (by id) dated before the first, as a rerun of an earlier day
    # can record it
    history = [
        ("x", "2024-06-10", None, "ST_001", "R01", "2024-06-10 01:00"),
        ("x", "2024-06-05", "ST_001", "ST_004", "R04", "2024-06-11 01:00"),
        ("y", "2024-06-01", None, "ST_001", "R01", "2024-06-01 01:00"),
    ]
    found = _history(history, labels=None, until=date(2024, 6, 20))
    # Then the masks are not trusted: the day-by-day reference gives the KPIs
    assert not found.in_day_order
    days = _days("2024-06-01", "2024-06-20")
    assert kpis_on_days(found, days) == kpis_day_by_day(found, days)
    # On June 7 the log holds y (ST_001) and x's ST_004 move: 1 of 2 live learners active
    assert kpis_on_days(found, [date(2024, 6, 7)])[date(2024, 6, 7)][0].value == 50.0


def test_a_day_after_the_history_is_refused_and_no_day_gives_no_kpis():
    history = _history(HISTORY, until=date(2024, 6, 30))
    with pytest.raises(ValueError, match="after the KPI history's last day"):
        kpis_on_days(history, [date(2024, 6, 30) + timedelta(days=1)])
    assert (
        compute_kpis_on_days(
            transitions_frame(HISTORY),
            scores_frame(CONTROL_FLAGS),
            customers_frame(ENROLLED),
            days=[],
        )
        == {}
    )


@pytest.mark.parametrize("seed", range(3))
def test_the_scores_kept_are_those_of_the_learner_days_a_multiindex_finds(seed):
    from serving.app.kpi_days import _learner_days_in

    # given scores and transitions over overlapping learners and days (other resolutions)
    rng = np.random.default_rng(seed)
    learners = np.array([f"C{n:04d}" for n in range(400)])
    days = pd.date_range("2026-01-01", periods=30).to_numpy()

    def frame(rows: int, ids: np.ndarray, unit: str) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "customer_id": pd.array(rng.choice(ids, rows), dtype="str"),
                "as_of": pd.to_datetime(rng.choice(days, rows)).astype(f"datetime64[{unit}]"),
            }
        )

    scores, transitions = frame(3000, learners, "us"), frame(900, learners[150:], "ns")
    # when each score's learner-day is looked up among the transitions'
    found = _learner_days_in(scores, transitions)
    # then it is found exactly where the MultiIndex of the pairs finds it
    moved = pd.MultiIndex.from_frame(transitions.astype({"as_of": "datetime64[us]"}))
    expected = pd.MultiIndex.from_frame(scores).isin(moved)
    assert found.tolist() == expected.tolist() and 0 < found.sum() < len(scores)
    # and the transitions' learners given as codes into their distinct ids find the same
    codes, distinct = pd.factorize(transitions["customer_id"])
    score_codes = pd.Index(distinct).get_indexer(scores["customer_id"])
    coded = _learner_days_in(scores, transitions, (score_codes, codes))
    assert coded.tolist() == expected.tolist()


@pytest.mark.parametrize("shuffled", [False, True])
def test_the_coded_log_is_the_log_and_its_codes_name_each_rows_learner(shuffled):
    from serving.app.kpis import _log_until, coded_log_until

    # given an audit log of interleaved learners, in id order or not
    rng = np.random.default_rng(5)
    rows = 600
    log = pd.DataFrame(
        {
            "id": np.arange(rows),
            "customer_id": pd.array(rng.choice([f"C{n:03d}" for n in range(90)], rows), "str"),
            "as_of": pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(rows) // 20, "D"),
            "from_tag": pd.array(rng.choice(["ST_001", "ST_004", None], rows), "str"),
            "to_tag": pd.array(rng.choice(["ST_002", "ST_004", "ST_006"], rows), "str"),
            "rule_id": pd.array(rng.choice(["R01", None], rows), "str"),
            "actor": pd.array(rng.choice(["batch", "cs@x"], rows), "str"),
        }
    )
    if shuffled:
        log = log.sample(frac=1.0, random_state=1)
    until = pd.Timestamp("2026-01-20")
    # when it is cut at a day with its learners coded
    coded, codes, distinct = coded_log_until(log, until)
    # then it is the log known then in append order, each row with its learner's previous and
    # next transition (grouped by the ids themselves here), as _log_until gives it too
    expected = log[log["as_of"] <= until].sort_values("id").reset_index(drop=True)
    by_learner = expected.groupby("customer_id", sort=False)
    for column in ("as_of", "to_tag", "from_tag"):
        expected[f"previous_{column}"] = by_learner[column].shift(1)
    for column in ("to_tag", "actor", "as_of"):
        expected[f"next_{column}"] = by_learner[column].shift(-1)
    pd.testing.assert_frame_equal(coded, expected)
    pd.testing.assert_frame_equal(_log_until(log, until), expected)
    assert coded["id"].is_monotonic_increasing and len(coded) == (log["as_of"] <= until).sum()
    assert coded.loc[1:, "previous_as_of"].notna().any()
    # and each row's code names its learner among the distinct ids, in order of first sight
    assert distinct[codes].tolist() == coded["customer_id"].tolist()
    assert distinct.tolist() == list(dict.fromkeys(coded["customer_id"]))


@pytest.mark.parametrize(
    ("scores_days", "moved_days"),
    [
        ([], ["2026-01-02"]),
        (["2026-01-02", "2026-01-03"], []),
        (["2024-01-01", "2026-12-31", "2026-12-31"], ["2024-01-01", "2026-12-31"]),
        (["2024-01-01", "2026-12-31"], ["2026-12-31", "2024-01-01"]),
    ],
)
def test_learner_days_are_found_whatever_the_days_span_or_an_empty_side(scores_days, moved_days):
    from serving.app.kpi_days import _learner_days_in

    # given scores and transitions on days years apart, or none on one side
    def frame(days: list[str]) -> pd.DataFrame:
        ids = [f"C{n}" for n in range(len(days))]
        return pd.DataFrame(
            {"customer_id": pd.array(ids, dtype="str"), "as_of": pd.to_datetime(days)}
        )

    scores, transitions = frame(scores_days), frame(moved_days)
    # when looked up, then exactly the (learner, day) pairs the transitions hold are found
    moved = set(zip(transitions["customer_id"], transitions["as_of"], strict=True))
    expected = [pair in moved for pair in zip(scores["customer_id"], scores["as_of"], strict=True)]
    assert _learner_days_in(scores, transitions).tolist() == expected


@pytest.mark.parametrize("spread", [1, 10, 10_000])
def test_keys_are_found_alike_by_the_table_and_by_the_hash_set(spread):
    from serving.app.kpi_days import _found

    # given integer keys over a narrow range (numpy's table) or a wide one (a hash set)
    rng = np.random.default_rng(spread)
    wanted = rng.integers(0, 500, 400) * spread
    keys = np.concatenate([rng.integers(0, 500, 600) * spread, [-1, 500 * spread + 1]])
    # when each key is looked up, then exactly the wanted ones are found
    expected = [int(key) in set(wanted.tolist()) for key in keys]
    assert _found(keys, wanted).tolist() == expected and 0 < sum(expected) < len(keys)
    # and an empty side finds nothing
    assert not _found(keys, wanted[:0]).any() and len(_found(keys[:0], wanted)) == 0


@pytest.mark.parametrize("seed", range(3))
def test_risk_episodes_numbered_and_joined_by_codes_equal_those_by_the_ids(seed):
    from serving.app.kpis import _log_until, risk_episodes

    # given a log of learners wandering in and out of the risk tags, and some days' scores
    rng = np.random.default_rng(seed)
    rows, tags = 800, ["ST_001", "ST_002", "ST_004", "ST_005", "ST_006"]
    learners = rng.choice([f"C{n:03d}" for n in range(60)], rows)
    now: dict[str, str | None] = {}
    from_tags, to_tags = [], []
    for learner in learners:  # each move starts from the learner's tag (none at first)
        from_tags.append(now.get(learner))
        to_tags.append(rng.choice([tag for tag in tags if tag != from_tags[-1]]))
        now[learner] = to_tags[-1]
    moves = pd.DataFrame(
        {
            "id": np.arange(rows),
            "customer_id": pd.array(learners, "str"),
            "as_of": pd.Timestamp("2026-01-01") + pd.to_timedelta(np.arange(rows) // 25, "D"),
            "from_tag": pd.array(from_tags, "str"),
            "to_tag": pd.array(to_tags, "str"),
            "rule_id": pd.array(["R01"] * rows, "str"),
            "actor": pd.array(["batch"] * rows, "str"),
        }
    )
    log = _log_until(moves, pd.Timestamp("2026-12-31"))
    scores = log[["customer_id", "as_of"]].drop_duplicates().sample(frac=0.7, random_state=seed)
    scores = scores.assign(control=rng.random(len(scores)) < 0.3)
    # when the episodes are found by the text ids, and by codes of one learner numbering
    codes, distinct = pd.factorize(log["customer_id"])
    score_codes = pd.Index(distinct).get_indexer(scores["customer_id"])
    by_ids = risk_episodes(log, scores)
    by_codes = risk_episodes(log, scores, (codes, score_codes))
    # then they are the same episodes, exits and control flags, in the same order
    pd.testing.assert_frame_equal(by_codes, by_ids)
    assert by_ids["ended_on"].notna().any() and by_ids["control"].notna().any()
    assert by_ids["ended_on"].isna().any() and (by_ids["episode"] > 0).any()
    # and they are the episodes a walk through each learner's moves finds
    found = [
        (row.customer_id, row.as_of, row.ended_on, row.to_tag, row.control)
        for row in by_ids.itertuples()
    ]
    assert _plain(found) == _plain(_episodes_walked(log, scores))


def _plain(episodes: list[tuple]) -> list[tuple]:
    """Episodes as sorted text, every missing value (NaT, NA, NaN) the empty text."""
    return sorted(tuple("" if pd.isna(value) else str(value) for value in row) for row in episodes)


def _episodes_walked(log: pd.DataFrame, scores: pd.DataFrame) -> list[tuple]:
    """Each risk episode (learner, start, end, exit tag, control flag) found by walking the
    learners' moves one by one: entering ST_004/ST_005 opens one, leaving both closes it."""
    risk = {"ST_004", "ST_005"}
    flags = {(row.customer_id, row.as_of): row.control for row in scores.itertuples()}
    found, open_at = [], {}
    for row in log.itertuples():  # in append order
        was, now = row.from_tag in risk, row.to_tag in risk
        if not was and now:
            open_at.setdefault(row.customer_id, []).append(row.as_of)
        elif was and not now and open_at.get(row.customer_id):
            start = open_at[row.customer_id].pop(0)
            control = flags.get((row.customer_id, start))
            found.append((row.customer_id, start, row.as_of, row.to_tag, control))
    for learner, starts in open_at.items():
        found += [(learner, start, None, None, flags.get((learner, start))) for start in starts]
    return found
