"""The champion's model card for the report: metrics with baselines, calibration, data window.

Found through the registry: the run of the version holding the ``champion`` alias logged
``comparison.md``, ``model_card.md`` and ``plots/calibration.png``; nothing is configured. The
card's "Early warning" and "Operating points" sections (the brief's "85% 14 days ahead" claim,
measured) are shown as they are; a champion trained before they existed shows none.
"""

from __future__ import annotations

import base64
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.infra.champion import Champion
from serving.settings import Settings

MODEL_CARD_FILE = "model_card.md"
COMPARISON_FILE = "comparison.md"
CALIBRATION_PLOT = "plots/calibration.png"


@dataclass(frozen=True)
class ChampionArtifacts:
    """What the champion's training run logged that the report shows.

    Attributes:
        version: the registered version holding the alias.
        run_id: the MLflow run that produced it (looked up, never configured).
        comparison: the metrics table of the model and its baselines (``comparison.md``).
        card: the model card markdown (``model_card.md``).
        calibration_png: the calibration plot (``plots/calibration.png``).
    """

    version: str
    run_id: str
    comparison: str
    card: str
    calibration_png: bytes


def champion_artifacts(settings: Settings, champion: Champion) -> ChampionArtifacts:
    """Download the champion run's card, comparison table and calibration plot from MLflow.

    Raises:
        FileNotFoundError: the run lacks one of the artifacts (naming the run and the file).
    """
    import mlflow

    client = mlflow.MlflowClient(
        tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri
    )
    run_id = str(client.get_model_version(settings.model_name, champion.version).run_id)
    logged = {item.path for item in client.list_artifacts(run_id)}
    logged |= {item.path for item in client.list_artifacts(run_id, "plots")}
    for name in (MODEL_CARD_FILE, COMPARISON_FILE, CALIBRATION_PLOT):
        if name not in logged:
            raise FileNotFoundError(
                f"report: the champion v{champion.version}'s run {run_id} has no artifact {name} "
                "(train it with `lstep train`)"
            )
    with tempfile.TemporaryDirectory(prefix="lstep-report-") as scratch:
        files = {
            n: Path(client.download_artifacts(run_id, n, scratch))
            for n in (MODEL_CARD_FILE, COMPARISON_FILE, CALIBRATION_PLOT)
        }
        return ChampionArtifacts(
            version=champion.version,
            run_id=run_id,
            comparison=files[COMPARISON_FILE].read_text(encoding="utf-8"),
            card=files[MODEL_CARD_FILE].read_text(encoding="utf-8"),
            calibration_png=files[CALIBRATION_PLOT].read_bytes(),
        )


def model_card_section(settings: Settings, champion: Champion | None) -> dict[str, Any] | None:
    """Metrics with baselines, the calibration plot and the card's text; None without a model."""
    if champion is None:
        return None
    artifacts = champion_artifacts(settings, champion)
    header, rows = markdown_table(artifacts.comparison)
    return {
        "version": artifacts.version,
        "run_id": artifacts.run_id,
        "metrics_header": header,
        "metrics_rows": rows,
        "baselines": markdown_bullets(markdown_section(artifacts.card, "Baselines")),
        "data_window": markdown_bullets(markdown_section(artifacts.card, "Data window")),
        "early_warning": early_warning_section(artifacts.card),
        "calibration": "data:image/png;base64,"
        + base64.b64encode(artifacts.calibration_png).decode("ascii"),
        "card": artifacts.card,
    }


def early_warning_section(card: str) -> dict[str, Any] | None:
    """The card's early-warning definition, table, verdict and operating points.

    None for a champion trained before training measured it (its card has no such section).
    """
    section = markdown_section(card, "Early warning")
    if not section:
        return None
    paragraphs = [part.strip() for part in section.split("\n\n") if part.strip()]
    header, rows = markdown_table(section)
    return {
        "definition": " ".join(paragraphs[0].split()),
        "header": header,
        "rows": rows,
        "verdict": " ".join(paragraphs[-1].split()),
        "operating_points": markdown_bullets(markdown_section(card, "Operating points")),
    }


def markdown_table(text: str) -> tuple[list[str], list[list[str]]]:
    """The first pipe table in markdown ``text``: (header cells, body rows of cells).

    Raises:
        ValueError: when the text holds no pipe table.
    """
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        raise ValueError("report: expected a markdown table (| a | b |), found none")
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    body = [row for row in cells[1:] if not all(set(cell) <= set("-: ") for cell in row)]
    return cells[0], body


def markdown_section(text: str, title: str) -> str:
    """The body of the ``## title`` section of a markdown document ('' when absent)."""
    match = re.search(rf"^## {re.escape(title)}[^\n]*\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    return match.group(1).strip() if match else ""


def markdown_bullets(text: str) -> list[str]:
    """The ``- item`` lines of a markdown block, without the dash and the ``**``/backticks."""
    items = [line[2:].strip() for line in text.splitlines() if line.startswith("- ")]
    return [item.replace("**", "").replace("`", "") for item in items]


__all__ = [
    "ChampionArtifacts",
    "champion_artifacts",
    "early_warning_section",
    "markdown_bullets",
    "markdown_section",
    "markdown_table",
    "model_card_section",
]
