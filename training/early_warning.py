"""The brief's "85% accuracy 14 days in advance": defined, measured, turned into thresholds.

**When churn becomes final.** For a learner-day (c, t) (``as_of`` t, 00:00 UTC), ``st006(c, t)`` is
the first date on or after t at which the rules tag c ST_006 (DESIGN §5): the first midnight at
least 30 days after an event that no other event follows within those days (R09), or the first
midnight after a ``subscription_cancelled`` event (R10), whichever comes first. Only dates the log
has fully observed count (``<= observed_until``); ``lead(c, t) = st006(c, t) - t`` in days, NaN
when no such date is known.

**N days in advance.** At a lead target N (7, 14, 21), a learner-day is

- a *target* when ``N <= lead <= 30``: the learner's last activity is already behind them (or they
  cancel within 30 days) and churn becomes final N or more days later;
- *late* when ``lead < N``: churn becomes final sooner than N days; a warning cannot be N days
  early, yet calling a flag on it wrong would punish a correct churn call, so late rows are left
  out of the counts below at that N (their number is reported);
- a *non-target* otherwise (no ST_006 within 30 days of t).

A scorer *flags* (c, t) when its probability is ``>= threshold``. Over the rows that are not late:
**precision** = flagged targets / flagged rows ("how often was a flag right"), **recall** =
flagged targets / targets, **accuracy** = (flagged targets + unflagged non-targets) / rows. The 30
days are ST_006's inactivity rule, not the label horizon: the claim is about ST_006 whatever
``--horizon-days`` the model was trained for.

**Lead-time distribution.** A *churn episode* is a learner and its ST_006 date, seen on the test
rows with ``1 <= lead <= 30``; its lead is the largest lead among its flagged rows (the earliest
warning). Reported: the share of episodes caught N or more days ahead, and the quartiles of the
lead of the caught ones. Test dates are weekly, so leads move in steps of the observation spacing.

**Operating points** (chosen on the calibration slice, per scorer, see :func:`early_warning_point`
and :func:`recovered_point`):

- ``early_warning``: the lowest threshold whose precision at ``CLAIM_LEAD_DAYS`` (14) is at least
  ``CLAIM_PRECISION`` (0.85), among thresholds that flag at least ``MIN_FLAGS`` rows (a precision
  on fewer flags is noise); when no threshold reaches it, the threshold with the best precision
  (``reached = False`` says so). Either way only thresholds keeping a recall of at least
  ``MIN_RECALL`` (0.10) at 14 days are considered;
- ``recovered``: the largest score whose churn rate (an isotonic fit of the calibration labels on
  the score) is at most the base churn rate of healthy Learning:Active learners (ST_001 rows with
  no risk indicator up, ``risk_indicator_count == 0``): under it, a learner is as safe as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from sklearn.isotonic import IsotonicRegression

ST006_INACTIVE_DAYS = 30
"""ST_006 (Status:Churned) fires after this many days without an event (R09, DESIGN §5)."""
LEAD_DAYS: tuple[int, ...] = (7, 14, 21)
CLAIM_LEAD_DAYS = 14
CLAIM_PRECISION = 0.85
MIN_FLAGS = 30
"""Fewest flagged calibration rows a threshold needs before its precision is believed."""
MIN_RECALL = 0.10
"""Least recall at 14 days an early-warning threshold must keep: the precision at the top of the
scores, on a few dozen flags, is noise (on the demo, 0.83 on calibration with 2.6% recall fell to
0.70 on test) and a warning that misses 90% of churners is none."""
EARLY_WARNING = "early_warning"
RECOVERED = "recovered"
CANCELLED = "subscription_cancelled"
HEALTHY_COLUMN = "risk_indicator_count"
_DAY = pd.Timedelta(days=1)


def _naive_utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True).dt.tz_localize(None).astype("datetime64[us]")


def st006_candidates(events: pd.DataFrame, *, observed_until: pd.Timestamp) -> pd.DataFrame:
    """Every date the rules would tag a learner ST_006, as far as the log has observed.

    Args:
        events: ``customer_id``, ``ts`` (UTC or naive UTC) and ``event_type``.
        observed_until: the instant up to which the log is complete.

    Returns:
        ``customer_id`` and ``st006`` (naive midnight), sorted by ``st006``.
    """
    frame = events[["customer_id", "ts", "event_type"]].copy()
    frame["ts"] = _naive_utc(frame["ts"])
    frame = frame.sort_values(["customer_id", "ts"], kind="stable").reset_index(drop=True)
    due = (frame["ts"] + pd.Timedelta(days=ST006_INACTIVE_DAYS)).dt.ceil("D")
    following = frame.groupby("customer_id", sort=False)["ts"].shift(-1)
    inactive = due[following.isna() | (following >= due)]
    cancels = frame.loc[frame["event_type"] == CANCELLED, "ts"].dt.floor("D") + _DAY
    dates = pd.concat([inactive, cancels])
    candidates = pd.DataFrame(
        {"customer_id": frame.loc[dates.index, "customer_id"].to_numpy(), "st006": dates.to_numpy()}
    )
    limit = pd.Timestamp(observed_until)
    limit = limit.tz_convert(None) if limit.tzinfo is not None else limit
    candidates = candidates[candidates["st006"] <= limit]
    return candidates.sort_values("st006", kind="stable").reset_index(drop=True)


def lead_days(
    rows: pd.DataFrame, events: pd.DataFrame, *, observed_until: pd.Timestamp
) -> np.ndarray:
    """Days from each row's ``as_of`` to the learner's next ST_006 date (NaN when none is known).

    Args:
        rows: ``customer_id`` and ``as_of`` (midnight) per learner-day, in any order.
        events: the event log (``st006_candidates``).
        observed_until: the instant up to which the log is complete.

    Returns:
        One float per row of ``rows``, in its order.
    """
    keys = rows[["customer_id", "as_of"]].copy()
    keys["as_of"] = pd.to_datetime(keys["as_of"]).astype("datetime64[us]")
    keys["position"] = np.arange(len(keys))
    candidates = st006_candidates(events, observed_until=observed_until)
    candidates["st006"] = candidates["st006"].astype("datetime64[us]")
    joined = pd.merge_asof(
        keys.sort_values("as_of", kind="stable"),
        candidates,
        left_on="as_of",
        right_on="st006",
        by="customer_id",
        direction="forward",
    ).sort_values("position")
    return ((joined["st006"] - joined["as_of"]) / _DAY).to_numpy(dtype=float)


@dataclass(frozen=True)
class Counts:
    """A confusion matrix at one lead target, late rows left out (see the module docstring)."""

    days: int
    flagged_targets: int
    flagged_others: int
    missed_targets: int
    quiet_others: int
    late_rows: int

    @property
    def precision(self) -> float:
        """Flagged targets / flagged rows (NaN without flags)."""
        flags = self.flagged_targets + self.flagged_others
        return self.flagged_targets / flags if flags else float("nan")

    @property
    def recall(self) -> float:
        """Flagged targets / targets (NaN without targets)."""
        targets = self.flagged_targets + self.missed_targets
        return self.flagged_targets / targets if targets else float("nan")

    @property
    def accuracy(self) -> float:
        """Right decisions / rows that are not late (NaN without such rows)."""
        rows = self.flagged_targets + self.flagged_others + self.missed_targets + self.quiet_others
        return (self.flagged_targets + self.quiet_others) / rows if rows else float("nan")


def counts_at(lead: ArrayLike, flagged: ArrayLike, days: int) -> Counts:
    """The early-warning confusion matrix of ``flagged`` rows at lead target ``days``.

    Args:
        lead: days to ST_006 per row (NaN: none known).
        flagged: whether the scorer flagged the row.
        days: N, the lead target.
    """
    lead = np.asarray(lead, dtype=float)
    flagged = np.asarray(flagged, dtype=bool)
    if lead.shape != flagged.shape:
        raise ValueError(f"early warning: {lead.size} lead times but {flagged.size} flags")
    late = lead < days
    target = (lead >= days) & (lead <= ST006_INACTIVE_DAYS)
    other = ~late & ~target
    return Counts(
        days=days,
        flagged_targets=int(np.sum(flagged & target)),
        flagged_others=int(np.sum(flagged & other)),
        missed_targets=int(np.sum(~flagged & target)),
        quiet_others=int(np.sum(~flagged & other)),
        late_rows=int(np.sum(late)),
    )


@dataclass(frozen=True)
class Episodes:
    """How far ahead a scorer caught the churn episodes of a slice."""

    episodes: int
    leads: np.ndarray
    """Per episode, the lead of its earliest flag in days (NaN: never flagged)."""

    def caught_share(self, days: int) -> float:
        """Share of episodes flagged ``days`` or more ahead of ST_006."""
        return float(np.mean(self.leads >= days)) if self.episodes else float("nan")

    def quartiles(self) -> tuple[float, float, float]:
        """25th, 50th and 75th percentiles of the lead of the caught episodes (NaN if none)."""
        caught = self.leads[~np.isnan(self.leads)]
        if caught.size == 0:
            return (float("nan"),) * 3
        q1, median, q3 = np.percentile(caught, [25, 50, 75])
        return float(q1), float(median), float(q3)


def episodes(rows: pd.DataFrame, lead: ArrayLike, flagged: ArrayLike) -> Episodes:
    """Churn episodes of ``rows`` (customer_id, as_of) and the lead of each one's earliest flag."""
    lead = np.asarray(lead, dtype=float)
    frame = pd.DataFrame(
        {
            "customer_id": rows["customer_id"].to_numpy(),
            "st006": pd.to_datetime(rows["as_of"]).to_numpy() + pd.to_timedelta(lead, unit="D"),
            "lead": lead,
            "flagged_lead": np.where(np.asarray(flagged, dtype=bool), lead, np.nan),
        }
    )
    frame = frame[(frame["lead"] >= 1) & (frame["lead"] <= ST006_INACTIVE_DAYS)]
    per_episode = frame.groupby(["customer_id", "st006"])["flagged_lead"].max()
    return Episodes(episodes=len(per_episode), leads=per_episode.to_numpy(dtype=float))


@dataclass(frozen=True)
class OperatingPoint:
    """A named threshold on a scorer's probability, chosen on the calibration slice.

    Attributes:
        name: ``early_warning`` or ``recovered``.
        threshold: the probability the rules compare with.
        reached: whether the point's target was met (else the best reachable was taken).
        value: what the target measures at the threshold (precision at 14 days; the churn rate).
        target: the target (0.85; the healthy ST_001 base rate).
        rule: one sentence saying how it was chosen and whether the target was met.
    """

    name: str
    threshold: float
    reached: bool
    value: float
    target: float
    rule: str


def _precision_curve(lead: np.ndarray, score: np.ndarray, days: int) -> pd.DataFrame:
    """Per distinct score (descending): flags and precision of ``score >= that``, late rows out."""
    keep = ~(lead < days)
    target = (lead[keep] >= days) & (lead[keep] <= ST006_INACTIVE_DAYS)
    frame = pd.DataFrame({"score": score[keep], "target": target.astype(int), "one": 1})
    grouped = frame.groupby("score", sort=True)[["target", "one"]].sum().iloc[::-1]
    curve = grouped.cumsum().rename(columns={"target": "hits", "one": "flags"})
    curve["precision"] = curve["hits"] / curve["flags"]
    curve["recall"] = curve["hits"] / max(int(target.sum()), 1)
    return curve.rename_axis("threshold").reset_index()


def early_warning_point(
    lead: ArrayLike,
    score: ArrayLike,
    *,
    days: int = CLAIM_LEAD_DAYS,
    precision: float = CLAIM_PRECISION,
    min_flags: int = MIN_FLAGS,
    min_recall: float = MIN_RECALL,
) -> OperatingPoint:
    """The lowest threshold with precision >= ``precision`` at ``days``, or the best reachable.

    Only thresholds flagging at least ``min_flags`` rows with a recall of at least ``min_recall``
    are candidates (see ``MIN_RECALL``).

    Raises:
        ValueError: when no threshold flags ``min_flags`` rows (a slice too small to choose on).
    """
    curve = _precision_curve(np.asarray(lead, float), np.asarray(score, float), days)
    curve = curve[curve["flags"] >= min_flags]
    if curve.empty:
        raise ValueError(f"early warning: no threshold flags {min_flags} rows; slice too small")
    curve = curve[curve["recall"] >= min_recall]
    good = curve[curve["precision"] >= precision]
    reached = not good.empty
    chosen = good.iloc[-1] if reached else curve.loc[curve["precision"].idxmax()]
    how = (
        f"lowest threshold with precision >= {precision:.2f} at {days}+ days' lead"
        if reached
        else f"precision {precision:.2f} at {days}+ days' lead is not reached on the calibration "
        f"slice; best reachable precision {chosen['precision']:.3f}"
    )
    return OperatingPoint(
        EARLY_WARNING,
        float(chosen["threshold"]),
        reached,
        float(chosen["precision"]),
        precision,
        f"{how} (recall {chosen['recall']:.3f}, {int(chosen['flags'])} flags; candidates flag "
        f">= {min_flags} rows with recall >= {min_recall:.2f})",
    )


def recovered_point(churned: ArrayLike, score: ArrayLike, healthy: ArrayLike) -> OperatingPoint:
    """The largest score whose fitted churn rate is at most the healthy learners' base rate.

    Args:
        churned: 0/1 labels of the calibration rows.
        score: the scorer's probability per row.
        healthy: whether each row is a healthy Learning:Active learner (no risk indicator up).

    Raises:
        ValueError: when no row is healthy (no base rate to compare with).
    """
    churned, score = np.asarray(churned, float), np.asarray(score, float)
    healthy = np.asarray(healthy, dtype=bool)
    if not healthy.any():
        raise ValueError("recovered: no calibration row is healthy (risk_indicator_count == 0)")
    base = float(churned[healthy].mean())
    fitted = IsotonicRegression(increasing=True, out_of_bounds="clip").fit(score, churned)
    values = np.unique(score)
    rates = fitted.predict(values)
    safe = values[rates <= base]
    reached = safe.size > 0
    threshold = float(safe.max()) if reached else float(values.min())
    rate = float(fitted.predict([threshold])[0])
    how = (
        "largest score whose churn rate is at most the healthy ST_001 base rate"
        if reached
        else "no score is as safe as the healthy ST_001 base rate; the lowest score is used"
    )
    return OperatingPoint(
        RECOVERED, threshold, reached, rate, base, f"{how} ({rate:.3f} vs {base:.3f})"
    )


@dataclass(frozen=True)
class EarlyWarning:
    """Every scorer at its own early-warning point, and the model's named operating points.

    Attributes:
        table: index (scorer, days); columns ``threshold``, ``precision``, ``recall``,
            ``accuracy``, ``late_rows``, ``caught_share``, ``lead_q1``, ``lead_median``,
            ``lead_q3`` on the test slice.
        points: per scorer, its ``early_warning`` point chosen on the calibration slice.
        operating_points: the model's named points (``early_warning``, ``recovered``): what
            training records with the model version and the rules refer to by name.
    """

    table: pd.DataFrame
    points: dict[str, OperatingPoint]
    operating_points: dict[str, OperatingPoint]
    skipped: dict[str, str] = field(default_factory=dict)
    """Scorers other than the model that could not be given a point, and why."""

    def mlflow_metrics(self) -> dict[str, float]:
        """``early_warning.<scorer>.<N>d.<metric>`` and ``operating_point.<name>.<field>``."""
        metrics = {
            f"early_warning.{scorer}.{days}d.{name}": float(value)
            for (scorer, days), row in self.table.iterrows()
            for name, value in row.items()
            if pd.notna(value)
        }
        for scorer, point in self.points.items():
            metrics[f"early_warning.{scorer}.calibration_precision"] = point.value
            metrics[f"early_warning.{scorer}.reached_on_calibration"] = float(point.reached)
        for name, point in self.operating_points.items():
            metrics |= {
                f"operating_point.{name}.threshold": point.threshold,
                f"operating_point.{name}.reached": float(point.reached),
                f"operating_point.{name}.value": point.value,
                f"operating_point.{name}.target": point.target,
            }
        return metrics

    def claim(self, scorer: str = "model") -> str:
        """One plain sentence: is "85% precision 14 days ahead" reached on the test slice?"""
        row = self.table.loc[(scorer, CLAIM_LEAD_DAYS)]
        met = row["precision"] >= CLAIM_PRECISION
        verdict = "reached" if met else "NOT reached"
        rows = self.table.loc[scorer]
        reaching = [str(days) for days, r in rows.iterrows() if r["precision"] >= CLAIM_PRECISION]
        elsewhere = ", ".join(reaching) if reaching else "none of " + "/".join(map(str, LEAD_DAYS))
        return (
            f"{CLAIM_PRECISION:.0%} precision {CLAIM_LEAD_DAYS}+ days ahead is {verdict} by the "
            f"{scorer} on the test slice: precision {row['precision']:.3f}, recall "
            f"{row['recall']:.3f}, accuracy {row['accuracy']:.3f} at threshold "
            f"{row['threshold']:.3f}; N (days) with precision >= {CLAIM_PRECISION}: {elsewhere} "
            f"({self.points[scorer].rule})"
        )


def _row(counts: Counts, caught: Episodes, threshold: float) -> dict[str, float]:
    q1, median, q3 = caught.quartiles()
    return {
        "threshold": threshold,
        "precision": counts.precision,
        "recall": counts.recall,
        "accuracy": counts.accuracy,
        "late_rows": float(counts.late_rows),
        "caught_share": caught.caught_share(counts.days),
        "lead_q1": q1,
        "lead_median": median,
        "lead_q3": q3,
    }


def evaluate_early_warning(
    calibration: pd.DataFrame,
    test: pd.DataFrame,
    scorers: list[str],
    *,
    min_flags: int = MIN_FLAGS,
    model: str = "model",
) -> EarlyWarning:
    """Choose each scorer's early-warning point on ``calibration``, measure it on ``test``.

    Args:
        calibration: ``customer_id``, ``as_of``, ``churned``, ``lead`` (``lead_days``), the
            healthy column (``risk_indicator_count``) and one probability column per scorer.
        test: the same columns for the test slice (the healthy column is not needed).
        scorers: probability columns, in table order; rows where one is NaN (the oracle's
            uncovered rows) are left out for that scorer.
        min_flags: see :func:`early_warning_point`.
        model: the scorer whose named operating points the rules use.

    Raises:
        ValueError: when the model's calibration scores cannot give a point (too few rows);
            another scorer in that case is left out and listed in ``skipped`` with the reason.
    """
    rows: dict[tuple[str, int], dict[str, float]] = {}
    points: dict[str, OperatingPoint] = {}
    skipped: dict[str, str] = {}
    for name in scorers:
        cal = calibration[calibration[name].notna()]
        try:
            point = early_warning_point(cal["lead"], cal[name], min_flags=min_flags)
        except ValueError as error:
            if name == model:
                raise
            skipped[name] = f"{error} ({len(cal)} calibration rows scored)"
            continue
        points[name] = point
        scored = test[test[name].notna()]
        flagged = scored[name].to_numpy() >= point.threshold
        caught = episodes(scored, scored["lead"], flagged)
        for days in LEAD_DAYS:
            counts = counts_at(scored["lead"], flagged, days)
            rows[(name, days)] = _row(counts, caught, point.threshold)
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["scorer", "days"])
    named: dict[str, OperatingPoint] = {}
    if model in points:
        healthy = calibration[HEALTHY_COLUMN].to_numpy() == 0
        recovered = recovered_point(calibration["churned"], calibration[model], healthy)
        named = {EARLY_WARNING: points[model], RECOVERED: recovered}
    return EarlyWarning(table=table, points=points, operating_points=named, skipped=skipped)
