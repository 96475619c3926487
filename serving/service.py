"""The HTTP service: two BentoML 1.4 services in front of the scoring core (``serving.scoring``).

``bentoml serve serving.service:LstepService`` (or ``lstep serve``) runs both, one process each:

- ``LstepService``, the public API: ``POST /score``, ``/explain``, ``/status``, ``/override``,
  beside BentoML's own ``/livez``, ``/readyz``, ``/metrics`` and ``/docs.json`` (the OpenAPI
  document). It owns everything HTTP: the request models (``serving.api_models``), the bearer
  token, the batch limit, the error statuses, and the reads and writes of the state store. It
  also keeps the day's answers (``serving.answers``): every learner of the batch job's latest
  snapshot scored and decided at once, so that a dry run by id on that day is a lookup and one
  state read in this process (the hop to the scorer alone costs ~6 ms); a learner whose
  stored state moved since the answers were built goes to the scorer.
- ``LearnerScorer``, internal (reached over a local socket through ``bentoml.depends``): loads
  the champion, the rules and the stored customers and features once, and scores through one
  **adaptive-batching** endpoint. BentoML merges the learners of concurrent ``/score`` requests
  into one call, so the fixed cost of a scoring call (MLflow's signature check, the rules
  engine's frame checks, a DuckDB query) is paid once per batch instead of once per request.
  Every item gets its own outcome: one unknown learner never fails the requests it was merged
  with.

Features come from the same code as the daily batch job:

- by id, on the day of the batch job's latest feature snapshot: that snapshot's row (fast path);
- by id, on another day: ``build_features(spine=...)`` over the stored events parquet;
- with inline events: checked against the file contracts (``features.validation``), then
  ``build_features(spine=...)`` over exactly those events.

Statuses: a body that breaks the models 400 (naming the field); a missing or wrong token 401;
an unknown learner 404; explaining without a model, or applying on a day before the latest batch
day, 409; more than ``LSTEP_MAX_BATCH`` learners or ``LSTEP_MAX_EVENTS`` inline events 413;
inline data that breaks the contracts, a learner enrolled after ``as_of`` or whose stored tag
began after it, or an ``as_of`` after today 422. ``ErrorBodyMiddleware`` gives every error body
the shape the OpenAPI document declares: ``{"error": str, "detail": str}``.

``apply: true`` writes the proposed moves as transitions (run id ``api-<uuid>``) with the same
checks as the daily batch (overrides hold moves, a stale ``from_tag`` is skipped); scores are
not stored (the daily batch owns the day's score rows).

Configuration: ``serving.settings.Settings`` (where the data, state, registry and BentoML store
live) and ``serving.bento.ServiceSettings`` (``LSTEP_API_TOKEN``, ``LSTEP_MAX_BATCH``,
``LSTEP_MAX_EVENTS``, ``LSTEP_RULES_ONLY``, ``LSTEP_RULES_DIR``).
"""

from __future__ import annotations

from serving.settings import disable_telemetry

# BentoML reads its tracking opt-outs when it is imported: set them first.
disable_telemetry()

import functools  # noqa: E402
import hmac  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import UTC, date, datetime  # noqa: E402
from http import HTTPStatus  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import anyio  # noqa: E402
import bentoml  # noqa: E402
import pandas as pd  # noqa: E402
from bentoml.exceptions import BentoMLException, NotFound  # noqa: E402

from features.catalog import load_catalog  # noqa: E402
from features.schemas import CUSTOMER_COLUMNS, EVENT_COLUMNS  # noqa: E402
from features.simulator import CUSTOMERS_FILE, EVENTS_FILE  # noqa: E402
from features.validation import load_customers, validate_inputs  # noqa: E402
from features.windows import build_features, event_type_firsts  # noqa: E402
from models.explain import explain_frame  # noqa: E402
from rules import MODEL_SCORE_COLUMNS, RuleSet, load_ruleset  # noqa: E402
from serving.answers import AnswerKeeper  # noqa: E402
from serving.api_models import (  # noqa: E402
    ExplainOutcome,
    ExplainRequest,
    ExplainResponse,
    OverrideOut,
    OverrideRequest,
    ReasonOut,
    ScoreItem,
    ScoreOutcome,
    ScoreRequest,
    ScoreResponse,
    StatusRequest,
    StatusResponse,
    TransitionOut,
)
from serving.batch import latest_feature_snapshot  # noqa: E402
from serving.bento import (  # noqa: E402
    METADATA_URI,
    METADATA_VERSION,
    SERVED_MODEL_TAG,
    ServiceSettings,
)
from serving.scoring import (  # noqa: E402
    Champion,
    NoChampionError,
    load_champion,
    no_champion_message,
    score_features,
    score_learners,
    unwrap_churn_model,
)
from serving.settings import Settings, utc_now  # noqa: E402
from serving.store import ApplyRefused, StateStore  # noqa: E402
from serving.store_models import (  # noqa: E402
    STATE_SCHEMA,
    STATUS_TAGS,
    validate_frame,
)

logger = logging.getLogger("bentoml.lstep")

BATCH_MAX_SIZE = 1000
"""Most learners the scorer takes in one merged call (larger requests are split by BentoML)."""
BATCH_MAX_LATENCY_MS = 30_000
"""BentoML drops queued items (503) it expects to wait longer than this; scoring takes far less."""
SNAPSHOT_RECHECK_S = 60.0
"""How often, at most, a request for a newer day makes the scorer look for a newer snapshot."""
STATE_LOOKUP_LIMIT = 64
"""Up to this many learners the state is read learner by learner; above, in one full read."""
SCORER_ATTEMPTS = 3
"""Tries of a call to the scorer that fails at the connection level (see ``call_scorer``)."""
_STATE_COLUMNS = ["customer_id", "tag", "since", "override_tag", "override_expires"]


# --- the stored learners: customers, events, the batch job's feature snapshot ---------------------


@dataclass
class LearnerData:
    """The event store the service scores from (``Settings().data_path``).

    Attributes:
        data_dir: holds ``events.parquet``, ``customers.parquet`` and the batch job's
            ``features/as_of=YYYY-MM-DD.parquet`` snapshots.
        customers: the stored customers (contract form), indexed by customer_id.
        type_firsts: per event type, its first timestamp in the stored log and its first with a
            duration (``features.windows.event_type_firsts``): inline features take the
            availability of event types from it, as the batch job's features do.
        snapshot_as_of: the day of the latest feature snapshot, None without one.
        snapshot: that snapshot's features, indexed by customer_id.
    """

    data_dir: Path
    customers: pd.DataFrame
    type_firsts: pd.DataFrame
    snapshot_as_of: date | None = None
    snapshot: pd.DataFrame | None = None
    _checked_at: float = field(default=0.0, repr=False)

    @classmethod
    def open(cls, data_dir: Path) -> LearnerData:
        """Read the customers and the latest snapshot; a missing directory means no learners.

        Raises:
            ValueError: when ``customers.parquet`` breaks the customer contract.
        """
        data = cls(
            data_dir=data_dir,
            customers=_read_customers(data_dir),
            type_firsts=_type_firsts(data_dir / EVENTS_FILE),
        )
        data.load_snapshot()
        return data

    @property
    def events_path(self) -> Path:
        return self.data_dir / EVENTS_FILE

    def load_snapshot(self) -> None:
        """(Re)read the newest feature snapshot of the batch job."""
        latest = latest_feature_snapshot(self.data_dir)
        self._checked_at = time.monotonic()
        if latest is None:
            self.snapshot_as_of, self.snapshot = None, None
            return
        self.snapshot_as_of, frame = latest
        self.snapshot = frame.set_index("customer_id", drop=False)

    def refresh_for(self, as_of: date) -> None:
        """Look for a newer snapshot (and customers) when asked for a day after the cached one.

        The batch job writes one snapshot a day; a long-running service would otherwise never
        use the fast path again after its first day.
        """
        stale = self.snapshot_as_of is None or as_of > self.snapshot_as_of
        if stale and time.monotonic() - self._checked_at >= SNAPSHOT_RECHECK_S:
            self.customers = _read_customers(self.data_dir)
            self.type_firsts = _type_firsts(self.events_path)
            self.load_snapshot()

    def snapshot_rows(self, ids: Sequence[str], as_of: date) -> pd.DataFrame:
        """The snapshot rows of ``ids`` that exist, when the snapshot is of ``as_of``."""
        if self.snapshot is None or self.snapshot_as_of != as_of:
            return _empty_like(self.snapshot)
        present = [customer_id for customer_id in ids if customer_id in self.snapshot.index]
        return self.snapshot.loc[present].reset_index(drop=True)

    def computed_rows(self, ids: Sequence[str], as_of: date) -> pd.DataFrame:
        """Features of ``ids`` at ``as_of`` from the stored events (``build_features``)."""
        spine = pd.DataFrame({"customer_id": list(ids), "as_of": pd.Timestamp(as_of)})
        return build_features(self.events_path, self.customers.reset_index(drop=True), spine=spine)


def _type_firsts(events_path: Path) -> pd.DataFrame:
    """``event_type_firsts`` of the stored log (none without one)."""
    if not events_path.exists():
        return pd.DataFrame(
            {
                "event_type": pd.Series(dtype="str"),
                "first_ts": pd.Series(dtype="datetime64[us, UTC]"),
                "first_timed_ts": pd.Series(dtype="datetime64[us, UTC]"),
            }
        )
    return event_type_firsts(events_path)


def _read_customers(data_dir: Path) -> pd.DataFrame:
    path = data_dir / CUSTOMERS_FILE
    if not path.exists():
        logger.warning("no %s: only learners with inline events can be scored", path)
        frame, problems = load_customers(_no_customers())
    else:
        frame, problems = load_customers(path)
    errors = [str(problem) for problem in problems if problem.severity == "error"]
    if errors:
        raise ValueError(f"{path}: " + "; ".join(errors))
    return frame.set_index("customer_id", drop=False)


def _no_customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype="str"),
            "product_tag": pd.Series(dtype="str"),
            "enrolled_at": pd.Series(dtype="datetime64[us, UTC]"),
            "mrr": pd.Series(dtype="float64"),
        }
    )


def _empty_like(frame: pd.DataFrame | None) -> pd.DataFrame:
    return pd.DataFrame() if frame is None else frame.iloc[:0].reset_index(drop=True)


# --- features of one day's learners ---------------------------------------------------------------


@dataclass
class DayFeatures:
    """Features of a group of learners on one day, and the learners that could not have any."""

    frame: pd.DataFrame
    sources: dict[str, str]
    errors: dict[str, tuple[int, str]]


def day_features(items: Sequence[ScoreItem], data: LearnerData) -> DayFeatures:
    """Features of ``items`` (one day, unique learners), each by the path its request asks for.

    Returns:
        The feature frame (one row per learner that has features), where each row came from
        (``snapshot``, ``event_store``, ``inline``) and, per failed learner, (HTTP status, why).
    """
    as_of = items[0].as_of
    errors: dict[str, tuple[int, str]] = {}
    by_id = [item.learner.customer_id for item in items if item.learner.events is None]
    inline = [item for item in items if item.learner.events is not None]
    stored = _known_enrolled(by_id, as_of, data, errors)
    from_snapshot = data.snapshot_rows(stored, as_of)
    snapshot_ids = set(from_snapshot["customer_id"]) if len(from_snapshot) else set()
    to_compute = [customer_id for customer_id in stored if customer_id not in snapshot_ids]
    parts = {
        "snapshot": from_snapshot,
        "event_store": data.computed_rows(to_compute, as_of) if to_compute else None,
        "inline": inline_features(inline, data, errors) if inline else None,
    }
    frames, sources = [], {}
    for source, frame in parts.items():
        if frame is not None and len(frame):
            frames.append(frame)
            sources.update(dict.fromkeys(frame["customer_id"], source))
    frame = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return DayFeatures(frame=frame, sources=sources, errors=errors)


def _known_enrolled(
    ids: Sequence[str], as_of: date, data: LearnerData, errors: dict[str, tuple[int, str]]
) -> list[str]:
    """The ids the event store knows and that enrolled before ``as_of``; the others get errors."""
    known = []
    for customer_id in ids:
        if customer_id not in data.customers.index:
            errors[customer_id] = (404, f"unknown learner {customer_id!r}: not in the event store")
        elif _enrolled_before(
            customer_id, data.customers.at[customer_id, "enrolled_at"], as_of, errors
        ):
            known.append(customer_id)
    return known


def _enrolled_before(
    customer_id: str, enrolled_at: Any, as_of: date, errors: dict[str, tuple[int, str]]
) -> bool:
    """Whether the learner enrolled before ``as_of``; a 422 for them when not."""
    if pd.Timestamp(enrolled_at) < pd.Timestamp(as_of, tz=UTC):
        return True
    errors[customer_id] = (
        422,
        f"learner {customer_id!r} enrolled at {enrolled_at}, not before as_of {as_of}",
    )
    return False


def inline_features(
    items: Sequence[ScoreItem], data: LearnerData, errors: dict[str, tuple[int, str]]
) -> pd.DataFrame | None:
    """Features from the events in the requests, checked with the file contracts first.

    All learners are checked together; when that fails, each is checked alone so that only the
    learners whose data breaks the contracts get an error (422, with the validation problems).
    """
    usable = []
    for item in items:
        customer = _customer_of(item, data, errors)
        customer_id = item.learner.customer_id
        if customer is not None and _enrolled_before(
            customer_id, customer["enrolled_at"], item.as_of, errors
        ):
            usable.append(item)
    if not usable:
        return None
    now = max(item.now for item in usable)
    checked = validate_inputs(*_inline_frames(usable, data), now=now)
    if not checked.report.ok:
        usable = [item for item in usable if _inline_ok(item, data, errors)]
        if not usable:
            return None
        checked = validate_inputs(*_inline_frames(usable, data), now=now)
    spine = pd.DataFrame(
        {
            "customer_id": [item.learner.customer_id for item in usable],
            "as_of": pd.Timestamp(usable[0].as_of),
        }
    )
    return build_features(
        checked.events, checked.customers, spine=spine, type_firsts=data.type_firsts
    )


def _customer_of(
    item: ScoreItem, data: LearnerData, errors: dict[str, tuple[int, str]]
) -> dict[str, Any] | None:
    """The learner's customer record: from the request, else from the event store."""
    learner = item.learner
    if learner.customer is not None:
        customer = learner.customer.model_dump()
        customer["enrolled_at"] = _utc(customer["enrolled_at"])
        return {"customer_id": learner.customer_id, **customer}
    if learner.customer_id in data.customers.index:
        return data.customers.loc[learner.customer_id].to_dict()
    errors[learner.customer_id] = (
        404,
        f"unknown learner {learner.customer_id!r}: not in the event store; send their "
        "customer record (product_tag, enrolled_at, mrr) with the events",
    )
    return None


def _inline_ok(item: ScoreItem, data: LearnerData, errors: dict[str, tuple[int, str]]) -> bool:
    checked = validate_inputs(*_inline_frames([item], data), now=item.now)
    if checked.report.ok:
        return True
    problems = "; ".join(str(problem) for problem in checked.report.errors)
    errors[item.learner.customer_id] = (422, f"learner {item.learner.customer_id!r}: {problems}")
    return False


def _inline_frames(
    items: Sequence[ScoreItem], data: LearnerData
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events and customers of inline learners, in the contracts' columns and types."""
    events = [
        {"customer_id": item.learner.customer_id, **event.model_dump()}
        for item in items
        for event in item.learner.events or []
    ]
    for event in events:
        event["ts"] = _utc(event["ts"])
    events_frame = pd.DataFrame(events, columns=list(EVENT_COLUMNS))
    events_frame["ts"] = pd.to_datetime(events_frame["ts"], utc=True)
    customers = [_customer_of(item, data, {}) for item in items]
    customers_frame = pd.DataFrame(customers, columns=list(CUSTOMER_COLUMNS))
    customers_frame["enrolled_at"] = pd.to_datetime(customers_frame["enrolled_at"], utc=True)
    return events_frame, customers_frame


def _utc(moment: datetime) -> datetime:
    """A timestamp in UTC; one without a time zone already is (the contracts' convention)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --- state of the learners being decided ----------------------------------------------------------


def learner_state(store: StateStore, ids: Sequence[str], as_of: date) -> pd.DataFrame:
    """The stored tag and active override of ``ids`` at ``as_of`` (``STATE_SCHEMA``).

    Few learners are read one by one (two indexed queries each); many in one full read.
    """
    if len(ids) > STATE_LOOKUP_LIMIT:
        state = store.state_frame(as_of)
        return state[state["customer_id"].isin(set(ids))].reset_index(drop=True)
    rows = []
    for customer_id in ids:
        current = store.current(customer_id)
        if current is None:
            continue
        override = current["override"]
        active = override is not None and (
            override["expires"] is None or override["expires"] > as_of
        )
        rows.append(
            {
                "customer_id": customer_id,
                "tag": current["tag"],
                "since": pd.Timestamp(current["since"]),
                "override_tag": override["tag"] if active else None,
                "override_expires": pd.Timestamp(override["expires"])
                if active and override["expires"] is not None
                else pd.NaT,
            }
        )
    return validate_frame(pd.DataFrame(rows, columns=_STATE_COLUMNS), STATE_SCHEMA)


# --- the scoring engine (everything the scorer does, without BentoML) -----------------------------


@dataclass
class ScoringEngine:
    """The loaded champion, rules, state store and event store; scores ``ScoreItem`` batches."""

    champion: Champion | None
    ruleset: RuleSet
    store: StateStore
    data: LearnerData
    top_reasons: int = 3

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreOutcome]:
        """Score a merged batch: one scoring call per (day, round of distinct learners).

        Returns:
            One outcome per item, in the items' order.
        """
        outcomes: dict[int, ScoreOutcome] = {}
        logger.debug("scoring a batch of %d learners", len(items))
        for positions in _rounds(items):
            group = [items[position] for position in positions]
            for position, outcome in zip(positions, self._score_day(group), strict=True):
                outcomes[position] = outcome
        return [outcomes[position] for position in range(len(items))]

    def _score_day(self, items: Sequence[ScoreItem]) -> list[ScoreOutcome]:
        """Score learners of one day, each learner once."""
        as_of = items[0].as_of
        self.data.refresh_for(as_of)
        features = day_features(items, self.data)
        state = learner_state(self.store, list(features.frame.get("customer_id", [])), as_of)
        frame, state = _drop_later_states(features, state, as_of)
        records: dict[str, dict[str, Any]] = {}
        decisions: dict[str, dict[str, Any]] = {}
        if len(frame):
            scored = score_learners(
                frame,
                champion=self.champion,
                ruleset=self.ruleset,
                state=state,
                as_of=as_of,
                top_reasons=self.top_reasons,
            )
            records = {record["customer_id"]: record for record in scored.to_records()}
            decisions = {row["customer_id"]: row for row in scored.decisions.to_dict("records")}
        return [_outcome(item.learner.customer_id, features, records, decisions) for item in items]

    def explain(self, item: ScoreItem) -> ExplainOutcome:
        """Every feature's points for one learner (409 without a model)."""
        if self.champion is None:
            return ExplainOutcome(
                status=409,
                message="the service runs in rules-only mode: there is no model to explain",
            )
        self.data.refresh_for(item.as_of)
        features = day_features([item], self.data)
        customer_id = item.learner.customer_id
        if customer_id in features.errors:
            status, message = features.errors[customer_id]
            return ExplainOutcome(status=status, message=message)
        scores = score_features(features.frame, self.champion).iloc[0]
        explanation = explain_frame(self.champion.model, features.frame)[0]
        return ExplainOutcome(
            explanation=ExplainResponse(
                customer_id=customer_id,
                as_of=item.as_of,
                p_churn=scores["p_churn"],
                p_low=scores["p_low"],
                p_high=scores["p_high"],
                confidence=scores["confidence"],
                p_base=explanation.p_base,
                p_raw=explanation.p_raw,
                model_version=self.champion.version,
                feature_source=features.sources[customer_id],
                reasons=[ReasonOut(**reason.as_dict()) for reason in explanation.reasons],
            )
        )


def _drop_later_states(
    features: DayFeatures, state: pd.DataFrame, as_of: date
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Leave out learners whose stored tag began after ``as_of`` (422 for them).

    The store keeps the current tag only: a day before it began cannot be decided again.
    """
    later = state[state["since"] > pd.Timestamp(as_of)]
    for row in later.itertuples():
        features.errors[row.customer_id] = (
            422,
            f"learner {row.customer_id!r} has been {row.tag} since {row.since.date()}, after "
            f"as_of {as_of}: score them on or after that day",
        )
    if later.empty:
        return features.frame, state
    dropped = set(later["customer_id"])
    return (
        features.frame[~features.frame["customer_id"].isin(dropped)].reset_index(drop=True),
        state[~state["customer_id"].isin(dropped)].reset_index(drop=True),
    )


def _rounds(items: Sequence[ScoreItem]) -> Iterator[list[int]]:
    """Positions of ``items`` grouped by day, then split so no group repeats a learner.

    Concurrent requests may ask for the same learner (by id, or with different inline events):
    the scoring core takes each learner once per call.
    """
    by_day: dict[date, list[list[int]]] = {}
    for position, item in enumerate(items):
        rounds = by_day.setdefault(item.as_of, [])
        customer_id = item.learner.customer_id
        free = next(
            (r for r in rounds if all(items[p].learner.customer_id != customer_id for p in r)),
            None,
        )
        if free is None:
            rounds.append([position])
        else:
            free.append(position)
    for rounds in by_day.values():
        yield from rounds


def _outcome(
    customer_id: str,
    features: DayFeatures,
    records: dict[str, dict[str, Any]],
    decisions: dict[str, dict[str, Any]],
) -> ScoreOutcome:
    if customer_id in features.errors:
        status, message = features.errors[customer_id]
        return ScoreOutcome(customer_id=customer_id, status=status, message=message)
    record = {**records[customer_id], "feature_source": features.sources[customer_id]}
    return ScoreOutcome(customer_id=customer_id, record=record, decision=decisions[customer_id])


def load_engine(settings: Settings, config: ServiceSettings, reference: Any) -> ScoringEngine:
    """Load everything the scorer needs, once, at start-up.

    Args:
        settings: where the data, state store and registry are.
        config: the service's knobs (rules-only mode, rules directory).
        reference: the ``bentoml.models.BentoModel`` the scorer declares, or None.

    Raises:
        NoChampionError: no champion (BentoML store or MLflow registry) and not rules-only.
    """
    champion = None if config.rules_only else load_service_champion(settings, reference)
    if champion is None and not config.rules_only:
        message = (
            f"{no_champion_message(settings.model_name)} "
            "(or set LSTEP_RULES_ONLY=true to serve the rules alone)"
        )
        logger.error("lstep service cannot start: %s", message)
        raise NoChampionError(message)
    if champion is None:
        logger.warning("lstep service in RULES-ONLY mode: no model scores, rules decide alone")
    else:
        logger.info("lstep service scores with %s version %s", champion.uri, champion.version)
    return ScoringEngine(
        champion=champion,
        ruleset=load_service_ruleset(config),
        store=StateStore.from_settings(settings),
        data=LearnerData.open(settings.data_path),
        top_reasons=config.top_reasons,
    )


def load_service_ruleset(config: ServiceSettings) -> RuleSet:
    """The packaged rules, or those of ``LSTEP_RULES_DIR``, checked against the catalog."""
    return load_ruleset(
        config.rules_dir, known_features=[*load_catalog().names, *MODEL_SCORE_COLUMNS]
    )


def load_answer_keeper(
    settings: Settings, config: ServiceSettings, store: StateStore, reference: Any
) -> AnswerKeeper | None:
    """The day's answers for the public service (``serving.answers``).

    Returns:
        None without a champion outside rules-only mode: the scorer then refuses to start,
        naming the fix, and the public service answers nothing itself.
    """
    champion = None if config.rules_only else load_service_champion(settings, reference)
    if champion is None and not config.rules_only:
        return None
    return AnswerKeeper(
        settings.data_path,
        champion=champion,
        ruleset=load_service_ruleset(config),
        store=store,
        top_reasons=config.top_reasons,
        warm_reasons=config.warm_reasons,
    )


def load_service_champion(settings: Settings, reference: Any) -> Champion | None:
    """The champion from the BentoML store when it holds one, else from the MLflow registry."""
    stored = reference.stored if reference is not None else None
    if stored is None:
        return load_champion(settings.tracking_uri, settings.model_name)
    pyfunc = bentoml.mlflow.load_model(stored)
    uri = str(stored.info.metadata.get(METADATA_URI, f"bentoml:{stored.tag}"))
    version = str(stored.info.metadata.get(METADATA_VERSION, stored.tag.version))
    return Champion(pyfunc=pyfunc, model=unwrap_churn_model(pyfunc, uri), version=version, uri=uri)


# --- writing the proposed moves (apply) -----------------------------------------------------------


def apply_decisions(
    store: StateStore,
    decisions: pd.DataFrame,
    *,
    as_of: date,
    model_version: str | None,
    now: datetime,
) -> dict[str, str | None]:
    """Write the changed decisions as transitions, with the daily batch's checks.

    ``StateStore.apply_learners`` under an ``api-<uuid>`` run id: moves of learners with an
    active override (except to ST_006), or whose stored tag is no longer the decision's
    ``from_tag``, are skipped; no score rows are written and the day is not marked done.

    Returns:
        customer_id -> None when the move was written, else why it was not.

    Raises:
        ApplyRefused: ``as_of`` is before the latest completed batch day (days move forward).
    """
    result = store.apply_learners(
        as_of, decisions, run_id=f"api-{uuid.uuid4().hex}", model_version=model_version, now=now
    )
    return result.outcomes


# --- HTTP helpers ---------------------------------------------------------------------------------


class ServiceError(BentoMLException):
    """An error whose status and message go to the client as they are."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message, error_code=status)


def check_bearer(authorization: str | None, token: str | None) -> None:
    """Accept ``Authorization: Bearer <token>`` with the configured token, else 401.

    A blank configured token or a blank presented one never matches: an empty secret is no secret.

    Raises:
        ServiceError: 401 when the header is missing or wrong, or no token is configured.
    """
    scheme, _, given = (authorization or "").partition(" ")
    valid = (
        token is not None
        and token.strip() != ""
        and given.strip() != ""
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), token.encode())
    )
    if not valid:
        raise ServiceError(HTTPStatus.UNAUTHORIZED, "missing or wrong bearer token")


def raise_for_outcomes(statuses: Iterable[tuple[int, str]]) -> None:
    """Raise the most telling error among per-learner failures: 404 first, then 422."""
    failures = sorted(statuses, key=lambda failure: (failure[0] != 404, failure[0]))
    if not failures:
        return
    status = failures[0][0]
    messages = [message for code, message in failures if code == status]
    more = f" (and {len(messages) - 5} more)" if len(messages) > 5 else ""
    text = "; ".join(messages[:5]) + more
    if status == 404:
        raise NotFound(text)
    raise ServiceError(HTTPStatus(status), text)


async def call_scorer(method: Callable[[Any], Awaitable[Any]], argument: Any) -> Any:
    """Await a scorer endpoint, retrying when the connection to it breaks.

    BentoML's client for ``bentoml.depends`` recycles its HTTP session every 100 calls by closing
    it, which breaks the calls still in flight on it ("Cannot write to closing transport",
    "Connector is closed"; bentoml/BentoML#4971, #5698). Scoring writes nothing, so the call is
    safely repeated on the fresh session.
    """
    for attempt in range(1, SCORER_ATTEMPTS + 1):
        try:
            return await method(argument)
        except aiohttp.ClientConnectionError as error:
            if attempt == SCORER_ATTEMPTS:
                raise
            logger.warning("scorer call failed at the connection (%s); retrying", error)
    raise AssertionError("unreachable")  # the loop returns or raises


def _check_size(request: ScoreRequest, config: ServiceSettings) -> None:
    """413 for more learners, or more inline events, than one request may carry."""
    if len(request.learners) > config.max_batch:
        raise ServiceError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"learners: {len(request.learners)} learners, more than the {config.max_batch} one "
            "request may carry (LSTEP_MAX_BATCH)",
        )
    events = sum(len(learner.events or ()) for learner in request.learners)
    if events > config.max_events:
        raise ServiceError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
            f"learners.events: {events} inline events, more than the {config.max_events} one "
            "request may carry (LSTEP_MAX_EVENTS)",
        )


def _authorization(ctx: Any) -> str | None:
    return ctx.request.headers.get("authorization")


def _resolve_as_of(requested: date | None, now: datetime) -> date:
    today = now.astimezone(UTC).date()
    if requested is not None and requested > today:
        raise ServiceError(
            HTTPStatus.UNPROCESSABLE_ENTITY,
            f"as_of {requested} is after today ({today}): features need a day that has begun",
        )
    return requested or today


# --- the services ---------------------------------------------------------------------------------


def _declared_champion() -> Any:
    """The BentoML model the scorer declares (``bentoml build`` packs it); none when rules-only.

    A declared model must exist when the server starts, so rules-only mode declares none.
    """
    return None if ServiceSettings().rules_only else bentoml.models.BentoModel(SERVED_MODEL_TAG)


@bentoml.service(name="lstep-scorer", workers=1, threads=1)
class LearnerScorer:
    """Internal: features, champion scores, rules decisions and reasons, batched adaptively."""

    champion_model = _declared_champion()

    def __init__(self) -> None:
        reference = type(self).__dict__.get("champion_model")
        self.engine = load_engine(Settings(), ServiceSettings(), reference)

    @bentoml.api(batchable=True, max_batch_size=BATCH_MAX_SIZE, max_latency_ms=BATCH_MAX_LATENCY_MS)
    def score_items(self, items: list[ScoreItem]) -> list[ScoreOutcome]:
        """Score learners of concurrent requests together; one outcome per item."""
        return self.engine.score(items)

    @bentoml.api
    def explain_item(self, item: ScoreItem) -> ExplainOutcome:
        """The full reason breakdown of one learner."""
        return self.engine.explain(item)


@functools.cache
def scored_learners_counter() -> Any:
    """``lstep_score_learners_total{path}`` on ``/metrics``: learners /score answered, by path.

    ``answers``: from the day's precomputed answers; ``scorer``: sent to the scorer (another day,
    inline events, apply, or a learner whose state moved). Created on first use, in the worker:
    BentoML points prometheus_client at its multiprocess directory after importing this module.
    """
    from prometheus_client import Counter

    return Counter(
        "lstep_score_learners",
        "Learners scored by /score, by path: the day's answers or the scorer",
        ["path"],
    )


def pages_app() -> Any:
    """Read-only pages beside the API: ``GET /pages/report`` serves the latest HTML report."""
    from fastapi import FastAPI
    from fastapi.responses import HTMLResponse

    from serving.report import latest_report_html

    pages = FastAPI(title="lstep pages", openapi_url=None, docs_url=None, redoc_url=None)

    # No return annotation for FastAPI to resolve: this module's annotations are strings, and
    # an unresolvable one breaks the OpenAPI document BentoML merges the mounted app into.
    @pages.get("/report", response_class=HTMLResponse, response_model=None)
    def latest_report():
        html = latest_report_html(Settings().reports_path)
        if html is None:
            missing = (
                "<p>No report yet: run <code>lstep report</code> or "
                "<code>lstep score --report</code>.</p>"
            )
            return HTMLResponse(missing, status_code=HTTPStatus.NOT_FOUND)
        return HTMLResponse(html)

    return pages


@bentoml.service(name="lstep", workers=1, threads=4, traffic={"timeout": 120})
@bentoml.asgi_app(pages_app(), path="/pages")
class LstepService:
    """Learner churn scores, status tags, explanations and overrides over HTTP."""

    scorer = bentoml.depends(LearnerScorer)
    clock: Callable[[], datetime] = staticmethod(utc_now)

    def __init__(self) -> None:
        settings = Settings()
        self.config = ServiceSettings()
        self.store = StateStore.from_settings(settings)
        scorer_model = LearnerScorer.inner.__dict__.get("champion_model")
        self.answers = load_answer_keeper(settings, self.config, self.store, scorer_model)
        self.scored = scored_learners_counter()
        if (warning := self.config.token_warning()) is not None:
            logger.warning(warning)

    @property
    def _token(self) -> str | None:
        return self.config.write_token

    @bentoml.api
    async def score(self, request: ScoreRequest, /, ctx: bentoml.Context) -> ScoreResponse:
        """Score learners by id or with inline events; ``apply: true`` writes the moves."""
        _check_size(request, self.config)
        if request.apply:
            check_bearer(_authorization(ctx), self._token)
        now = self.clock()
        as_of = _resolve_as_of(request.as_of, now)
        answered = await self._answered(request, as_of)
        if answered is not None:
            self.scored.labels(path="answers").inc(len(answered))
            return _score_response(answered, as_of, apply=False, written={})
        items = [ScoreItem(learner=learner, as_of=as_of, now=now) for learner in request.learners]
        outcomes = await call_scorer(self.scorer.to_async.score_items, items)
        self.scored.labels(path="scorer").inc(len(outcomes))
        raise_for_outcomes((o.status, o.message or "") for o in outcomes if o.status != 200)
        written: dict[str, str | None] = {}
        if request.apply:
            written = await anyio.to_thread.run_sync(self._apply, outcomes, as_of, now)
        return _score_response(outcomes, as_of, request.apply, written)

    async def _answered(self, request: ScoreRequest, as_of: date) -> list[ScoreOutcome] | None:
        """The day's precomputed answers for a dry run by id, when they hold every learner."""
        inline = any(learner.events is not None for learner in request.learners)
        if self.answers is None or request.apply or inline:
            return None
        ids = [learner.customer_id for learner in request.learners]
        records = await anyio.to_thread.run_sync(self.answers.answer, ids, as_of)
        if records is None:
            return None
        return [ScoreOutcome(customer_id=r["customer_id"], record=r) for r in records]

    def _apply(
        self, outcomes: Sequence[ScoreOutcome], as_of: date, now: datetime
    ) -> dict[str, str | None]:
        decisions = pd.DataFrame([outcome.decision for outcome in outcomes])
        version = outcomes[0].record["model_version"] if outcomes else None
        try:
            return apply_decisions(
                self.store, decisions, as_of=as_of, model_version=version, now=now
            )
        except ApplyRefused as error:
            raise ServiceError(HTTPStatus.CONFLICT, str(error)) from None

    @bentoml.api
    async def explain(self, request: ExplainRequest, /) -> ExplainResponse:
        """Every feature's share of one learner's churn probability, largest first."""
        now = self.clock()
        item = ScoreItem(
            learner=request.learner(), as_of=_resolve_as_of(request.as_of, now), now=now
        )
        outcome = await call_scorer(self.scorer.to_async.explain_item, item)
        if outcome.explanation is None:
            raise_for_outcomes([(outcome.status, outcome.message or "")])
        return outcome.explanation

    @bentoml.api
    def status(self, request: StatusRequest, /) -> StatusResponse:
        """A learner's current tag, open override and full history."""
        return self._status(request.customer_id)

    @bentoml.api
    def override(self, request: OverrideRequest, /, ctx: bentoml.Context) -> StatusResponse:
        """Pin a learner's tag by hand (bearer token); automatic rules then hold until expiry."""
        check_bearer(_authorization(ctx), self._token)
        if self.store.current(request.customer_id) is None:
            raise NotFound(f"unknown learner {request.customer_id!r}: the store has no status")
        try:
            self.store.set_override(
                request.customer_id,
                request.tag,
                actor=request.actor,
                reason=request.reason,
                expires=request.expires,
                now=self.clock(),
            )
        except ValueError as error:
            raise ServiceError(HTTPStatus.UNPROCESSABLE_ENTITY, str(error)) from None
        return self._status(request.customer_id)

    def _status(self, customer_id: str) -> StatusResponse:
        current = self.store.current(customer_id)
        if current is None:
            raise NotFound(f"unknown learner {customer_id!r}: the store has no status")
        history = self.store.history(customer_id)
        override = current["override"]
        return StatusResponse(
            customer_id=customer_id,
            tag=current["tag"],
            tag_name=STATUS_TAGS[current["tag"]],
            since=current["since"],
            override=None if override is None else OverrideOut(**override),
            history=[TransitionOut(**_plain(row)) for row in history.to_dict("records")],
        )


def _score_response(
    outcomes: Sequence[ScoreOutcome], as_of: date, apply: bool, written: dict[str, str | None]
) -> ScoreResponse:
    learners = []
    for outcome in outcomes:
        applied, why = _applied(outcome, apply, written)
        learners.append({**(outcome.record or {}), "applied": applied, "not_applied_reason": why})
    version = learners[0]["model_version"] if learners else None
    return ScoreResponse(
        as_of=as_of,
        dry_run=not apply,
        rules_only=version is None,
        model_version=version,
        transitions_written=sum(learner["applied"] for learner in learners),
        learners=learners,
    )


def _applied(
    outcome: ScoreOutcome, apply: bool, written: dict[str, str | None]
) -> tuple[bool, str | None]:
    """Whether the learner's proposed move was written, and if not, why."""
    if not apply:
        return False, "dry run"
    if not (outcome.decision or {}).get("changed"):
        return False, "no move proposed"
    skipped = written.get(outcome.customer_id, "not written")
    return skipped is None, skipped


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A history row with pandas' missing values as None and timestamps as Python values."""
    plain = {}
    for key, value in row.items():
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            plain[key] = None
        elif isinstance(value, pd.Timestamp):
            plain[key] = value.to_pydatetime() if key == "created_at" else value.date()
        else:
            plain[key] = value
    return plain


# --- error bodies ---------------------------------------------------------------------------------


class ErrorBodyMiddleware:
    """Give every JSON error response the body BentoML's OpenAPI document declares.

    BentoML answers a request-model failure with ``detail`` as a list of pydantic errors and an
    exception with a one-element list; its OpenAPI document (and so schemathesis) says
    ``{"error": str, "detail": str}``. This rewrites 4xx JSON bodies to that shape, keeping
    every field path and message.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def rewrite(message: dict) -> None:
            if message["type"] == "http.response.start" and _is_json_error(message):
                held["start"] = message
                return
            if message["type"] != "http.response.body" or "start" not in held:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = error_body(b"".join(chunks))
            headers = [
                (name, value)
                for name, value in held["start"]["headers"]
                if name != b"content-length"
            ]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**held["start"], "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, rewrite)


def _is_json_error(start: dict) -> bool:
    headers = dict(start.get("headers", []))
    content_type = headers.get(b"content-type", b"").decode("latin-1")
    return 400 <= start["status"] < 500 and content_type.startswith("application/json")


def error_body(raw: bytes) -> bytes:
    """``{"error": str, "detail": str}`` from any of BentoML's error bodies."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        return raw
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]
    if not isinstance(parsed, dict) or "error" not in parsed:
        return raw
    body = {"error": str(parsed["error"])}
    detail = parsed.get("detail")
    if isinstance(detail, list):
        places = [_field_error(item) for item in detail]
        body["error"] = f"invalid request body: {places[0]}" if places else body["error"]
        body["detail"] = "; ".join(places)
    elif detail is not None:
        body["detail"] = str(detail)
    return json.dumps(body).encode()


def _field_error(error: Any) -> str:
    """``learners.0.customer_id: String should have at least 1 character``."""
    if not isinstance(error, dict):
        return str(error)
    place = ".".join(str(part) for part in error.get("loc", ())) or "body"
    return f"{place}: {error.get('msg', 'invalid')}"


LstepService.add_asgi_middleware(ErrorBodyMiddleware)

__all__ = [
    "ErrorBodyMiddleware",
    "LearnerData",
    "LearnerScorer",
    "LstepService",
    "ScoringEngine",
    "ServiceError",
    "apply_decisions",
    "check_bearer",
    "day_features",
    "error_body",
    "learner_state",
    "load_answer_keeper",
    "load_engine",
    "load_service_champion",
    "load_service_ruleset",
    "scored_learners_counter",
]
