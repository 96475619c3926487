"""Turn the table-driven engine cases (``cases/*.yaml``) into ``scored`` and ``state`` frames.

A case file has ``as_of``, a ``base`` learner (feature values on which no rule fires for a known
learner), and ``cases``: each with a ``name``, optional ``product_tag``, ``features`` (overrides
of the base), ``state`` (absent for a new learner: tag, since_days, override_tag,
override_expires_days relative to as_of, null for no expiry; override_kind, by default
campaign for an ST_005 override and hold otherwise) and ``expect`` (decision columns).
A case file may also give ``rules_order``: the rule ids in the order of another, equally valid
transitions.yaml, which ``reorder_transitions`` writes into a copy of the rules.
"""

from __future__ import annotations

import shutil
from datetime import date, timedelta
from importlib import resources
from pathlib import Path

import pandas as pd
import yaml

from rules.config import RuleSet

CASES_DIR = Path(__file__).parent / "cases"
RULE_FILES = ("tags.yaml", "transitions.yaml", "interventions.yaml")
TRANSITIONS_FILE = "transitions.yaml"
CASEBOOK_POINTS = {"early_warning": 0.6, "recovered": 0.3}
"""The operating points the casebooks' p_churn values were written around: the thresholds R05
and R07/R08 had by hand before they named the model's operating points."""


def with_casebook_points(ruleset: RuleSet) -> RuleSet:
    """The rules with ``@early_warning`` / ``@recovered`` resolved to ``CASEBOOK_POINTS``."""
    return ruleset.with_operating_points(CASEBOOK_POINTS, "the casebook")


def load_casebook(name: str) -> dict:
    """Read one case file and give every case a customer id (its position, zero-padded)."""
    book = yaml.safe_load((CASES_DIR / name).read_text(encoding="utf-8"))
    for index, case in enumerate(book["cases"]):
        case["customer_id"] = f"c{index:03d}"
    return book


def scored_frame(book: dict, cases: list[dict] | None = None) -> pd.DataFrame:
    """One scored row per case: the base learner with the case's overrides."""
    rows = []
    for case in cases if cases is not None else book["cases"]:
        row = {**book["base"], **case.get("features", {})}
        rows.append({"customer_id": case["customer_id"], **row})
    return pd.DataFrame(rows)


def state_frame(book: dict, cases: list[dict] | None = None) -> pd.DataFrame:
    """State rows for the cases that have a state (the others are new learners)."""
    as_of: date = book["as_of"]
    rows = []
    for case in cases if cases is not None else book["cases"]:
        state = case.get("state")
        if state is None:
            continue
        expires = state.get("override_expires_days")
        rows.append(
            {
                "customer_id": case["customer_id"],
                "tag": state["tag"],
                "since": pd.Timestamp(as_of - timedelta(days=state.get("since_days", 30))),
                "override_tag": state.get("override_tag"),
                "override_expires": None
                if expires is None
                else pd.Timestamp(as_of + timedelta(days=expires)),
                # As the store writes them: an ST_005 override is a campaign, any other a hold.
                "override_kind": state.get(
                    "override_kind",
                    "campaign" if state.get("override_tag") == "ST_005" else "hold",
                ),
            }
        )
    columns = ["customer_id", "tag", "since", "override_tag", "override_expires", "override_kind"]
    return pd.DataFrame(rows, columns=columns)


def copy_packaged_rules(target: Path) -> Path:
    """Copy the packaged rules files into ``target`` (created if absent) and return it."""
    target.mkdir(parents=True, exist_ok=True)
    for name in RULE_FILES:
        with resources.as_file(resources.files("rules").joinpath(name)) as source:
            shutil.copy(source, target / name)
    return target


def reorder_transitions(rules_dir: Path, order: list[str]) -> None:
    """Rewrite ``rules_dir``'s transitions.yaml with its rules in ``order`` (ids), nothing else.

    Raises:
        ValueError: when ``order`` is not a permutation of the file's rule ids.
    """
    path = rules_dir / TRANSITIONS_FILE
    document = yaml.safe_load(path.read_text(encoding="utf-8"))  # aliases come back expanded
    by_id = {rule["id"]: rule for rule in document["rules"]}
    if sorted(order) != sorted(by_id):
        raise ValueError(f"rules_order {order} is not a permutation of {sorted(by_id)}")
    document["rules"] = [by_id[rule_id] for rule_id in order]
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
