"""The learner page's "why this score": reason codes and a SHAP waterfall as a Plotly chart.

Nothing new is explained here: the learner's row of the latest batch day's feature snapshot (what
the batch scored) goes through ``models.explain.explain_frame``, the function ``/explain`` and
``lstep explain`` reach through ``Assessment.explanation``, with the model of the version that
scored the day. The reasons are therefore the same words ``/score`` and ``/explain`` give.

Scale: the reason codes are **probability points** (0-100) of LightGBM's RAW probability: the
base rate ``p_base`` plus every feature's points is ``p_raw`` exactly. The served ``p_churn`` is
that probability after Venn-Abers calibration, which has no per-feature split; the waterfall shows
it as its own last step ("calibration"), so its bars add up to the stored ``p_churn`` too.

Where the model comes from is the caller's (``ModelFor``): the service hands in its loaded
champion, ``lstep dashboard --out`` the registered version's cached files. The explanation runs
under a deadline (``ReasonSource.deadline_s``): a page never waits on a slow model load; the
computation finishes in the background and the next load of the page shows it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

from models.churn import ChurnModel
from models.explain import Explanation, Reason, explain_frame, format_points
from serving.core.records import is_on, risk_flags
from serving.infra.snapshots import snapshot_path

WATERFALL_REASONS = 8
"""Reason codes drawn as their own bars (the report's count); the rest are one bar."""
EXPLAIN_DEADLINE_S = 0.5
"""How long a page waits for an explanation before showing it is on its way."""
KEPT = 256
"""Explanations a process keeps (learner, day, version): a page reloaded costs no TreeSHAP."""


class NoReasons(Exception):
    """Why a learner's score cannot be explained (shown on the page as is)."""


ModelFor = Callable[[str], ChurnModel]
"""The ``ChurnModel`` of a registered version; raises ``NoReasons`` saying why there is none."""
RowLookup = Callable[[date, str], "pd.DataFrame | None"]
"""A learner's feature row of a batch day, None when this lookup does not hold the day."""


@dataclass(frozen=True)
class Why:
    """What the page says of a score: reasons and the waterfall's steps, or why there are none.

    Attributes:
        as_of: the batch day explained (None: no score).
        version: the model version that scored it (None: rules only or no score).
        p_base: the model's base rate; ``p_raw`` its raw probability; ``p_churn`` calibrated.
        reasons: the top reason codes, largest ``|points|`` first.
        rest_points: the other features' points together; ``rest_count`` how many they are.
        indicators: the labels of the risk indicators that are on (rules-side reasons).
        note: why there are no reasons (None when there are).
    """

    as_of: date | None = None
    version: str | None = None
    p_base: float | None = None
    p_raw: float | None = None
    p_churn: float | None = None
    reasons: tuple[Reason, ...] = ()
    rest_points: float = 0.0
    rest_count: int = 0
    indicators: tuple[str, ...] = ()
    note: str | None = None


def why_of(explanation: Explanation, p_churn: float, *, top: int = WATERFALL_REASONS) -> Why:
    """The top ``top`` reasons of a full explanation, the rest summed, and the calibrated score."""
    shown = explanation.top(top)
    rest = explanation.reasons[len(shown) :]
    return Why(
        p_base=explanation.p_base,
        p_raw=explanation.p_raw,
        p_churn=p_churn,
        reasons=tuple(shown),
        rest_points=float(sum(reason.points for reason in rest)),
        rest_count=len(rest),
    )


def waterfall_steps(why: Why) -> pd.DataFrame:
    """The waterfall's bars in probability points: label, measure, value, hover text.

    ``absolute`` (the base rate), ``relative`` (each reason, the rest, calibration) and
    ``total`` (the raw probability, ``p_churn``) in Plotly's waterfall vocabulary; a total's
    value is the running sum at that bar.
    """
    base, raw, calibrated = 100 * why.p_base, 100 * why.p_raw, 100 * why.p_churn
    rows = [("base rate", "absolute", base, f"the model's base rate {base:.1f}%")]
    rows += [
        (_short(reason.text), "relative", reason.points, reason.text) for reason in why.reasons
    ]
    if why.rest_count:
        label = f"{why.rest_count} other features"
        rest = f"{label}: {format_points(why.rest_points)}"
        rows.append((label, "relative", why.rest_points, rest))
    rows += [
        ("raw model probability", "total", raw, f"LightGBM's raw probability {raw:.1f}%"),
        ("calibration", "relative", calibrated - raw, "Venn-Abers calibration of p_raw"),
        ("p_churn", "total", calibrated, f"calibrated churn probability {calibrated:.1f}%"),
    ]
    return pd.DataFrame(rows, columns=["label", "measure", "value", "hover"])


def waterfall_chart(why: Why) -> dict[str, Any]:
    """The SHAP waterfall as a Plotly spec: base rate, reasons, raw probability, ``p_churn``."""
    steps = waterfall_steps(why)
    data = [
        {
            "type": "waterfall",
            "orientation": "h",
            "measure": steps["measure"].tolist(),
            "y": steps["label"].tolist(),
            "x": steps["value"].round(6).tolist(),
            "hovertext": steps["hover"].tolist(),
            "hoverinfo": "text",
            "text": [
                f"{value:+.1f}" if measure == "relative" else f"{value:.1f}%"
                for measure, value in zip(steps["measure"], steps["value"], strict=True)
            ],
            "increasing": {"marker": {"color": "#c0392b"}},  # more risk
            "decreasing": {"marker": {"color": "#27ae60"}},
            "totals": {"marker": {"color": "#2e86c1"}},
        }
    ]
    layout = {
        "title": {"text": "churn probability (points): base rate + reasons = raw, calibrated"},
        "height": 120 + 32 * len(steps), "showlegend": False, "margin": {"l": 260, "t": 50},
        "yaxis": {"autorange": "reversed", "automargin": True},
        "xaxis": {"title": "churn probability (%)"},
    }  # fmt: skip
    return {"data": data, "layout": layout}


@dataclass
class ReasonSource:
    """Explains stored scores from the batch's feature snapshots, under a deadline.

    Attributes:
        data_dir: where the snapshots are (``<data_dir>/features/as_of=DAY.parquet``).
        model_for: the model of a version (``ModelFor``).
        deadline_s: how long a page waits (None: as long as it takes, for static files).
        top: reason codes drawn as their own bars.
        rows: where the day's rows are looked up first (the service's memory-mapped answers:
            a binary search, where the snapshot's one row group grows with the day's learners).
    """

    data_dir: Path
    model_for: ModelFor
    deadline_s: float | None = EXPLAIN_DEADLINE_S
    top: int = WATERFALL_REASONS
    rows: RowLookup | None = None
    _kept: OrderedDict[tuple[str, date, str], Why] = field(default_factory=OrderedDict)
    _running: dict[tuple[str, date, str], Future[Why]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pool: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(2, thread_name_prefix="lstep-why")
    )

    def why(self, customer_id: str, score: dict[str, Any] | None) -> Why:
        """Why the learner's stored ``score`` (their latest) is what it is."""
        if score is None:
            return Why(note="no reasons: no batch scored this learner yet")
        as_of = pd.Timestamp(score["as_of"]).date()
        version = score.get("model_version")
        if version is None or pd.isna(version):
            row = snapshot_row(self.data_dir, as_of, customer_id)
            note = "no reasons: this day was decided on the rules alone (no model scored it)"
            return Why(as_of=as_of, indicators=indicators_of(row), note=note)
        key = (customer_id, as_of, str(version))
        with self._lock:
            if key in self._kept:
                return self._kept[key]
            # A page reloaded while its explanation runs waits for that one, not a second.
            future = self._running.get(key) or self._pool.submit(self._explain, key, score)
            self._running[key] = future
        try:
            return future.result(timeout=self.deadline_s)
        except FutureTimeout:
            note = (
                f"reasons not ready within {self.deadline_s:g} s (version {version}'s "
                "explanation is still running): reload the page in a moment"
            )
            return Why(as_of=as_of, version=str(version), note=note)

    def _explain(self, key: tuple[str, date, str], score: dict[str, Any]) -> Why:
        try:
            why = self._explained(key, score)
        finally:  # a failed explanation is asked again by the next page, not kept
            with self._lock:
                self._running.pop(key, None)
        with self._lock:
            self._kept[key] = why
            while len(self._kept) > KEPT:
                self._kept.popitem(last=False)
        return why

    def _explained(self, key: tuple[str, date, str], score: dict[str, Any]) -> Why:
        customer_id, as_of, version = key
        row = None if self.rows is None else self.rows(as_of, customer_id)
        if row is None:
            row = snapshot_row(self.data_dir, as_of, customer_id)
        found = {"as_of": as_of, "version": version, "indicators": indicators_of(row)}
        try:
            if row.empty:
                raise NoReasons(f"no reasons: the snapshot of {as_of} has no row for the learner")
            explanation = explain_one(self.model_for(version), row)
        except NoReasons as error:
            return Why(**found, note=str(error))
        return replace(why_of(explanation, float(score["p_churn"]), top=self.top), **found)


def explain_one(model: ChurnModel, row: pd.DataFrame) -> Explanation:
    """``explain_frame`` of one row, its TreeSHAP taken the way the service's answers take it
    (``model_values`` then ``raw_contributions``: the same numbers without the pandera pass of
    ``contributions``, which costs ~0.15 s on one row)."""
    values = model.raw_contributions(model.model_values(row))
    contributions = pd.DataFrame(values, columns=[*model.feature_names, "bias"], index=row.index)
    return explain_frame(model, row, contributions=contributions)[0]


def snapshot_row(data_dir: Path, as_of: date, customer_id: str) -> pd.DataFrame:
    """The learner's row of the day's snapshot (empty without one), its dtypes the batch's.

    Only the row groups whose ``customer_id`` statistics can hold the id are read.
    """
    path = snapshot_path(data_dir, as_of)
    if not path.is_file():
        return pd.DataFrame()
    table = pq.read_table(path, filters=[("customer_id", "==", customer_id)])
    return table.slice(0, 1).to_pandas()


def indicators_of(row: pd.DataFrame) -> tuple[str, ...]:
    """The labels of the catalog's risk indicators that are on in ``row`` (none when empty)."""
    if row.empty:
        return ()
    return tuple(
        label for name, label in risk_flags(tuple(row.columns)) if is_on(row[name].iloc[0])
    )


def _short(text: str, width: int = 40) -> str:
    """A reason's label for an axis: its words before the first colon, cut at ``width``."""
    head = text.split(":", 1)[0]
    return head if len(head) <= width else head[: width - 1] + "…"


__all__ = [
    "EXPLAIN_DEADLINE_S",
    "WATERFALL_REASONS",
    "ModelFor",
    "NoReasons",
    "ReasonSource",
    "RowLookup",
    "Why",
    "explain_one",
    "indicators_of",
    "snapshot_row",
    "waterfall_chart",
    "waterfall_steps",
    "why_of",
]
