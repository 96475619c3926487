"""Spread recurring campaigns: each learner's own day in a campaign's cap window.

A tag-triggered campaign (a weekly digest: ``trigger: {tag: ST_001}``, at most one message per 7
days) is matched every day a learner holds the tag, and its frequency cap spaces the messages
``per_days`` apart from the first one. When a whole population gets the tag on one day (a
store's first load onboards every existing learner), every learner's first message goes out
that day and the next ones every ``per_days`` days after it: the campaign sends its weekly
volume as one wave on one weekday, forever. A campaign with ``spread: true`` is planned for a
learner only on their own day in every ``per_days``: that day (``days_of``) is a stable hash of
the learner and the campaign (the control draw's, ``rules.interventions.control_draw``, of
``"spread <campaign>"``: independent of the learner's control group and A/B variant), and a
day ``as_of`` is theirs when ``as_of``'s ordinal is that day modulo ``per_days``. The cap then
keeps them on it: the window of a message planned on their day ends the day before their next.
"""

from __future__ import annotations

from datetime import date

import numpy as np
from numpy.typing import ArrayLike

from rules.interventions import control_draw

SPREAD_ACTION = "spread {campaign_id}"
"""What the control draw hashes each learner with for a campaign's days."""


def days_of(customer_ids: ArrayLike, campaign_id: str, per_days: int) -> np.ndarray:
    """Each learner's day of ``campaign_id`` in every ``per_days``: 0 .. per_days - 1."""
    draws = control_draw(customer_ids, SPREAD_ACTION.format(campaign_id=campaign_id))
    return np.minimum((draws * per_days).astype(np.int64), per_days - 1)


def on_their_day(
    customer_ids: ArrayLike, campaign_id: str, per_days: int, as_of: date
) -> np.ndarray:
    """Whether ``as_of`` is each learner's day of ``campaign_id`` (see the module docstring)."""
    if len(customer_ids) == 0:  # type: ignore[arg-type]
        return np.zeros(0, dtype=bool)
    return days_of(customer_ids, campaign_id, per_days) == as_of.toordinal() % per_days


__all__ = ["SPREAD_ACTION", "days_of", "on_their_day"]
