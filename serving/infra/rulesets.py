"""The rules a process decides with: the packaged ones, or a directory's, checked at load.

Rules may name the model's operating points (``value: "@early_warning"``, ``rules.config``).
Given the champion, they are resolved against the thresholds it carries
(``ChurnModel.operating_points``): a champion without one a rule names is a ``RulesError`` at
start-up (naming the rule and the point), because deciding with some other number would silently
change what the rule means. Without a champion (rules-only) they stay unresolved: their leaves
are false, as every comparison with the absent ``p_churn`` is.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from features.catalog import load_catalog
from rules import MODEL_SCORE_COLUMNS, RuleSet, load_ruleset

if TYPE_CHECKING:
    from serving.core.scoring import ModelHandle


def load_rules(rules_dir: Path | None = None, *, champion: ModelHandle | None = None) -> RuleSet:
    """The validated rules, checked against the catalog's feature names and the model scores.

    Args:
        rules_dir: a rules directory; None for the packaged rules.
        champion: the champion (anything with its ``ChurnModel`` and version) whose operating
            points resolve the rules' ``@name`` values, and whose label window and ``@recovered``
            point are the lifetime projection's ``score_horizon_days`` and ``healthy_p_churn``;
            None (rules-only) leaves them as the files say.

    Raises:
        rules.RulesError: naming the file, rule id and field of the first problem, or the
            operating point the champion does not record.
    """
    ruleset = load_ruleset(rules_dir, known_features=[*load_catalog().names, *MODEL_SCORE_COLUMNS])
    if champion is None:
        return ruleset
    source = f"the champion (v{champion.version})"
    points = champion.model.operating_points
    ruleset = ruleset.with_operating_points(points, source)
    recorded = {
        "score_horizon_days": getattr(champion.model, "horizon_days", None),  # None: saved before
        "healthy_p_churn": points.get("recovered"),
    }
    changes = {name: value for name, value in recorded.items() if value is not None}
    return ruleset.with_lifetime(**changes) if changes else ruleset


__all__ = ["load_rules"]
