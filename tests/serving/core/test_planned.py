"""The planner's messages as the store takes them (``serving.core.planned``): ids and contexts
right by construction, the JSON written byte for byte as ``json`` writes it, nothing forged."""

from __future__ import annotations

import json
import pickle
from datetime import date, timedelta
from hashlib import sha256

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.core.messages import (
    MESSAGE_COLUMNS,
    SHARED_CONTEXT,
    CampaignPlan,
    message_key,
    message_keys,
)
from serving.core.planned import (
    ContextField,
    PlannedMessages,
    StepMessages,
    coded_texts,
    json_objects,
    planned_messages,
)

DAY = date(2026, 5, 10)
ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""How the planner wrote each learner's context before it was written by field."""

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)  # quotes, \\n, é, emoji...
values = st.one_of(st.none(), texts, st.integers(-(10**12), 10**12), st.lists(texts, max_size=3))


def step_of(learners, campaign="CP_01", step=0, *, channel="email", control=False):
    learners = np.asarray(learners, dtype=np.int64)
    count = len(learners)
    return StepMessages(
        campaign_id=campaign,
        step=step,
        due_on=DAY + timedelta(days=2 * step),
        template_id=f"{campaign.lower()}_{step}",
        learners=learners,
        channels=np.full(count, channel, dtype=object),
        variants=np.full(count, "", dtype=object),
        control=np.full(count, control),
    )


def contexts_of(ids):
    return {
        "customer_id": ContextField.each(ids),
        "tag": ContextField(np.zeros(len(ids), int), ["ST_001"]),
    }


@given(st.lists(st.dictionaries(st.sampled_from("abcdefgh"), values, min_size=8, max_size=8),
                min_size=1, max_size=6))  # fmt: skip
def test_contexts_written_by_field_are_byte_for_byte_the_json_of_each_learners_dict(rows):
    # given learners' contexts as dicts with the same keys, also shared values
    keys = sorted(rows[0])
    fields = {}
    for key in keys:
        distinct = []
        for row in rows:
            if row[key] not in distinct:
                distinct.append(row[key])
        codes = np.array([distinct.index(row[key]) for row in rows])
        fields[key] = ContextField(codes, distinct)
    # when written by field
    written = json_objects(fields, len(rows)).to_pylist()
    # then each text is what json writes of the learner's dict, in key order
    assert written == [ENCODE({key: row[key] for key in keys}) for row in rows]


def test_no_fields_write_empty_objects_and_a_field_must_cover_every_learner():
    assert json_objects({}, 2).to_pylist() == ["{}", "{}"]
    with pytest.raises(ValueError, match="'tag': 1 codes for 2 rows"):
        json_objects({"tag": ContextField(np.zeros(1, int), ["ST_001"])}, 2)


def test_coded_texts_give_each_distinct_text_once_and_none_for_missing():
    codes, distinct = coded_texts(pd.Series(["b", None, "a", "b"], dtype=object))
    assert [distinct[code] for code in codes] == ["b", None, "a", "b"]
    assert len(distinct) == 3  # b, a, and None for the missing row


def test_planned_ids_are_the_message_keys_and_contexts_the_learners_json():
    # given two learners, a two-step campaign for both and a one-step one for the second
    ids = ["L1", "L2"]
    steps = [step_of([0, 1], step=0), step_of([0, 1], step=1), step_of([1], "CP_09")]
    # when planned
    frame = planned_messages(DAY, ids, contexts_of(ids), steps).frame
    # then each row's id is message_key of its own (day, learner, campaign, step)
    assert list(frame.columns) == list(MESSAGE_COLUMNS)
    expected = [message_key(DAY, r.customer_id, r.campaign_id, r.step) for r in frame.itertuples()]
    assert frame["message_id"].tolist() == expected
    assert frame["customer_id"].tolist() == ["L1", "L2", "L1", "L2", "L2"]
    learners = [json.loads(text)["customer_id"] for text in frame["context"]]
    assert learners == frame["customer_id"].tolist()
    later = DAY + timedelta(days=2)
    assert frame["due_on"].tolist() == [DAY, DAY, later, later, DAY]
    assert set(frame["planned_on"]) == {DAY}


def test_message_keys_are_the_stable_hash_of_day_learner_campaign_and_step():
    # the formula is pinned: a changed id would plan a rerun's messages again
    ids = ["C1", "C2", "é x|y"]
    raw = [f"2026-05-10|{i}|CP_03|2".encode() for i in ids]
    hashes = [sha256(r).hexdigest()[:20] for r in raw]
    assert message_keys(DAY, ids, "CP_03", 2) == [f"msg-20260510-{h}" for h in hashes]
    assert message_key(date(2026, 6, 1), "C1", "CP_01", 0) == "msg-20260601-d282b16e2e89e70b3c21"


def test_message_keys_sort_by_their_day_first():
    # the outbox's primary key index then grows at its end (a hash alone sorted at random)
    first_day = message_key(date(2026, 6, 1), "C1", "CP_01", 0)  # its hash begins with d2
    next_day = message_keys(date(2026, 6, 2), ["C1", "C2", "C3"], "CP_01", 0)
    assert all(first_day < key for key in next_day)


def test_planned_messages_cannot_be_made_or_changed_but_by_the_planners_builder():
    planned = planned_messages(DAY, ["L1"], contexts_of(["L1"]), [step_of([0])])
    with pytest.raises(TypeError, match="planned_messages only"):
        PlannedMessages(planned.frame)
    with pytest.raises(AttributeError, match="read-only"):
        planned._frame = planned.frame  # what a forger would try
    # what a reader does to the frame it was handed stays in its copy
    handed = planned.frame
    handed.loc[0, "message_id"] = "msg-forged"
    assert planned.frame.loc[0, "message_id"] == message_key(DAY, "L1", "CP_01", 0)


def test_the_stored_messages_hold_a_campaigns_context_once_and_the_frame_each_its_own():
    # given a three-step campaign for two learners, a campaign whose second step names other
    # learners than its first, and a one-step campaign
    ids = ["L1", "L2", "L3"]
    steps = [
        *(step_of([0, 1], step=step) for step in range(3)),
        step_of([2], "CP_05", 0),
        step_of([1, 2], "CP_05", 1),
        step_of([0], "CP_09"),
    ]
    planned = planned_messages(DAY, ids, contexts_of(ids), steps)
    # when read as the store keeps them, and as a frame
    stored, frame = planned.stored, planned.frame
    # then the stored rows hold a context on the first step of each run of the same learners
    # only, the same text the frame gives every message of the run
    holds = [True, True, False, False, False, False, True, True, True, True]
    assert (stored["context"] != SHARED_CONTEXT).tolist() == holds
    pd.testing.assert_series_equal(stored["context"][holds], frame["context"][holds])
    assert [json.loads(text)["customer_id"] for text in frame["context"]] == frame[
        "customer_id"
    ].tolist()
    # and everything else is the same
    others = [name for name in MESSAGE_COLUMNS if name != "context"]
    pd.testing.assert_frame_equal(stored[others], frame[others])


def test_planned_messages_survive_a_pickle_as_they_were():
    steps = [step_of([1, 0]), step_of([1, 0], step=1)]
    planned = planned_messages(DAY, ["L1", "L2"], contexts_of(["L1", "L2"]), steps)
    again = pickle.loads(pickle.dumps(CampaignPlan(planned)))
    assert isinstance(again.handover, PlannedMessages)
    assert again.messages.equals(planned.frame)
    assert again.handover.stored.equals(planned.stored)


def test_steps_that_do_not_line_up_with_the_learners_are_refused():
    with pytest.raises(ValueError, match="a step names a learner the plan does not have"):
        planned_messages(DAY, ["L1"], contexts_of(["L1"]), [step_of([0, 1])])
    with pytest.raises(ValueError, match="control flags are not bools"):
        StepMessages("CP_01", 0, DAY, "t", np.array([0]), np.array(["email"]),
                     np.array([""]), np.array(["false"], dtype=object))  # fmt: skip
    with pytest.raises(ValueError, match="unequal length"):
        StepMessages("CP_01", 0, DAY, "t", np.array([0, 1]), np.array(["email"]),
                     np.array(["", ""]), np.array([False, False]))  # fmt: skip


def test_a_plan_of_a_frame_hands_the_frame_over_and_reads_it_back():
    planned = planned_messages(DAY, ["L1"], contexts_of(["L1"]), [step_of([0])])
    frame = planned.frame
    assert CampaignPlan(frame).messages is frame
    assert CampaignPlan(planned).handover is planned and CampaignPlan(planned).cancels.empty
