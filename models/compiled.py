"""The booster's trees compiled to native code (tl2cgen), for large batches.

LightGBM walks its trees through generic code, node by node: at 1M learners x 379 trees of 8
leaves its predict was 4.4-6.2 s of a batch day on 2 cores. tl2cgen writes the same trees as C
(each split a comparison with its threshold as a constant), which the machine's C compiler builds
once per model into a library cached under the model's hash; the same probabilities bit for bit.
``compile_booster`` checks that on rows at every threshold of the model before it is used, and
the model's predict (``probabilities``) uses it for batches of ``MIN_ROWS`` or more; smaller ones
(a service request's few learners) stay with LightGBM.

Most of a tree's time goes to branches the CPU guessed wrong, so rows are predicted in an order
where neighbours take the same ways (``RowOrder``: sorted by their bins among the thresholds of
the most split-on features) and put back in their own. The 921k rows of a simulated day, on an
AMD EPYC of 2 cores: 4.4-4.8 s in the rows' own order, 2.3-2.4 s in this one (LightGBM's predict
4.4-5.6 s beside them); the machine where the trees were first compiled took 2.4 s in the rows'
own order. The C is generated quantized (``CODEGEN_PARAMS``): 1.65-1.8 s for those rows.

Two differences are handled here, so that the results stay LightGBM's:

- LightGBM reads a value within ``ZERO`` of zero as zero (its rows are sparse): so do the rows
  given to the compiled trees of a model where that can change a split (a threshold within
  ``ZERO`` of zero, or zero read as missing; none of the benchmark's champion's).
- The compiled code marks a missing value by writing -1 over the low 32 bits of the double
  (tl2cgen's ``union Entry``), so a value whose low 32 bits are all ones reads as missing
  (3.4999999999999996, for one: 204 of a simulated day's 921k rows held such a value). Rows
  holding one are predicted by LightGBM.

Without a C compiler, or when building or checking fails, LightGBM predicts (warned once per
load): the scores are the same either way, only slower.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from features.machine import usable_cores
from models.matrix import PREDICT_CHUNK_ROWS

logger = logging.getLogger("lstep")

ZERO = float(np.float32(1e-35))
"""LightGBM's ``kZeroThreshold`` (the float 1e-35): a value this close to zero is read as zero."""
MIN_ROWS = 4_096
"""Rows from which a batch is predicted by the compiled trees."""
COMPILE_TIMEOUT_S = 300.0
"""How long the C compiler may take (a few seconds for hundreds of trees)."""
_ALL_ONES = np.uint32(0xFFFF_FFFF)
_LOW_HALF = 0 if sys.byteorder == "little" else 1
"""Which of a double's two 32-bit halves holds its low bits."""
KEY_BITS = 32
"""Bits of a row's sort key (``RowOrder``): a day's 921k rows in chunks of 131k, 2.49-2.50 s with
32 bits (7 features), 2.62-2.65 s with 64 (13 features: their bins cost more than they order)."""
CHUNK_ROWS = 16_384
"""Rows gathered and predicted at a time, in ``RowOrder``'s order."""
SCRATCH_ROWS = PREDICT_CHUNK_ROWS
"""Rows up to which a batch is made row-major in a buffer kept between batches (the batch
job's chunks: ``models.matrix.PREDICT_CHUNK_ROWS``); larger ones get an array of their own."""
CODEGEN_PARAMS = {"quantize": 1}
"""tl2cgen's code generation: ``quantize`` bins each row's values among the model's thresholds
once, and the trees compare the bins (integers). The day's 921k rows in its chunks, the same
probabilities: 2.3-2.65 -> 1.65-1.8 s (branch annotation from a sample of rows, with or without
it, no better)."""
_CHECK_ROWS = 4_096
_COMPILED: weakref.WeakKeyDictionary[lgb.Booster, CompiledTrees] = weakref.WeakKeyDictionary()


class CompiledMismatch(RuntimeError):
    """The compiled trees predicted otherwise than LightGBM on the check rows."""


@dataclass(frozen=True)
class RowOrder:
    """An order of rows in which the trees' branches repeat: rows sorted by which side of the
    model's thresholds their most split-on features fall, so that neighbours take the same
    ways through most trees. The CPU's branch predictor then guesses right far more often: at
    921k learners x 379 trees the compiled predict took 4.4-4.8 s in the rows' own order and
    1.8-2.0 s in this one (2 cores). Any order gives the same probabilities: each row is
    predicted on its own.

    ``edges``: per feature of the key, most split-on first, its thresholds (ascending); a
    row's key packs each feature's bin among them (``KEY_BITS`` at most).
    """

    edges: tuple[tuple[int, np.ndarray], ...]

    @classmethod
    def of_splits(cls, splits: list[dict[str, Any]]) -> RowOrder:
        """The key of ``splits`` (``_splits``): numerical features by how many splits use them,
        each taking the bits its bins need while ``KEY_BITS`` has room."""
        thresholds: dict[int, set[float]] = {}
        uses: dict[int, int] = {}
        for split in splits:
            uses[split["split_feature"]] = uses.get(split["split_feature"], 0) + 1
            if split["decision_type"] != "==":
                thresholds.setdefault(split["split_feature"], set()).add(float(split["threshold"]))
        edges, room = [], KEY_BITS
        for feature in sorted(thresholds, key=lambda feature: (-uses[feature], feature)):
            bits = _bin_bits(len(thresholds[feature]))
            if bits <= room:
                edges.append((feature, np.array(sorted(thresholds[feature]), dtype=np.float64)))
                room -= bits
        return cls(tuple(edges))

    def sequence(self, values: np.ndarray) -> np.ndarray:
        """The positions of ``values``' rows in this order (a permutation; rows of one key in any
        order, as each row's prediction is its own: numpy's unstable argsort is vectorised,
        ~4x the stable one on these machines)."""
        key = np.zeros(len(values), dtype=np.uint64)
        for feature, thresholds in self.edges:
            bins = np.searchsorted(thresholds, values[:, feature]).astype(np.uint64)
            key = (key << np.uint64(_bin_bits(len(thresholds)))) | bins
        return np.argsort(key)


@dataclass(frozen=True)
class CompiledTrees:
    """A booster's compiled library, its loaded predictor (``tl2cgen.Predictor``), the order
    its rows are predicted in (``order``), and whether its rows need values within ``ZERO`` of
    zero made zero (``zeroes_tiny``). One predict at a time (``lock``): the predictor's thread
    pool is its own, and a service answers requests on several threads."""

    library: Path
    predictor: Any
    zeroes_tiny: bool
    order: RowOrder
    lock: threading.Lock = field(default_factory=threading.Lock, compare=False, repr=False)
    scratch: dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    def probabilities(self, values: np.ndarray, booster: lgb.Booster) -> np.ndarray:
        """``booster.predict(values)`` (rows of the booster's features), by the compiled trees."""
        with self.lock:
            rows = self._row_major(values)
            if self.zeroes_tiny:
                rows = np.where(np.abs(rows) <= ZERO, 0.0, rows)
            low_halves = rows.view(np.uint32)[:, _LOW_HALF::2]
            read_as_missing = (low_halves == _ALL_ONES).any(axis=1)
            predicted = self._in_order(rows, self.order.sequence(values))
            if read_as_missing.any():
                predicted[read_as_missing] = booster.predict(rows[read_as_missing], num_threads=1)
        return predicted

    def _row_major(self, values: np.ndarray) -> np.ndarray:
        """``values`` as row-major float64 (the compiled code reads rows): a batch of up to
        ``SCRATCH_ROWS`` rows copied into a buffer kept for the next one. A fresh array's pages
        cost the kernel as much as the copy itself, and more on a virtual machine whose host
        backs memory lazily: 0.9 s for a day's 921k rows on one, 0.15 s in a reused buffer."""
        if values.flags.c_contiguous and values.dtype == np.float64:
            return values
        if len(values) > SCRATCH_ROWS:
            return np.ascontiguousarray(values, dtype=np.float64)
        buffer = self.scratch.get("rows")
        if buffer is None or buffer.shape[1] != values.shape[1]:
            buffer = self.scratch["rows"] = np.empty((SCRATCH_ROWS, values.shape[1]))
        rows = buffer[: len(values)]
        np.copyto(rows, values, casting="unsafe")
        return rows

    def _in_order(self, rows: np.ndarray, sequence: np.ndarray) -> np.ndarray:
        """The compiled trees' predictions of ``rows``, made ``CHUNK_ROWS`` at a time in the
        order ``sequence`` and returned in the rows' own (the caller holds ``lock``). A chunk is
        gathered into one buffer, used again: no copy of all the rows in the new order."""
        import tl2cgen

        predicted = np.empty(len(rows), dtype=np.float64)
        chunk = np.empty((min(CHUNK_ROWS, len(rows)), rows.shape[1]), dtype=np.float64)
        for start in range(0, len(rows), CHUNK_ROWS):
            positions = sequence[start : start + CHUNK_ROWS]
            gathered = np.take(rows, positions, axis=0, out=chunk[: len(positions)])
            chunk_predicted = self.predictor.predict(tl2cgen.DMatrix(gathered))
            predicted[positions] = np.asarray(chunk_predicted, dtype=np.float64).reshape(-1)
        return predicted


def probabilities(booster: lgb.Booster, values: np.ndarray, options: dict[str, int]) -> np.ndarray:
    """``booster.predict(values, **options)``: by its compiled trees for a batch of
    ``MIN_ROWS`` or more when ``compile_booster`` compiled them, else by LightGBM."""
    compiled = _COMPILED.get(booster)
    if compiled is None or len(values) < MIN_ROWS:
        return np.asarray(booster.predict(values, **options), dtype=np.float64)
    return compiled.probabilities(values, booster)


def compile_booster(booster: lgb.Booster, cache_dir: Path) -> CompiledTrees | None:
    """Compile ``booster``'s trees (once per model: the library is cached in ``cache_dir``),
    check them against LightGBM, and predict its large batches with them from now on.

    Returns:
        The compiled trees; None (warned, with the reason) when they cannot be built, loaded or
        trusted, whatever the error: LightGBM then predicts, as without this call.
    """
    try:
        compiled = _checked(booster, Path(cache_dir))
    except Exception as error:  # a faster path only: whatever fails, the model still predicts
        logger.warning(
            "the model's trees were not compiled (%s): LightGBM predicts, the same scores more "
            "slowly (a C compiler, e.g. Debian's gcc, compiles them)",
            error,
        )
        return None
    _COMPILED[booster] = compiled
    return compiled


def default_cache_dir() -> Path:
    """``LSTEP_COMPILED_DIR``, else ``lstep/compiled`` under the user's cache directory."""
    explicit = os.environ.get("LSTEP_COMPILED_DIR")
    if explicit:
        return Path(explicit)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "lstep" / "compiled"


def _checked(booster: lgb.Booster, cache_dir: Path) -> CompiledTrees:
    """The cached library of ``booster`` (built when absent, built again once when it fails
    its check: a damaged file), checked on rows at every threshold of the model."""
    library = cache_dir / f"trees-{_model_key(booster)}.so"
    splits = _splits(booster)
    rows = boundary_rows(booster, _CHECK_ROWS, splits=splits)
    expected = np.asarray(booster.predict(rows, num_threads=1), dtype=np.float64)
    zeroes_tiny = any(_turns_near_zero(split) for split in splits)
    for attempt in range(2):
        if attempt or not library.exists():
            _build(booster, library)
        predictor = _loaded(library, again=attempt > 0)
        compiled = CompiledTrees(library, predictor, zeroes_tiny, RowOrder.of_splits(splits))
        if np.array_equal(compiled.probabilities(rows, booster), expected):
            return compiled
    raise CompiledMismatch(f"{library} predicts otherwise than LightGBM")


def _loaded(library: Path, *, again: bool) -> Any:
    """The library's predictor; ``again``: a library rebuilt after this process loaded the one
    it replaced, loaded through a copy (``dlopen`` gives a path it loaded before its old code)."""
    import tl2cgen

    threads = usable_cores()  # a container's quota, not the host's CPUs
    if not again:
        return tl2cgen.Predictor(library, nthread=threads)
    with tempfile.TemporaryDirectory(dir=library.parent) as work:
        copy = Path(work) / library.name
        shutil.copyfile(library, copy)
        return tl2cgen.Predictor(copy, nthread=threads)  # mapped: the file may go


def _model_key(booster: lgb.Booster) -> str:
    """The model text, the code generator's version and its parameters, hashed: a library's
    name."""
    import tl2cgen

    text = f"{tl2cgen.__version__}\n{sorted(CODEGEN_PARAMS.items())}\n{booster.model_to_string()}"
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _build(booster: lgb.Booster, library: Path) -> None:
    """Write the trees as C (tl2cgen) and compile them into ``library`` (replaced at once:
    a process loading it meanwhile reads the old file or the new one, never half of one).

    Raises:
        OSError: no C compiler (``CC``, else ``cc``) or an unwritable cache directory.
        subprocess.SubprocessError: the compiler failed or ran past ``COMPILE_TIMEOUT_S``.
    """
    import tl2cgen
    import treelite

    compiler = shutil.which(os.environ.get("CC") or "cc")
    if compiler is None:
        raise OSError("no C compiler on PATH (cc, or CC)")
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent) as work:
        model = treelite.frontend.from_lightgbm(booster)
        with contextlib.redirect_stdout(io.StringIO()) as said:  # tl2cgen prints its log
            tl2cgen.generate_c_code(model, dirpath=work, params=CODEGEN_PARAMS)
        logger.debug("tl2cgen: %s", said.getvalue().strip())
        sources = [str(path) for path in sorted(Path(work).glob("*.c"))]
        built = Path(work) / library.name
        command = [compiler, "-O3", "-std=c99", "-fPIC", "-shared", "-o", str(built), *sources]
        try:
            subprocess.run(
                [*command, "-lm"], check=True, capture_output=True, timeout=COMPILE_TIMEOUT_S
            )
        except subprocess.CalledProcessError as failed:
            said = failed.stderr.decode(errors="replace").strip().splitlines()[-1:]
            raise subprocess.SubprocessError(f"{compiler} failed: {' '.join(said)}") from None
        os.replace(built, library)


def boundary_rows(
    booster: lgb.Booster, rows: int, seed: int = 0, splits: list[dict[str, Any]] | None = None
) -> np.ndarray:
    """Rows whose every value is one at which the model's splits turn: each split's threshold
    and the doubles either side of it, every category of a categorical split and one more,
    zero, a tiny value, -1 and NaN (row-major float64, ``rows`` of them, seeded).

    ``splits``: the model's splits (``_splits``) when the caller has them already.
    """
    values: list[set[float]] = [{0.0, ZERO / 2, -1.0, np.nan} for _ in booster.feature_name()]
    for split in _splits(booster) if splits is None else splits:
        feature = values[split["split_feature"]]
        if split["decision_type"] == "==":
            categories = [int(code) for code in str(split["threshold"]).split("||")]
            feature.update(float(code) for code in range(max(categories) + 2))
        else:
            threshold = float(split["threshold"])
            feature.update(
                {threshold, *(np.nextafter(threshold, way) for way in (-np.inf, np.inf))}
            )
    generator = np.random.default_rng(seed)
    columns = [generator.choice(np.array(sorted(v, key=_nan_last)), size=rows) for v in values]
    return np.ascontiguousarray(np.column_stack(columns), dtype=np.float64)


def _splits(booster: lgb.Booster) -> list[dict[str, Any]]:
    """Every split node of the model (``dump_model``'s, children left out)."""
    splits, nodes = [], [tree["tree_structure"] for tree in booster.dump_model()["tree_info"]]
    while nodes:
        node = nodes.pop()
        if "split_feature" in node:
            splits.append(
                {
                    key: node[key]
                    for key in ("split_feature", "threshold", "decision_type", "missing_type")
                }
            )
            nodes += [node["left_child"], node["right_child"]]
    return splits


def _turns_near_zero(split: dict[str, Any]) -> bool:
    """Whether a value within ``ZERO`` of zero may take another way than zero at ``split``: a
    numerical threshold in [-ZERO, ZERO), or zero read as missing."""
    if split["decision_type"] == "==":
        return False
    return split["missing_type"] == "Zero" or -ZERO <= float(split["threshold"]) < ZERO


def _bin_bits(thresholds: int) -> int:
    """Bits that hold a bin among ``thresholds`` thresholds (``thresholds + 1`` bins)."""
    return max(1, int(thresholds).bit_length())


def _nan_last(value: float) -> tuple[bool, float]:
    return (bool(np.isnan(value)), 0.0 if np.isnan(value) else value)


__all__ = [
    "MIN_ROWS",
    "ZERO",
    "CompiledMismatch",
    "CompiledTrees",
    "RowOrder",
    "boundary_rows",
    "compile_booster",
    "default_cache_dir",
    "probabilities",
]
