"""The HTTP service: a BentoML 1.4 service whose methods are each one call into ``serving.app``.

``bentoml serve serving.api.service:LstepService`` (or ``lstep serve``) runs ``LSTEP_API_WORKERS``
processes (2: one queues at concurrency 32 on 2 cores) of ``LstepService``, the public API:
``POST /score``, ``/explain``, ``/status``, ``/override``, ``/events/campaign`` (campaign feedback),
beside BentoML's own ``/livez``, ``/readyz``, ``/metrics`` and ``/docs.json``, and the read-only
``GET /pages/report`` and ``GET /dashboard`` (``serving.api.dashboard``). Each worker loads the
champion (once) and the rules, maps the day's answers
(every learner of the batch job's latest snapshot, decided by the batch job into a memory-mapped
file: ``serving.app.answers``) and runs ``assess`` for every other ask (``serving.app.online``),
with features assembled in the worker from the memory-mapped indexes of the customers and the
event log (``serving.infra.learners``: numpy over each learner's events). Every file a worker reads
per learner is memory-mapped and shared by the workers, so memory does not grow with learners and
no internal hop sits on the path of a request (a features process cost 5-15 ms a call, more than
the assessment of a learner).

Every problem is a value (``serving.core.problems``) mapped to its status in one place
(``serving.api.problems``); every 4xx body is ``{"error": str, "detail": str}``.

Configuration: ``serving.settings.Settings`` (where the data, state, registry and BentoML store
live) and ``serving.api.bento.ServiceSettings`` (``LSTEP_API_TOKEN``, ``LSTEP_MAX_BATCH``,
``LSTEP_MAX_EVENTS``, ``LSTEP_RULES_ONLY``, ``LSTEP_RULES_DIR``, ``LSTEP_TOP_REASONS``,
``LSTEP_WARM_REASONS``, ``LSTEP_REASONS_CACHE``, ``LSTEP_API_WORKERS``).
"""

from __future__ import annotations

import functools
import gc
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio
import bentoml

from serving.api.bento import HINT, SERVED_MODEL_TAG, ServiceSettings, load_served_champion
from serving.api.dashboard import dashboard_app, share_champion
from serving.api.feedback_models import CampaignEventRequest, CampaignEventResponse
from serving.api.guards import Readiness, RequestGuardMiddleware, quiet_client_errors
from serving.api.models import (
    ExplainRequest,
    ExplainResponse,
    OverrideRequest,
    ScoreRequest,
    ScoreResponse,
    StatusRequest,
    StatusResponse,
    learner_ask,
)
from serving.api.pages import pages_app
from serving.api.problems import (
    DeclaredStatusesMiddleware,
    ErrorBodyMiddleware,
    check_bearer,
    http_problems,
)
from serving.api.responses import explain_response, score_response, status_response
from serving.app.answer_keeper import AnswerKeeper, ReasonOptions
from serving.app.feedback import record_campaign_event
from serving.app.online import FeatureFetch, OnlineScoring, check_size, in_process, resolve_as_of
from serving.app.status import clear_override, learner_status, set_override
from serving.core.overrides import OverridePolicy
from serving.core.problems import NoChampionError
from serving.infra.champion import require_champion
from serving.infra.learners import LearnerData
from serving.infra.rulesets import load_rules
from serving.infra.sql import safe_url
from serving.infra.store import StateStore
from serving.infra.workspace import open_workspace_store
from serving.settings import Settings, utc_now

logger = logging.getLogger("bentoml.lstep")


def _declared_champion() -> Any:
    """The BentoML model the service declares (``bentoml build`` packs it); none when rules-only.

    A declared model must exist when the server starts, so rules-only mode declares none.
    """
    return None if ServiceSettings().rules_only else bentoml.models.BentoModel(SERVED_MODEL_TAG)


def load_online(
    settings: Settings,
    config: ServiceSettings,
    store: StateStore,
    reference: Any,
    fetch: FeatureFetch,
) -> OnlineScoring:
    """Load the champion (unless rules-only), the rules and the day's answers, once.

    Raises:
        NoChampionError: no champion (BentoML store or MLflow registry) and not rules-only.
    """
    loaded = None if config.rules_only else load_served_champion(settings, reference)
    try:
        champion = require_champion(
            loaded, rules_only=config.rules_only, model_name=settings.model_name, hint=HINT
        )
    except NoChampionError as error:
        logger.error("lstep service cannot start: %s", error.message)
        raise
    if champion is None:
        logger.warning("lstep service in RULES-ONLY mode: no model scores, rules decide alone")
    else:
        logger.info("lstep service scores with %s version %s", champion.uri, champion.version)
    ruleset = load_rules(config.rules_dir, champion=champion)
    reasons = ReasonOptions(
        top_reasons=config.top_reasons, warm_reasons=config.warm_reasons,
        cache_size=config.reasons_cache, after_warm=settle_heap,
    )  # fmt: skip
    keeper = AnswerKeeper(
        settings.data_path, champion=champion, ruleset=ruleset, store=store, reasons=reasons,
        background=True,
    )  # fmt: skip
    return OnlineScoring(
        champion=champion, ruleset=ruleset, store=store, fetch=fetch, keeper=keeper,
        top_reasons=config.top_reasons,
    )  # fmt: skip


def settle_heap() -> None:
    """Take what the worker has loaded out of the garbage collector's reach.

    What was loaded (the champion, the rules, the modules imported on the way, the reason codes
    warmed ahead) lives as long as the worker. Frozen, a full collection does not walk it in the
    middle of a request: before, a worker's full collections took 20-60 ms each after its start
    and again after the warm-up (the tail of /score at concurrency 32). Collected first, so no
    cycle of the loading's garbage is frozen for good.
    """
    gc.collect()
    gc.freeze()


@functools.cache
def scored_learners_counter() -> Any:
    """``lstep_score_learners_total{path}`` on ``/metrics``: learners /score answered, by path.

    ``answers``: from the day's precomputed answers; ``scorer``: assessed on demand (another
    day, inline events, apply, or a learner whose state moved). Created on first use, in the
    worker: BentoML points prometheus_client at its multiprocess directory after importing this.
    """
    from prometheus_client import Counter

    return Counter(
        "lstep_score_learners",
        "Learners scored by /score, by path: the day's answers or assessed on demand",
        ["path"],
    )


@bentoml.service(
    name="lstep", workers=ServiceSettings().api_workers, threads=4, traffic={"timeout": 120}
)
@bentoml.asgi_app(pages_app(), path="/pages")
@bentoml.asgi_app(dashboard_app(), path="/dashboard")
class LstepService:
    """Learner churn scores, status tags, explanations and overrides over HTTP."""

    champion_model = _declared_champion()
    clock: Callable[[], datetime] = staticmethod(utc_now)

    def __init__(self) -> None:
        settings = Settings()
        self.config = ServiceSettings()
        self.store = open_workspace_store(settings, self.clock())
        reference = type(self).__dict__.get("champion_model")
        self.data = LearnerData.open(settings.data_path)
        fetch = in_process(self.data)
        self.online = load_online(settings, self.config, self.store, reference, fetch)
        # The dashboard's reasons: this very model, and the day's rows it keeps mapped.
        share_champion(self.online.champion, self.online.keeper)
        self.scored = scored_learners_counter()
        quiet_client_errors()
        Readiness.register(f"the state store {safe_url(self.store.url)}", self._store_ready)
        if (warning := self.config.token_warning()) is not None:
            logger.warning(warning)
        settle_heap()

    @bentoml.api
    async def score(self, request: ScoreRequest, /, ctx: bentoml.Context) -> ScoreResponse:
        """Score learners by id or with inline events; ``apply: true`` writes the moves."""
        with http_problems(ctx):
            check_size(len(request.learners), request.event_count, self.config.limits)
            if request.apply:
                check_bearer(_authorization(ctx), self.config.write_token)
            now = self.clock()
            as_of = resolve_as_of(request.as_of, now)
            asks = [learner_ask(learner, as_of, now) for learner in request.learners]
            result = await self.online.score(asks, apply=request.apply, now=now)
        self.scored.labels(path=result.path).inc(len(result.records))
        return score_response(result)

    @bentoml.api
    async def explain(self, request: ExplainRequest, /, ctx: bentoml.Context) -> ExplainResponse:
        """Every feature's share of one learner's churn probability, largest first."""
        with http_problems(ctx):
            now = self.clock()
            ask = request.ask(resolve_as_of(request.as_of, now), now)
            assessment, source = await self.online.explain(ask)
            return explain_response(assessment, source)

    @bentoml.api
    def status(self, request: StatusRequest, /, ctx: bentoml.Context) -> StatusResponse:
        """A learner's current tag, open override and full history."""
        with http_problems(ctx):
            return status_response(learner_status(self.store, request.customer_id))

    @bentoml.api
    def override(self, request: OverrideRequest, /, ctx: bentoml.Context) -> StatusResponse:
        """Start a campaign, hold a learner, or clear an override (bearer token), in data days."""
        with http_problems(ctx):
            check_bearer(_authorization(ctx), self.config.write_token)
            if request.clear:
                words = (request.actor, request.reason)
                return status_response(
                    clear_override(
                        self.store, request.customer_id, words=words, now=self.clock(),
                        effective=request.effective,
                    )
                )  # fmt: skip
            policy = OverridePolicy.of(self.online.ruleset)
            status = set_override(self.store, request.to_request(), policy=policy, now=self.clock())
            return status_response(status)

    @bentoml.api(route="/events/campaign")
    def campaign_event(
        self, request: CampaignEventRequest, /, ctx: bentoml.Context
    ) -> CampaignEventResponse:
        """Record that a campaign message was delivered, opened, clicked or converted (bearer
        token); a repeat answers ``recorded: false`` and changes nothing."""
        with http_problems(ctx):
            check_bearer(_authorization(ctx), self.config.write_token)
            recorded = record_campaign_event(
                self.store, request.message_id, request.kind, source=request.source,
                now=self.clock(),
            )  # fmt: skip
            return CampaignEventResponse(
                message_id=request.message_id, kind=request.kind, recorded=recorded
            )

    async def _store_ready(self) -> None:
        await anyio.to_thread.run_sync(self.store.is_empty)


def _authorization(ctx: Any) -> str | None:
    return ctx.request.headers.get("authorization")


LstepService.add_asgi_middleware(ErrorBodyMiddleware)
LstepService.add_asgi_middleware(DeclaredStatusesMiddleware)
LstepService.add_asgi_middleware(
    RequestGuardMiddleware, max_body_bytes=ServiceSettings().max_body_bytes
)

__all__ = [
    "LstepService",
    "load_online",
    "scored_learners_counter",
]
