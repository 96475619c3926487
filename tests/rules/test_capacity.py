"""Tests for rules.capacity: the day's call list is cut to the capacity, by value at risk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from rules.capacity import CUT_COLUMNS, cut_to_capacity, over_capacity_rows, rows_set
from rules.engine import decide
from rules.interventions import control_draw
from rules.loading import load_ruleset
from tests.rules.casebook import load_casebook, scored_frame, state_frame, with_casebook_points

AUTOMATED_RETENTION = "automated retention campaign - emails and in-app messages"


def _with_interventions(rules_copy, known_features, **changes):
    """The packaged rules with top-level keys of interventions.yaml replaced."""
    path = rules_copy / "interventions.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key, value in changes.items():
        if key == "capacity" and value is None:
            del document["capacity"]
        elif key == "capacity":
            document["capacity"]["personal_outreach_per_day"] = value
        else:
            document[key] = value
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return with_casebook_points(load_ruleset(rules_copy, known_features=known_features))


def _declining_day(rows: list[tuple[str, float]]) -> tuple[pd.DataFrame, pd.DataFrame, object]:
    """One learner per (product_tag, mrr), each moving from ST_001 to ST_004 (p_churn 0.8)."""
    book = load_casebook("interventions.yaml")
    book["cases"] = [
        {
            "customer_id": f"L{index:02d}",
            "features": {"product_tag": product, "mrr": mrr, "p_churn": 0.8, "confidence": 0.9},
            "state": {"tag": "ST_001"},
        }
        for index, (product, mrr) in enumerate(rows)
    ]
    return scored_frame(book), state_frame(book), book["as_of"]


# Pro at risk is P1 (synergy), Enterprise at risk P1 (IV_01), Freemium at risk P2 (default).
DAY = [
    ("PT_001", 40.0),  # L00 P1, value 32
    ("PT_002", 900.0),  # L01 P1, value 720
    ("PT_001", 90.0),  # L02 P1, value 72
    ("PT_003", 0.0),  # L03 P2, value 4 (tier weight 5)
    ("PT_002", 300.0),  # L04 P1, value 240
    ("PT_001", 60.0),  # L05 P1, value 48
    ("PT_003", 0.0),  # L06 P2, value 4
]


def test_the_cut_keeps_the_top_value_at_risk_and_moves_the_rest_to_automated_outreach(
    rules_copy, known_features
):
    # given a capacity of 3 calls, no control group, and 5 P1 + 2 P2 learners at risk
    ruleset = _with_interventions(rules_copy, known_features, capacity=3, control_share=0.0)
    scored, state, as_of = _declining_day(DAY)
    decided = decide(ruleset, state, scored, as_of)
    assert (decided["priority"].astype(str) == "P1").sum() == 5
    # when the day is cut to capacity
    cut = cut_to_capacity(ruleset, decided).set_index("customer_id")
    # then the three P1 learners with the most value at risk keep their priority and action
    kept = cut[~cut["over_capacity"]]
    assert sorted(kept.index) == ["L01", "L02", "L04"]
    assert set(kept["priority"].astype(str)) == {"P1"}
    # and the other four (two P1, both P2) move to P3 with the automated action of ST_004
    over = cut[cut["over_capacity"]]
    assert sorted(over.index) == ["L00", "L03", "L05", "L06"]
    assert set(over["priority"].astype(str)) == {"P3"}
    assert set(over["action"].astype(str)) == {AUTOMATED_RETENTION}
    # and the frame is still in decision order: P1, then P3 by value at risk
    assert list(cut.index) == ["L01", "L04", "L02", "L05", "L00", "L03", "L06"]


def test_without_a_capacity_nothing_is_cut(rules_copy, known_features):
    ruleset = _with_interventions(rules_copy, known_features, capacity=None)
    scored, state, as_of = _declining_day(DAY)
    cut = cut_to_capacity(ruleset, decide(ruleset, state, scored, as_of))
    assert not cut["over_capacity"].any()
    assert (cut["priority"].astype(str) == "P1").sum() == 5


def test_a_capacity_larger_than_the_day_cuts_nobody(ruleset):
    scored, state, as_of = _declining_day(DAY)
    decided = decide(ruleset, state, scored, as_of)
    cut = cut_to_capacity(ruleset, decided)
    assert not cut["over_capacity"].any()
    pd.testing.assert_frame_equal(cut.drop(columns="over_capacity"), decided)


def _urgent_frame(priorities: str, control: str) -> pd.DataFrame:
    """Decisions in call-list order, value at risk falling: one letter per row."""
    rows = len(priorities)
    return pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(rows)],
            "priority": pd.Categorical([f"P{p}" for p in priorities], ["P1", "P2", "P3", "P4"]),
            "value_at_risk": np.arange(rows, 0, -1, dtype=float),
            "p_churn": np.full(rows, 0.5),
            "control": [flag == "c" for flag in control],
        }
    )


@pytest.mark.parametrize(
    ("capacity", "priorities", "control", "expected_over"),
    [
        # a control learner takes no call: it keeps its priority while a call is still free
        (1, "112223", "c.c...", "..TTT."),
        (2, "112223", "c.c...", "....T."),
        # past the last free call, a control learner is over capacity too
        (1, "1112", ".c.c", ".TTT"),
        # capacity 0: every personal priority goes; P3/P4 are never touched
        (0, "1234", "....", "TT.."),
    ],
)
def test_a_learner_keeps_a_personal_priority_while_a_call_is_free(
    ruleset, capacity, priorities, control, expected_over
):
    decisions = _urgent_frame(priorities, control)
    limited = ruleset.model_copy(
        update={
            "interventions": ruleset.interventions.model_copy(
                update={
                    "capacity": ruleset.interventions.capacity.model_copy(
                        update={"personal_outreach_per_day": capacity}
                    )
                }
            )
        }
    )
    over = over_capacity_rows(limited, decisions)
    assert "".join("T" if flag else "." for flag in over) == expected_over
    # and the learners still called never exceed the capacity
    called = ~over & decisions["priority"].isin(["P1", "P2"]) & ~decisions["control"]
    assert called.sum() <= capacity
    # and the cut does not depend on the row order
    shuffled = decisions.sample(frac=1.0, random_state=3)
    assert np.array_equal(over_capacity_rows(limited, shuffled), over[shuffled.index.to_numpy()])


def test_a_moved_learner_is_drawn_afresh_for_the_control_group_of_the_automated_action(
    rules_copy, known_features
):
    # given a control share of one half and a capacity of one call
    ruleset = _with_interventions(rules_copy, known_features, capacity=1, control_share=0.5)
    scored, state, as_of = _declining_day(DAY)
    # when
    cut = cut_to_capacity(ruleset, decide(ruleset, state, scored, as_of))
    # then each moved learner's control flag is the draw for the automated action
    over = cut[cut["over_capacity"]]
    assert len(over) >= 1
    expected = control_draw(over["customer_id"].tolist(), AUTOMATED_RETENTION) < 0.5
    assert over["control"].tolist() == expected.tolist()
    called = cut[cut["priority"].isin(["P1", "P2"]) & ~cut["control"]]
    assert len(called) == 1


def test_the_overflow_takes_the_campaign_of_its_automated_priority(tmp_path, known_features):
    from tests.rules.test_campaigns import copy_rules_with_campaigns

    # given the packaged rules and campaigns with 3 calls a day and no control group
    rules_dir = copy_rules_with_campaigns(tmp_path / "rules")
    ruleset = _with_interventions(rules_dir, known_features, capacity=3, control_share=0.0)
    scored, state, as_of = _declining_day(DAY)
    decided = decide(ruleset, state, scored, as_of).set_index("customer_id")
    # before the cut every Pro learner at risk is P1: the synergy's CSM intervention (CP_05)
    assert set(decided.loc[["L00", "L02", "L05"], "campaign_id"]) == {"CP_05"}
    products = scored.set_index("customer_id")["product_tag"]
    cut = cut_to_capacity(ruleset, decided.reset_index(), product_tags=products)
    cut = cut.set_index("customer_id")
    # then the called keep theirs; the overflow (now P3, moved into ST_004 today) gets the
    # automated early warning of the move (CP_13, before the P3 retention CP_18 in file order)
    assert cut.loc["L02", "campaign_id"] == "CP_05" and cut.loc["L01", "campaign_id"] == "CP_06"
    assert set(cut.loc[["L00", "L05", "L03", "L06"], "campaign_id"]) == {"CP_13"}
    assert set(cut.loc[["L00", "L05"], "channel"]) == {"email"}
    # and without the products, a product-specific trigger cannot match the overflow
    blind = cut_to_capacity(ruleset, decided.reset_index()).set_index("customer_id")
    assert "CP_05" not in set(blind.loc[["L00", "L05"], "campaign_id"])


@pytest.mark.parametrize("dtype", [object, "string[pyarrow]", "category"])
@pytest.mark.parametrize("id_dtype", [object, "string[pyarrow]"])
def test_the_overflow_products_are_those_series_map_finds(dtype, id_dtype):
    from rules.capacity import _by_learner

    # given overflow rows (one learner without a product entry, one with a null product) and
    # product tiers indexed by customer_id in another order
    rows = pd.DataFrame({"customer_id": pd.array(["b", "z", "a", "c"], dtype=id_dtype)})
    tiers = pd.array(["PT_001", "PT_002", None, "PT_003"], dtype=dtype)
    products = pd.Series(tiers, index=pd.Index(["a", "b", "c", "d"], dtype=id_dtype))
    # when looked up, then each row gets what the map of ids gives, None where it has none
    reference = rows["customer_id"].map(products).astype(object).where(lambda s: s.notna(), None)
    found = _by_learner(rows, products)
    assert list(found) == list(reference) == ["PT_002", None, "PT_001", None]
    assert _by_learner(rows.iloc[:0], products).tolist() == []


def _campaign_day(tmp_path, known_features, capacity: int):
    """The campaign rules with ``capacity`` calls and a control share of a half, on ``DAY``."""
    from tests.rules.test_campaigns import copy_rules_with_campaigns

    rules_dir = copy_rules_with_campaigns(tmp_path / "rules")
    ruleset = _with_interventions(rules_dir, known_features, capacity=capacity, control_share=0.5)
    scored, state, as_of = _declining_day(DAY)
    products = scored.set_index("customer_id")["product_tag"]
    return ruleset, decide(ruleset, state, scored, as_of), products


def test_the_cut_rewrites_only_its_cut_columns(tmp_path, known_features):
    # given a day whose cut moves learners (campaigns on, so every cut column is there)
    ruleset, decided, products = _campaign_day(tmp_path, known_features, capacity=1)
    # when it is cut
    cut = cut_to_capacity(ruleset, decided, product_tags=products).set_index("customer_id")
    before = decided.set_index("customer_id").loc[cut.index]
    # then the columns whose values changed are CUT_COLUMNS, and no other
    changed = {
        name
        for name in before.columns
        if not before[name].astype(object).equals(cut[name].astype(object))
    }
    assert cut["over_capacity"].sum() >= 4
    assert {"priority", "action", "campaign_id"} <= changed <= set(CUT_COLUMNS)


def test_an_earlier_cuts_overflow_is_taken_as_drawing_it_again_gives(tmp_path, known_features):
    # given a day cut once (capacity 1: five learners moved), and that cut's overflow rows
    ruleset, decided, products = _campaign_day(tmp_path, known_features, capacity=1)
    first = cut_to_capacity(ruleset, decided, product_tags=products)
    moved = first.loc[first["over_capacity"], ["customer_id", *CUT_COLUMNS]]
    # when the same decisions are cut again with a capacity of 2, taking the first overflow
    wider = _with_interventions(tmp_path / "rules", known_features, capacity=2, control_share=0.5)
    drawn = cut_to_capacity(wider, decided, product_tags=products)
    taken = cut_to_capacity(wider, decided, product_tags=products, moved_before=moved)
    # then the result is the one drawn afresh, although one learner moved before is called now
    pd.testing.assert_frame_equal(taken, drawn)
    called_now = set(moved["customer_id"]) - set(drawn.loc[drawn["over_capacity"], "customer_id"])
    assert len(called_now) == 1
    # and the overflow values are taken, not drawn: a marked value in them comes through
    marked = moved.assign(channel=moved["channel"].cat.add_categories(["marked"]))
    marked["channel"] = pd.Categorical(["marked"] * len(marked), dtype=marked["channel"].dtype)
    with pytest.raises(TypeError):  # not one of the decisions' channels: refused, not dropped
        cut_to_capacity(wider, decided, product_tags=products, moved_before=marked)


@pytest.mark.parametrize(
    "kind", ["category", "no categories", "category into object", "bool", "str"]
)
def test_rows_set_equals_iloc_setitem(kind):
    # given a column and values for two of its rows (a null among them), of several dtypes
    base = {"category": ["a", "b", None, "c"], "bool": [True, False, True, False]}
    values = {"category": ["c", None], "bool": [False, True]}
    name = "bool" if kind == "bool" else "category"
    dtype = {"category": pd.CategoricalDtype(["a", "b", "c", "x"]), "bool": bool}
    column = pd.Series(base[name], dtype=dtype.get(kind, "str" if kind == "str" else None),
                       name="col")  # fmt: skip
    if kind in ("category", "no categories"):
        column = column.astype(dtype["category"])
        kept = ["c", "b"] if kind == "category" else []  # (an empty one: every value null)
        new = pd.Series(values[name] if kept else [None, None], dtype=pd.CategoricalDtype(kept))
    else:
        new = pd.Series(values[name], dtype=pd.CategoricalDtype(["c"]) if "into" in kind else None)
    rows = np.array([1, 2])
    # when set by rows_set and by iloc
    expected = column.copy()
    expected.iloc[rows] = new.to_numpy()
    # then both give the same column
    pd.testing.assert_series_equal(rows_set(column, rows, new), expected)


@pytest.mark.parametrize(
    ("tenure", "campaign"), [(365.0, "CP_18"), (1.0, "CP_13"), (None, "CP_13")]
)
def test_the_overflow_of_a_first_load_gets_no_campaign_of_a_move(
    tmp_path, known_features, tenure, campaign
):
    from tests.rules.test_campaigns import copy_rules_with_campaigns

    # given the day above with 3 calls, as the store's first day: every learner tagged for
    # the first time (no from_tag), enrolled ``tenure`` days ago (None: not known)
    rules_dir = copy_rules_with_campaigns(tmp_path / "rules")
    ruleset = _with_interventions(rules_dir, known_features, capacity=3, control_share=0.0)
    scored, state, as_of = _declining_day(DAY)
    decided = decide(ruleset, state, scored, as_of)
    first = decided.assign(from_tag=decided["from_tag"].cat.set_categories([]))
    ids = scored["customer_id"].to_numpy()
    products = pd.Series(scored["product_tag"].to_numpy(), index=ids)
    tenure_days = None if tenure is None else pd.Series(tenure, index=ids)
    # when the day is cut
    cut = cut_to_capacity(ruleset, first, product_tags=products, tenure_days=tenure_days)
    over = cut.set_index("customer_id").loc[["L00", "L05", "L03", "L06"]]
    # then the overflow, now P3, gets the early warning of a move only when it arrived (or
    # may have): learners enrolled a year ago get the automated retention of their tag
    assert over["over_capacity"].all()
    assert set(over["campaign_id"]) == {campaign}
