"""The day's precomputed answers (``serving.app.answers``): equal to ``assess``, never stale.

The answers are built from the served workspace's feature snapshot and state store (read only
here); the keeper's tests use a copy of the snapshot and a fresh SQLite store of their own.
"""

from __future__ import annotations

import gc
import shutil
from datetime import date, timedelta
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from features.catalog import load_catalog
from rules import MODEL_SCORE_COLUMNS, RuleSet, load_ruleset
from serving.app.answers import (
    DayAnswers,
    answers_tag,
    load_day_answers,
    write_day_answers,
)
from serving.app.answers_table import STATE, answers_table
from serving.core.assess import AssessOptions, assess
from serving.core.scoring import score_features
from serving.core.state import state_row, state_rows_of
from tests.serving.batches import at, set_override, tag_learner
from tests.serving.fixtures import packaged_ruleset
from tests.serving.service_fixtures import SNAPSHOT_DAY


@pytest.fixture(scope="module")
def answers(day, champion, ruleset) -> DayAnswers:
    as_of, features, state = day
    return DayAnswers.build(features, champion=champion, ruleset=ruleset, state=state, as_of=as_of)


def online_records(features, champion, ruleset, state, as_of, whole_day=False) -> list[dict]:
    """``assess`` as the online path runs it: every learner explained in one pass (and, for
    ``whole_day``, the day's capacity applied as the answers apply it)."""
    assessment = assess(
        features, champion=champion, ruleset=ruleset, state=state, as_of=as_of,
        options=AssessOptions(explain=True, whole_day=whole_day),
    )  # fmt: skip
    return assessment.records()


def stored_state(state: pd.DataFrame, customer_id: str):
    """The learner's ``state_row`` in the frame, None when the store does not know them."""
    rows = state[state["customer_id"] == customer_id]
    if rows.empty:
        return None
    row = rows.iloc[0]
    return state_row(row["tag"], row["since"], row["override_tag"], row["override_expires"])


def test_every_answer_is_the_online_record_for_that_learner(answers, day, champion, ruleset):
    # given assess run over the whole snapshot, with reasons (the on-demand path)
    as_of, features, state = day
    records = online_records(features, champion, ruleset, state, as_of, whole_day=True)
    expected = {record["customer_id"]: record for record in records}
    # when every learner is looked up in the answers with their stored state
    assert as_of == SNAPSHOT_DAY and len(answers) == len(expected) > 100
    for customer_id, record in expected.items():
        answer = answers.record(customer_id, stored_state(state, customer_id))
        # then the answer is that record, from the snapshot
        assert answer == record | {"feature_source": "snapshot"}, customer_id


def test_answers_equal_the_one_learner_online_path(answers, day, champion, ruleset):
    # given learners assessed one at a time, as the online path assesses a lone request
    as_of, features, state = day
    for position in (0, 13, 77, len(features) - 1):
        one = features.iloc[[position]].reset_index(drop=True)
        customer_id = one["customer_id"].iloc[0]
        mine = state[state["customer_id"] == customer_id].reset_index(drop=True)
        record = online_records(one, champion, ruleset, mine, as_of)[0]
        answer = answers.record(customer_id, stored_state(state, customer_id))
        # when looked up, then the answer is the same record; alone, the day's capacity is not
        # applied (null), and the answers' day moved none of these learners
        assert record["over_capacity"] is None and answer["over_capacity"] is False
        assert answer == record | {"feature_source": "snapshot", "over_capacity": False}


def test_a_moved_state_or_an_unknown_learner_gets_no_answer(answers, day):
    # given a learner the answers hold
    _, features, state = day
    customer_id = features["customer_id"].iloc[3]
    current = stored_state(state, customer_id)
    assert current is not None and answers.record(customer_id, current) is not None
    tag, since, _, _ = current
    # when their state moved since the answers were built, then there is no answer
    assert answers.record(customer_id, (tag, since, tag, None)) is None  # an override came
    assert answers.record(customer_id, (tag, since + timedelta(days=1), None, None)) is None
    assert answers.record(customer_id, None) is None  # the store forgot them
    # and a learner outside the snapshot has none either
    assert answers.record("nobody-by-this-id", None) is None


def test_learners_whose_tag_began_after_the_day_are_left_to_the_scorer(day, champion, ruleset):
    # given a state in which one learner's tag began the day after the snapshot
    as_of, features, state = day
    later = state.copy()
    moved = later["customer_id"].iloc[0]
    later.loc[later["customer_id"] == moved, "since"] = pd.Timestamp(as_of + timedelta(days=1))
    # when the answers are built, then that learner is not among them (the scorer says 422)
    built = DayAnswers.build(features, champion=champion, ruleset=ruleset, state=later, as_of=as_of)
    assert built.positions([moved]).tolist() == [-1]
    assert len(built) == len(features) - 1


def test_reasons_warm_in_call_list_order_and_match_those_made_on_the_spot(day, champion, ruleset):
    # given fresh answers, with no reasons computed yet
    as_of, features, state = day
    warm = DayAnswers.build(features, champion=champion, ruleset=ruleset, state=state, as_of=as_of)
    cold = DayAnswers.build(features, champion=champion, ruleset=ruleset, state=state, as_of=as_of)
    # when the first 40 learners of the call list are warmed
    kept = warm.warm_reasons(40, chunk=16)
    # then exactly those are kept, P1 ones first, and they equal reasons computed one at a time
    first = warm.call_order(40)
    assert kept == 40 and set(warm._cache) == set(first)
    priorities = [warm.record_at(position)["priority"] for position in first]
    assert priorities == sorted(priorities, key=lambda p: (p is None, str(p)))
    for position in first:
        kept_reasons = warm.reasons([position])[0]
        assert kept_reasons == cold.reasons([position])[0] and len(kept_reasons) == 3
    # and the cache holds nothing the garbage collector walks (a full collection's pause does
    # not grow with the learners warmed)
    gc.collect()
    assert not any(gc.is_tracked(entry) for entry in warm._cache.values())


def test_rules_only_answers_have_no_scores_and_no_reasons(day, ruleset):
    # given answers built without a champion
    as_of, features, state = day
    built = DayAnswers.build(features, champion=None, ruleset=ruleset, state=state, as_of=as_of)
    customer_id = features["customer_id"].iloc[0]
    # when a learner is looked up, then the rules decided alone and the record says so
    record = built.record(customer_id, stored_state(state, customer_id))
    assert record["model_version"] is None and record["p_churn"] is None
    assert record["reasons"] == [] and record["rule_description"].endswith("rules only]")
    assert built.warm_reasons(10) == 0


def test_a_whole_state_frame_converts_as_each_row_does(day):
    # given the stored state with an override added to one learner and a tag to another
    _, _, state = day
    varied = state.copy()
    varied.loc[0, ["override_tag", "override_expires"]] = ["ST_002", pd.Timestamp("2026-06-01")]
    varied.loc[1, "override_tag"] = "ST_005"
    # when the frame is converted at once, then each learner's row is their state_row
    converted = state_rows_of(varied)
    assert len(converted) == len(varied) > 100
    for row in varied.itertuples(index=False):
        expected = state_row(row.tag, row.since, row.override_tag, row.override_expires)
        assert converted[row.customer_id] == expected
    assert converted[varied["customer_id"].iloc[0]][2:] == ("ST_002", date(2026, 6, 1))
    assert converted[varied["customer_id"].iloc[1]][2:] == ("ST_005", None)


def test_state_rows_from_the_store_and_from_the_frame_compare_equal(sqlite_store, day):
    # given a learner with a tag and an override in a store
    as_of, features, _ = day
    customer_id = features["customer_id"].iloc[0]
    tag_learner(sqlite_store, customer_id, "ST_002", as_of)
    set_override(
        sqlite_store,
        customer_id,
        "ST_002",
        actor="cs-lead",
        reason="pinned",
        expires=as_of + timedelta(days=9),
        now=at(as_of, 11),
    )
    # when the state is read as a frame and as plain rows
    frame = sqlite_store.state_frame(as_of)
    rows = sqlite_store.state_rows([customer_id, "nobody-by-this-id"], as_of)
    # then both give the same state_row, with the override, and nothing for an unknown learner
    from_frame = stored_state(frame, customer_id)
    assert rows[customer_id] == from_frame
    assert from_frame[2] == "ST_002" and from_frame[3] == as_of + timedelta(days=9)
    assert "nobody-by-this-id" not in rows


# --- the answers file: written by the batch, memory-mapped by the service -------------------------


def test_the_batch_writes_the_answers_file_the_service_maps(workspace, day, champion):
    # given the workspace whose batch job ran the snapshot day (it wrote the answers file)
    as_of, features, state = day
    ruleset = packaged_ruleset(champion)  # resolved on the champion, as the batch and service do
    data_dir = workspace.settings.data_path
    # (and removed the day before's: only the latest day is served). A rules-only service
    # started on this shared workspace by another test may have built its own file of the day.
    written = sorted((data_dir / "answers").glob("*.arrow"))
    assert f"as_of={as_of}.{answers_tag(champion.version, ruleset)}.arrow" in [
        path.name for path in written
    ]
    assert {path.name.split(".")[0] for path in written} == {f"as_of={as_of}"}
    # when the service loads the day's answers without building any
    allocated = pa.total_allocated_bytes()
    with workspace.open_store() as store:
        mapped = load_day_answers(
            data_dir, champion=champion, ruleset=ruleset, store=store, build=False
        )
    # then they come from the file, memory-mapped (not copied into the heap) ...
    assert mapped is not None and mapped.as_of == as_of
    assert pa.total_allocated_bytes() - allocated < 64 * 1024
    # ... and every learner whose state the day left is unchanged gets the record assess gives
    built = DayAnswers.build(features, champion=champion, ruleset=ruleset, state=state, as_of=as_of)
    answered = 0
    for customer_id in features["customer_id"]:
        current = stored_state(state, customer_id)
        from_file = mapped.record(customer_id, current)
        if from_file is not None:
            answered += 1
            assert from_file == built.record(customer_id, current), customer_id
    assert answered > 0.9 * len(features)


def test_the_answers_hold_the_snapshot_rows_as_they_were(answers, day):
    # given learners of the snapshot, in an order of the caller's, and one it does not hold
    _, features, _ = day
    ids = list(features["customer_id"].iloc[[9, 2, 40]])
    # when their rows are read back from the answers
    rows = answers.features_of([*ids, "nobody-by-this-id"])
    # then they are the snapshot's rows, same values and dtypes, in the order asked
    expected = features.set_index("customer_id").loc[ids].reset_index()
    pd.testing.assert_frame_equal(rows, expected[features.columns])


def test_ids_are_found_by_their_bytes_and_nothing_else(answers, day):
    # given the ids of the day, and ids that are not: longer, with a NUL byte, absent
    _, features, _ = day
    held = features["customer_id"].iloc[7]
    asked = [held, held + "x" * 40, held + "\0", held[:-1], "nobody-by-this-id", "é"]
    # when they are looked up, then only the held one has a row, and it is that learner's
    positions = answers.positions(asked).tolist()
    assert positions[0] >= 0 and positions[1:] == [-1] * 5
    assert answers.record_at(positions[0])["customer_id"] == held


def test_the_reasons_cache_keeps_the_last_learners_asked_about(day, champion, ruleset):
    # given answers that keep the reasons of 5 learners
    as_of, features, state = day
    small = DayAnswers.build(
        features, champion=champion, ruleset=ruleset, state=state, as_of=as_of, cache_size=5
    )
    first = small.reasons([0])[0]
    # when 12 learners are explained one after the other
    for position in range(1, 12):
        small.reasons([position])
    # then only the last 5 are kept, and a forgotten one is explained again, identically
    assert list(small._cache) == [7, 8, 9, 10, 11]
    assert small.reasons([0])[0] == first and 0 in small._cache and len(small._cache) == 5


def test_the_answers_table_does_not_depend_on_the_order_of_features_or_scores(
    day, champion, ruleset
):
    # given the day's learners sorted by id, and the same learners shuffled (scores otherwise)
    as_of, features, state = day
    ordered = features.sort_values("customer_id", ignore_index=True)
    scores = score_features(ordered, champion)
    shuffled = ordered.sample(frac=1.0, random_state=3).reset_index(drop=True)
    scores_shuffled = scores.sample(frac=1.0, random_state=4).reset_index(drop=True)
    version = champion.version
    # when both are laid out
    fast = answers_table(
        ordered, scores, ruleset=ruleset, state=state, as_of=as_of, model_version=version
    )
    slow = answers_table(
        shuffled, scores_shuffled, ruleset=ruleset, state=state, as_of=as_of,
        model_version=version,
    )  # fmt: skip
    # then the tables are equal, sorted by id, with the same call order
    assert fast.equals(slow)
    keys = fast.column("lstep.key").to_pylist()
    assert keys == sorted(keys)


def test_answers_of_another_champion_or_rules_are_not_served(
    data_dir, sqlite_store, champion, ruleset, day
):
    # given an answers file the batch wrote with another champion version
    as_of, features, state = day
    scores = features[["customer_id", "as_of"]].assign(
        p_churn=0.5, p_low=0.4, p_high=0.6, confidence=0.1
    )
    write_day_answers(
        data_dir, features, scores, ruleset=ruleset, state=state, as_of=as_of,
        model_version="999",
    )  # fmt: skip
    # when this champion's answers are loaded without building, then there are none
    loaded = load_day_answers(
        data_dir, champion=champion, ruleset=ruleset, store=sqlite_store, build=False
    )
    assert loaded is None
    assert answers_tag("999", ruleset) != answers_tag(champion.version, ruleset)
    assert answers_tag(None, ruleset).startswith("rules-only.")
    # when built, then this champion's file is written beside it and served from then on
    built = load_day_answers(data_dir, champion=champion, ruleset=ruleset, store=sqlite_store)
    again = load_day_answers(
        data_dir, champion=champion, ruleset=ruleset, store=sqlite_store, build=False
    )
    assert built.model_version == again.model_version == champion.version
    assert len(list((data_dir / "answers").glob("*.arrow"))) == 2


def test_decisions_are_laid_out_by_id_as_a_reindex_lays_them_out():
    from serving.app.answers_table import _decisions_by_id, _texts

    # given decisions in call order (categorical, nullable and Arrow columns) and the day's ids
    decisions = pd.DataFrame(
        {
            "customer_id": pd.array(["c", "a", "d", "b"], dtype="string[pyarrow]"),
            "priority": pd.Categorical(["P1", "P2", None, "P4"], ordered=True),
            "over_capacity": pd.array([True, None, False, False], dtype="boolean"),
            "value_at_risk": [4.0, float("nan"), 2.0, 1.0],
        }
    )
    decision_ids = decisions["customer_id"].astype(str).to_numpy(object)
    ids_cases = (["a", "b", "c", "d"], ["d", "c", "b", "a"], ["a", "x", "c", "d"], ["b"] * 4)
    for ids in ids_cases:
        index = pd.Index(ids, dtype=object)
        # when laid out in the ids' order (one id without a decision: the reindex's nulls)
        laid_out, rows = _decisions_by_id(decisions, _texts(decision_ids), _texts(index))
        reference = decisions.set_index(pd.Index(decision_ids, dtype=object)).reindex(index)
        # then every column holds the reindex's values and dtypes, row for row
        for name in decisions.columns.drop("customer_id"):
            pd.testing.assert_series_equal(
                laid_out[name].reset_index(drop=True), reference[name].reset_index(drop=True)
            )
        # and each decision's row among the ids is the first holding its learner (-1: none)
        expected = [ids.index(learner) if learner in ids else -1 for learner in decision_ids]
        assert rows.tolist() == expected


def _reindexed_state_columns(state: pd.DataFrame, ids: pd.Index) -> dict[str, pa.Array]:
    """The state columns as a reindex by customer_id laid them out (the reference)."""
    aligned = state.set_index(state["customer_id"].astype(str)).reindex(ids)
    day = lambda name: pa.array(  # noqa: E731
        pd.to_datetime(aligned[name]).to_numpy(dtype="datetime64[D]"),
        type=pa.date32(), from_pandas=True,
    )  # fmt: skip
    text = lambda name: pa.array(aligned[name].astype(object), type=pa.string(), from_pandas=True)  # noqa: E731
    return dict(zip(STATE, [text("tag"), day("since"), text("override_tag"),
                            day("override_expires")], strict=True))  # fmt: skip


def test_the_state_columns_are_those_a_reindex_by_id_gives():
    from serving.app.answers_table import _state_columns, _texts

    # given a stored state (nulls, a learner without state among the ids, tz-aware instants)
    state = pd.DataFrame(
        {
            "customer_id": ["b", "a", "c"],
            "tag": ["ST_002", "ST_004", None],
            "since": pd.to_datetime(["2026-01-02", "2026-01-03", "2026-01-04"]),
            "override_tag": [None, "ST_004", None],
            "override_expires": pd.to_datetime([None, "2026-02-01", None], utc=True),
        }
    )
    for ids in (["a", "b", "c"], ["x", "c", "a"], []):
        index = pd.Index(ids, dtype=object)
        # when laid out, then each column equals the reindexed one (null: no state)
        assert _state_columns(state, _texts(index)) == _reindexed_state_columns(state, index)
        empty = _state_columns(state.iloc[:0], _texts(index))
        assert empty == _reindexed_state_columns(state.iloc[:0], index)
    # and a repeated learner is refused, as the reindex refused it
    with pytest.raises(ValueError, match="duplicate"):
        _state_columns(pd.concat([state, state.iloc[:1]]), _texts(pd.Index(["a"], dtype=object)))


def test_decision_columns_reach_arrow_as_their_object_values_would():
    from serving.app.answers_table import _decision_array

    # given decision columns as the engine types them: categorical (with and without nulls,
    # one all null), Arrow text, nullable flags, numbers with NaN, all-NaN numbers
    columns = {
        "to_tag": pd.Categorical(["ST_001", "ST_004", "ST_001"]),
        "rule_id": pd.Categorical(["R01", None, "R04"]),
        "held": pd.Categorical([None, None, None], categories=["cooldown", "override"]),
        "why": pd.array(["a; b", None, ""], dtype="string[pyarrow]"),
        "behaviour_tags": pd.Series(["BT_001", "", "BT_002,BT_003"], dtype="str"),
        "control": [True, False, True],
        "over_capacity": pd.array([True, None, False], dtype="boolean"),
        "value_at_risk": [4.0, float("nan"), 2.0],
        "nothing": [float("nan")] * 3,
        "codes": [1, 2, 3],
    }
    for name, values in columns.items():
        column = pd.Series(values)
        # when converted, then the values are those of the object conversion, and so is the
        # type, but for a categorical's text: a dictionary of strings (an all-null column:
        # Arrow's null type, as before)
        expected = pa.array(column.astype(object), from_pandas=True)
        converted = _decision_array(column)
        assert converted.to_pylist() == expected.to_pylist(), name
        kept_as_codes = name in ("to_tag", "rule_id")
        if kept_as_codes:
            assert pa.types.is_dictionary(converted.type), name
            assert converted.type.value_type == expected.type == pa.string(), name
            assert len(converted.dictionary) == len(column.cat.categories), name
        else:
            assert converted.type == expected.type, name
            assert converted.equals(expected), name


ODD_IDS = ["b", "", "a\x00", "a\x00b", "é", "日本-ü", "x\x00\x00", "emoji-😀", "z" * 40]


@pytest.mark.parametrize("dtype", ["str", "string[pyarrow]", object])
def test_the_keys_are_numpys_utf8_encoding_of_the_ids_from_arrow_buffers(dtype):
    from serving.app.answers_table import _id_texts, _texts, _utf8_keys

    # given odd ids (empty, unicode, NULs inside and at the end), in a column of each dtype,
    # sliced so that the Arrow array starts at an offset
    column = pd.Series(["pad", *ODD_IDS], dtype=dtype).iloc[1:].reset_index(drop=True)
    # when turned into texts and sort keys
    texts = _id_texts(column)
    keys = _utf8_keys(texts)
    # then the texts are the object conversion's, and the keys numpy's encoding of them
    # (trailing NULs stripped, the width of the longest)
    assert texts.equals(_texts(column.astype(str)))
    expected = np.char.encode(
        pd.Index(column.astype(str), dtype=object).to_numpy(dtype=str), "utf-8"
    )
    assert keys.dtype == expected.dtype and keys.tolist() == expected.tolist()


def test_the_keys_of_no_ids_or_only_empty_ids_are_one_byte_wide():
    from serving.app.answers_table import _texts, _utf8_keys

    for ids in ([], ["", ""]):
        keys = _utf8_keys(_texts(pd.Index(ids, dtype=object)))
        assert keys.dtype == np.dtype("S1") and keys.tolist() == [b""] * len(ids)


@pytest.mark.parametrize("dtype", ["str", object])
def test_state_columns_of_a_sorted_state_equal_the_reindex_and_a_sorted_repeat_is_refused(dtype):
    from serving.app.answers_table import _state_columns, _texts

    # given a state sorted by id (as the store reads it), text columns with nulls
    state = pd.DataFrame(
        {
            "customer_id": pd.Series(["a", "b", "c", "d"], dtype=dtype),
            "tag": pd.Series(["ST_002", None, "ST_004", "ST_001"], dtype=dtype),
            "since": pd.to_datetime(["2026-01-02", "2026-01-03", "2026-01-04", "2026-01-05"]),
            "override_tag": pd.Series([None, None, "ST_004", None], dtype=dtype),
            "override_expires": pd.to_datetime([None, None, "2026-02-01", None]),
        }
    )
    index = pd.Index(["d", "x", "a", "c"], dtype=object)
    # when laid out, then each column equals the reindexed one
    assert _state_columns(state, _texts(index)) == _reindexed_state_columns(state, index)
    # and a learner repeated next to itself in a sorted state is refused
    repeated = state.iloc[[0, 1, 1, 2]].reset_index(drop=True)
    with pytest.raises(ValueError, match="duplicate"):
        _state_columns(repeated, _texts(index))


def _rules_copy(folder: Path, edit: tuple[str, str] | None = None) -> RuleSet:
    """The packaged rules copied to ``folder`` (one text of transitions.yaml replaced), loaded."""
    shutil.copytree(
        resources.files("rules"), folder, ignore=shutil.ignore_patterns("*.py", "__pycache__")
    )
    if edit is not None:
        transitions = folder / "transitions.yaml"
        text = transitions.read_text()
        assert edit[0] in text
        transitions.write_text(text.replace(edit[0], edit[1]))
    return load_ruleset(folder, known_features=[*load_catalog().names, *MODEL_SCORE_COLUMNS])


def test_the_answers_tag_names_the_rules_content_not_where_they_were_read(tmp_path):
    # given the same rules read from two folders (a batch and a service installed apart),
    # and a third copy whose one rule says something else
    batch = _rules_copy(tmp_path / "batch")
    service = _rules_copy(tmp_path / "service")
    edited = _rules_copy(
        tmp_path / "edited", ("30 or more days without any activity", "30 idle days or more")
    )
    assert batch.campaigns.templates_dir != service.campaigns.templates_dir

    # when / then: the folders do not change the tag; the content does
    assert answers_tag("7", batch) == answers_tag("7", service)
    assert answers_tag("7", edited) != answers_tag("7", batch)
