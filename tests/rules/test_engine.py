"""Tests for rules.engine.decide: table-driven cases, properties, sort order and input contracts."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.codes import codes_of
from rules.columns import Columns
from rules.decisions import decision_order, frame_order
from rules.engine import decide
from rules.interventions import control_draw
from rules.loading import load_ruleset
from rules.ordered import keys_in_order, order_keys
from rules.schemas import (
    DAYS_KEPT,
    DECISION_COLUMNS,
    DecisionInputError,
    decision_schema,
    scored_schema,
    state_schema,
    validate_frame,
)
from tests.rules.casebook import (
    copy_packaged_rules,
    load_casebook,
    reorder_transitions,
    scored_frame,
    state_frame,
    with_casebook_points,
)

CASE_FILES = ("transitions.yaml", "lifecycle.yaml", "interventions.yaml")
BOOKS = {name: load_casebook(name) for name in CASE_FILES}
AS_OF = date(2025, 6, 1)


def _case_params() -> list:
    return [
        pytest.param(name, case, id=f"{name.removesuffix('.yaml')}: {case['name']}")
        for name, book in BOOKS.items()
        for case in book["cases"]
    ]


def _decided(ruleset, book: dict) -> pd.DataFrame:
    """A case file decided in one batch, indexed by customer id.

    Each test decides in its own body rather than reading a shared fixture: mutation testing
    credits a test only with the code it runs itself (``make mutate``).
    """
    decisions = decide(ruleset, state_frame(book), scored_frame(book), book["as_of"])
    return decisions.set_index("customer_id")


def _same(actual: object, expected: object) -> bool:
    if expected is None:
        return pd.isna(actual)
    if isinstance(expected, float):
        return actual == pytest.approx(expected)
    return actual == expected


@pytest.mark.parametrize(("file", "case"), _case_params())
def test_table_case(ruleset, file, case):
    # given the case's learner decided together with the rest of its file
    row = _decided(ruleset, BOOKS[file]).loc[case["customer_id"]]
    # then every expected column has the expected value
    wrong = {
        column: (row[column], expected)
        for column, expected in case["expect"].items()
        if not _same(row[column], expected)
    }
    assert not wrong, f"(actual, expected) per column: {wrong}"
    if "description_contains" in case:
        assert case["description_contains"] in row["description"]


PRECEDENCE = load_casebook("precedence.yaml")


@pytest.fixture(scope="module")
def reordered_ruleset(tmp_path_factory, known_features):
    """The packaged rules in precedence.yaml's other order."""
    rules_dir = copy_packaged_rules(tmp_path_factory.mktemp("reordered"))
    reorder_transitions(rules_dir, PRECEDENCE["rules_order"])
    reordered = with_casebook_points(load_ruleset(rules_dir, known_features=known_features))
    # the loader keeps file order: otherwise these cases would test the packaged order again
    assert [rule.id for rule in reordered.rules] == PRECEDENCE["rules_order"]
    return reordered


@pytest.mark.parametrize("case", PRECEDENCE["cases"], ids=[c["name"] for c in PRECEDENCE["cases"]])
def test_precedence_is_terminal_first_then_file_order_in_any_file(reordered_ruleset, case):
    # given a valid rules file with the churn rules last, and the case's learner
    row = _decided(reordered_ruleset, PRECEDENCE).loc[case["customer_id"]]
    # then the decision is the one precedence gives, not the one plain file order would give
    wrong = {
        column: (row[column], expected)
        for column, expected in case["expect"].items()
        if not _same(row[column], expected)
    }
    assert not wrong, f"(actual, expected) per column: {wrong}"


def test_the_tables_cover_every_rule_firing_and_not_firing(ruleset):
    # given every case of the three files
    cases = [case for book in BOOKS.values() for case in book["cases"]]
    # when collecting the rules each case expects to fire, and the edges it probes
    fired = {case["expect"].get("rule_id") for case in cases}
    edges = {case.get("edge_of") for case in cases}
    # then each packaged rule is seen on both sides of its thresholds
    rule_ids = {rule.id for rule in ruleset.rules}
    assert rule_ids - fired == set()
    assert rule_ids - {"R01"} - edges == set()  # R01's condition is always true


def test_the_tables_cover_every_synergy_row(ruleset):
    # given the synergy pairs the interventions cases claim to exercise
    claimed = {
        tuple(case["synergy"]) for case in BOOKS["interventions.yaml"]["cases"] if "synergy" in case
    }
    # then they are exactly the synergy rows of the packaged rules
    rows = {(row.product_tag, row.status_tag) for row in ruleset.interventions.synergy}
    assert claimed == rows


def test_each_learner_is_decided_as_if_alone(ruleset):
    # given the lifecycle cases decided in one batch, and each case decided on its own
    book = BOOKS["lifecycle.yaml"]
    batch = _decided(ruleset, book)
    for case in book["cases"]:
        alone = decide(
            ruleset, state_frame(book, [case]), scored_frame(book, [case]), book["as_of"]
        )
        # then the two decisions agree on every column
        pd.testing.assert_frame_equal(alone, batch.loc[[case["customer_id"]]].reset_index())


def test_no_rule_ever_moves_a_learner_into_st005(ruleset):
    # given every decision of every case file
    every = pd.concat([_decided(ruleset, book) for book in BOOKS.values()])
    # when looking at the learners who end in ST_005
    in_st005 = every[every["to_tag"] == "ST_005"]
    # then all of them were already there and did not move
    assert len(in_st005) > 0
    assert (in_st005["from_tag"] == "ST_005").all()
    assert not in_st005["changed"].any()


def test_decisions_have_the_documented_columns_and_one_row_per_learner(ruleset):
    for book in BOOKS.values():
        decisions = _decided(ruleset, book)
        assert [decisions.index.name, *decisions.columns] == list(DECISION_COLUMNS)
        assert len(decisions) == len(book["cases"])
        assert (decisions["as_of"] == pd.Timestamp(book["as_of"])).all()
        # priorities compare in their declared order: P1 < P2 < ... (a plain categorical would not)
        assert decisions["priority"].cat.ordered
        assert list(decisions["priority"].cat.categories) == ["P1", "P2", "P3", "P4"]


def test_decisions_are_sorted_by_priority_then_value_at_risk_then_customer_id(ruleset):
    # given two Pro learners turning P1 and two P4 learners tied (mrr 100 unless said); value at
    # risk is mrr x (E(0.08) - E(p)), E(p) = (1 - (1 - p)^24) / p the months over the 24-month cap
    # and 0.08 the packaged healthy p_churn
    book = BOOKS["interventions.yaml"]
    cases = [
        {"customer_id": "z-tied", "state": {"tag": "ST_003"}, "features": {"p_churn": 0.1}},
        {
            "customer_id": "b-low",
            "state": {"tag": "ST_001"},
            "features": {"p_churn": 0.9, "mrr": 60.0},
        },
        {"customer_id": "y-high", "state": {"tag": "ST_001"}, "features": {"p_churn": 0.7}},
        {"customer_id": "a-tied", "state": {"tag": "ST_003"}, "features": {"p_churn": 0.1}},
    ]
    # when
    decisions = decide(ruleset, state_frame(book, cases), scored_frame(book, cases), AS_OF)
    # then P1 comes first, the higher value first within it, and ties by customer id
    assert decisions["customer_id"].tolist() == ["y-high", "b-low", "a-tied", "z-tied"]
    assert decisions["priority"].tolist() == ["P1", "P1", "P4", "P4"]
    months = lambda p: (1.0 - (1.0 - p) ** 24) / p  # noqa: E731
    at_risk = lambda p: months(0.08) - months(p)  # noqa: E731
    tied = 100.0 * at_risk(0.1)  # 160.80
    expected = [100.0 * at_risk(0.7), 60.0 * at_risk(0.9), tied, tied]  # 938.2, 581.9
    assert decisions["value_at_risk"].tolist() == pytest.approx(expected)


def test_decision_order_breaks_ties_by_id_and_puts_nan_values_and_no_priority_last():
    # given P2, P1 without value, P1 at 3 (id c), no priority, P1 at 3 (id a), all at p 0.5
    priority_code = np.array([1, 0, 0, -1, 0])
    value = np.array([5.0, np.nan, 3.0, 1.0, 3.0])
    p_churn = np.full(5, 0.5)
    ids = ["e", "d", "c", "b", "a"]
    # when
    order = decision_order(priority_code, value, p_churn, ids)
    # then P1 at 3 by id (a, c), P1 without value, P2, and the row without priority
    assert order.tolist() == [4, 2, 1, 0, 3]


def test_decision_order_puts_the_likelier_to_leave_first_among_equal_values():
    # given three P1 learners worth the same (saturated lifetime value) at p 0.8, 0.95, NaN
    # and one worth more at p 0.4
    priority_code = np.zeros(4, dtype=np.int64)
    value = np.array([100.0, 100.0, 100.0, 150.0])
    p_churn = np.array([0.8, 0.95, np.nan, 0.4])
    ids = ["a", "b", "c", "d"]
    # when
    order = decision_order(priority_code, value, p_churn, ids)
    # then value first, then p_churn descending with no score last, not the ids
    assert order.tolist() == [3, 1, 0, 2]


PRIORITIES = ("P1", "P2", "P3")
_ROW = st.tuples(
    st.sampled_from(["P1", "P2", "P3", None]),
    st.sampled_from([1.0, 3.0, float("nan")]),
    st.sampled_from([0.2, 0.5, float("nan")]),
)


@given(st.lists(_ROW, max_size=8), st.booleans(), st.randoms(use_true_random=False))
def test_a_frame_is_in_order_exactly_when_its_order_is_its_own(rows, ordered, random):
    # given decisions of distinct learners with ties on every key, in frame order or shuffled
    frame = pd.DataFrame(
        {
            "customer_id": pd.Series([f"L{i}" for i in random.sample(range(50), len(rows))]),
            "priority": pd.Categorical([row[0] for row in rows], ["P1", "P2", "P3"]),
            "value_at_risk": [row[1] for row in rows],
            "p_churn": [row[2] for row in rows],
        }
    )
    if ordered:
        frame = frame.take(frame_order(frame, PRIORITIES)).reset_index(drop=True)
    # when checked on neighbours, then the answer is whether sorting it would move nothing
    expected = bool((frame_order(frame, PRIORITIES) == np.arange(len(frame))).all())
    priority = codes_of(frame["priority"], PRIORITIES)
    keys = order_keys(priority, frame["value_at_risk"].to_numpy(), frame["p_churn"].to_numpy())
    in_order = keys_in_order(keys, frame["customer_id"].array)
    assert in_order is expected
    assert in_order or not ordered


def test_control_flag_is_the_hash_draw_of_customer_and_action(ruleset):
    # given 400 new learners (all get the ST_001 default action for PT_002)
    book = BOOKS["transitions.yaml"]
    cases = [{"customer_id": f"learner-{i}"} for i in range(400)]
    # when
    decisions = decide(ruleset, state_frame(book, cases), scored_frame(book, cases), AS_OF)
    # then the flag is the sha256 draw of (customer_id, action) against the 10% share
    action = decisions["action"].iloc[0]
    expected = control_draw(decisions["customer_id"].tolist(), action) < 0.1
    assert (decisions["control"].to_numpy() == expected).all()
    assert 10 < decisions["control"].sum() < 80  # some, not all: the share is applied


def test_an_empty_batch_gives_an_empty_frame_with_the_columns(ruleset):
    book = BOOKS["transitions.yaml"]
    scored = scored_frame(book).iloc[0:0]
    decisions = decide(ruleset, state_frame(book, []), scored, AS_OF)
    assert decisions.empty
    assert list(decisions.columns) == list(DECISION_COLUMNS)


def test_state_rows_of_learners_not_scored_are_ignored(ruleset):
    # given a state with a learner who is not in today's batch
    book = BOOKS["transitions.yaml"]
    cases = [{"customer_id": "scored", "state": {"tag": "ST_002"}}]
    state = pd.concat(
        [
            state_frame(book, cases),
            state_frame(book, [{"customer_id": "absent", "state": {"tag": "ST_004"}}]),
        ]
    )
    # when
    decisions = decide(ruleset, state, scored_frame(book, cases), AS_OF)
    # then only the scored learner is decided
    assert decisions["customer_id"].tolist() == ["scored"]
    assert decisions["to_tag"].tolist() == ["ST_002"]


# --- order independence ----------------------------------------------------------------------

TAGS = ["ST_001", "ST_002", "ST_003", "ST_004", "ST_005", "ST_006"]


def _random_frames(seed: int, rows: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Learners with values near every threshold (and nulls), about half of them known."""
    rng = np.random.default_rng(seed)

    def pick(*values: float) -> np.ndarray:
        return rng.choice(np.array(values, dtype=float), rows)

    scored = pd.DataFrame(
        {
            "customer_id": [f"r{seed}-{i}" for i in range(rows)],
            "product_tag": rng.choice(["PT_001", "PT_002", "PT_003"], rows),
            "mrr": pick(np.nan, 0.0, 50.0, 50.0),
            "p_churn": pick(np.nan, 0.1, 0.3, 0.4, 0.6, 0.6, 0.9),
            "confidence": pick(np.nan, 0.29, 0.5, 0.9),
            "risk_indicator_count": pick(0, 1, 2, 4, 4),
            "risk_inactive_14d": rng.random(rows) < 0.2,
            "days_since_last_event": pick(1.0, 29.9, 30.0),
            "cancellations_30d": pick(0, 0, 0, 1),
            "active_days_7d": pick(0, 2, 3, 7),
            "milestones_total": pick(np.nan, 1, 2, 6),
            "milestones_30d": pick(0, 1),
            "lessons_total": pick(0, 8, 30),
            "lessons_30d": pick(0, 3),
            "tenure_days": pick(10.0, 28.0),
        }
    )
    known = rng.random(rows) < 0.6
    tags = rng.choice(TAGS, rows)
    overridden = rng.random(rows) < 0.2
    expires = rng.choice([np.nan, -1.0, 0.0, 3.0], rows)
    state = pd.DataFrame(
        {
            "customer_id": scored["customer_id"],
            "tag": tags,
            "since": [
                pd.Timestamp(AS_OF - timedelta(days=int(d))) for d in rng.integers(0, 20, rows)
            ],
            "override_tag": np.where(overridden, tags, None),
            "override_expires": [
                pd.NaT if np.isnan(e) else pd.Timestamp(AS_OF + timedelta(days=e)) for e in expires
            ],
        }
    )[known]
    return scored, state


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rows=st.integers(1, 30))
def test_shuffling_rows_does_not_change_the_decisions(ruleset, seed, rows):
    # given random learners near every threshold
    scored, state = _random_frames(seed, rows)
    rng = np.random.default_rng(seed + 1)
    # when the same frames are decided with their rows shuffled
    first = decide(ruleset, state, scored, AS_OF)
    again = decide(
        ruleset,
        state.sample(frac=1.0, random_state=rng),
        scored.sample(frac=1.0, random_state=rng).set_axis(np.arange(rows)[::-1]),
        AS_OF,
    )
    # then the decisions are identical, row for row
    pd.testing.assert_frame_equal(first, again)
    assert len(first) == rows


# --- input contracts ----------------------------------------------------------------------------


def _one_learner() -> tuple[pd.DataFrame, pd.DataFrame]:
    book = BOOKS["transitions.yaml"]
    cases = [{"customer_id": "a", "state": {"tag": "ST_001"}}, {"customer_id": "b"}]
    return scored_frame(book, cases), state_frame(book, cases)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s, t: (s.drop(columns="milestones_total"), t),
            "missing column(s) ['milestones_total']",
        ),
        (lambda s, t: (s.assign(p_churn=[1.5, 0.2]), t), "column 'p_churn' fails in_range"),
        (
            lambda s, t: (s.assign(customer_id=["a", "a"]), t),
            "column 'customer_id' fails field_uniqueness",
        ),
        (lambda s, t: (s.assign(product_tag=["PT_009", "PT_001"]), t), "PT_009"),
        (
            lambda s, t: (s.assign(mrr=[-1.0, 3.0]), t),
            "column 'mrr' fails greater_than_or_equal_to",
        ),
        (lambda s, t: (s, t.assign(tag=["ST_042"])), "state: column 'tag' fails isin"),
        (
            lambda s, t: (s, t.assign(since=[pd.Timestamp("2025-06-02")])),
            "since must not be after as_of",
        ),
        (
            lambda s, t: (s, t.assign(override_tag=["ST_005"])),
            "1 rows have an active override whose override_tag is not their tag",
        ),
    ],
    ids=[
        "missing feature",
        "p_churn > 1",
        "duplicate id",
        "unknown product",
        "negative mrr",
        "unknown tag",
        "since after as_of",
        "override disagrees with tag",
    ],
)
@pytest.mark.parametrize("as_columns", [False, True], ids=["frame", "columns"])
def test_a_broken_input_frame_is_refused_with_a_clear_message(ruleset, edit, message, as_columns):
    # given a valid batch, broken in one way, as a frame or as its columns (checked in place)
    scored, state = edit(*_one_learner())
    # when / then
    with pytest.raises(DecisionInputError) as error:
        decide(ruleset, state, Columns.of(scored) if as_columns else scored, AS_OF)
    assert message in str(error.value)


def test_columns_checked_in_place_leave_the_callers_arrays_and_keep_only_the_schemas(ruleset):
    # given a learner's columns with an extra column and counts the contract coerces to floats
    scored, state = _one_learner()
    scored = scored.assign(sessions_7d=[3, 4], milestones_total=pd.array([2, None], "Int64"))
    columns = Columns.of(scored)
    before = {name: columns.array(name) for name in columns.names()}
    # when decided from the columns and from the frame
    from_columns = decide(ruleset, state, columns, AS_OF)
    from_frame = decide(ruleset, state, scored, AS_OF)
    # then the decisions agree, and the caller's columns are the same arrays, uncoerced
    pd.testing.assert_frame_equal(from_columns, from_frame)
    assert all(columns.array(name) is array for name, array in before.items())
    assert columns.array("milestones_total").dtype == "Int64"


def test_a_frame_validated_in_place_is_the_same_frame_and_still_refused_when_broken(ruleset):
    # given the decisions the engine made, and a copy broken in one column
    scored, state = _one_learner()
    decisions = decide(ruleset, state, scored, AS_OF, check_output=False)
    broken = decisions.assign(p_churn=[1.5, 0.2])
    schema = decision_schema(ruleset)
    # when validated in place, then the frame itself comes back (no copy) ...
    assert validate_frame(schema, decisions, inplace=True) is decisions
    assert validate_frame(schema, decisions) is not decisions
    # ... and the broken one is refused as on a copy
    with pytest.raises(DecisionInputError, match="column 'p_churn' fails in_range"):
        validate_frame(schema, broken, inplace=True)


def test_a_filtering_schema_is_not_validated_in_place(ruleset):
    # given the scored schema, which drops the columns it does not name
    scored, _ = _one_learner()
    # when / then: pandera would not filter the frame in place, so it is refused outright
    with pytest.raises(ValueError, match="cannot validate in place"):
        validate_frame(scored_schema(ruleset), scored, inplace=True)
    unfiltered = scored_schema(ruleset, filtered=False)
    assert unfiltered is not scored_schema(ruleset)
    assert unfiltered.columns.keys() == scored_schema(ruleset).columns.keys()


def test_extra_columns_are_ignored_and_nullable_integers_are_accepted(ruleset):
    # given the feature frame as the features package would hand it over
    scored, state = _one_learner()
    scored = scored.assign(
        sessions_7d=[3, 4],
        milestones_total=pd.array([2, None], dtype="Int64"),
        milestones_30d=[1, 0],
    )
    # when
    decisions = decide(ruleset, state, scored, AS_OF).set_index("customer_id")
    # then the known learner progresses (R02) and the new one with a null count does not (R01)
    assert decisions.loc["a", "rule_id"] == "R02"
    assert decisions.loc["b", "rule_id"] == "R01"
    assert "sessions_7d" not in decisions.columns


def test_tz_aware_state_timestamps_and_a_datetime_as_of_are_read_in_utc_days(ruleset):
    # given a learner who entered ST_001 at 00:30 Paris time on 26 May (22:30 UTC on 25 May), as
    # a timestamptz column comes back from PostgreSQL, and an override that expired in UTC terms
    book = BOOKS["lifecycle.yaml"]
    cases = [
        {"customer_id": "a", "state": {"tag": "ST_001"}, "features": {"risk_indicator_count": 5}}
    ]
    state = state_frame(book, cases).assign(
        since=pd.Series(pd.to_datetime(["2025-05-26 00:30"])).dt.tz_localize("Europe/Paris"),
        override_tag=["ST_001"],
        override_expires=pd.Series(pd.to_datetime(["2025-06-01 01:00"])).dt.tz_localize(
            "Europe/Paris"
        ),
    )
    # when deciding on 1 June given as a datetime in the afternoon
    decisions = decide(ruleset, state, scored_frame(book, cases), datetime(2025, 6, 1, 15, 0))
    # then the learner has been in ST_001 for 7 days (cooldown over), the override (23:00 UTC on
    # 31 May) has expired, and the decision is dated 1 June
    assert decisions.loc[0, "rule_id"] == "R04"
    assert decisions.loc[0, "as_of"] == pd.Timestamp("2025-06-01")


@pytest.mark.parametrize("name", CASE_FILES)
def test_unchecked_inputs_of_the_contracts_dtypes_decide_as_checked_ones(ruleset, name):
    # given a case file's frames with the features package's dtypes, which the contract coerces
    # to floats: a flag as booleans, counts as integers and nullable integers (one null)
    book = BOOKS[name]
    scored = scored_frame(book)
    assert scored["risk_inactive_14d"].dtype == bool
    for column in ("milestones_total", "lessons_30d"):
        scored[column] = pd.array(scored[column].round(), dtype="Int64")
    scored.loc[scored.index[0], "milestones_total"] = pd.NA
    # when decided with and without the input checks
    checked = decide(ruleset, state_frame(book), scored, book["as_of"])
    unchecked = decide(ruleset, state_frame(book), scored, book["as_of"], check_inputs=False)
    # then the decisions are the same frame
    pd.testing.assert_frame_equal(unchecked, checked)


@pytest.mark.parametrize("check_inputs", [True, False], ids=["checked", "unchecked"])
@pytest.mark.parametrize("name", CASE_FILES)
def test_a_frames_columns_decide_as_the_frame_does(ruleset, name, check_inputs):
    # given a case file's scored frame, and the same frame's columns taken out once
    book = BOOKS[name]
    scored = scored_frame(book)
    # when each is decided, with or without the input checks
    from_frame = decide(
        ruleset, state_frame(book), scored, book["as_of"], check_inputs=check_inputs
    )
    from_columns = decide(
        ruleset, state_frame(book), Columns.of(scored), book["as_of"], check_inputs=check_inputs
    )
    # then the decisions are the same frame
    pd.testing.assert_frame_equal(from_columns, from_frame)


def test_unchecked_inputs_still_refuse_an_override_that_disagrees_and_a_missing_column(ruleset):
    # given one learner's frames broken in ways the engine itself depends on
    scored, state = _one_learner()
    # when / then the override check and a missing column still raise without the input checks
    with pytest.raises(DecisionInputError, match="override_tag is not their tag"):
        decide(ruleset, state.assign(override_tag=["ST_005"]), scored, AS_OF, check_inputs=False)
    with pytest.raises(DecisionInputError, match=r"missing column\(s\) \['milestones_total'\]"):
        decide(ruleset, state, scored.drop(columns="milestones_total"), AS_OF, check_inputs=False)


def test_schemas_are_built_once_per_ruleset_and_day(ruleset, known_features):
    # given the packaged rules, and the same rules loaded again (another, equal object)
    again = with_casebook_points(load_ruleset(known_features=known_features))
    day, next_day = pd.Timestamp(AS_OF), pd.Timestamp(AS_OF + timedelta(days=1))
    # when the engine's schemas are asked for twice
    # then each is built once for a ruleset (and a day), and apart for another object or day
    assert scored_schema(ruleset, ("a",)) is scored_schema(ruleset, ["a"])
    assert scored_schema(ruleset) is not scored_schema(ruleset, ("a",))
    assert decision_schema(ruleset) is decision_schema(ruleset)
    assert decision_schema(again) is not decision_schema(ruleset)
    assert state_schema(ruleset, day) is state_schema(ruleset, day)
    assert state_schema(ruleset, next_day) is not state_schema(ruleset, day)


def test_the_state_schema_of_a_day_checks_that_day_after_others_were_built(ruleset):
    # given the state schemas of more days than are kept, the first day's dropped
    days = [pd.Timestamp(AS_OF + timedelta(days=offset)) for offset in range(DAYS_KEPT + 2)]
    first = state_schema(ruleset, days[0])
    for day in days[1:]:
        state_schema(ruleset, day)
    scored, state = _one_learner()
    since_second_day = state.assign(since=[days[1]])
    # when a state entered on the second day is decided on the first and on the second
    # then the first day's schema, built anew, refuses it and the second's accepts it
    assert state_schema(ruleset, days[0]) is not first
    with pytest.raises(DecisionInputError, match="since must not be after as_of"):
        decide(ruleset, since_second_day, scored, days[0].date())
    assert len(decide(ruleset, since_second_day, scored, days[1].date())) == 2


def test_unresolved_operating_points_are_refused_with_model_scores(known_features):
    # given the packaged rules as loaded, their @early_warning and @recovered not resolved
    raw = load_ruleset(known_features=known_features)
    book = BOOKS["transitions.yaml"]

    # when / then learners with model scores are refused, naming the rule and the point
    with pytest.raises(ValueError, match="rule R05 names the operating point '@early_warning'"):
        decide(raw, state_frame(book), scored_frame(book), book["as_of"])


def test_rules_only_decides_with_unresolved_operating_points_as_with_any_threshold(
    ruleset, known_features
):
    # given the transitions casebook without model scores (rules-only)
    raw = load_ruleset(known_features=known_features)
    book = BOOKS["transitions.yaml"]
    scored = scored_frame(book).assign(p_churn=np.nan, p_low=np.nan, p_high=np.nan)
    scored = scored.assign(confidence=np.nan)

    # when decided by the unresolved and by the resolved rules
    unresolved = decide(raw, state_frame(book), scored, book["as_of"])
    resolved = decide(ruleset, state_frame(book), scored, book["as_of"])

    # then the decisions are the same: a model leaf never fires without a score
    pd.testing.assert_frame_equal(unresolved, resolved)
    assert "R05" not in set(unresolved["rule_id"].dropna())
