"""Rendering a campaign message: its Jinja2 template (the variant's own, else the step's) in a
sandbox with ``StrictUndefined``, and the sample contexts ``lstep rules check`` renders every
template with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import TemplateError

from rules.campaigns import (
    CAMPAIGNS_FILE,
    SAMPLE_CONTEXT,
    SUBJECT_PREFIX,
    Catalogue,
    RenderedMessage,
    template_environment,
    template_names,
    templates_path,
)

# --- rendering -----------------------------------------------------------------------------------


def _template_file(templates: Path, template_id: str, channel: str, variant: str) -> str:
    """The file a (template, channel, variant) renders: the variant's own, else the step's."""
    if variant and (templates / f"{template_id}.{channel}.{variant}.j2").is_file():
        return f"{template_id}.{channel}.{variant}.j2"
    return f"{template_id}.{channel}.j2"


def render_message(
    template_id: str,
    channel: str,
    variant: str,
    context: Mapping[str, Any],
    *,
    templates_dir: Path | str | None = None,
) -> RenderedMessage:
    """Render one message (what the dispatcher calls with an outbox row's fields).

    A first line ``Subject: ...`` becomes the subject (an email's); the rest is the body.

    Args:
        template_id: the step's template id.
        channel: the message's channel (after personalisation).
        variant: the A/B variant ("" for none).
        context: the message's context (``TEMPLATE_FIELDS``; the outbox's JSON, parsed).
        templates_dir: a templates folder; None for the packaged ``rules/templates``.

    Raises:
        jinja2.TemplateError: a missing template or variable, or a sandbox violation.
    """
    templates = Path(templates_dir) if templates_dir is not None else templates_path()
    env = template_environment(str(templates))
    name = _template_file(templates, template_id, channel, variant)
    text = env.get_template(name).render(dict(context)).strip()
    first, _, rest = text.partition("\n")
    if first.startswith(SUBJECT_PREFIX):
        return RenderedMessage(first.removeprefix(SUBJECT_PREFIX).strip(), rest.strip())
    return RenderedMessage("", text)


def sample_contexts() -> list[dict[str, Any]]:
    """The sample context, and its edge cases: no name, no reasons, no behaviour tags."""
    bare = SAMPLE_CONTEXT | {"name": None, "greeting": "Hello", "reasons": [], "behaviours": []}
    return [dict(SAMPLE_CONTEXT), bare]


def render_problems(catalogue: Catalogue) -> list[str]:
    """Render every template of every campaign with the sample contexts; the failures, in words.

    Each problem names the campaign's file, the campaign id, the template and what failed
    (for a missing variable: which one).
    """
    problems = []
    templates = Path(catalogue.templates_dir or templates_path())
    for campaign in catalogue.campaigns:
        for field, name, variant in template_names(campaign):
            template_id, channel, _ = name.split(".")
            for context in sample_contexts():
                try:
                    rendered = render_message(
                        template_id, channel, variant, context, templates_dir=templates
                    )
                except TemplateError as error:
                    problems.append(
                        f"{CAMPAIGNS_FILE}: rule {campaign.id}: field {field}: template "
                        f"{_template_file(templates, template_id, channel, variant)}: {error}"
                    )
                    break
                if not rendered.body:
                    problems.append(
                        f"{CAMPAIGNS_FILE}: rule {campaign.id}: field {field}: template {name} "
                        "renders an empty body"
                    )
                    break
    return list(dict.fromkeys(problems))


def context_json(context: Mapping[str, Any]) -> str:
    """A context as the outbox keeps it (compact JSON, keys sorted)."""
    return json.dumps(context, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


__all__ = [
    "context_json",
    "render_message",
    "render_problems",
    "sample_contexts",
]
