"""The model registry: champion / challenger decisions and manual promotion or rollback.

Serving loads ``models:/lstep-churn@champion`` and never a run id, so the ``champion`` alias IS the
deployment. A newly trained version takes it only when it is better on the same evidence, by more
than the evidence's noise:

- the current champion is loaded by its alias and **re-scored on the new run's test slice**;
- the PR-AUC gain of the new version over the champion on that slice is bootstrapped, **paired**
  (each of ``BOOTSTRAP_RESAMPLES`` resamples draws the same test rows for both versions, so what
  the two share, the slice's hard and easy learners, cancels out); see :func:`pr_auc_gain`;
- the new version becomes champion iff the lower end of the one-sided 95% interval of that gain
  is above 0 (a gain beyond noise) AND its ECE is at most the champion's plus ``ECE_TOLERANCE``
  (0.005: about the sampling noise of a 15-bin ECE on a few thousand rows; a real calibration
  regression is larger);
- and it does not lose more than ``RECALL_TOLERANCE`` (0.02) of recall at the early-warning
  operating point: each version's recall at 14+ days' lead (``training.early_warning``) at its
  own recorded ``early_warning`` threshold, on the same slice. A champion saved before operating
  points existed has no such recall, and this check is then not made (the reason says so);
- otherwise it gets the alias ``challenger`` and the reason is recorded and printed.

A champion that cannot score the new test slice (for example a feature it needs is no longer
produced) is not compared by guesswork: the new version becomes challenger and a person decides
with :func:`promote`. When there is no champion yet, the new version becomes champion.

Every decision is recorded as model-version tags (``lstep.*``): what was compared, the numbers
(the gain and its interval's lower end included) and the reason; :func:`promote` (forced
promotion or rollback) records who, why and when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from numpy.typing import ArrayLike
from scipy.stats import bootstrap

from models.matrix import model_feature_names
from models.metrics import expected_calibration_error, pr_auc
from models.pyfunc import to_pyfunc_input
from training.early_warning import CLAIM_LEAD_DAYS, EARLY_WARNING, counts_at

MODEL_NAME = "lstep-churn"
CHAMPION = "champion"
CHALLENGER = "challenger"
ECE_TOLERANCE = 0.005
"""How much worse (higher) the new version's ECE may be than the champion's on the same slice."""
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_SEED = 0
GAIN_LEVEL = 0.95
"""The one-sided confidence level of the PR-AUC gain's lower end."""
TAG_PREFIX = "lstep."
RECALL_TOLERANCE = 0.02
"""How much early-warning recall (14+ days' lead, at its own threshold) a new version may lose."""


@dataclass(frozen=True)
class SliceScore:
    """PR-AUC, ECE and early-warning recall of one model version on one test slice.

    ``early_recall`` is the recall at 14+ days' lead at the version's own ``early_warning``
    threshold; None when the version has no such operating point (or no lead times were given).
    """

    version: str
    pr_auc: float
    ece: float
    early_recall: float | None = None


def early_warning_recall(
    lead: ArrayLike, p_churn: ArrayLike, operating_points: dict[str, float]
) -> float | None:
    """Recall at ``CLAIM_LEAD_DAYS`` of ``p_churn >= early_warning`` (None without that point)."""
    threshold = operating_points.get(EARLY_WARNING)
    if threshold is None:
        return None
    flagged = np.asarray(p_churn, dtype=float) >= threshold
    return counts_at(lead, flagged, CLAIM_LEAD_DAYS).recall


@dataclass(frozen=True)
class Gain:
    """The new version's PR-AUC gain over the champion on the same test rows, and its noise.

    Attributes:
        observed: new PR-AUC minus the champion's, on the whole slice.
        lower: the lower end of the one-sided ``GAIN_LEVEL`` paired-bootstrap interval of it.
        resamples: bootstrap resamples drawn.
    """

    observed: float
    lower: float
    resamples: int


def pr_auc_gain(
    churned: ArrayLike,
    new_p: ArrayLike,
    champion_p: ArrayLike,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Gain:
    """Paired percentile bootstrap (``scipy.stats.bootstrap``) of PR-AUC(new) - PR-AUC(champion).

    Seeded, so the same slice and scores always give the same decision.
    """
    data = tuple(np.asarray(values, dtype=float) for values in (churned, new_p, champion_p))

    def gain(y: np.ndarray, new: np.ndarray, champion: np.ndarray) -> float:
        return pr_auc(y, new) - pr_auc(y, champion)

    result = bootstrap(
        data,
        gain,
        paired=True,
        vectorized=False,
        n_resamples=resamples,
        confidence_level=GAIN_LEVEL,
        alternative="greater",
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return Gain(gain(*data), float(result.confidence_interval.low), resamples)


@dataclass(frozen=True)
class Decision:
    """Which alias a new version got, and why."""

    version: str
    alias: str
    reason: str
    new: SliceScore
    champion: SliceScore | None
    gain: Gain | None = None


def decide(
    new: SliceScore,
    champion: SliceScore | None,
    gain: Gain | None = None,
    *,
    ece_tolerance: float = ECE_TOLERANCE,
) -> tuple[str, str]:
    """The alias for ``new`` given the champion's score on the same slice, and the reason.

    Args:
        new: the new version's PR-AUC and ECE on the test slice.
        champion: the champion's on the same slice, None when there is no champion.
        gain: the paired-bootstrap PR-AUC gain of ``new`` over ``champion`` (``pr_auc_gain``).
        ece_tolerance: how much higher the new ECE may be.

    Returns:
        (``champion`` or ``challenger``, a one-sentence reason).

    Raises:
        ValueError: when there is a champion but no gain to judge by.
    """
    if champion is None:
        return CHAMPION, "no champion yet: the first version becomes champion"
    if gain is None:
        raise ValueError("decide: comparing with a champion needs the paired PR-AUC gain")
    versus = f"than champion v{champion.version} on the same test slice"
    if new.pr_auc <= champion.pr_auc:
        return CHALLENGER, (
            f"PR-AUC {new.pr_auc:.4f} is not higher {versus} ({champion.pr_auc:.4f})"
        )
    if gain.lower <= 0:
        return CHALLENGER, (
            f"PR-AUC gain {gain.observed:+.4f} ({new.pr_auc:.4f} vs {champion.pr_auc:.4f}) is "
            f"within noise {versus}: the lower end of its one-sided {GAIN_LEVEL:.0%} "
            f"paired-bootstrap interval is {gain.lower:+.4f} ({gain.resamples} resamples)"
        )
    if new.ece > champion.ece + ece_tolerance:
        return CHALLENGER, (
            f"PR-AUC is higher ({new.pr_auc:.4f} vs {champion.pr_auc:.4f}) but ECE {new.ece:.4f} "
            f"is worse {versus} ({champion.ece:.4f}, tolerance {ece_tolerance})"
        )
    recall_note = _early_recall_note(new, champion)
    if recall_note.startswith("loses"):
        return (
            CHALLENGER,
            f"PR-AUC is higher ({new.pr_auc:.4f} vs {champion.pr_auc:.4f}) but it "
            f"{recall_note} {versus}",
        )
    return CHAMPION, (
        f"PR-AUC {new.pr_auc:.4f} beats {champion.pr_auc:.4f} of v{champion.version} on the "
        f"same test slice by {gain.observed:+.4f}, beyond noise (one-sided {GAIN_LEVEL:.0%} "
        f"paired-bootstrap lower end {gain.lower:+.4f}), with ECE {new.ece:.4f} "
        f"(champion {champion.ece:.4f}); {recall_note}"
    )


def _early_recall_note(new: SliceScore, champion: SliceScore) -> str:
    """``loses ...`` when the new version's early-warning recall drops beyond tolerance."""
    if new.early_recall is None or champion.early_recall is None:
        return "early-warning recall not compared (a version has no early_warning point)"
    drop = champion.early_recall - new.early_recall
    figures = (
        f"early-warning recall (14+ days, at its own threshold) {new.early_recall:.3f} vs "
        f"{champion.early_recall:.3f}"
    )
    if drop > RECALL_TOLERANCE:
        return f"loses {figures}: more than {RECALL_TOLERANCE} lower"
    return figures


def current_champion(client: mlflow.MlflowClient, name: str = MODEL_NAME) -> ModelVersion | None:
    """The version holding the ``champion`` alias, or None when there is none."""
    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def score_version(
    uri: str,
    version: str,
    test_frame: pd.DataFrame,
    churned: np.ndarray,
    lead: ArrayLike | None = None,
) -> tuple[SliceScore, np.ndarray]:
    """Load a registered pyfunc by ``uri`` and score ``test_frame`` (a feature frame) with it.

    The frame goes through ``models.pyfunc.to_pyfunc_input`` with the loaded version's own input
    schema: a version logged before the pyfunc took feature frames as they are (every number
    ``double``) is compared on the same rows as a new one.

    Args:
        uri: the model URI (``models:/<name>@champion``).
        version: its version, for messages and the score.
        test_frame: the feature frame to score.
        churned: its 0/1 labels.
        lead: days to ST_006 per row (``training.early_warning.lead_days``), for the
            early-warning recall at the version's own recorded threshold; None: not computed.

    Returns:
        The version's PR-AUC, ECE (and early-warning recall) on the frame, and its ``p_churn``.

    Raises:
        ValueError: when the model cannot score the frame (missing or mistyped columns).
    """
    model = mlflow.pyfunc.load_model(uri)
    schema = model.metadata.get_input_schema()
    columns = schema.input_names() if schema is not None else model_feature_names()
    missing = [column for column in columns if column not in test_frame.columns]
    if missing:
        raise ValueError(f"{uri} (v{version}) needs columns the test slice lacks: {missing}")
    inputs = to_pyfunc_input(test_frame, schema=schema)
    p_churn = np.asarray(model.predict(inputs[columns])["p_churn"], dtype=float)
    points = _operating_points(model)
    score = SliceScore(
        version=version,
        pr_auc=pr_auc(churned, p_churn),
        ece=expected_calibration_error(churned, p_churn),
        early_recall=None if lead is None else early_warning_recall(lead, p_churn, points),
    )
    return score, p_churn


def _operating_points(model: mlflow.pyfunc.PyFuncModel) -> dict[str, float]:
    """The operating points saved with an lstep pyfunc's ``ChurnModel`` ({} for any other)."""
    churn_model = getattr(model.unwrap_python_model(), "churn_model", None)
    return dict(getattr(churn_model, "operating_points", None) or {})


def _set_tags(client: mlflow.MlflowClient, name: str, version: str, tags: dict) -> None:
    for key, value in tags.items():
        client.set_model_version_tag(name, version, TAG_PREFIX + key, str(value))


def _hand_over_champion(
    client: mlflow.MlflowClient, name: str, version: str, previous: ModelVersion | None
) -> None:
    """Point ``champion`` at ``version``; drop its ``challenger`` alias; mark the one replaced."""
    client.set_registered_model_alias(name, CHAMPION, version)
    try:
        challenger = client.get_model_version_by_alias(name, CHALLENGER)
    except MlflowException:
        challenger = None
    if challenger is not None and str(challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    if previous is not None and str(previous.version) != version:
        _set_tags(client, name, str(previous.version), {"replaced_by_version": version})


def register_decision(
    client: mlflow.MlflowClient,
    version: str,
    new: SliceScore,
    *,
    test_frame: pd.DataFrame,
    churned: np.ndarray,
    new_p_churn: ArrayLike,
    lead: ArrayLike | None = None,
    name: str = MODEL_NAME,
) -> Decision:
    """Compare ``version`` with the champion on the same test slice, set its alias, tag the why.

    The champion is loaded with ``mlflow.pyfunc.load_model("models:/<name>@champion")``, which
    reads MLflow's registry URI: the caller points it at ``client``'s registry first
    (``training.pipeline.train`` does).

    Args:
        client: MLflow client of the tracking/registry store.
        version: the newly registered version.
        new: its PR-AUC and ECE on ``test_frame``.
        test_frame: the new run's test slice (a feature frame).
        churned: the 0/1 labels of ``test_frame``.
        new_p_churn: the new version's ``p_churn`` per row of ``test_frame`` (paired with the
            champion's for the bootstrap of the gain).
        lead: days to ST_006 per row of ``test_frame``, for the champion's early-warning recall
            (None: that check is not made).
        name: registered model name.
    """
    previous = current_champion(client, name)
    if previous is None or str(previous.version) == version:
        alias, reason = decide(new, None)
        return _apply(client, name, Decision(version, alias, reason, new, None), previous)
    try:
        champion, champion_p_churn = score_version(
            f"models:/{name}@{CHAMPION}", str(previous.version), test_frame, churned, lead
        )
    except (ValueError, MlflowException) as error:
        reason = f"champion v{previous.version} could not score the new test slice: {error}"
        return _apply(client, name, Decision(version, CHALLENGER, reason, new, None), previous)
    gain = pr_auc_gain(churned, new_p_churn, champion_p_churn)
    alias, reason = decide(new, champion, gain)
    decision = Decision(version, alias, reason, new, champion, gain)
    return _apply(client, name, decision, previous)


def _apply(
    client: mlflow.MlflowClient, name: str, decision: Decision, previous: ModelVersion | None
) -> Decision:
    """Set the decided alias and record the decision as tags on the new version."""
    version, champion, gain = decision.version, decision.champion, decision.gain
    if decision.alias == CHAMPION:
        _hand_over_champion(client, name, version, previous)
    else:
        client.set_registered_model_alias(name, CHALLENGER, version)
    tags = {"decision": decision.alias, "decision_reason": decision.reason}
    tags |= {"test_pr_auc": f"{decision.new.pr_auc:.6f}", "test_ece": f"{decision.new.ece:.6f}"}
    if decision.new.early_recall is not None:
        tags["test_early_warning_recall"] = f"{decision.new.early_recall:.6f}"
    if champion is not None:
        tags |= {
            "compared_with_version": champion.version,
            "champion_pr_auc_same_slice": f"{champion.pr_auc:.6f}",
            "champion_ece_same_slice": f"{champion.ece:.6f}",
        }
        if champion.early_recall is not None:
            tags["champion_early_warning_recall_same_slice"] = f"{champion.early_recall:.6f}"
    if gain is not None:
        tags |= {
            "pr_auc_gain": f"{gain.observed:.6f}",
            "pr_auc_gain_lower_95": f"{gain.lower:.6f}",
            "pr_auc_gain_resamples": gain.resamples,
        }
    _set_tags(client, name, version, tags)
    return decision


@dataclass(frozen=True)
class Promotion:
    """A manual promotion (or rollback) of a version to champion."""

    version: str
    previous_version: str | None
    actor: str
    reason: str
    at: datetime


def promote(
    tracking_uri: str,
    version: str | int,
    *,
    reason: str,
    actor: str,
    at: datetime,
    name: str = MODEL_NAME,
) -> Promotion:
    """Make ``version`` the champion by hand (forced promotion or rollback), recording who and why.

    Args:
        tracking_uri: the MLflow tracking/registry URI.
        version: the model version to promote.
        reason: why (required, recorded as a tag).
        actor: who (required, recorded as a tag).
        at: when (recorded as an ISO tag; the caller passes the current time).
        name: registered model name.

    Raises:
        ValueError: on an empty reason/actor or a version the registry does not hold.
    """
    if not reason.strip() or not actor.strip():
        raise ValueError("promote: both --reason and the actor are required and must not be empty")
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    version = str(version)
    try:
        client.get_model_version(name, version)
    except MlflowException as error:
        known = sorted(int(v.version) for v in client.search_model_versions(f"name='{name}'"))
        raise ValueError(f"promote: {name} has no version {version} (versions: {known})") from error
    previous = current_champion(client, name)
    _hand_over_champion(client, name, version, previous)
    previous_version = str(previous.version) if previous is not None else None
    tags = {"promoted_by": actor, "promotion_reason": reason, "promoted_at": at.isoformat()}
    tags |= {"decision": CHAMPION, "replaced_version": previous_version or "none"}
    _set_tags(client, name, version, tags)
    return Promotion(version, previous_version, actor, reason, at)
