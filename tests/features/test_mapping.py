"""Tests for features/mapping.py: loading mapping YAML files and translating foreign event types."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from features.mapping import EventMapping, MappingError, load_mapping, map_event_types

DATA = Path(__file__).parent / "data"


def write_mapping(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_mapping_reads_renames_types_and_ignored_columns():
    # given the foreign-log mapping fixture
    # when it is loaded
    mapping = load_mapping(DATA / "foreign_mapping.yaml")
    # then every section is there as written
    assert mapping.columns["user_id"] == "customer_id"
    assert mapping.columns["timestamp"] == "ts"
    assert mapping.event_types == {
        "login": "session",
        "lesson_done": "lesson_completed",
        "posted": "community_post",
    }
    assert mapping.ignore_columns == ("ip_address",)


def test_mapping_is_frozen():
    # given a loaded mapping
    mapping = EventMapping(event_types={"login": "session"})
    # when someone tries to change it, then pydantic refuses
    with pytest.raises(ValueError, match="frozen"):
        mapping.event_types = {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "event_types:\n  login: sesion\n",
            r"mapping\.yaml: key event_types\.login: 'sesion' is not a canonical event type",
            id="unknown-target-type",
        ),
        pytest.param(
            "columns:\n  user_id: user\n",
            r"mapping\.yaml: key columns\.user_id: 'user' is not a contract column",
            id="unknown-contract-column",
        ),
        pytest.param(
            "columns:\n  a: ts\n  b: ts\n",
            r"mapping\.yaml: key columns: .*same contract column: \{'ts': \['a', 'b'\]\}",
            id="two-columns-one-target",
        ),
        pytest.param(
            "event_type:\n  login: session\n",
            r"mapping\.yaml: key event_type: unknown key",
            id="unknown-top-level-key",
        ),
        pytest.param(
            "- login\n- session\n",
            r"mapping\.yaml: expected a mapping .* found a list",
            id="not-a-mapping",
        ),
        pytest.param("", r"mapping\.yaml: .* found an empty file", id="empty-file"),
        pytest.param(
            "event_types:\n  login: [session\n", r"mapping\.yaml: not valid YAML", id="bad-yaml"
        ),
        pytest.param(
            "columns:\n  ip: ts\nignore_columns: [ip]\n",
            r"mapping\.yaml: .*both renamed and ignored: \['ip'\]",
            id="renamed-and-ignored",
        ),
    ],
)
def test_load_mapping_errors_name_the_file_and_key(tmp_path, text, expected):
    # given a broken mapping file
    path = write_mapping(tmp_path, text)
    # when it is loaded, then the error names the file and the offending key
    with pytest.raises(MappingError, match=expected):
        load_mapping(path)


def test_load_mapping_of_a_missing_file_names_it(tmp_path):
    # given a path with no file
    path = tmp_path / "nowhere.yaml"
    # when it is loaded, then the error names the path
    with pytest.raises(MappingError, match=r"nowhere\.yaml: cannot read"):
        load_mapping(path)


def test_map_event_types_translates_and_keeps_canonical_types():
    # given foreign types, one canonical type and a null
    types = pd.Series(["login", "quiz_passed", None, "lesson_done"], index=[10, 11, 12, 13])
    mapping = EventMapping(event_types={"login": "session", "lesson_done": "lesson_completed"})
    # when they are mapped
    mapped = map_event_types(types, mapping)
    # then foreign types are translated, canonical ones kept, the null stays, the index is kept
    assert mapped.values.tolist()[:2] == ["session", "quiz_passed"]
    assert pd.isna(mapped.values.iloc[2])
    assert mapped.values.iloc[3] == "lesson_completed"
    assert mapped.values.index.tolist() == [10, 11, 12, 13]
    assert mapped.unmapped == {}


def test_map_event_types_lists_unmapped_types_with_counts_most_frequent_first():
    # given two types the mapping does not cover
    types = pd.Series(["logout", "click", "click", "login", "click"])
    mapping = EventMapping(event_types={"login": "session"})
    # when they are mapped without allow_unknown
    mapped = map_event_types(types, mapping)
    # then they are counted, most frequent first, and left as they were
    assert list(mapped.unmapped.items()) == [("click", 3), ("logout", 1)]
    assert mapped.unmapped_rows == 4
    assert mapped.values.tolist() == ["logout", "click", "click", "session", "click"]
    assert not mapped.became_other


def test_map_event_types_with_allow_unknown_turns_unmapped_types_into_other():
    # given a type outside the vocabulary and no mapping
    types = pd.Series(["session", "click"])
    # when it is mapped with allow_unknown
    mapped = map_event_types(types, allow_unknown=True)
    # then it becomes "other", and is still reported as unmapped
    assert mapped.values.tolist() == ["session", "other"]
    assert mapped.unmapped == {"click": 1}
    assert mapped.became_other


def test_mapping_may_send_a_type_to_other_explicitly():
    # given a mapping that buckets a known foreign type as "other"
    mapping = EventMapping(event_types={"heartbeat": "other"})
    # when the type is mapped without allow_unknown
    mapped = map_event_types(pd.Series(["heartbeat"]), mapping)
    # then it is mapped, not unmapped
    assert mapped.values.tolist() == ["other"]
    assert mapped.unmapped == {}


def test_renames_and_conflicts_only_concern_present_columns():
    # given a mapping renaming user_id and timestamp
    mapping = EventMapping(columns={"user_id": "customer_id", "timestamp": "ts"})
    # when applied to a frame with user_id and a customer_id column already
    columns = ["user_id", "customer_id", "event_type"]
    # then only user_id is renamed, and that rename is a conflict
    assert mapping.renames_for(columns) == {"user_id": "customer_id"}
    assert mapping.rename_conflicts(columns) == {"user_id": "customer_id"}
    assert mapping.rename_conflicts(["user_id", "event_type"]) == {}
