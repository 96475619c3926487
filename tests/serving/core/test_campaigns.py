"""The campaign planner: enrolment, cadence, caps, exits, variants and the control flag."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

import serving.core.campaigns as campaigns_module
from rules.campaign_rendering import render_message
from rules.campaigns import CHANNELS as RULES_CHANNELS
from rules.campaigns import TEMPLATE_FIELDS, Variant
from rules.spread import on_their_day
from serving.core.campaigns import assign_variants, candidate_pairs, cap_windows, plan_campaigns
from serving.core.messages import CHANNELS, MESSAGE_COLUMNS, message_key
from serving.core.outbox import outbox_rows, own_contexts
from serving.core.planned import PlannedMessages
from tests.serving.outbox_fixtures import assert_contexts_once

AS_OF = date(2026, 6, 1)
NO_PENDING = pd.DataFrame(columns=["customer_id", "campaign_id", "messages"])
NO_IN_WINDOW = pd.DataFrame(columns=["customer_id", "campaign_id", "messages"])


def decision(customer_id: str, campaign_id: str | None, **fields) -> dict:
    """A decision row as the engine gives it (only what the planner reads)."""
    row = {
        "customer_id": customer_id,
        "from_tag": "ST_001",
        "to_tag": "ST_002",
        "changed": False,
        "priority": "P3",
        "action": "upgrade nurturing campaign",
        "campaign_id": campaign_id,
        "control": False,
        "behaviour_tags": "",
        "why": "3 milestones in 30 days; 12 lessons",
    }
    return row | fields


def features_of(*customer_ids: str, **columns) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "customer_id": list(customer_ids),
            "product_tag": "PT_003",
            "lessons_total": 14.0,
            "lessons_30d": 5.0,
            "milestones_total": 2.0,
            "milestones_30d": 1.0,
            "days_since_last_event": 1.0,
        }
    )
    return frame.assign(**columns)


def plan(decisions, features, ruleset, *, pending=NO_PENDING, in_window=NO_IN_WINDOW, as_of=AS_OF):
    return plan_campaigns(
        pd.DataFrame(decisions),
        features,
        ruleset.campaigns,
        as_of,
        pending=pending,
        in_window=in_window,
    )


def test_the_planner_and_the_rules_name_the_same_channels():
    assert RULES_CHANNELS == CHANNELS


def test_a_triggered_learner_gets_one_message_per_cadence_step(ruleset):
    # given a Freemium learner whose decision triggers upgrade nurturing (3 steps: 0, 3, 7 days)
    result = plan([decision("L1", "CP_09")], features_of("L1"), ruleset)
    messages = result.messages
    # then three messages, due on the step days, with stable ids and the step's channels
    assert list(messages.columns) == list(MESSAGE_COLUMNS)
    assert messages["step"].tolist() == [0, 1, 2]
    assert messages["due_on"].tolist() == [AS_OF + timedelta(days=d) for d in (0, 3, 7)]
    assert messages["channel"].tolist() == ["email", "push", "email"]
    assert messages["template_id"].tolist() == ["upgrade_value", "upgrade_nudge", "upgrade_offer"]
    expected_ids = [message_key(AS_OF, "L1", "CP_09", step) for step in range(3)]
    assert messages["message_id"].tolist() == expected_ids
    assert set(messages["planned_on"]) == {AS_OF}
    assert result.cancels.empty


def test_the_context_holds_every_template_field_and_renders(ruleset):
    features = features_of("L1", "L2", name=["Ana", None])
    messages = plan([decision("L1", "CP_09"), decision("L2", "CP_09")], features, ruleset).messages
    contexts = {row.customer_id: json.loads(row.context) for row in messages.itertuples()}
    assert set(contexts["L1"]) == set(TEMPLATE_FIELDS)
    assert contexts["L1"]["greeting"] == "Hi Ana"
    assert contexts["L2"]["greeting"] == "Hello" and contexts["L2"]["name"] is None
    assert contexts["L1"]["next_milestone"] == 3
    assert contexts["L1"]["tag_name"] == "Learning:Progressing"
    assert contexts["L1"]["product_name"] == "PPAL Freemium"
    assert contexts["L1"]["reasons"] == ["3 milestones in 30 days", "12 lessons"]
    for row in messages.itertuples():
        context = json.loads(row.context)
        assert render_message(row.template_id, row.channel, row.variant, context).body


def test_mobile_primary_learners_get_push_before_email(ruleset):
    decisions = [decision("M", "CP_09", behaviour_tags="BT_002,BT_006"), decision("E", "CP_09")]
    messages = plan(decisions, features_of("M", "E"), ruleset).messages
    first = messages[messages["step"] == 0].set_index("customer_id")["channel"]
    assert first["M"] == "push"
    assert first["E"] == "email"


def test_learners_without_a_campaign_get_nothing(ruleset):
    result = plan([decision("L1", None)], features_of("L1"), ruleset)
    assert result.messages.empty
    assert list(result.messages.columns) == list(MESSAGE_COLUMNS)


def test_a_learner_with_pending_steps_of_the_campaign_is_not_enrolled_again(ruleset):
    pending = pd.DataFrame({"customer_id": ["L1"], "campaign_id": ["CP_09"], "messages": [2]})
    messages = plan(
        [decision("L1", "CP_09"), decision("L2", "CP_09")],
        features_of("L1", "L2"),
        ruleset,
        pending=pending,
    ).messages
    assert set(messages["customer_id"]) == {"L2"}


@pytest.mark.parametrize(
    ("in_window", "enrolled"),
    [
        (0, True),  # upgrade nurturing: 3 steps, at most 3 messages in 30 days
        (1, False),  # 1 in the window + 3 steps > 3
        (3, False),
    ],
)
def test_the_frequency_cap_counts_the_campaigns_messages_in_its_window(
    ruleset, in_window, enrolled
):
    # given L1's messages of CP_09 in its cap window, and L2's of another campaign
    counts = pd.DataFrame(
        {
            "customer_id": ["L1", "L2"],
            "campaign_id": ["CP_09", "CP_05"],
            "messages": [in_window, 5],
        }
    )
    # when both are triggered into CP_09
    decided = [decision("L1", "CP_09"), decision("L2", "CP_09")]
    messages = plan(decided, features_of("L1", "L2"), ruleset, in_window=counts).messages
    # then L1 is enrolled only while the cap leaves room; L2's other campaign does not count
    assert (messages["customer_id"] == "L1").sum() == (3 if enrolled else 0)
    assert (messages["customer_id"] == "L2").sum() == 3


def test_cap_windows_are_the_campaigns_per_days(ruleset):
    windows = cap_windows(ruleset.campaigns)
    assert windows["CP_09"] == 30 and windows["CP_14"] == 365
    assert list(windows) == ruleset.campaigns.ids


def test_a_rerun_of_the_day_plans_nothing_new(ruleset):
    first = plan([decision("L1", "CP_09")], features_of("L1"), ruleset).messages
    pending = first.groupby(["customer_id", "campaign_id"], as_index=False).size()
    again = plan([decision("L1", "CP_09")], features_of("L1"), ruleset, pending=pending)
    assert again.messages.empty


def test_pending_messages_are_cancelled_when_the_learner_meets_the_exit(ruleset):
    # given pending retention-campaign steps (CP_21 exits when the learner leaves ST_005)
    pending = pd.DataFrame(
        {
            "customer_id": ["A", "A", "B", "C", "D"],
            "campaign_id": ["CP_21", "CP_05", "CP_21", "CP_21", "CP_22"],  # CP_22 has no exit
            "messages": [2, 1, 1, 3, 1],
        }
    )
    decisions = [
        decision("A", None, from_tag="ST_005", to_tag="ST_001", changed=True),
        decision("B", None, from_tag="ST_005", to_tag="ST_005"),
        decision("D", None, from_tag="ST_001", to_tag="ST_006", changed=True),
    ]
    result = plan(decisions, features_of("A", "B", "D"), ruleset, pending=pending)
    # then A's pairs go (both campaigns exit outside ST_004/ST_005), sorted: B is still in
    # ST_005, C was not decided today, D's campaign has no exit
    assert result.cancels.to_dict("records") == [
        {"customer_id": "A", "campaign_id": "CP_05"},
        {"customer_id": "A", "campaign_id": "CP_21"},
    ]


def test_the_control_flag_is_the_decisions(ruleset):
    decisions = [decision("T", "CP_09", control=False), decision("C", "CP_09", control=True)]
    messages = plan(decisions, features_of("T", "C"), ruleset).messages
    assert messages.set_index("customer_id")["control"].to_dict() == {"T": False, "C": True}


def test_variants_are_stable_and_follow_the_weights(ruleset):
    campaign = ruleset.campaigns.get("CP_09")
    ids = np.array([f"C{i:05d}" for i in range(4000)], dtype=object)
    variants = assign_variants(ids, campaign)
    # stable: the same learner gets the same variant whatever else is planned with them
    assert (assign_variants(ids[::-1], campaign)[::-1] == variants).all()
    assert assign_variants(ids[:7], campaign).tolist() == variants[:7].tolist()
    assert abs((variants == "A").mean() - 0.5) < 0.03
    skewed = campaign.model_copy(
        update={"variants": (Variant(id="A", weight=9), Variant(id="B", weight=1))}
    )
    share_a = (assign_variants(ids, skewed) == "A").mean()
    assert abs(share_a - 0.9) < 0.02
    assert set(assign_variants(ids, ruleset.campaigns.get("CP_22"))) == {""}


def test_the_planned_variant_is_the_learners(ruleset):
    messages = plan([decision("L1", "CP_09")], features_of("L1"), ruleset).messages
    expected = assign_variants(np.array(["L1"], dtype=object), ruleset.campaigns.get("CP_09"))[0]
    assert set(messages["variant"]) == {expected}


ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""How each learner's context was written before it was written field by field."""


def per_row_reasons(why):
    """The reasons of one ``why``, worked out for that row alone (the planner's rule)."""
    if not isinstance(why, str) or not why.strip():
        return []
    return [part.strip() for part in why.split(";") if part.strip()][:3]


def test_reasons_worked_out_per_distinct_why_are_each_learners_own(ruleset):
    # given learners sharing some whys, with blanks, a missing one and more than three reasons
    whys = ["a; b", "a; b", " ; c;; d ;e; f", None, "  ", "a; b", "solo", " ; c;; d ;e; f"]
    ids = [f"L{i}" for i in range(len(whys))]
    decisions = [decision(i, "CP_09", why=why) for i, why in zip(ids, whys, strict=True)]
    # when planned
    messages = plan(decisions, features_of(*ids), ruleset).messages
    # then every message quotes its own learner's reasons
    reasons = {r.customer_id: json.loads(r.context)["reasons"] for r in messages.itertuples()}
    assert reasons == {i: per_row_reasons(why) for i, why in zip(ids, whys, strict=True)}
    assert reasons["L2"] == ["c", "d", "e"]


def test_each_context_is_the_json_of_the_learners_own_fields_byte_for_byte(ruleset):
    # given learners with awkward values: quotes and accents in names, a blank name, counts
    # missing, behaviour tags, no product, categorical decision columns
    decided = pd.DataFrame(
        [
            decision("Q", "CP_09", behaviour_tags="BT_002,BT_006", why="x; y"),
            decision("B", "CP_05", to_tag="ST_004", priority="P1", why=None),
            decision("N", "CP_09", action='say "hi"\n'),
        ]
    ).astype({"to_tag": "category", "priority": "category", "action": "category"})
    features = features_of("Q", "B", "N", name=['Zoë "Z"', "  ", None])
    features.loc[1, ["lessons_30d", "product_tag"]] = [np.nan, None]
    messages = plan(decided, features, ruleset).messages
    # then each context is exactly what json writes of that learner's fields, keys sorted
    first = messages.drop_duplicates("customer_id").set_index("customer_id")["context"]
    quoted = {
        "action": "upgrade nurturing campaign", "behaviours": ["BT_002", "BT_006"],
        "campaign_id": "CP_09", "campaign_name": ruleset.campaigns.get("CP_09").name,
        "customer_id": "Q", "days_inactive": 1, "greeting": 'Hi Zoë "Z"', "lessons_30d": 5,
        "lessons_total": 14, "milestones_30d": 1, "milestones_total": 2, "name": 'Zoë "Z"',
        "next_milestone": 3, "priority": "P3", "product_name": "PPAL Freemium",
        "product_tag": "PT_003", "reasons": ["x", "y"], "tag": "ST_002",
        "tag_name": "Learning:Progressing",
    }  # fmt: skip
    blank = quoted | {
        "behaviours": [], "campaign_id": "CP_05", "customer_id": "B",
        "campaign_name": ruleset.campaigns.get("CP_05").name, "greeting": "Hello",
        "lessons_30d": 0, "name": None, "priority": "P1", "product_name": None,
        "product_tag": None, "reasons": [], "tag": "ST_004", "tag_name": "Risk:Declining",
    }  # fmt: skip
    unnamed = quoted | {
        "action": 'say "hi"\n', "behaviours": [], "customer_id": "N", "greeting": "Hello",
        "name": None, "reasons": ["3 milestones in 30 days", "12 lessons"],
    }  # fmt: skip
    assert first.to_dict() == {"Q": ENCODE(quoted), "B": ENCODE(blank), "N": ENCODE(unnamed)}


def test_the_planner_hands_over_messages_the_store_takes_as_their_plain_frame(ruleset):
    # given a day enrolling learners in three campaigns, one of them in the control group
    decisions = [decision("L1", "CP_09"), decision("L2", "CP_05"),
                 decision("L3", "CP_24", control=True), decision("L4", "CP_09")]  # fmt: skip
    result = plan(decisions, features_of("L1", "L2", "L3", "L4"), ruleset)
    # then the store reads the planner's messages (ids and contexts unchecked, right by
    # construction) exactly as it reads their plain frame (checked in full)
    assert isinstance(result.handover, PlannedMessages)
    now = datetime(2026, 6, 2, tzinfo=UTC)
    fast = outbox_rows(AS_OF, result.handover, "r", now)
    full = outbox_rows(AS_OF, result.messages, "r", now)
    pd.testing.assert_frame_equal(own_contexts(fast, fast), full, check_exact=True)
    assert_contexts_once(fast)  # the store keeps a (learner, campaign)'s context once
    # campaign by campaign in id order, step by step, learners in decision order
    blocks = fast[["campaign_id", "step"]].drop_duplicates().to_records(index=False).tolist()
    assert blocks == [("CP_05", 0), ("CP_05", 1), ("CP_09", 0), ("CP_09", 1), ("CP_09", 2),
                      ("CP_24", 0), ("CP_24", 1)]  # fmt: skip
    assert fast.loc[fast["campaign_id"] == "CP_09", "customer_id"].tolist() == ["L1", "L4"] * 3


def test_the_engines_typed_decisions_plan_as_plain_ones(ruleset):
    # given decisions as the engine types them (Arrow text ids, categorical tags and campaigns)
    # and the same as plain objects, with pending pairs, cap counts and an exit to meet
    plain = pd.DataFrame(
        [
            decision("A", "CP_09"),  # pending steps of CP_09: not enrolled
            decision("B", "CP_09"),  # a full window: not enrolled
            decision("C", "CP_09"),  # enrolled
            decision("D", "CP_05"),  # pending CP_09 steps of another campaign: enrolled
            decision("E", None, from_tag="ST_005", to_tag="ST_001"),  # leaves CP_21
        ]
    )
    typed = plain.astype(
        {
            "customer_id": "string[pyarrow]",
            "to_tag": "category",
            "campaign_id": "category",
            "why": "string[pyarrow]",
        }
    )
    pending = pd.DataFrame(
        {
            "customer_id": ["A", "D", "E", "Z"],
            "campaign_id": ["CP_09", "CP_09", "CP_21", "CP_21"],
            "messages": [1, 2, 1, 1],
        }
    )
    counts = pd.DataFrame({"customer_id": ["B", "C"], "campaign_id": ["CP_09", "CP_01"],
                           "messages": [3, 9]})  # fmt: skip
    features = features_of("A", "B", "C", "D", "E")
    # when both are planned
    runs = [
        plan_campaigns(frame, features, ruleset.campaigns, AS_OF, pending=pending, in_window=counts)
        for frame in (plain, typed)
    ]
    # then the same messages and cancels: C and D enrolled, E's retention steps cancelled
    assert set(runs[0].messages["customer_id"]) == {"C", "D"}
    assert runs[0].cancels.to_dict("records") == [{"customer_id": "E", "campaign_id": "CP_21"}]
    pd.testing.assert_frame_equal(runs[0].messages, runs[1].messages)
    pd.testing.assert_frame_equal(runs[0].cancels, runs[1].cancels)


def test_the_callers_candidate_pairs_plan_as_the_planners_own(ruleset):
    # given decisions under a label index of their own (not positions), pending steps for one
    plain = pd.DataFrame(
        [decision("A", "CP_09"), decision("B", None), decision("C", "CP_09"),
         decision("D", "CP_05")],
        index=[40, 30, 20, 10],
    )  # fmt: skip
    pending = pd.DataFrame({"customer_id": ["A"], "campaign_id": ["CP_09"], "messages": [1]})
    features = features_of("A", "B", "C", "D")
    # when the caller's candidate pairs are handed to the planner
    candidates = candidate_pairs(plain, pending, ruleset.campaigns, AS_OF)
    given = plan_campaigns(plain, features, ruleset.campaigns, AS_OF, pending=pending,
                           in_window=NO_IN_WINDOW, candidates=candidates)  # fmt: skip
    own = plan_campaigns(plain, features, ruleset.campaigns, AS_OF, pending=pending,
                         in_window=NO_IN_WINDOW)  # fmt: skip
    # then the pairs are C's and D's, at their rows, and the plan is the one worked out alone
    assert candidates.to_dict("index") == {
        2: {"customer_id": "C", "campaign_id": "CP_09"},
        3: {"customer_id": "D", "campaign_id": "CP_05"},
    }
    assert set(given.messages["customer_id"]) == {"C", "D"}
    pd.testing.assert_frame_equal(given.messages, own.messages)


def test_candidate_pairs_of_a_spread_campaign_are_the_learners_on_their_day(ruleset):
    # given 60 learners whose decisions name the spread weekly digest CP_22, none pending
    digest = ruleset.campaigns.get("CP_22")
    assert digest.spread
    ids = [f"L{number:03d}" for number in range(60)]
    plain = pd.DataFrame([decision(customer_id, "CP_22", to_tag="ST_001") for customer_id in ids])
    # when the caller's candidate pairs are worked out
    candidates = candidate_pairs(plain, NO_PENDING, ruleset.campaigns, AS_OF)
    # then they are the learners whose own day of the digest is today, some but not all
    per_days = digest.frequency_cap.per_days
    on_day = on_their_day(pa.array(ids), "CP_22", per_days, AS_OF)
    assert 0 < on_day.sum() < len(ids)
    assert candidates["customer_id"].tolist() == [ids[row] for row in np.flatnonzero(on_day)]
    # and the plan from them is the one the planner works out alone, its learners theirs
    features = features_of(*ids)
    given = plan_campaigns(plain, features, ruleset.campaigns, AS_OF, pending=NO_PENDING,
                           in_window=NO_IN_WINDOW, candidates=candidates)  # fmt: skip
    own = plan_campaigns(plain, features, ruleset.campaigns, AS_OF, pending=NO_PENDING,
                         in_window=NO_IN_WINDOW)  # fmt: skip
    pd.testing.assert_frame_equal(given.messages, own.messages)
    assert set(given.messages["customer_id"]) == set(candidates["customer_id"])


def test_pending_pairs_held_in_chunked_arrow_text_are_found_as_plain_ones(ruleset):
    # given the same pending pairs as plain strings and as Arrow text in several chunks (a frame
    # fetched from DuckDB in record batches holds its strings so)
    plain = pd.DataFrame({"customer_id": ["A", "B"], "campaign_id": ["CP_21", "CP_21"]})
    chunked = pd.DataFrame(
        {
            name: pd.Series(pd.arrays.ArrowStringArray(pa.chunked_array([values[:1], values[1:]])))
            for name, values in plain.to_dict("list").items()
        }
    )
    decisions = [decision("A", None, from_tag="ST_005", to_tag="ST_001", changed=True)]
    # when both plan the day
    by_plain = plan(decisions, features_of("A"), ruleset, pending=plain.assign(messages=1))
    by_chunked = plan(decisions, features_of("A"), ruleset, pending=chunked.assign(messages=1))
    # then the chunked texts find the same pair (A's CP_21 cancelled) rather than failing
    assert by_chunked.cancels.to_dict("records") == [{"customer_id": "A", "campaign_id": "CP_21"}]
    assert by_chunked.cancels.equals(by_plain.cancels)


def _pairs_of(learners: list[str]):
    campaigns = st.sampled_from(["CP_01", "CP_02", None])
    return st.lists(st.tuples(st.sampled_from(learners), campaigns), max_size=8)


@given(_pairs_of(["L1", "L2", "L3"]), _pairs_of(["L1", "L2", "L4"]), st.booleans())
def test_each_pair_finds_the_first_row_holding_it(pairs, table, one_per_learner):
    # given pairs (each learner once, as a day's decisions, or not) and a table of pairs
    if one_per_learner:
        pairs = list({learner: (learner, campaign) for learner, campaign in pairs}.values())
    left = pd.DataFrame(pairs, columns=["customer_id", "campaign_id"], dtype=object)
    right = pd.DataFrame(table, columns=["customer_id", "campaign_id"], dtype=object)
    # when each pair's row is looked up
    found = campaigns_module._pair_rows(left, right)
    # then it is the first table row with the same learner and campaign (nulls equal), or -1
    expected = [
        next((row for row, other in enumerate(table) if other == pair), -1) for pair in pairs
    ]
    assert found.tolist() == expected


@pytest.mark.parametrize("id_dtype", ["str", object])
def test_the_context_reads_the_features_a_left_merge_on_the_learner_gives(id_dtype):
    # given triggered learners in decision order (one the features lack, one with a decision
    # column of a feature's name) and the day's features sorted by id
    triggered = pd.DataFrame(
        {
            "customer_id": pd.array(["C3", "C1", "C9", "C2"], dtype=id_dtype),
            "to_tag": ["ST_001", "ST_002", "ST_001", "ST_004"],
            "name": ["decided", None, None, None],
        },
        index=[7, 3, 5, 1],
    )
    features = pd.DataFrame(
        {
            "customer_id": pd.array(["C1", "C2", "C3", "C4"], dtype=id_dtype),
            "product_tag": pd.array(["PT_001", "PT_002", None, "PT_003"], dtype="str"),
            "lessons_total": [1.0, np.nan, 3.0, 4.0],
            "days_since_last_event": np.array([5, 6, 7, 8], dtype=np.int64),
            "name": ["Ann", "Bo", "Cy", "Di"],
        }
    )
    names = ["product_tag", "lessons_total", "days_since_last_event", "name"]
    # when each learner's features are read
    got = campaigns_module._with_features(triggered, features, names)
    # then they are the merge's, the decision's own column kept, nulls where a learner is absent
    merged = triggered.merge(features, on="customer_id", how="left", suffixes=("", "_f"))
    expected = merged.drop(columns="name_f")
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert got["days_since_last_event"].tolist()[:2] == [7, 5]
    assert pd.isna(got.loc[2, "days_since_last_event"]) and pd.isna(got.loc[2, "product_tag"])
