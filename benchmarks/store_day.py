"""Benchmark: the state store's part of a steady batch day, replayed alone (issue 14).

    .venv/bin/python benchmarks/store_day.py capture --customers 200000 --out DIR
    .venv/bin/python benchmarks/store_day.py replay --out DIR [--repeat 3] [--profile FILE]

``capture`` runs ``batch_scale.py``'s days (day 1, one unmeasured day, the dispatcher's effect)
into ``DIR/state.db`` and, on the steady day, saves the store as it stood before the day
(``DIR/before.db``) and what the batch handed the store (``DIR/day.pkl``: the ``BatchDay``,
decisions, scores and campaign plan); on the first load (day 1: every learner new, tagged and
enrolled) the same as ``DIR/first_before.db`` and ``DIR/first_day.pkl``. ``replay --day first``
replays the first load, ``--day steady`` (the default) the steady day.
``replay`` copies ``before.db`` and times, in CPU seconds
(``time.process_time``, first line) and wall seconds (second line), what the batch asks the
store on that day: the state before the day, the pending pairs, ``apply_day`` and the state
after it, ``--repeat`` times on fresh copies.
Run it with ``PYTHONPATH`` set to another checkout to A/B the store's code on the same day.

``--url`` replays on PostgreSQL instead: each replay loads ``before.db`` into a fresh schema of
that server (not timed) and drops it after. ``--sql-scores`` keeps the day's scores in the SQL
``scores`` table (a store without a scores directory) instead of the run's parquet file.
``--dump DIR`` saves, beside the frames the batch reads, every table of the store after the day
and the day's scores as ``scores_frame`` reads them; ``compare DIR DIR`` asserts two dumps equal
(``check_exact``): old and new code leave the same store. Tables are dumped in parts
(``table_NAME.NNNN.pkl``, ``DUMP_PART_ROWS`` rows each, in key order), compared part by part:
a 1M first load's dump fits in memory.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import batch_scale

DUMP_PART_ROWS = 200_000
"""Rows of a table per ``--dump`` part: a part of the 1M outbox is a few hundred MB."""
DAY_FILES = {"steady": ("before.db", "day.pkl"), "first": ("first_before.db", "first_day.pkl")}
"""The captured files of each day: the store before the day and the store's inputs."""


def _capture_day(
    population: str, out: str, tracking_uri: str, as_of, run_id: str, day: str = "steady"
) -> dict:
    """``batch_scale._batch_day`` with the store's ``apply_day`` inputs saved on the way (as
    ``DAY_FILES[day]``)."""
    from serving.infra.store import StateStore

    original = StateStore.apply_day
    before, inputs = DAY_FILES[day]

    def apply_day(self, batch, decisions, scores, plan=None):
        import sqlite3

        # The backup API, not a file copy: committed pages may still be in the WAL only.
        with (
            sqlite3.connect(Path(out) / "state.db") as src,
            sqlite3.connect(Path(out) / before) as dst,
        ):
            src.backup(dst)
        with open(Path(out) / inputs, "wb") as file:
            pickle.dump((batch, decisions, scores, plan), file)
        return original(self, batch, decisions, scores, plan)

    StateStore.apply_day = apply_day
    return batch_scale._batch_day(population, f"sqlite:///{out}/state.db", tracking_uri, as_of,
                                  run_id, "duckdb")  # fmt: skip


def capture(args: argparse.Namespace) -> None:
    population, _ = batch_scale._population(args.customers, args.days, args.seed)
    tracking_uri = batch_scale._champion_store()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{out / 'state.db'}"
    end = date(2026, 1, 1) + timedelta(days=args.days)  # batch_scale.py's measured day
    first = end - timedelta(days=2)
    inputs = (str(population), url, tracking_uri)
    batch_scale._in_child(_capture_day, str(population), str(out), tracking_uri, first, "d1",
                          "first")  # fmt: skip
    batch_scale._mark_due_sent(url, first)
    batch_scale._in_child(batch_scale._batch_day, *inputs, first + timedelta(days=1), "w1",
                          "duckdb")  # fmt: skip
    batch_scale._mark_due_sent(url, end - timedelta(days=1))
    day = batch_scale._in_child(_capture_day, str(population), str(out), tracking_uri, end, "d2")
    print({key: value for key, value in day.items() if key != "stages"}, day["stages"])


def _sqlite_copy(args: argparse.Namespace, scratch: Path) -> str:
    """A fresh copy of ``before.db`` in ``scratch``, as a store URL."""
    db = scratch / "state.db"
    shutil.copy(Path(args.out) / DAY_FILES[args.day][0], db)
    return f"sqlite:///{db}"


@contextmanager
def _postgres_copy(args: argparse.Namespace) -> Iterator[str]:
    """``before.db`` loaded into a fresh schema of ``args.url`` (dropped after), as a store URL.

    Every table goes through the store's own bulk writer (binary COPY) with the rows SQLAlchemy
    reads from SQLite, ids included; the id sequences then continue after them.
    """
    from sqlalchemy import create_engine, select, text
    from sqlalchemy.engine import make_url

    from serving.infra.sql import bulk_insert, result_frame
    from serving.infra.store import StateStore
    from serving.infra.tables import Base

    schema = f"store_day_{uuid.uuid4().hex[:12]}"
    admin = create_engine(args.url)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = make_url(args.url).update_query_dict({"options": f"-csearch_path={schema}"})
    url = url.render_as_string(hide_password=False)
    try:
        StateStore(url).close()  # the schema at head, empty
        source = create_engine(f"sqlite:///{Path(args.out) / DAY_FILES[args.day][0]}")
        target = create_engine(url)
        with source.connect() as read, target.begin() as write:
            for table in Base.metadata.sorted_tables:
                frame = result_frame(read.execute(select(table)))
                if table.name == "batch_runs" and len(frame):  # JSON summaries: plain inserts
                    write.execute(table.insert(), frame.to_dict("records"))
                elif "customer_id" in frame:
                    bulk_insert(write, table, frame)
                elif len(frame):
                    raise ValueError(f"{table.name}: rows to load without a customer_id")
                if "id" in table.c and table.c.id.autoincrement is True and len(frame):
                    write.execute(text(f"SELECT setval(pg_get_serial_sequence('{table.name}', "
                                       f"'id'), {int(frame['id'].max())})"))  # fmt: skip
        source.dispose()
        target.dispose()
        yield url
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


def _replay_once(args: argparse.Namespace, day: tuple, scratch: Path) -> dict[str, float]:
    """One replay of the day on a fresh copy of ``before.db``: CPU and wall seconds by call."""
    if args.url is None:
        return _replay_on(args, day, scratch, _sqlite_copy(args, scratch))
    with _postgres_copy(args) as url:
        return _replay_on(args, day, scratch, url)


def _replay_on(args: argparse.Namespace, day: tuple, scratch: Path, url: str) -> dict[str, float]:
    """The day's store calls on the store at ``url``, timed; dumped when asked."""
    from serving.infra.store import StateStore

    batch, decisions, scores, plan = day
    scores_dir = None if args.sql_scores else scratch / "scores"
    # A fixed clock: finished_at is then the same in every replay (the dumps compare it).
    store = StateStore(url, scores_dir=scores_dir, clock=lambda: batch.now)
    marked = hasattr(store, "state_mark")  # the code before state_after read the state again
    results = {}

    def state_after():
        if marked:
            return store.state_after(batch.as_of, results["state before"], results["mark"])
        return store.state_frame(batch.as_of)

    calls = {
        "mark": lambda: store.state_mark() if marked else None,
        "state before": lambda: store.state_frame(batch.as_of),
        "pending pairs": lambda: store.pending_pairs(batch.as_of),
        "apply_day": lambda: store.apply_day(batch, decisions, scores, plan),
        "state after": state_after,
    }
    times = {}
    for name, call in calls.items():
        started, started_wall = time.process_time(), time.perf_counter()
        results[name] = call()
        times[name] = time.process_time() - started
        times[f"{name} wall"] = time.perf_counter() - started_wall
    if args.dump:
        _dump(store, batch.as_of, results, Path(args.dump))
    store.close()
    return times


def _dump(store, as_of, results: dict, out: Path) -> None:
    """The frames the batch read, the run summary, every table after the day and the day's
    scores as the store reads them, pickled under ``out``; each table in parts of
    ``DUMP_PART_ROWS`` rows in key order (``_dump_table``)."""
    from serving.infra.tables import Base

    out.mkdir(parents=True, exist_ok=True)
    for name in ("state before", "pending pairs", "state after"):
        results[name].to_pickle(out / f"{name.replace(' ', '_')}.pkl")
    summary = results["apply_day"].summary
    (out / "summary.txt").write_text(repr(sorted(summary.items())))
    with store._connect() as conn:
        for table in Base.metadata.sorted_tables:
            _dump_table(conn, table, out)
    store.scores_frame(as_of).to_pickle(out / "scores_of_the_day.pkl")


def _dump_table(conn, table, out: Path) -> None:
    """One table's rows in key order as ``table_NAME.NNNN.pkl`` parts of ``DUMP_PART_ROWS``
    rows (``result_frame``'s frames), one part in memory at a time: the 1M first load's outbox
    read whole took more than 9 GiB. An empty table leaves one empty part (its columns)."""
    import pandas as pd
    from sqlalchemy import select

    keys = list(table.primary_key.columns)
    result = conn.execute(select(table).order_by(*keys))
    columns = list(result.keys())
    part = 0
    for rows in result.partitions(DUMP_PART_ROWS):
        frame = pd.DataFrame.from_records([tuple(row) for row in rows], columns=columns)
        frame.to_pickle(out / f"table_{table.name}.{part:04d}.pkl")
        part += 1
    if part == 0:
        pd.DataFrame(columns=columns).to_pickle(out / f"table_{table.name}.0000.pkl")


def compare(args: argparse.Namespace) -> None:
    """Assert that two dumps hold the same frames, value for value."""
    import pandas as pd

    first, second = (Path(name) for name in args.dirs)
    names = sorted(path.name for path in first.glob("*.pkl"))
    if names != sorted(path.name for path in second.glob("*.pkl")):
        raise SystemExit(f"the dumps hold different files: {first} {second}")
    for name in names:
        left, right = pd.read_pickle(first / name), pd.read_pickle(second / name)
        pd.testing.assert_frame_equal(left, right, check_exact=True, obj=name)
        print(f"{name:32s} {len(left):9,d} rows x {len(left.columns):2d} columns: equal")
    if (first / "summary.txt").read_text() != (second / "summary.txt").read_text():
        raise SystemExit("the run summaries differ")
    print("summary.txt: equal")


def replay(args: argparse.Namespace) -> None:
    with open(Path(args.out) / DAY_FILES[args.day][1], "rb") as file:
        day = pickle.load(file)
    for _ in range(args.repeat):
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile(time.process_time)
            profiler.enable()
        with tempfile.TemporaryDirectory() as scratch:
            times = _replay_once(args, day, Path(scratch))
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(args.profile)
        for kind in ("cpu", "wall"):
            picked = {name.removesuffix(" wall"): seconds for name, seconds in times.items()
                      if name.endswith(" wall") == (kind == "wall")}  # fmt: skip
            columns = "  ".join(f"{name} {seconds:5.2f}" for name, seconds in picked.items())
            print(f"{kind:4s} {columns}  total {sum(picked.values()):5.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["capture", "replay", "compare"])
    parser.add_argument("dirs", nargs="*", help="compare: the two --dump directories")
    parser.add_argument("--out")
    parser.add_argument("--url", help="replay on this PostgreSQL server (a fresh schema each)")
    parser.add_argument("--day", choices=sorted(DAY_FILES), default="steady",
                        help="replay: the first load (day 1) or the steady day")  # fmt: skip
    parser.add_argument("--sql-scores", action="store_true", help="scores in SQL, not parquet")
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile")
    parser.add_argument("--dump", help="directory to pickle the frames read into")
    args = parser.parse_args()
    {"capture": capture, "replay": replay, "compare": compare}[args.mode](args)


if __name__ == "__main__":
    main()
