"""``lstep dispatch``: deliver the outbox's due campaign messages through their sinks.

A message is due when it is ``pending`` or ``failed``, its ``due_on`` is on or before the latest
completed batch day (the data clock: a step planned for day D + 3 goes once day D + 3 is
decided) and its ``next_attempt_at`` has passed (the wall clock: retries, quiet hours, caps).

Each round claims a batch of due rows (a lease: two dispatchers never send the same row; a
dispatcher killed mid-send leaves its rows to the next one after the lease), renders each
message, sends it through the sink of its channel and records the outcome at once:

- ``sent`` with the rendered subject and body and ``sent_at``;
- ``failed`` with the error, tried again after a backoff that doubles with each try;
- ``dead`` after ``max_tries``, or at once when the sink says retrying cannot help (outcomes
  are recorded every ``record_every`` messages, in one transaction each);
- deferred (claim released, nothing counted as a try) in quiet hours for the quiet channels,
  or when the learner reached the frequency cap: later, never lost.

Delivery is at least once; the sinks carry the message id as an idempotency key. A dry run
renders and counts the due messages and writes nothing, not even a claim.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Protocol

from serving.core.messages import CHANNELS, DEAD, FAILED, SENT
from serving.core.outbox import QuietHours, cap_until, retry_at
from serving.infra.sinks import Outgoing, Sink, SinkError
from serving.infra.store import StateStore
from serving.settings import DispatchSettings


class RenderError(Exception):
    """A message's template could not be rendered (recorded as the attempt's error)."""


class Rendered(Protocol):
    """What a renderer returns (``rules.campaigns.RenderedMessage``)."""

    subject: str
    body: str


Render = Callable[[str, str, str, dict[str, Any]], Rendered]
"""(template_id, channel, variant, context) -> the subject and body to send."""
OpenSinks = Callable[[Iterable[str]], Mapping[str, Sink]]
"""channels -> a sink per channel (``serving.infra.sinks.build_sinks`` with the settings)."""
Progress = Callable[[int, int], None]
"""Told (messages just handled, messages due in all) as the run goes."""


@dataclass(frozen=True)
class DispatchOptions:
    """What one ``lstep dispatch`` run covers.

    Attributes:
        channels: only these channels (None: all).
        limit: at most this many messages handled (None: every due one).
        dry_run: render and count, write and send nothing.
        token: this dispatcher's claim id (unique per run).
    """

    channels: tuple[str, ...] | None = None
    limit: int | None = None
    dry_run: bool = False
    token: str = field(default_factory=lambda: f"dispatch-{uuid.uuid4().hex[:16]}")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.channels or ()) - set(CHANNELS))
        if unknown:
            raise ValueError(f"--channel {', '.join(unknown)}: not a channel {CHANNELS}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit}: give a positive number of messages")


@dataclass
class DispatchSummary:
    """What a run did; ``by_channel`` counts the sent (or, in a dry run, rendered) messages."""

    data_day: date | None
    dry_run: bool
    sent: int = 0
    failed: int = 0
    dead: int = 0
    deferred: int = 0
    rendered: int = 0
    render_errors: int = 0
    first_error: str | None = None
    by_channel: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def handled(self) -> int:
        """Messages sent or attempted (rendered, in a dry run)."""
        return self.rendered if self.dry_run else self.sent + self.failed + self.dead

    @property
    def per_second(self) -> float:
        """Handled messages per second of the run."""
        return self.handled / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class Dispatcher:
    """The parts a run needs, resolved at the edge.

    Attributes:
        store: the state store holding the outbox.
        settings: the dispatch settings (retries, quiet hours, caps, batch size).
        open_sinks: builds the sinks of the channels that have due messages.
        render: renders a message's template.
        clock: the wall clock (aware UTC); read for each attempt.
    """

    store: StateStore
    settings: DispatchSettings
    open_sinks: OpenSinks
    render: Render
    clock: Callable[[], datetime]

    @property
    def quiet(self) -> QuietHours:
        config = self.settings
        return QuietHours(config.quiet_start, config.quiet_end, config.quiet_channels)


def dispatch(
    parts: Dispatcher, options: DispatchOptions, progress: Progress | None = None
) -> tuple[DispatchSummary, int]:
    """Deliver the due messages (see the module docstring).

    Args:
        parts: the store, settings, sinks, renderer and clock.
        options: channels, limit, dry run, claim token.
        progress: told (messages handled, messages due) as the run goes.

    Returns:
        The summary, and how many messages were due when the run started (the progress total).

    Raises:
        ValueError: a due channel without a sink, or a webhook sink without a secret (raised
            before anything is claimed).
    """
    started = time.perf_counter()
    now = parts.clock()
    data_day = parts.store.latest_batch_day()
    summary = DispatchSummary(data_day=data_day, dry_run=options.dry_run)
    if data_day is None:
        return summary, 0
    wanted = options.channels or CHANNELS
    quiet = tuple(channel for channel in wanted if parts.quiet.until(channel, now) is not None)
    open_channels = tuple(channel for channel in wanted if channel not in quiet)
    lease = timedelta(seconds=parts.settings.lease_s)
    if quiet:
        held = parts.store.due_messages(data_day=data_day, now=now, channels=quiet, lease=lease)
        summary.deferred += len(held)
    due = parts.store.due_messages(data_day=data_day, now=now, channels=open_channels, lease=lease)
    if options.limit is not None:
        due = due.head(options.limit)
    if due.empty:
        summary.seconds = time.perf_counter() - started
        return summary, 0
    total = len(due)
    tick = None if progress is None else (lambda done: progress(done, total))
    if progress is not None:
        progress(0, total)
    if options.dry_run:
        _dry_run(parts, due.to_dict("records"), summary, tick)
    else:
        sinks = parts.open_sinks(sorted(set(due["channel"])))
        try:
            _deliver(parts, options, sinks, data_day, open_channels, total, summary, tick)
        finally:
            for sink in {id(sink): sink for sink in sinks.values()}.values():
                sink.close()
    summary.seconds = time.perf_counter() - started
    return summary, total


def _dry_run(
    parts: Dispatcher,
    rows: list[dict[str, Any]],
    summary: DispatchSummary,
    progress: Callable[[int], None] | None,
) -> None:
    """Render every due message and count it by channel; nothing is written."""
    for row in rows:
        try:
            _outgoing(parts.render, row)
        except Exception as error:  # counted and named: a dry run is how a bad template shows
            summary.render_errors += 1
            summary.first_error = summary.first_error or f"{row['template_id']}: {error!r}"
        else:
            summary.rendered += 1
            summary.by_channel[row["channel"]] += 1
        if progress is not None:
            progress(1)


def _deliver(
    parts: Dispatcher,
    options: DispatchOptions,
    sinks: Mapping[str, Sink],
    data_day: date,
    channels: tuple[str, ...],
    budget: int,
    summary: DispatchSummary,
    progress: Callable[[int], None] | None,
) -> None:
    """Claim due rows batch by batch until none is left or ``budget`` are handled."""
    lease = timedelta(seconds=parts.settings.lease_s)
    window = timedelta(hours=parts.settings.cap_window_h)
    handled = 0
    while handled < budget:
        now = parts.clock()
        size = min(parts.settings.batch_size, budget - handled)
        rows = parts.store.claim_messages(
            options.token, data_day=data_day, now=now, channels=channels, lease=lease, limit=size
        )
        if not rows:
            return
        sent_times = parts.store.sent_since(
            sorted({row["customer_id"] for row in rows}), now - window
        )
        _send_claimed(parts, options.token, sinks, rows, sent_times, summary, progress)
        handled += len(rows)


def _send_claimed(
    parts: Dispatcher,
    token: str,
    sinks: Mapping[str, Sink],
    rows: list[dict[str, Any]],
    sent_times: dict[str, list[datetime]],
    summary: DispatchSummary,
    progress: Callable[[int], None] | None,
) -> None:
    """Send claimed rows, recording outcomes every ``record_every`` messages.

    Recording in groups spares a transaction per message; a dispatcher killed between a send
    and its group's record sends that group again after the lease (at least once, and the
    sinks carry the message id for the receiver to deduplicate).
    """
    attempts: list[dict[str, Any]] = []
    untouched = {row["message_id"] for row in rows}
    try:
        for row in rows:
            attempt = _attempt(parts, token, sinks, row, sent_times, summary)
            untouched.discard(row["message_id"])
            if attempt is not None:
                attempts.append(attempt)
            if len(attempts) >= parts.settings.record_every:
                parts.store.record_attempts(token, attempts)
                attempts = []
            if progress is not None:
                progress(1)
    finally:  # what was done is recorded; rows not reached (an interrupt) go back at once
        parts.store.record_attempts(token, attempts)
        for message_id in untouched:
            parts.store.release_message(message_id, token, None)


def _attempt(
    parts: Dispatcher,
    token: str,
    sinks: Mapping[str, Sink],
    row: dict[str, Any],
    sent_times: dict[str, list[datetime]],
    summary: DispatchSummary,
) -> dict[str, Any] | None:
    """Send one claimed message and say what happened; None when the frequency cap defers it
    (its claim is released at once, to be tried when the learner is under the cap again)."""
    config, now = parts.settings, parts.clock()
    window = timedelta(hours=config.cap_window_h)
    capped = cap_until(sent_times[row["customer_id"]], config.max_per_learner, window, now)
    if capped is not None:
        parts.store.release_message(row["message_id"], token, capped)
        summary.deferred += 1
        return None
    try:
        message = _outgoing(parts.render, row)
        sinks[row["channel"]].send(message)
    except SinkError as error:
        return _failure(parts, row, error, summary)
    except Exception as error:  # the templates' own failure (a missing template or variable)
        return _failure(
            parts, row, RenderError(f"rendering {row['template_id']}: {error!r}"), summary
        )
    sent_at = parts.clock()
    sent_times[row["customer_id"]].append(sent_at)
    summary.sent += 1
    summary.by_channel[row["channel"]] += 1
    return {
        "message_id": row["message_id"], "state": SENT, "sent_at": sent_at,
        "subject": message.subject, "body": message.body,
    }  # fmt: skip


def _failure(
    parts: Dispatcher, row: dict[str, Any], error: Exception, summary: DispatchSummary
) -> dict[str, Any]:
    """``failed`` with a retry time, or ``dead`` after the last try or a permanent error."""
    config, tries = parts.settings, int(row["tries"]) + 1
    permanent = getattr(error, "permanent", False)
    text = str(error) if isinstance(error, SinkError) else f"{type(error).__name__}: {error}"
    attempt = {"message_id": row["message_id"], "last_error": text}
    if permanent or tries >= config.max_tries:
        summary.dead += 1
        return {**attempt, "state": DEAD}
    summary.failed += 1
    retry = retry_at(parts.clock(), tries, config.retry_base_s, config.retry_max_s)
    return {**attempt, "state": FAILED, "next_attempt_at": retry}


def _outgoing(render: Render, row: dict[str, Any]) -> Outgoing:
    """Render an outbox row into the message the sinks take."""
    context = json.loads(row["context"])
    rendered = render(row["template_id"], row["channel"], row["variant"], context)
    return Outgoing(
        message_id=row["message_id"], customer_id=row["customer_id"],
        campaign_id=row["campaign_id"], step=int(row["step"]), channel=row["channel"],
        template_id=row["template_id"], variant=row["variant"], due_on=_day(row["due_on"]),
        subject=rendered.subject, body=rendered.body, context=context,
    )  # fmt: skip


def _day(value: Any) -> date:
    return value.date() if isinstance(value, datetime) else value


__all__ = [
    "DispatchOptions",
    "DispatchSummary",
    "Dispatcher",
    "OpenSinks",
    "Progress",
    "Render",
    "RenderError",
    "Rendered",
    "dispatch",
]
