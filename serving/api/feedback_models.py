"""Bodies of ``POST /events/campaign``: campaign feedback (issue 12)."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, StringConstraints

_Word = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]


class CampaignEventRequest(BaseModel):
    """Body of ``POST /events/campaign`` (needs the API token): what happened to a message.

    ``kind`` is one of ``delivered``, ``opened``, ``clicked``, ``converted`` (another is a 422
    naming the field); ``source`` names who reports it (an ESP, the marketing tool).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    message_id: _Word
    kind: _Word
    source: _Word = "api"


class CampaignEventResponse(BaseModel):
    """The event as recorded: ``recorded`` is false when the message already had this kind."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    kind: str
    recorded: bool


__all__ = ["CampaignEventRequest", "CampaignEventResponse"]
