"""Child-process bodies of the fault suite: a batch day that dies at a chosen stage boundary."""

from __future__ import annotations

import os
import signal
from contextlib import nullcontext
from datetime import date
from pathlib import Path

from serving.app.batch import BatchContext, BatchInputs, Models, run_day
from serving.infra.rulesets import load_rules
from serving.infra.store import StateStore
from tests.serving.fixtures import NOW


class KillAt:
    """Batch progress that SIGKILLs its own process when a stage begins (the injectable hook)."""

    def __init__(self, stage: str | None) -> None:
        self.kill_stage = stage

    def stage(self, as_of: date, name: str):
        if name == self.kill_stage:
            os.kill(os.getpid(), signal.SIGKILL)
        return nullcontext()

    def days(self, total: int, what: str = "backfill days"):
        return lambda day: None


def run_rules_only_day(
    url: str, events: str, customers: str, day: date, data_dir: str, kill_at: str | None
) -> None:
    """One rules-only batch day on the files, killed when ``kill_at`` begins (never for None)."""
    with StateStore(url, scores_dir=Path(data_dir) / "scores") as store:  # as the apps open it
        context = BatchContext(
            store=store, models=Models(None, load_rules()), run_id=f"run-{day}-{kill_at}",
            now=NOW, data_dir=Path(data_dir), progress=KillAt(kill_at),
        )  # fmt: skip
        run_day(day, BatchInputs(events=events, customers=customers), context)
