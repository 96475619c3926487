"""Benchmark: the whole daily batch run for N learners over their 30-day window.

    .venv/bin/python benchmarks/batch_scale.py --customers 1000000 [--days 60] [--seed 7]
        [--engine duckdb|spark|both] [--history 1] [--spark-days all|measured] [--profile FILE]
        [--keep-store DIR] [--spans] [--log-order learner|time] [--repeat N]

Data: the simulation of ``benchmarks/features_scale.py``
(``benchmarks/.cache/sim-{N}x{D}-s{seed}-code{version}``), simulated here when absent. The
champion is a small model trained once on 20k learners x 240 days (train_time.py's cache
``benchmarks/.cache/sim-20000x240-seed0-truth0.25-code{version}``, or one simulated here without
truth when absent; a 60-day log is too short for purged time splits) with 5 Optuna trials,
registered in ``benchmarks/.cache/batch-champion-code{version}`` and reused by later runs. It
scores the big population by alias, as production does. Every cache is keyed by the code version
of the sources that make it (``targets.code_version``): changed code simulates and trains anew.

The run uses a fresh SQLite state store (scores as parquet under its data directory, as the
apps keep them) in a temporary directory and goes through
``serving.app.batch.run_day`` exactly as ``lstep score`` does, in two child processes (so that each
peak RSS is its own):

1. ``day 1`` (as_of = the log's end - 1 day): the first batch ever, every learner new and tagged;
   it fills the store.
2. ``day 2`` (as_of = the log's end): the measured day, a learner moving here and there, reading
   the state day 1 wrote. Seconds per stage, total, peak RSS.

The day after a first load is not a steady day either: day 1 starts the tag campaigns of every
learner (an existing learner is onboarded, not welcomed: ``rules.arrivals``; the spread digests,
``rules.spread``, start for a seventh or a fourteenth of them; 1.45M messages at 1M learners,
1.64M before the spread), and the day after still plans ~2x a steady day (205k messages at 1M
against ~98k: learners whose decision names another campaign than on day 1, the arrivals'
welcomes, the win-back of the churned; 1.57M before onboardings, when day 1 fired every
learner's "into" campaign and day 2 all the tag campaigns). ``--history N`` (N > 1) measures a
steady day instead: day 1 is the log's end - N, days in between run unmeasured (one line each)
with the dispatcher's effect between them (due messages marked sent, as ``lstep dispatch`` would
leave them; its own cost is ``benchmarks/dispatch.py``'s), and the log's end is measured.

After the measured day, the line ``kpis`` times what ``lstep score`` then does on its own when
the event store is its data directory's: the day's KPIs computed and stored
(``serving.app.kpi_files.day_kpis``), in a child, on the store the day left. DuckDB's first load
and unmeasured days are followed by theirs too (a ``kpis`` line under each), as a daily
``lstep score`` would, so the measured day's KPIs find the run ledger up to the day before
(``serving.app.decision_runs``).

The inputs' check is not part of the measured day (its inputs are marked validated): the line
``inputs`` times what ``lstep score`` runs before each day on its own, in a child, DuckDB's proof
that the files meet their contracts (``features.parquet_check``). ``--validate`` also times the
full validation (``load_valid_inputs``: pandas + pandera over every event), what a log the proof
refuses costs; at 1M learners (~60M events) it needs ~9.4 GiB, so it is off by default. The
line ``lstep score`` adds up what the command spends on its day: the inputs' check, the measured
day and its KPIs (each in its own child; the command's start-up aside).

``--engine spark`` runs the same two days through ``serving.app.spark_day.SparkDay`` on a
``local[2]`` session (features by ``features.spark``); ``both`` runs DuckDB then Spark on the
same population, each into its own store, and prints their steady days side by side. The Spark
peak is the driver's Python process plus the JVM's (the Python workers are not counted). With
``both --spark-days measured`` Spark runs the measured day only, on a copy of the store DuckDB
left before its own measured day (the engines' parity tests hold their stores equal): at 1M
learners Spark's first load and wave day would take most of an hour on 2 cores and are not what
the comparison is about.

Each stage prints its wall seconds and the CPU seconds spent meanwhile by the batch's process
(all its threads) and its children (the store's reader process): CPU near 2x wall is a stage
that keeps both cores busy, near 1x one that leaves a core idle for work to overlap with it.

``--keep-store DIR`` keeps DuckDB's store as it is before the measured day in ``DIR`` (the
first run fills it; later runs with the same population and ``--history`` start from it and run
only the measured day): a change to the measured day is timed in a minute rather than four.
``--spans`` prints the measured day's stages as CLOCK_MONOTONIC intervals: under
``perf record -k CLOCK_MONOTONIC -g``, ``perf report --time START,END`` profiles one stage,
native code and kernel included (where cProfile sees Python only, and one thread).

``--repeat N`` runs the measured day N times, each from a copy of the store before it, and the
floor N times: one run of the same day on one kept store varied by 10-20% on these VMs (another
process's memory, the host's), so the verdicts then take the median day and the median floor
(each run's figures are printed too).

The simulator writes each learner's events together (learner by learner, in time order within
each): ``--log-order time`` runs the same population from a copy of its log ordered by time (then
learner), as a log appended day after day is, made once beside the population's cache. The
window's GROUP BY then meets each learner's ~45 window events spread across the file rather than
in a run, and its aggregate states (~1M groups of ~37 aggregates) are reached at random: at 1M
learners the window's aggregation took 7.5-8.1 s against 3.5-3.7 s on the learner-ordered log
(the same features). Figures of real, time-ordered logs are those of ``--log-order time``.

The floor, for comparison: the time DuckDB takes just to scan the window's events (every column the
features read, in [as_of - 30 d, as_of)) plus LightGBM's raw predict on the same learners' rows.
The day predicts with the champion's trees compiled to native code (``models.compiled``, the
same probabilities, faster); the time they take for the same rows is printed beside the floor.

Targets (issue 14, 2 cores): for 1M learners (x 60 days) the steady day (measured) <= 15 s, <= 4 GiB
peak RSS and <= 2.6x the floor printed in the same run (the ratio is what survives a busy
machine); the first day <= 25 s. A run at another size prints its figures, not a verdict.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from contextlib import closing, contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from targets import CACHE, code_version, package_sources, simulation_dir, verdict

CHAMPION_DIR = CACHE / (
    f"batch-champion-code{code_version(package_sources('features', 'models', 'training'))}"
)
TRAIN_POPULATION = (20_000, 240, 0)
"""customers, days, seed of the champion's training population (shared with train_time.py)."""
TARGET_CUSTOMERS, TARGET_DAYS = 1_000_000, 60
TARGET_SECONDS = 15.0
TARGET_GIB = 4.0
TARGET_FLOOR_RATIO = 2.6
TARGET_FIRST_DAY_SECONDS = 25.0
NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _peak_rss_gib() -> float:
    """Peak resident set size of this process, in GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def _in_child(function, *args) -> dict:
    """Run one stage in a fresh process so that its peak RSS is measured alone."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(function, args)


# --- inputs ---------------------------------------------------------------------------------------


def _simulate(customers: int, days: int, seed: int, out: str, truth_share: float) -> dict:
    from features.simulator import SimulationConfig, simulate

    started = time.perf_counter()
    config = SimulationConfig(customers=customers, days=days, seed=seed, truth_share=truth_share)
    summary = simulate(config, Path(out))
    return {
        "seconds": time.perf_counter() - started,
        "events": summary.events,
        "peak_rss_gib": _peak_rss_gib(),
    }


def _population(customers: int, days: int, seed: int) -> tuple[Path, dict]:
    """The features_scale.py cache of the big population (simulated when absent)."""
    out = simulation_dir(f"sim-{customers}x{days}-s{seed}")
    if (out / "meta.json").exists() and (out / "bench.json").exists():
        return out, json.loads((out / "bench.json").read_text())
    sim = _in_child(_simulate, customers, days, seed, str(out), 0.0)
    (out / "bench.json").write_text(json.dumps(sim))
    return out, sim


def ordered_log(population: Path, log_order: str) -> Path:
    """The population whose log is in ``log_order`` (``--log-order``): its own, or its copy
    ordered by time (``_time_ordered``)."""
    return _time_ordered(population) if log_order == "time" else population


def last_day(days: int) -> date:
    """The measured day of a population of ``days`` days: the day after its log's last."""
    return date(2026, 1, 1) + timedelta(days=days)


def _time_ordered(population: Path) -> Path:
    """The population with its events ordered by time (then learner), as a log appended day
    after day is: made once beside it (``--log-order time``), its customers the same file.

    Sorted in a child process: this one's peak would otherwise be every later child's (a
    spawned process starts with its parent's high-water mark, ``_peak_rss_gib``)."""
    out = population.parent / f"{population.name}-by-time"
    if not (out / "events.parquet").exists():
        seconds = _in_child(_sorted_by_time, str(population), str(out))
        print(f"log        ordered by time in {seconds:.0f} s ({out.name})")
    return out


def _sorted_by_time(population: str, out: str) -> float:
    """Write ``out``: ``population``'s customers and its events by time (then learner)."""
    from features.window_sql import _sql_literal
    from features.workspace import connect

    source, done = Path(population), Path(out)
    work = done.parent / f"{done.name}.partial"  # renamed once whole: no half copy is reused
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copyfile(source / "customers.parquet", work / "customers.parquet")
    started = time.perf_counter()
    con = connect(memory_limit="8GB")
    events, ordered = (_sql_literal(str(path / "events.parquet")) for path in (source, work))
    con.execute(
        f"COPY (SELECT * FROM read_parquet({events}) ORDER BY ts, customer_id) TO {ordered} "
        "(FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 1200000)"
    )
    con.close()
    work.rename(done)
    return time.perf_counter() - started


def _train_champion(tracking_dir: str, population: str) -> dict:
    """Train and register the small champion (training is only ever imported here)."""
    from rich.console import Console

    from serving.settings import disable_telemetry
    from training.jobs import TrainJob
    from training.pipeline import train

    disable_telemetry()
    started = time.perf_counter()
    directory = Path(tracking_dir)
    directory.mkdir(parents=True, exist_ok=True)
    job = TrainJob(
        events=f"{population}/events.parquet", customers=f"{population}/customers.parquet", trials=5
    )
    result = train(
        job,
        tracking_uri=f"sqlite:///{directory / 'mlflow.db'}",
        artifact_location=str(directory / "mlartifacts"),
        now=NOW,
        console=Console(quiet=True),
    )
    return {"seconds": time.perf_counter() - started, "version": result.model_version}


def _champion_store() -> str:
    """The tracking URI of the cached small champion (trained once, then reused)."""
    marker = CHAMPION_DIR / "champion.json"
    if not marker.exists():
        customers, days, seed = TRAIN_POPULATION
        cached = [
            simulation_dir(f"sim-{customers}x{days}-seed{seed}-truth{share}")
            for share in (0.25, 0.0)
        ]
        population = next((path for path in cached if (path / "meta.json").exists()), cached[1])
        if not (population / "meta.json").exists():
            _in_child(_simulate, customers, days, seed, str(population), 0.0)
        trained = _in_child(_train_champion, str(CHAMPION_DIR), str(population))
        marker.write_text(json.dumps({**trained, "population": population.name}))
        print(f"champion   trained v{trained['version']} in {trained['seconds']:.1f} s (cached)")
    return f"sqlite:///{CHAMPION_DIR / 'mlflow.db'}"


# --- the run --------------------------------------------------------------------------------------


def _batch_day(
    population: str,
    state_url: str,
    tracking_uri: str,
    as_of: date,
    run_id: str,
    engine: str,
    profile: str | None = None,
) -> dict:
    """One ``run_day`` over the parquet files, as ``lstep score`` runs it (under cProfile,
    its stats dumped to ``profile``, when that is given)."""
    from serving.app.batch import BatchContext, BatchInputs, run_day
    from serving.app.day_models import loaded
    from serving.app.jobs import load_models_beside
    from serving.infra.store import StateStore
    from serving.settings import DEFAULT_MODEL_NAME, Settings, disable_telemetry

    disable_telemetry()
    started = time.perf_counter()
    cpu = _CpuStages()
    inputs = BatchInputs(
        events=f"{population}/events.parquet",
        customers=f"{population}/customers.parquet",
        validated=True,  # validated once, timed on its own (``_validate``)
    )
    data_dir = Path(state_url.removeprefix("sqlite:///")).parent / "data"
    store = StateStore(state_url, scores_dir=data_dir / "scores")  # as the apps open it
    # as ``lstep score`` loads them (``batch_context``, after the store): on a thread, beside the
    # day's first stages
    models = load_models_beside(tracking_uri, DEFAULT_MODEL_NAME, rules_only=False)
    loaded_at: list[float] = []
    models.add_done_callback(lambda _: loaded_at.append(time.perf_counter()))
    spark_champion = loaded(models).champion if engine == "spark" else None
    with store, _engine_step(engine, spark_champion, tracking_uri) as step:
        context = BatchContext(
            store=store, models=models, run_id=run_id, now=NOW,
            data_dir=data_dir, step=step, progress=cpu,
            carry_window=Settings().carry_window,  # LSTEP_CARRY_WINDOW=false: aggregate each day
        )  # fmt: skip
        session = 0.0
        if step is not None:
            step.output_dir = data_dir / "spark"
            session = time.perf_counter() - started  # the session's start, the models' load in
        with _profiled(profile):
            result = run_day(as_of, inputs, context)
        jvm_gib = _jvm_peak_gib(step)
    loading = {"load champion + rules (beside)": loaded_at[0] - started}
    if session:
        loading["start Spark (champion loaded)"] = session
    return {
        "stages": {**loading, **result.stage_seconds},
        "cpu": cpu.seconds,
        "spans": cpu.spans,
        "seconds": time.perf_counter() - started,
        "learners": result.learners,
        "transitions": result.transitions,
        "peak_rss_gib": _peak_rss_gib() + jvm_gib,
    }


def _day_kpis(population: str, state_url: str, tracking_uri: str, as_of: date) -> dict:
    """The day's KPIs computed and stored as ``lstep score`` does after its day
    (``BatchJob._store_kpis``: ``serving.app.kpi_files.day_kpis``), on the store the day left."""
    from serving.app.kpi_files import EventStore, day_kpis
    from serving.infra.champion import load_champion
    from serving.infra.rulesets import load_rules
    from serving.infra.store import StateStore
    from serving.settings import disable_telemetry

    disable_telemetry()
    champion = load_champion(tracking_uri)
    ruleset, version = load_rules(champion=champion), str(champion.version)
    data_dir = Path(state_url.removeprefix("sqlite:///")).parent / "data"
    sources = EventStore(
        data_dir, Path(population) / "events.parquet", Path(population) / "customers.parquet"
    )
    started = time.perf_counter()
    with StateStore(state_url, scores_dir=data_dir / "scores") as store:
        day_kpis(store, as_of, sources, lambda _: (ruleset, version), now=NOW)
    return {"seconds": time.perf_counter() - started, "peak_rss_gib": _peak_rss_gib()}


_LIST_EVERY_S = 2.0
"""How often ``_CpuStages`` lists the batch's child processes (the store's reader starts once,
early in the day; a child that ended meanwhile is skipped when its times are read)."""


class _CpuStages:
    """A ``BatchProgress`` that adds up the CPU seconds spent during each stage.

    CPU of this process (every thread) and of its children (the store's reader process), read
    by psutil at the stage's ends, user and system apart: CPU beside wall says whether a stage
    kept both cores busy, and system time is mostly the kernel handing the process fresh pages
    (this machine's virtual memory makes a first touch of a page costly).
    """

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self._children: list = []
        self._listed = -float("inf")
        self.seconds: dict[str, tuple[float, float]] = {}
        self.spans: list[tuple[str, float, float]] = []

    def _processes(self) -> list:
        """This process and its children, listed again at most every ``_LIST_EVERY_S``: psutil
        lists children by reading every process's /proc entry (~5-10 ms), at each of a day's
        ~20 stage ends ~0.18 s of the measured day's own time."""
        if time.monotonic() - self._listed >= _LIST_EVERY_S:
            self._children = self._process.children(recursive=True)
            self._listed = time.monotonic()
        return [self._process, *self._children]

    def _cpu(self) -> tuple[float, float]:
        processes = self._processes()
        user = system = 0.0
        for process in processes:
            try:
                times = process.cpu_times()
            except Exception:  # a child that ended between the listing and the read
                continue
            user, system = user + times.user, system + times.system
        return user, system

    @contextmanager
    def stage(self, as_of: date, name: str):
        user, system = self._cpu()
        began = time.monotonic()
        yield
        self.spans.append((name, began, time.monotonic()))
        user_now, system_now = self._cpu()
        spent_user, spent_system = self.seconds.get(name, (0.0, 0.0))
        self.seconds[name] = (
            spent_user + user_now - user,
            spent_system + system_now - system,
        )

    def days(self, total: int, what: str = "backfill days"):
        return lambda day: None


@contextmanager
def _profiled(path: str | None):
    """cProfile around the block, its stats dumped to ``path`` (nothing when None).

    Timed in CPU seconds of this process (``time.process_time``), not wall: the machine is
    shared, and a busy neighbour would otherwise inflate every function's figure.
    """
    if path is None:
        yield
        return
    import cProfile

    profiler = cProfile.Profile(time.process_time)
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)


@contextmanager
def _engine_step(engine: str, champion, tracking_uri: str):
    """None for DuckDB; for Spark a ``SparkDay`` on a local[2] session (stopped after)."""
    if engine == "duckdb":
        yield None
        return
    from serving.app.spark_day import SparkDay, signature_names

    spark, source = _spark_source()
    try:
        yield SparkDay(
            spark=spark, source=source, model_uri=f"models:/lstep-churn/{champion.version}",
            tracking_uri=tracking_uri, input_names=signature_names(champion),
        )  # fmt: skip
    finally:
        spark.stop()


def _spark_source():
    """A local[2] session and ``features.spark``'s feature source on it."""
    from features.spark import SparkEngine, spark_session
    from serving.app.spark_day import EngineFeatures

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = spark_session("local[2]", app_name="batch-scale")
    return spark, EngineFeatures(SparkEngine(spark))


def _jvm_peak_gib(step) -> float:
    """The Spark JVM's peak resident set (VmHWM), 0 without Spark."""
    if step is None:
        return 0.0
    pid = step.spark.sparkContext._gateway.proc.pid
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    kib = next((int(line.split()[1]) for line in status if line.startswith("VmHWM")), 0)
    return kib / 1024**2


def _prove(population: str) -> dict:
    """The batch's check of its inputs: DuckDB's proof that the files meet their contracts."""
    from features.parquet_check import prove_clean

    started = time.perf_counter()
    proof = prove_clean(f"{population}/events.parquet", f"{population}/customers.parquet", now=NOW)
    return {
        "seconds": time.perf_counter() - started,
        "clean": proof.clean,
        "reason": proof.reason,
        "peak_rss_gib": _peak_rss_gib(),
    }


def _prove_kept(population: str) -> dict:
    """The check of ``lstep score`` with a data directory (``features.kept_proof``): the whole
    proof that keeps its state (a first day), then the next day's, which checks the events
    since the kept bound, a day before the log's last one (the same file: an appended log's
    day checks a day more)."""
    from features.kept_proof import prove_kept

    files = f"{population}/events.parquet", f"{population}/customers.parquet"
    seconds, hows = [], []
    with tempfile.TemporaryDirectory(prefix="lstep-kept-proof-") as directory:
        for _ in range(2):
            started = time.perf_counter()
            proof = prove_kept(*files, now=NOW, directory=Path(directory))
            seconds.append(time.perf_counter() - started)
            hows.append(proof.how if proof.clean else proof.reason)
    return {
        "first": seconds[0],
        "since": seconds[1],
        "how": hows[1],
        "peak_rss_gib": _peak_rss_gib(),
    }


def _carry_proof() -> bool:
    from serving.settings import Settings

    return Settings().carry_proof


def _validate(population: str) -> dict:
    from features.validation import load_valid_inputs

    started = time.perf_counter()
    events, _ = load_valid_inputs(
        f"{population}/events.parquet", f"{population}/customers.parquet", now=NOW
    )
    return {
        "seconds": time.perf_counter() - started,
        "events": len(events),
        "peak_rss_gib": _peak_rss_gib(),
    }


def _floor(population: str, tracking_uri: str, snapshot: str, as_of: date) -> dict:
    """DuckDB's bare scan of the window's events + LightGBM's raw predict on the learners' rows
    (and, beside the floor, the same rows predicted as the day predicts them: compiled trees)."""
    from features.machine import usable_cores
    from features.workspace import connect
    from models.churn import ChurnModel
    from serving.infra.champion import load_champion

    start = as_of - timedelta(days=30)
    con = connect()
    started = time.perf_counter()
    window = [datetime.combine(day, datetime.min.time(), UTC) for day in (start, as_of)]
    con.execute(
        "SELECT count(*), count(customer_id), count(event_type), sum(duration_s), "
        "count(channel), count(item) FROM read_parquet(?) WHERE ts >= ? AND ts < ?",
        [f"{population}/events.parquet", *window],
    ).fetchall()
    scan = time.perf_counter() - started
    import pandas as pd

    model: ChurnModel = load_champion(tracking_uri).model  # its trees compiled, when they can be
    features = pd.read_parquet(snapshot)
    matrix = model.model_matrix(features)
    started = time.perf_counter()
    model.booster.predict(matrix, num_threads=usable_cores())  # the day's DuckDB's cores too
    predict = time.perf_counter() - started
    compiled = _compiled_predict(model, features)
    return {"scan": scan, "predict": predict, "compiled": compiled, "rows": len(matrix)}


def _compiled_predict(model, features) -> float:
    """Seconds the day's predict takes for ``features``: ``models.compiled.probabilities`` on
    the column-major chunks ``models.matrix.chunk_values`` hands ``ChurnModel.raw_probability``
    (the chunks' typing left out of the time)."""
    from models.compiled import probabilities
    from models.matrix import chunk_values

    seconds = 0.0
    for _, values in chunk_values(features, model.feature_dtypes):
        started = time.perf_counter()
        probabilities(model.booster, values, {})
        seconds += time.perf_counter() - started
    return seconds


# --- main -----------------------------------------------------------------------------------------


def _print_day(name: str, day: dict) -> None:
    print(
        f"{name}  {day['seconds']:6.1f} s  peak {day['peak_rss_gib']:.2f} GiB  "
        f"{day['learners']:,} learners, {day['transitions']:,} transitions"
    )
    cpu = day.get("cpu", {})
    for stage, seconds in day["stages"].items():
        spent = ""
        if stage in cpu:
            user, system = cpu[stage]
            spent = f"  cpu {user + system:6.2f} s (system {system:5.2f} s)"
        print(f"    {stage:<24} {seconds:6.2f} s{spent}")


def _two_days(
    engine: str,
    scratch: Path,
    population: Path,
    tracking_uri: str,
    end: date,
    args: argparse.Namespace,
    before_measured: Path | None = None,
) -> tuple[dict | None, dict]:
    """Day 1 (first load), the unmeasured days between (``history`` > 1) and the measured day
    of one engine in a fresh store: the first and the measured day's figures.

    With ``before_measured``: when that directory exists, the store starts as a copy of it and
    only the measured day runs (first is None); otherwise the store is copied there just before
    the measured day.
    """
    history = args.history
    state_url = f"sqlite:///{scratch / 'state.db'}"
    inputs = (str(population), state_url, tracking_uri)
    if before_measured is not None and before_measured.exists():
        _checkpointed(before_measured / "state.db")
        _copied(before_measured, scratch)
        print(f"[{engine}] days 1-{history} not run: the store is DuckDB's before its measured day")
        first = None
    else:
        scratch.mkdir(parents=True)
        first = _history(engine, inputs, end, history)
        _mark_due_sent(state_url, end - timedelta(days=1))
        if before_measured is not None:
            _copied(scratch, before_measured)
            population_of = _kept_population(args)
            (before_measured / "kept-population.json").write_text(json.dumps(population_of))
    profile = None if args.profile is None else f"{args.profile}.{engine}"
    day = _measured_day(engine, inputs, end, args, profile, before_measured, scratch)
    label = "measured" if history == 1 else "measured, steady"
    _print_day(f"[{engine}] day {history + 1} ({end}, {label})  ", day)
    _print_runs("    ", day)
    print(f"    {_planned_on(state_url, end):,} campaign messages planned")
    if profile is not None:
        print(f"    cProfile of the measured day: {profile} (python -m pstats {profile})")
    if engine == "duckdb":
        kpis = _in_child(_day_kpis, *inputs, end)
        day["kpis_seconds"] = kpis["seconds"]
        print(
            f"    kpis  {kpis['seconds']:6.1f} s  peak {kpis['peak_rss_gib']:.2f} GiB  (what "
            "`lstep score` stores after its day when the event store is its data directory's: "
            "not part of the day above)"
        )
    if args.spans:
        for name, began, ended in day["spans"]:
            print(f"    span {name:<10} {began:.3f},{ended:.3f}")
    return first, day


def _measured_day(
    engine: str,
    inputs: tuple,
    end: date,
    args: argparse.Namespace,
    profile: str | None,
    before_measured: Path | None,
    scratch: Path,
) -> dict:
    """The measured day, run ``args.repeat`` times (each after the first from a copy of the
    store before it; the last leaves the store as its day left it): the run of the median
    seconds, with every run's seconds under ``runs``."""
    days = []
    for attempt in range(args.repeat):
        if attempt:  # the store the previous run left is put back as it was before the day
            shutil.rmtree(scratch)
            _copied(before_measured, scratch)
        days.append(_in_child(_batch_day, *inputs, end, "d2", engine, profile))
    return _median_run(days, lambda day: day["seconds"])


def _median_floor(population: str, tracking_uri: str, snapshot: str, end: date, runs: int) -> dict:
    """``_floor`` measured ``runs`` times: the run of the median total (scan + predict)."""
    floors = [_in_child(_floor, population, tracking_uri, snapshot, end) for _ in range(runs)]
    return _median_run(floors, lambda floor: floor["scan"] + floor["predict"])


def _median_run(runs: list[dict], seconds) -> dict:
    """The run of the median ``seconds`` (the lower of two middles), with every run's seconds
    under ``runs``, in the order they ran."""
    ranked = sorted(runs, key=seconds)
    return {**ranked[(len(ranked) - 1) // 2], "runs": [seconds(run) for run in runs]}


def _print_runs(indent: str, run: dict) -> None:
    """Each run's seconds, when there were several (``_median_run``)."""
    if len(run["runs"]) > 1:
        seconds = ", ".join(f"{value:.1f}" for value in run["runs"])
        print(f"{indent}{len(run['runs'])} runs: {seconds} s (the median run above)")


def _copied(source: Path, target: Path) -> None:
    """Copy a store's directory, then flush the page cache: the copy's gigabytes of dirty pages
    would otherwise be written back during the measured day and slow its own writes."""
    shutil.copytree(source, target)
    os.sync()


def _history(engine: str, inputs: tuple, end: date, history: int) -> dict:
    """The first load and the unmeasured days up to ``end``: the first load's figures."""
    state_url = inputs[1]
    start = end - timedelta(days=history)
    first = _in_child(_batch_day, *inputs, start, "d1", engine)
    _print_day(f"[{engine}] day 1 ({start}, first load)", first)
    _history_kpis(engine, inputs, start)
    for offset in range(1, history):
        day = start + timedelta(days=offset)
        _mark_due_sent(state_url, day - timedelta(days=1))
        warm = _in_child(_batch_day, *inputs, day, f"w{offset}", engine)
        print(
            f"[{engine}] day {offset + 1} ({day}, not measured) {warm['seconds']:6.1f} s  "
            f"{_planned_on(state_url, day):,} messages planned"
        )
        _history_kpis(engine, inputs, day)
    return first


def _history_kpis(engine: str, inputs: tuple, day: date) -> None:
    """The KPIs ``lstep score`` stores after an unmeasured day (DuckDB's store only): the
    measured day's KPIs then find what a daily schedule leaves (the run ledger up to the day
    before, ``serving.app.decision_runs``)."""
    if engine == "duckdb":
        kpis = _in_child(_day_kpis, *inputs, day)
        print(f"    kpis  {kpis['seconds']:6.1f} s  peak {kpis['peak_rss_gib']:.2f} GiB")


def _checkpointed(database: Path) -> None:
    """A kept store's WAL, if it has one, copied into its file and removed (a kept store of
    this benchmark before ``_mark_due_sent`` closed its connection has one, which the measured
    day would otherwise copy again: see there)."""
    import sqlite3

    if Path(f"{database}-wal").exists():
        with closing(sqlite3.connect(database)) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def _mark_due_sent(state_url: str, data_day: date) -> None:
    """The dispatcher's effect on the outbox by the end of ``data_day``: due pending sent.

    Closed here, not when the garbage collector gets to it (a ``sqlite3`` connection is in a
    reference cycle): the last connection's close checkpoints the WAL and removes it, as a
    dispatcher's exit does. Left open, its WAL (~1.4 GB at 1M learners) was copied with a
    kept store, and the measured day's first commit copied all of it into the file again
    (SQLite's recovery of a WAL it finds no index for): ~1.6 s of that day's write.
    """
    import sqlite3

    with closing(sqlite3.connect(state_url.removeprefix("sqlite:///"))) as conn, conn:
        conn.execute(
            "UPDATE outbox SET state = 'sent', sent_at = ?, tries = 1 "
            "WHERE state = 'pending' AND due_on <= ?",
            (NOW.isoformat(sep=" "), data_day.isoformat()),
        )


def _planned_on(state_url: str, day: date) -> int:
    import sqlite3

    with closing(sqlite3.connect(state_url.removeprefix("sqlite:///"))) as conn:
        query = "SELECT count(*) FROM outbox WHERE planned_on = ?"
        return conn.execute(query, (day.isoformat(),)).fetchone()[0]


def _print_side_by_side(steady: dict[str, dict], floor_seconds: float) -> None:
    """Day 2's stage times of each engine in one table, with the ratio to the floor."""
    names = list(dict.fromkeys(stage for day in steady.values() for stage in day["stages"]))
    print(f"{'measured day stage':<26}" + "".join(f"{engine:>10}" for engine in steady))
    for stage in names:
        cells = "".join(f"{day['stages'].get(stage, 0.0):10.2f}" for day in steady.values())
        print(f"    {stage:<22}{cells}")
    print(f"    {'total':<22}" + "".join(f"{day['seconds']:10.2f}" for day in steady.values()))
    ratios = "".join(f"{day['seconds'] / floor_seconds:9.1f}x" for day in steady.values())
    print(f"    {'/ floor':<22}{ratios}")
    peaks = "".join(f"{day['peak_rss_gib']:10.2f}" for day in steady.values())
    print(f"    {'peak GiB':<22}{peaks}")


def _print_verdicts(
    engine: str, first: dict | None, day: dict, floor: dict, args: argparse.Namespace
) -> None:
    """Issue 14's targets: the steady day's time, memory and ratio to the floor; day 1's time."""
    size = f"{args.customers:,} learners x {args.days} days"
    target_size = f"{TARGET_CUSTOMERS:,} learners x {TARGET_DAYS} days"
    ratio = day["seconds"] / (floor["scan"] + floor["predict"])
    print(
        verdict(
            f"measured day ({engine})",
            f"{day['seconds']:.1f} s (<= {TARGET_SECONDS:.0f}), "
            f"{day['peak_rss_gib']:.2f} GiB (<= {TARGET_GIB:.0f}), "
            f"{ratio:.1f}x the floor (<= {TARGET_FLOOR_RATIO})",
            met=day["seconds"] <= TARGET_SECONDS
            and day["peak_rss_gib"] <= TARGET_GIB
            and ratio <= TARGET_FLOOR_RATIO,
            size=size,
            target_size=target_size,
        )
    )
    if first is None:
        return
    print(
        verdict(
            f"day 1 ({engine})",
            f"{first['seconds']:.1f} s (<= {TARGET_FIRST_DAY_SECONDS:.0f})",
            met=first["seconds"] <= TARGET_FIRST_DAY_SECONDS,
            size=size,
            target_size=target_size,
        )
    )


def _kept_population(args: argparse.Namespace) -> dict:
    keys = ("customers", "days", "seed", "history", "log_order")
    return {key: getattr(args, key) for key in keys}


def _check_kept(kept: Path, args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse a kept store of another population or history (its marker says which it is)."""
    marker = kept / "kept-population.json"
    if not kept.exists():
        return
    if not marker.exists():
        parser.error(f"--keep-store {kept}: exists but holds no store this benchmark kept")
    made = {"log_order": "learner", **json.loads(marker.read_text())}  # kept before the option
    if made != _kept_population(args):
        parser.error(f"--keep-store {kept}: kept for {made}, not {_kept_population(args)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=TARGET_CUSTOMERS)
    parser.add_argument("--days", type=int, default=TARGET_DAYS)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--validate", action="store_true", help="also time load_valid_inputs")
    parser.add_argument("--engine", choices=["duckdb", "spark", "both"], default="duckdb")
    parser.add_argument(
        "--history",
        type=int,
        default=1,
        help="days from the first load to the measured day (1: the day after; more: a steady day)",
    )
    parser.add_argument(
        "--profile",
        metavar="FILE",
        help="run the measured day under cProfile, stats to FILE.<engine> (times grow ~1.5x)",
    )
    parser.add_argument(
        "--spark-days",
        choices=["all", "measured"],
        default="all",
        help="with --engine both: Spark runs every day in its own store (all) or only the "
        "measured day, on a copy of DuckDB's store before it (measured)",
    )
    parser.add_argument(
        "--spans",
        action="store_true",
        help="print each stage's start and end on CLOCK_MONOTONIC, for "
        "`perf record -k CLOCK_MONOTONIC` and `perf report --time START,END`",
    )
    parser.add_argument(
        "--keep-store",
        metavar="DIR",
        help="keep the store before the measured day in DIR; a later run with the same "
        "population and --history starts from it and runs only the measured day",
    )
    parser.add_argument(
        "--log-order",
        choices=["learner", "time"],
        default="learner",
        help="the events as simulated, each learner's together (learner), or ordered by time "
        "as a log appended day after day is (time: a copy made once beside the population)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="run the measured day (each from a copy of the store before it) and the floor N "
        "times; the verdicts take the medians",
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    if args.keep_store is not None:
        _check_kept(Path(args.keep_store), args, parser)
    if args.history < 1:
        parser.error(f"--history must be at least 1, got {args.history}")
    if args.spark_days == "measured" and args.engine != "both":
        parser.error("--spark-days measured needs --engine both (DuckDB's days make the store)")
    print(f"machine: {os.cpu_count()} cores; population {args.customers:,} x {args.days} days")
    population, sim = _population(args.customers, args.days, args.seed)
    print(f"events     {sim['events']:,} (simulated in {sim['seconds']:.0f} s)")
    population = ordered_log(population, args.log_order)
    tracking_uri = _champion_store()
    end = last_day(args.days)
    engines = ["duckdb", "spark"] if args.engine == "both" else [args.engine]
    steady = {}
    with tempfile.TemporaryDirectory(prefix="lstep-batch-scale-") as scratch:
        before = args.spark_days == "measured" or args.repeat > 1
        shared = Path(scratch) / "before-measured" if before else None
        if args.keep_store is not None:
            shared = Path(args.keep_store)
        for engine in engines:
            steady[engine] = _two_days(
                engine, Path(scratch) / engine, population, tracking_uri, end, args, shared
            )
        snapshot = Path(scratch) / engines[0] / "data" / "features" / f"as_of={end}.parquet"
        floor = _median_floor(str(population), tracking_uri, str(snapshot), end, args.repeat)
    proof = _in_child(_prove, str(population))
    kept = _in_child(_prove_kept, str(population)) if _carry_proof() else None
    validation = _in_child(_validate, str(population)) if args.validate else None
    print(
        f"floor      {floor['scan'] + floor['predict']:6.1f} s  (DuckDB scan of the window "
        f"{floor['scan']:.2f} s + LightGBM raw predict of {floor['rows']:,} rows "
        f"{floor['predict']:.2f} s)\n"
        f"           the champion's compiled trees predict those rows in {floor['compiled']:.2f} s "
        "(models.compiled, in the day's chunks; LightGBM's when they could not be compiled): "
        "the day's predict, not the floor's"
    )
    _print_runs(" " * 11, floor)
    print(
        f"inputs     {proof['seconds']:6.1f} s  peak {proof['peak_rss_gib']:.2f} GiB  (DuckDB's "
        f"check of the files, {'clean' if proof['clean'] else 'not clean: ' + proof['reason']}: "
        "what `lstep score` runs before its day, not part of the run above)"
    )
    if kept is not None:
        print(
            f"  kept     {kept['since']:6.1f} s  peak {kept['peak_rss_gib']:.2f} GiB  (the next "
            f"day's check with the proof kept: {kept['how']}; the first day, proving the whole "
            f"log and keeping it: {kept['first']:.1f} s; LSTEP_CARRY_PROOF=false: the whole)"
        )
    checked = proof["seconds"] if kept is None else kept["since"]
    for engine, (_, day) in steady.items():
        if "kpis_seconds" in day:
            whole = checked + day["seconds"] + day["kpis_seconds"]
            print(
                f"lstep score {whole:6.1f} s  ({engine}: inputs {checked:.1f} + the "
                f"measured day {day['seconds']:.1f} + its KPIs {day['kpis_seconds']:.1f}: the "
                "whole command's day, its start-up aside)"
            )
    if validation is not None:
        ratio = validation["seconds"] / proof["seconds"]
        print(
            f"validation {validation['seconds']:6.1f} s  peak {validation['peak_rss_gib']:.2f} GiB"
            f"  ({validation['events']:,} events; the full validation, {ratio:.1f}x the check "
            "above: what a log the check refuses costs)"
        )
    floor_seconds = floor["scan"] + floor["predict"]
    if len(steady) > 1:
        _print_side_by_side({engine: days[1] for engine, days in steady.items()}, floor_seconds)
    for engine, (first, day) in steady.items():
        _print_verdicts(engine, first, day, floor, args)


if __name__ == "__main__":
    main()
