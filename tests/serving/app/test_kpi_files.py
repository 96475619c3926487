"""Stored KPIs: what ``lstep kpis`` reads instead of computing while their key holds."""

from __future__ import annotations

import json
import os
from datetime import UTC, date, datetime

import pytest

from serving.app.kpi_files import (
    LEDGER_DAYS,
    EventStore,
    day_kpis,
    kpi_key,
    kpis_path,
    ledger_bar,
    read_stored_kpis,
    rules_digest,
)
from serving.app.kpi_inputs import StoredEvents, kpis_at
from tests.serving.app.test_kpi_inputs import DAY_1, DAY_3, _events, _snapshot, batch_days
from tests.serving.app.test_kpis import customers_frame
from tests.serving.batches import FIRST_DAY, apply
from tests.serving.fixtures import packaged_ruleset

NOW = datetime(2031, 1, 1, tzinfo=UTC)
DAY_5 = date(2024, 4, 11)


@pytest.fixture
def workspace(store, tmp_path):
    """Three rules-only batch days with their snapshots, and an event store's two files."""
    batch_days(store, tmp_path, [("a", "ST_001", "ST_001")])
    _events([("a", "2024-03-02 10:00"), ("b", "2024-04-05 10:00")]).to_parquet(
        tmp_path / "events.parquet"
    )
    enrolled = dict.fromkeys("abc", "2024-02-20")
    customers_frame(enrolled).to_parquet(tmp_path / "customers.parquet")
    sources = EventStore(tmp_path, tmp_path / "events.parquet", tmp_path / "customers.parquet")
    return store, sources


class CountingRules:
    """``rules_for`` that counts its calls: a call means the KPIs were computed."""

    def __init__(self, resolved: str | None = None) -> None:
        self.calls = 0
        self.resolved = resolved

    def __call__(self, version: str | None) -> tuple:
        self.calls += 1
        return packaged_ruleset(), self.resolved


def test_the_first_call_computes_and_stores_and_the_next_reads_the_same_kpis(workspace):
    # given a workspace whose day has no stored KPIs yet
    store, sources = workspace
    rules = CountingRules()
    # when the KPIs of the day are asked twice
    first = day_kpis(store, DAY_3, sources, rules, now=NOW)
    second = day_kpis(store, DAY_3, sources, rules, now=NOW)
    # then they are computed once, stored, and read back equal to what kpis_at computes
    computed = kpis_at(
        store, DAY_3, customers=customers_frame(dict.fromkeys("abc", "2024-02-20")),
        events=StoredEvents(sources.events, NOW), ruleset=packaged_ruleset(),
        data_dir=sources.data_dir,
    )  # fmt: skip
    assert rules.calls == 1
    assert kpis_path(sources.data_dir, DAY_3).is_file()
    assert first == second == computed
    assert [kpi.model_dump_json() for kpi in second] == [kpi.model_dump_json() for kpi in computed]


def test_a_new_batch_day_moves_the_audit_head_and_the_kpis_are_computed_again(workspace):
    # given the day's KPIs stored
    store, sources = workspace
    rules = CountingRules()
    before = day_kpis(store, DAY_3, sources, rules, now=NOW)
    # when another batch day is completed, then the same day's KPIs are asked
    apply(store, DAY_5, [("a", "ST_004", "ST_004")])
    after = day_kpis(store, DAY_3, sources, rules, now=NOW)
    # then the stored ones no longer match their key: computed again (the same values: the
    # later day changes nothing known on DAY_3)
    assert rules.calls == 2
    assert after == before


def test_a_new_version_of_the_event_log_is_a_miss(workspace):
    # given the day's KPIs stored
    store, sources = workspace
    rules = CountingRules()
    day_kpis(store, DAY_3, sources, rules, now=NOW)
    # when the event log is rewritten (a later modification time)
    stamp = sources.events.stat()
    os.utime(sources.events, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1_000_000_000))
    day_kpis(store, DAY_3, sources, rules, now=NOW)
    # then the KPIs are computed again
    assert rules.calls == 2


def test_other_rules_have_another_digest(tmp_path):
    # given a copy of the packaged rules' files
    from serving.app.kpi_files import packaged_rules_dir

    packaged = packaged_rules_dir()
    for path in packaged.iterdir():
        if path.suffix == ".yaml":
            (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "templates").symlink_to(packaged / "templates")
    same = rules_digest(tmp_path)
    # when one rule file changes by a byte
    tags = tmp_path / "tags.yaml"
    tags.write_text(tags.read_text() + "\n")
    # then the copy had the packaged digest, and the changed one has another
    assert same == rules_digest(None)
    assert rules_digest(tmp_path) != same


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"layout": 0, "key": {}, "kpis": []}), ""],
    ids=["corrupt", "old layout", "empty"],
)
def test_an_unreadable_stored_file_is_a_miss_then_replaced(workspace, content):
    # given the day's KPIs stored, then the file damaged
    store, sources = workspace
    rules = CountingRules()
    expected = day_kpis(store, DAY_3, sources, rules, now=NOW)
    kpis_path(sources.data_dir, DAY_3).write_text(content, encoding="utf-8")
    # when the KPIs are asked again
    found = day_kpis(store, DAY_3, sources, rules, now=NOW)
    # then they are computed (no error), equal, and the file is whole again
    assert rules.calls == 2
    assert found == expected
    key = kpi_key(
        store.audit_head(), DAY_3, events=sources.events, customers=sources.customers,
        rules_dir=None, model_version=None,
    )  # fmt: skip
    assert read_stored_kpis(sources.data_dir, key) == expected


def test_kpis_of_rules_not_resolved_as_the_day_was_are_not_stored(workspace, monkeypatch):
    # given a day scored by version 3 (as its run says), whose version cannot be found now
    store, sources = workspace
    monkeypatch.setattr(
        store, "completed_run", lambda day: {"run_id": "r", "model_version": "3", "rules_only": 0}
    )
    rules = CountingRules(resolved=None)
    # when the KPIs are asked
    day_kpis(store, DAY_3, sources, rules, now=NOW)
    # then they are computed with the rules as they could be resolved, but not stored under
    # a key that says version 3 resolved them
    assert rules.calls == 1
    assert not kpis_path(sources.data_dir, DAY_3).exists()


def test_a_day_without_an_event_store_stores_kpis_keyed_on_no_files(store, tmp_path):
    # given one batch day and no event store files
    apply(store, DAY_1, FIRST_DAY)
    _snapshot(tmp_path, DAY_1, set())
    sources = EventStore(tmp_path, tmp_path / "events.parquet", tmp_path / "customers.parquet")
    rules = CountingRules()
    # when the KPIs are asked twice
    first = day_kpis(store, DAY_1, sources, rules, now=NOW)
    second = day_kpis(store, DAY_1, sources, rules, now=NOW)
    # then computed once without labels or cohorts, then read
    assert rules.calls == 1
    assert first == second
    stored = json.loads(kpis_path(tmp_path, DAY_1).read_text(encoding="utf-8"))
    assert stored["key"]["events"] is None and stored["key"]["customers"] is None


class DrawnBars:
    """A ``BatchProgress`` that keeps the bars it is asked for, and what each was told."""

    def __init__(self) -> None:
        self.bars: list[tuple[str, int, list[date]]] = []

    def stage(self, as_of, name):
        raise AssertionError("the ledger's days draw no stage")

    def days(self, total: int, what: str = "backfill days"):
        told: list[date] = []
        self.bars.append((what, total, told))
        return told.append


def test_the_ledger_draws_a_bar_of_its_days_only_when_it_computes_several():
    # given where a command draws its bars
    drawn = DrawnBars()
    bar = ledger_bar(drawn)
    # when the ledger computes one day (a daily run), then three (a first build)
    bar(1)(DAY_1)
    bar(3)(DAY_3)
    # then only the three days have a bar, named and told their day
    assert drawn.bars == [(LEDGER_DAYS, 3, [DAY_3])]
    # and nothing is drawn without progress
    assert ledger_bar(None) is None
