"""What one contact costs on each campaign channel: the ``costs`` block of ``campaigns.yaml``.

The dashboard's intervention ROI divides the value a campaign saved by what its messages cost;
the cost of a message is its channel's cost per contact. The defaults are lstep's guesses (a
marketing e-mail or push costs a fraction of a cent, an in-app message or a webhook nothing
beyond the platform, a customer success manager's task about half an hour of their time); a
business sets its own in ``campaigns.yaml``::

    costs: {email: 0.01, push: 0.005, in_app: 0.0, csm_task: 25.0, webhook: 0.0}

Amounts are in the currency of ``interventions.yaml``'s value weights (EUR per contact). A channel
left out keeps its default; an unknown channel or a negative, infinite or missing amount is a
``RulesError`` naming ``costs.<channel>``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field
from pydantic import ValidationError as PydanticValidationError

from rules.errors import RulesError

COSTS_KEY = "costs"


class ChannelCosts(BaseModel):
    """Cost per contact by channel (the channels of ``rules.campaigns.CHANNELS``), >= 0."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    email: float = Field(0.01, ge=0.0, allow_inf_nan=False)
    push: float = Field(0.005, ge=0.0, allow_inf_nan=False)
    in_app: float = Field(0.0, ge=0.0, allow_inf_nan=False)
    csm_task: float = Field(25.0, ge=0.0, allow_inf_nan=False)
    webhook: float = Field(0.0, ge=0.0, allow_inf_nan=False)

    def by_channel(self) -> dict[str, float]:
        """``{channel: cost per contact}`` in the channels' order."""
        return self.model_dump()


def parse_costs(raw: object, file: str) -> ChannelCosts:
    """The ``costs`` block of ``file`` (None: the defaults).

    Raises:
        RulesError: not a mapping, an unknown channel, or an amount that is not a finite number
            >= 0; the field is ``costs.<channel>``.
    """
    if raw is None:
        return ChannelCosts()
    if not isinstance(raw, dict):
        raise RulesError(file, f"expected a mapping of channel: cost, got {raw!r}", field=COSTS_KEY)
    try:
        return ChannelCosts.model_validate(raw)
    except PydanticValidationError as error:
        first = error.errors()[0]
        channel = ".".join(str(part) for part in first["loc"])
        if first["type"] == "extra_forbidden":
            known = ", ".join(ChannelCosts.model_fields)
            message = f"unknown channel {channel!r}; channels: {known}"
        else:
            message = f"{first['msg']} (got {first['input']!r}): a cost per contact"
        raise RulesError(file, message, field=f"{COSTS_KEY}.{channel}") from None


__all__ = ["COSTS_KEY", "ChannelCosts", "parse_costs"]
