"""Arrivals and onboardings: which first taggings set a transition campaign in motion.

A learner the state store has never tagged moves from "new" into their first tag, and the audit
log records that move like any other. Whether the move's transition triggers (``into: ...``, a
welcome, a celebration, an early warning) match depends on who the learner is:

- an **arrival** enrolled at most ``arrival_days`` days before the batch day (``campaigns.yaml``;
  ``ARRIVAL_DAYS`` when it does not say): a new learner of the business, whom the store meets as
  they start. Their move's campaign fires.
- an **onboarding**, anyone else tagged for the first time: on the store's first day, the whole
  existing population; later, a learner first seen after a silence longer than the window. Their
  first tag is where they already stood, not a move they just made: only the tag triggers match
  (the default campaign of the tag, the synergy rows), as on a day without a move. A business
  that starts lstep on a million learners otherwise sends a million "welcome, here is what to do
  first" and "you reached a milestone" messages to people who enrolled months ago, as segment-
  triggered campaigns elsewhere enrol only those who enter the segment after it goes live.

The learner's enrolment is read off ``ARRIVAL_FEATURE`` (days from enrolment to the batch day);
a decision without it (a caller's frame that does not carry it) arrives, as before this existed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from rules.errors import RulesError

ARRIVAL_KEY = "arrival_days"
ARRIVAL_DAYS = 7
"""``arrival_days`` when ``campaigns.yaml`` does not say: a week, so that a few skipped batch days
still see a new learner arrive (on a daily run they are enrolled since the day before)."""
ARRIVAL_FEATURE = "tenure_days"
"""Days from the learner's enrolment to the batch day (a float): what tells an arrival from an
onboarding. The decisions' arrays carry it under this name where it is known."""


def parse_arrival_days(content: dict, file: str) -> int | None:
    """``arrival_days`` of a ``campaigns.yaml``'s ``content``: ``ARRIVAL_DAYS`` when absent, None
    (every first tagging arrives) when null.

    Raises:
        RulesError: anything but a whole number of days >= 0 or null; the field is
            ``arrival_days``.
    """
    if ARRIVAL_KEY not in content:
        return ARRIVAL_DAYS
    days = content[ARRIVAL_KEY]
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise RulesError(
            file,
            "expected a whole number of days >= 0, or null (every first tagging arrives), "
            f"got {days!r}",
            field=ARRIVAL_KEY,
        )
    return days


def arrival_of(scored: Mapping[str, Any]) -> dict[str, Any]:
    """``{ARRIVAL_FEATURE: its values}`` of ``scored`` where it holds them, else empty: what the
    rules engine adds to the decisions' arrays for ``rules.campaign_matching``."""
    return {ARRIVAL_FEATURE: scored[ARRIVAL_FEATURE]} if ARRIVAL_FEATURE in scored else {}


def onboarded(new: np.ndarray, tenure_days: object, arrival_days: int | None) -> np.ndarray:
    """Which decisions are onboardings: first taggings (``new``) of learners enrolled more than
    ``arrival_days`` days before the batch day. A null or missing tenure arrives (unknown).

    Args:
        new: the learner has no stored tag (the decision's from_tag is null).
        tenure_days: each decision's ``ARRIVAL_FEATURE`` (aligned with ``new``), or None.
        arrival_days: ``Catalogue.arrival_days``; None: nobody is onboarded.
    """
    if arrival_days is None or tenure_days is None or not new.any():
        return np.zeros(len(new), dtype=bool)
    tenure = pd.array(tenure_days, dtype="Float64").to_numpy(dtype=float, na_value=np.nan)
    with np.errstate(invalid="ignore"):  # a NaN compares False: it arrives
        return new & (tenure > arrival_days)


__all__ = [
    "ARRIVAL_DAYS",
    "ARRIVAL_FEATURE",
    "ARRIVAL_KEY",
    "arrival_of",
    "onboarded",
    "parse_arrival_days",
]
