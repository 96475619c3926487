"""What the benchmarks share: verdicts that hold only at a target's size, and versioned caches.

A target is stated for one size (1M learners, 20k learners x 240 days with 30 trials, ...): a run
at another size says what it measured and that the target is for another size, never "MET".
A cached figure (a simulation's time) is only as good as the code that made it, so the caches
are keyed by ``code_version`` of the source files that make them: a change re-measures.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path(__file__).resolve().parent / ".cache"
SIMULATOR_SOURCES = (
    *sorted(str(path.relative_to(REPO)) for path in (REPO / "features/simulator").glob("*.py")),
    "features/vocabulary.py",
)
"""The code a simulated population comes from (its cache key)."""


def code_version(paths: Iterable[str]) -> str:
    """A short hash of the named source files (relative to the repository root) and their names."""
    digest = hashlib.sha256()
    for relative in sorted(paths):
        digest.update(relative.encode())
        digest.update((REPO / relative).read_bytes())
    return digest.hexdigest()[:10]


def package_sources(*packages: str) -> list[str]:
    """The Python files of the named packages, relative to the repository root."""
    return [
        str(path.relative_to(REPO))
        for package in packages
        for path in (REPO / package).rglob("*.py")
    ]


def simulation_dir(name: str) -> Path:
    """The cache directory of a simulated population: ``name`` plus the simulator's version."""
    return CACHE / f"{name}-code{code_version(SIMULATOR_SOURCES)}"


def verdict(label: str, figures: str, *, met: bool, size: str, target_size: str) -> str:
    """One line: "target MET/MISSED: figures" at the target's size, else what was measured.

    Args:
        label: what the target is about (left column of the benchmark's output).
        figures: the measured figures against their limits, e.g. "day 2 41.0 s (<= 60)".
        met: whether the figures are within the limits.
        size: the size this run measured, e.g. "2,000 learners".
        target_size: the size the target is stated for, e.g. "1,000,000 learners".
    """
    if size == target_size:
        return f"{label:<10} target {'MET' if met else 'MISSED'}: {figures}"
    return f"{label:<10} at {size}: {figures}; the target is for {target_size}"
