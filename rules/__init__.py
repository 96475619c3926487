"""Status-tag rules as data (YAML) and the vectorised engine that applies them.

``rules`` imports none of ``features``, ``models``, ``training`` or ``serving``: it works on plain
frames, and the caller passes the known feature names when loading.
"""

from rules.capacity import OVER_CAPACITY, cut_to_capacity
from rules.config import MODEL_SCORE_COLUMNS, RulesError, RuleSet
from rules.engine import decide
from rules.graph import mermaid
from rules.loading import load_ruleset
from rules.reasons import Wording
from rules.schemas import DECISION_COLUMNS, DecisionInputError

__all__ = [
    "DECISION_COLUMNS",
    "MODEL_SCORE_COLUMNS",
    "OVER_CAPACITY",
    "DecisionInputError",
    "RuleSet",
    "RulesError",
    "Wording",
    "cut_to_capacity",
    "decide",
    "load_ruleset",
    "mermaid",
]
