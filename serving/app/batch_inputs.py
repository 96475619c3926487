"""The event log a batch run reads (``BatchInputs``): frames or files, validated once.

The batch's DuckDB path reads parquet files as they are once DuckDB proved them clean
(``features.parquet_check``); anything else is read and checked by the full validation
(``features.validation.load_valid_inputs``), whose report a bad log fails with.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from features.kept_proof import prove_kept
from features.mapping import EventMapping
from features.parquet_check import Proof, prove_clean
from features.validation import load_valid_inputs
from features.workspace import TableInput

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchInputs:
    """The event log a run reads: frames or files, validated once.

    Attributes:
        events: events (frame or parquet/CSV path).
        customers: customers (frame or parquet/CSV path).
        validated: the inputs already passed ``load_valid_inputs`` (frames) or the proof of
            ``features.parquet_check`` (files read as they are).
        mapping: event-type mapping (YAML path or ``EventMapping``) for a foreign log.
        allow_unknown: load event types the mapping does not cover as ``other``.
        proved: the files' (size, mtime_ns) when ``checked`` proved them clean; () otherwise.
        how: how ``checked`` validated them ("proved in full", "proved since ...", "validated
            in full: why"); empty when it did not run.
    """

    events: TableInput
    customers: TableInput
    validated: bool = False
    mapping: EventMapping | str | Path | None = None
    allow_unknown: bool = False
    proved: tuple[tuple[int, int], ...] = ()
    how: str = ""

    def loaded(self, now: datetime) -> BatchInputs:
        """These inputs validated (files read and checked against the contracts).

        Raises:
            features.validation_report.InputError: the inputs fail validation (the rendered report).
        """
        if self.validated:
            return self
        events, customers = load_valid_inputs(
            self.events,
            self.customers,
            mapping=self.mapping,
            allow_unknown=self.allow_unknown,
            now=now,
        )
        return BatchInputs(events=events, customers=customers, validated=True)

    def checked(self, now: datetime, *, kept: Path | None = None) -> BatchInputs:
        """These inputs validated for the batch's DuckDB path, which reads files as they are.

        Parquet files that DuckDB proves to meet their contracts (``features.parquet_check``)
        stay files, with their size and modification time at the proof (``proved``); anything
        else (a mapping, CSV, frames, any check that fails) is ``loaded``, so a bad log still
        fails with the validation's full report. At 1M learners x 60 days the proof takes
        8.1-8.8 s at 0.93 GiB peak where the validation took 60-79 s at 9.4 GiB. Proved
        files are proved again when they changed since (a backfill's later days, a log appended
        meanwhile): the features must read what was proved.

        ``kept``: a directory where the proof is kept for the next day, which then checks only
        the events since (``features.kept_proof``: 3.6-4.0 s against 8.6-9.4 s at 1M).

        Raises:
            features.validation_report.InputError: as ``loaded``.
        """
        if self.validated and (not self.proved or _stamps(self) == self.proved):
            return self
        unproved = dataclasses.replace(self, validated=False, proved=())
        if self.mapping is not None:
            return dataclasses.replace(unproved.loaded(now), how="validated in full: a mapping")
        stamps = _stamps(self)
        proof = self._proof(now, kept)
        if proof.clean and _stamps(self) == stamps:
            return dataclasses.replace(
                self, validated=True, proved=stamps, how=f"proved {proof.how}"
            )
        why = proof.reason or "files changed meanwhile"
        logger.info("inputs: validating in full (%s)", why)
        return dataclasses.replace(unproved.loaded(now), how=f"validated in full: {why}")

    def _proof(self, now: datetime, kept: Path | None) -> Proof:
        if kept is None:
            return prove_clean(self.events, self.customers, now=now)
        return prove_kept(self.events, self.customers, now=now, directory=kept)


def _stamps(inputs: BatchInputs) -> tuple[tuple[int, int], ...]:
    """Size and modification time (ns) of each input file; () when either is a frame."""
    paths = [data for data in (inputs.events, inputs.customers) if isinstance(data, str | Path)]
    if len(paths) < 2:
        return ()
    try:
        stats = [Path(path).stat() for path in paths]
        return tuple((stat.st_size, stat.st_mtime_ns) for stat in stats)
    except OSError:  # gone: the proof or the validation says so, naming the file
        return ()


__all__ = ["BatchInputs"]
