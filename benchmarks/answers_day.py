"""Benchmark: the batch's answers stage of a captured day, replayed alone (issue 14).

    .venv/bin/python benchmarks/answers_day.py capture --customers 200000 --out DIR
    .venv/bin/python benchmarks/answers_day.py replay --out DIR [--day steady|first]
        [--repeat 3] [--profile FILE] [--dump FILE.arrow]
    .venv/bin/python benchmarks/answers_day.py replay-decide --out DIR [...the same options]
    .venv/bin/python benchmarks/answers_day.py compare A.arrow B.arrow

``capture`` runs ``batch_scale.py``'s days into ``DIR/state.db`` (a first load, the day after it,
the dispatcher's effect, then the steady day) and saves, for the first and the steady day,
what the batch handed ``answers_table`` (``DIR/<day>/answers_in.pkl``: features, scores, the
rules, the state the day left, the day's first decide as a plain dict of ``DecidedDay``'s
fields), the decisions it committed (``committed.pkl``) and the answers file it wrote
(``answers.arrow``). ``replay`` times ``answers_table`` on those inputs, in CPU seconds
(``time.process_time``) and wall, ``--repeat`` times; the ``DecidedDay`` is rebuilt from the
fields the replaying code knows, so a capture made by newer code replays on older code. Run it
with ``PYTHONPATH`` set to another checkout to A/B the code on the same day, and ``compare`` the
tables two replays (or two captures) dumped: every column, values and schema metadata.
``replay-decide`` times the batch's own decide stage of that day instead, on the same inputs
(the rules on the state before the day, as ``assess`` calls them, then ``cut_day``), and dumps
its decisions: the stage the answers reuse, replayed alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import pickle
import shutil
import sys
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import batch_scale

DAYS = ("first", "steady")


def _capture_day(population: str, out: str, tracking_uri: str, as_of, run_id: str) -> dict:
    """``batch_scale._batch_day`` with the answers' inputs and the committed decisions saved."""
    import serving.app.answers_table as answers_module
    from serving.infra.store import StateStore

    original_table, original_apply = answers_module.answers_table, StateStore.apply_day

    def answers_table(features, scores, **kwargs):
        decided = kwargs.pop("decided")
        fields = None if decided is None else dict(vars(decided))
        with open(Path(out) / "answers_in.pkl", "wb") as file:
            pickle.dump({"features": features, "scores": scores, "decided": fields, **kwargs},
                        file)  # fmt: skip
        return original_table(features, scores, decided=decided, **kwargs)

    def apply_day(self, batch, decisions, scores, plan=None):
        with open(Path(out) / "committed.pkl", "wb") as file:
            pickle.dump(decisions, file)
        return original_apply(self, batch, decisions, scores, plan)

    answers_module.answers_table, StateStore.apply_day = answers_table, apply_day
    state_url = f"sqlite:///{Path(out).parent / 'state.db'}"
    result = batch_scale._batch_day(population, state_url, tracking_uri, as_of, run_id, "duckdb")
    data = Path(out).parent / "data" / "answers"
    shutil.copy(next(data.glob(f"as_of={as_of.isoformat()}.*.arrow")), Path(out) / "answers.arrow")
    return result


def capture(args: argparse.Namespace, capture_day=None) -> None:
    """The days into ``args.out``: ``capture_day`` (``_capture_day``, or another tool's, with
    the same arguments) saves what the first and the steady day need in their folders."""
    capture_day = capture_day or _capture_day
    population, _ = batch_scale._population(args.customers, args.days, args.seed)
    tracking_uri = batch_scale._champion_store()
    out = Path(args.out)
    for name in DAYS:
        (out / name).mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{out / 'state.db'}"
    end = date(2026, 1, 1) + timedelta(days=args.days)  # batch_scale.py's measured day
    first = end - timedelta(days=2)
    common = (str(population), tracking_uri)
    day = batch_scale._in_child(capture_day, common[0], str(out / "first"), common[1], first,
                                "d1")  # fmt: skip
    print("first ", {key: value for key, value in day.items() if key != "stages"}, day["stages"])
    batch_scale._mark_due_sent(url, first)
    batch_scale._in_child(batch_scale._batch_day, common[0], url, common[1],
                          first + timedelta(days=1), "w1", "duckdb")  # fmt: skip
    batch_scale._mark_due_sent(url, end - timedelta(days=1))
    day = batch_scale._in_child(capture_day, common[0], str(out / "steady"), common[1], end, "d2")
    print("steady", {key: value for key, value in day.items() if key != "stages"}, day["stages"])


def _answers_inputs(path: Path) -> dict:
    """The captured inputs, the ``DecidedDay`` rebuilt from the fields this code knows."""
    from serving.app.day_decisions import DecidedDay

    with open(path, "rb") as file:
        inputs = pickle.load(file)
    fields = inputs.pop("decided")
    if fields is not None:
        known = {field.name for field in dataclasses.fields(DecidedDay)}
        inputs["decided"] = DecidedDay(**{k: v for k, v in fields.items() if k in known})
    return inputs


def timed(call, profile: str | None):
    """``call()``'s result, CPU and wall seconds (under cProfile, dumped to ``profile``)."""
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
    cpu, wall = time.process_time(), time.perf_counter()
    result = call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    return result, cpu, wall


def replay(args: argparse.Namespace) -> None:
    from serving.app.answers_table import answers_table

    inputs = _answers_inputs(Path(args.out) / args.day / "answers_in.pkl")
    table = None
    for _ in range(args.repeat):
        table, cpu, wall = timed(lambda: answers_table(**inputs), args.profile)
        print(f"answers_table  cpu {cpu:6.2f} s  wall {wall:6.2f} s  rows {table.num_rows:,}",
              flush=True)  # fmt: skip
    if args.dump and table is not None:
        dump(table, args.dump)


def replay_decide(args: argparse.Namespace) -> None:
    """The day's first decide, as the batch's ``decide`` stage runs it, timed and dumped."""
    import pyarrow as pa

    from serving.app.day_decisions import cut_day
    from serving.core.assess import decide_learners

    inputs = _answers_inputs(Path(args.out) / args.day / "answers_in.pkl")
    features, scores, ruleset = inputs["features"], inputs["scores"], inputs["ruleset"]
    state, as_of = inputs["decided"].state, inputs["as_of"]

    def first_decide():
        decisions = decide_learners(
            features, scores, ruleset, state, as_of, check_inputs=True, check_output=True
        )
        return cut_day(ruleset, state, decisions, features)

    decided = None
    for _ in range(args.repeat):
        decided, cpu, wall = timed(first_decide, args.profile)
        print(f"decide  cpu {cpu:6.2f} s  wall {wall:6.2f} s  rows {len(decided.decisions):,}",
              flush=True)  # fmt: skip
    if args.dump and decided is not None:
        dump(pa.Table.from_pandas(decided.decisions, preserve_index=False), args.dump)


def dump(table, path: str) -> None:
    """Write ``table`` to the Arrow file ``path`` (what ``compare`` reads)."""
    import pyarrow as pa
    import pyarrow.ipc as ipc

    with pa.OSFile(path, "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)


def compare(args: argparse.Namespace) -> None:
    """Every column's values and the schema (metadata included) of two answers tables."""
    import pyarrow.ipc as ipc

    left, right = (ipc.open_file(path).read_all() for path in (args.out, args.other))
    same_schema = left.schema.equals(right.schema, check_metadata=True)
    print(f"rows {left.num_rows:,} / {right.num_rows:,}; schema and metadata equal: {same_schema}")
    differing = [
        name for name in left.column_names
        if name not in right.column_names or not left.column(name).equals(right.column(name))
    ]  # fmt: skip
    print(f"columns differing: {differing or 'none'} of {left.num_columns}")
    equal = left.equals(right, check_metadata=True)
    print(f"tables equal (values, types, order, metadata): {equal}")
    sys.exit(0 if equal else 1)


def arguments(
    doc: str, what: str, dumped: str, more_modes: tuple[str, ...] = ()
) -> argparse.Namespace:
    """The command line of a replay tool (capture, replay or compare ``what`` it dumps; the
    tool's ``more_modes`` too)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("mode", choices=["capture", "replay", "compare", *more_modes])
    parser.add_argument("out", nargs="?", help=f"compare: the first {what}")
    parser.add_argument("other", nargs="?", help=f"compare: the second {what}")
    parser.add_argument("--out", dest="out_dir")
    parser.add_argument("--day", choices=DAYS, default="steady")
    parser.add_argument("--customers", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--profile")
    parser.add_argument("--dump", help=f"write the last replay's {what} to this {dumped}")
    args = parser.parse_args()
    if args.mode != "compare":
        args.out = args.out_dir
    return args


def main() -> None:
    args = arguments(__doc__, "table", "Arrow file", ("replay-decide",))
    modes = {"capture": capture, "replay": replay, "replay-decide": replay_decide}
    (modes | {"compare": compare})[args.mode](args)


if __name__ == "__main__":
    main()
