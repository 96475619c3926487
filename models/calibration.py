"""Inductive Venn-Abers calibration of the booster's raw scores (the ``venn-abers`` library).

Two isotonic regressions of the outcome on the raw score, fitted on the calibration slice with
the new row added as a non-churner (``p0``) and as a churner (``p1``), give an interval that
brackets the calibrated churn probability (``models.churn``'s module doc says what it means).
The library's precomputed arrays are kept and saved as ``.npz`` (no pickle).
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _venn_abers() -> types.ModuleType:
    """The ``venn_abers`` module, imported without its global ``np.seterr`` side effect."""
    saved = np.geterr()
    try:
        from venn_abers import venn_abers
    finally:
        np.seterr(**saved)
    return venn_abers


@dataclass(frozen=True)
class VennAbersCalibration:
    """Inductive Venn-Abers calibration of raw scores, as the library's precomputed arrays.

    Attributes:
        scores: the sorted distinct raw scores of the calibration slice (``c``).
        p0: isotonic fits with a hypothetical label 0, shape ``(len(scores) + 1, 2)``.
        p1: isotonic fits with a hypothetical label 1, same shape.
    """

    scores: np.ndarray
    p0: np.ndarray
    p1: np.ndarray

    @classmethod
    def fit(cls, raw_scores: np.ndarray, outcomes: np.ndarray) -> VennAbersCalibration:
        """Fit on the calibration slice's raw probabilities and 0/1 outcomes."""
        library = _venn_abers()
        two_class = np.column_stack([1.0 - raw_scores, raw_scores])
        with np.errstate(divide="ignore", invalid="ignore"):
            p0, p1, scores = library.calc_p0p1(two_class, outcomes.astype(np.float64))
        return cls(scores=scores, p0=p0, p1=p1)

    def calibrate(self, raw_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(p_churn, p_low, p_high)`` for raw probabilities."""
        two_class = np.column_stack([1.0 - raw_scores, raw_scores])
        with np.errstate(divide="ignore", invalid="ignore"):
            merged, interval = _venn_abers().calc_probs(self.p0, self.p1, self.scores, two_class)
        return merged[:, 1], interval[:, 0], interval[:, 1]

    def save(self, path: Path) -> None:
        """Write the arrays to an ``.npz`` file (no pickle)."""
        np.savez(path, scores=self.scores, p0=self.p0, p1=self.p1)

    @classmethod
    def load(cls, path: Path) -> VennAbersCalibration:
        """Read the arrays written by ``save``."""
        with np.load(path, allow_pickle=False) as arrays:
            return cls(scores=arrays["scores"], p0=arrays["p0"], p1=arrays["p1"])


__all__ = ["VennAbersCalibration"]
