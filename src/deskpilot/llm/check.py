"""`deskpilot llm check`: does each model of a purpose's route answer, with valid structured output?"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
from pydantic import BaseModel, ValidationError

from deskpilot.llm.base import Model
from deskpilot.llm.errors import LLMNotConfigured, ProviderError
from deskpilot.llm.messages import Message, RequestParams
from deskpilot.llm.output import describe_validation_error, output_schema, parse_output
from deskpilot.llm.routing import ModelRegistry, route_names
from deskpilot.settings import LLMSettings

CHECK_PROMPT = 'This is a connectivity check. Answer with ok set to true and word set to "pong".'
CHECK_MAX_TOKENS = 1024  # room for reasoning models, which spend output tokens before answering


class CheckAnswer(BaseModel):
    """Answer to a connectivity check."""

    ok: bool
    word: str


@dataclass(frozen=True, slots=True)
class ModelCheck:
    model: str
    ok: bool
    detail: str
    latency_ms: float | None = None


@dataclass(frozen=True, slots=True)
class CheckReport:
    """Outcome of `check_provider`: `ok` only if every model of the route passed; `lines` for people."""

    ok: bool
    purpose: str
    lines: tuple[str, ...]
    models: tuple[ModelCheck, ...] = ()

    def __str__(self) -> str:
        return "\n".join(self.lines)


async def check_provider(
    settings_llm: LLMSettings,
    purpose: str = "quick",
    *,
    http_client: httpx.AsyncClient | None = None,
    models: Mapping[str, Model] | None = None,
) -> CheckReport:
    """Send a tiny structured request to each model of `purpose`'s route, one by one (no fallback).

    Never raises for configuration or provider problems: they become failed lines of the report.
    """
    try:
        names = route_names(settings_llm, purpose)
    except LLMNotConfigured as e:
        return CheckReport(False, purpose, (f"FAILED  {e.detail}",))
    lines = [f"Route for {purpose!r}: {' -> '.join(names)}"]
    registry = ModelRegistry(settings_llm, http_client=http_client, models=models)
    checks: list[ModelCheck] = []
    try:
        for name in names:
            checks.append(await _check_model(registry, name, settings_llm))
    finally:
        await registry.aclose()
    for check in checks:
        lines.append(f"{'ok    ' if check.ok else 'FAILED'}  {check.model}: {check.detail}")
    failed = sum(not c.ok for c in checks)
    if failed == 0:
        lines.append(f"All {len(checks)} model(s) for {purpose!r} answer with valid structured output.")
    else:
        lines.append(
            f"{failed} of {len(checks)} model(s) for {purpose!r} failed; calls move to the next model only on "
            "rate limits, server errors, timeouts and connection errors."
        )
    return CheckReport(failed == 0, purpose, tuple(lines), tuple(checks))


async def _check_model(registry: ModelRegistry, name: str, settings_llm: LLMSettings) -> ModelCheck:
    try:
        model = registry.get(name)
    except LLMNotConfigured as e:
        return ModelCheck(name, False, e.detail)
    params = RequestParams(
        max_tokens=min(CHECK_MAX_TOKENS, settings_llm.max_tokens_per_call),
        timeout_s=settings_llm.timeout_s,
        output=output_schema(CheckAnswer),
    )
    started = time.perf_counter()
    try:
        completion = await model.request([Message.user(CHECK_PROMPT)], params)
    except ProviderError as e:
        return ModelCheck(name, False, f"{type(e).__name__}: {e.detail}")
    except NotImplementedError as e:
        return ModelCheck(name, False, str(e))
    latency_ms = (time.perf_counter() - started) * 1000.0
    try:
        answer = parse_output(CheckAnswer, completion.text)
    except ValidationError as e:
        return ModelCheck(
            name,
            False,
            f"answered in {latency_ms:.0f} ms but not with valid structured output ({describe_validation_error(e)}); "
            f"raw reply: {completion.text[:200]!r}",
            latency_ms,
        )
    reported = completion.response_model or name
    detail = (
        f"answered with valid structured output in {latency_ms:.0f} ms "
        f"(model {reported}, {completion.input_tokens} tokens in, {completion.output_tokens} out)"
    )
    if not answer.ok:
        detail += "; it answered ok=false, check that the model follows instructions"
    return ModelCheck(name, True, detail, latency_ms)
