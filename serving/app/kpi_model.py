"""One KPI's value against its target (``serving.app.kpis`` computes the six)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from serving.app.kpi_targets import KPI_DEFINITIONS, KPI_TARGETS


class Kpi(BaseModel):
    """One KPI at ``as_of``: its value against the target, and how it was obtained."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    value: float | None
    target: float
    comparison: Literal[">=", "<="]
    unit: str
    meets_target: bool | None
    detail: str
    definition: str
    treated: float | None = None
    control: float | None = None


def kpi_of(kpi_id: str, value: float | None, detail: str, **split: float | None) -> Kpi:
    """The KPI ``kpi_id`` of ``value``, judged against its target (``KPI_TARGETS``)."""
    name, comparison, target, unit = KPI_TARGETS[kpi_id]
    meets: bool | None = None  # no value, no verdict
    if value is not None:
        meets = value >= target if comparison == ">=" else value <= target
    return Kpi(
        id=kpi_id, name=name, value=value, target=target, comparison=comparison, unit=unit,
        meets_target=meets, detail=detail, definition=KPI_DEFINITIONS[kpi_id], **split,
    )  # fmt: skip


def percent(part: int, whole: int) -> float | None:
    """``part`` of ``whole`` in percent; None of nothing."""
    return None if whole == 0 else 100.0 * part / whole


__all__ = ["Kpi", "kpi_of", "percent"]
