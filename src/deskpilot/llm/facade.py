"""The LLM facade the domains use: structured output, text, streaming and tool runs, routed per purpose."""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Mapping
from contextlib import AbstractContextManager, aclosing, asynccontextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Generic, TypeVar

import httpx
from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, ProxyTracer, ProxyTracerProvider, Span, SpanKind, StatusCode
from pydantic import BaseModel, ValidationError

from deskpilot.errors import DeskpilotError
from deskpilot.llm.base import Model
from deskpilot.llm.budget import Budget
from deskpilot.llm.errors import StructuredOutputError, ToolFailed, ToolStepLimitExceeded
from deskpilot.llm.messages import (
    Completion,
    Message,
    OutputSchema,
    Prompt,
    RequestParams,
    ToolCall,
    ToolDefinition,
    as_messages,
)
from deskpilot.llm.output import correction_prompt, describe_validation_error, output_schema, parse_output
from deskpilot.llm.recording import CallContext, CallRecord, DeferredRecords, NullRecorder, Recorder, SqlRecorder
from deskpilot.llm.routing import ModelRegistry, route_accepts_images, route_names
from deskpilot.llm.tools import Tool, ToolContext, ToolRetry
from deskpilot.settings import LLMSettings

logger = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
_NO_SPAN: AbstractContextManager[Span] = nullcontext(INVALID_SPAN)

# The open `deferred_recording()` block of the current task, with the LLM it belongs to.
_deferred: ContextVar[tuple[LLM, DeferredRecords] | None] = ContextVar("deskpilot_llm_deferred", default=None)

T = TypeVar("T", bound=BaseModel)
ValueT = TypeVar("ValueT")


@dataclass(frozen=True, slots=True)
class Usage:
    """What a facade call cost; summed over its requests (corrective retry, tool rounds)."""

    input_tokens: int
    output_tokens: int
    latency_ms: float
    model: str
    fallback_used: bool
    requests: int = 1

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class Result(Generic[ValueT]):
    """A facade call's value with its usage and the id of its (last) `llm_calls` record.

    `messages` is filled by `run_tools` only: every message the run added (tool calls, tool results and
    the final answer), so a conversation can be continued. `tool_calls` is filled by `stream` when tools
    were offered and the model asked for some (the caller decides whether and how to run them).
    """

    value: ValueT
    usage: Usage
    record_id: uuid.UUID
    messages: tuple[Message, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()


def _usage(completion: Completion, latency_ms: float) -> Usage:
    return Usage(
        completion.input_tokens, completion.output_tokens, latency_ms, completion.model_name, completion.fallback_used
    )


def _add_usage(total: Usage, completion: Completion, latency_ms: float) -> Usage:
    return Usage(
        total.input_tokens + completion.input_tokens,
        total.output_tokens + completion.output_tokens,
        total.latency_ms + latency_ms,
        completion.model_name,
        total.fallback_used or completion.fallback_used,
        total.requests + 1,
    )


def _tracing() -> bool:
    # Without an OpenTelemetry SDK every span is a no-op, yet creating and entering one costs about 10 µs:
    # a fifth of the facade's own time per call. Spans start being made as soon as a provider is set.
    return not (isinstance(_tracer, ProxyTracer) and isinstance(trace.get_tracer_provider(), ProxyTracerProvider))


def _span(name: str, kind: SpanKind) -> AbstractContextManager[Span]:
    return _tracer.start_as_current_span(name, kind=kind) if _tracing() else _NO_SPAN


def _error_code(error: BaseException) -> str:
    if isinstance(error, DeskpilotError):
        return error.code
    if isinstance(error, GeneratorExit):
        return "llm_stream_closed"
    return type(error).__name__


def _span_request(span: Span, purpose: str, model: Model, params: RequestParams) -> None:
    provider = model.name.partition(":")[0]
    span.set_attributes(
        {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider,
            "gen_ai.system": provider,
            "gen_ai.request.model": model.name,
            "gen_ai.request.max_tokens": params.max_tokens or 0,
            "deskpilot.llm.purpose": purpose,
        }
    )


def _span_response(span: Span, completion: Completion, record_id: uuid.UUID) -> None:
    span.set_attributes(
        {
            "gen_ai.response.model": completion.response_model or completion.model_name,
            "gen_ai.usage.input_tokens": completion.input_tokens,
            "gen_ai.usage.output_tokens": completion.output_tokens,
            "gen_ai.response.finish_reasons": (completion.finish_reason or "",),
            "deskpilot.llm.model": completion.model_name,
            "deskpilot.llm.fallback_used": completion.fallback_used,
            "deskpilot.llm.record_id": str(record_id),
        }
    )


class TextStream:
    """The text deltas of one streamed reply; `result` holds the full text, usage and record id afterwards.

    Use it as `async with llm.stream(...) as stream: async for delta in stream: ...`; leaving the block
    early closes the provider's stream (the partial exchange is still recorded).
    """

    __slots__ = ("_events", "_result")

    def __init__(self, events: AsyncGenerator[str | Result[str], None]) -> None:
        self._events = events
        self._result: Result[str] | None = None

    def __aiter__(self) -> TextStream:
        return self

    async def __anext__(self) -> str:
        if self._result is not None:
            raise StopAsyncIteration
        item = await self._events.__anext__()
        if isinstance(item, str):
            return item
        self._result = item
        await self._events.aclose()
        raise StopAsyncIteration

    @property
    def result(self) -> Result[str]:
        if self._result is None:
            raise RuntimeError("the stream has not finished yet")
        return self._result

    async def aclose(self) -> None:
        await self._events.aclose()

    async def __aenter__(self) -> TextStream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _once(callback: Callable[[], None]) -> Callable[[], None]:
    called = False

    def call() -> None:
        nonlocal called
        if not called:
            called = True
            callback()

    return call


class LLM:
    """One entry point for every LLM call of the application. Build it once and share it.

    Each call names a purpose ("pilot_step", "quick", "chat", "drafter", "agent", ...); the purpose's route
    in `settings.routes` (else `settings.default_model`) gives an ordered fallback chain. Without any model
    configured, every call raises `LLMNotConfigured` naming the setting to set. Each exchange with a model
    is traced (OpenTelemetry `gen_ai.*` attributes) and handed to the recorder.
    """

    def __init__(
        self,
        settings: LLMSettings,
        *,
        recorder: Recorder | None = None,
        http_client: httpx.AsyncClient | None = None,
        models: Mapping[str, Model] | None = None,
    ) -> None:
        self.settings = settings
        self.recorder: Recorder = recorder or NullRecorder()
        # Records that go nowhere are not even built.
        self._recording = not isinstance(self.recorder, NullRecorder)
        self._registry = ModelRegistry(settings, http_client=http_client, models=models)
        self._routes: dict[str, Model] = {}
        self._schemas: dict[type[BaseModel], OutputSchema] = {}

    @classmethod
    def for_model(cls, model: Model, *, recorder: Recorder | None = None, settings: LLMSettings | None = None) -> LLM:
        """Every purpose routed to `model` (typically a ScriptedModel or FunctionModel in tests)."""
        base = settings or LLMSettings()
        return cls(
            base.model_copy(update={"default_model": model.name, "routes": {}}),
            recorder=recorder,
            models={model.name: model},
        )

    @property
    def configured(self) -> bool:
        """Whether any model is configured (features that can run without an LLM check this)."""
        return bool(self.settings.routes or self.settings.default_model)

    def route(self, purpose: str) -> tuple[str, ...]:
        """The model names tried for `purpose`, in order; raises `LLMNotConfigured`."""
        return route_names(self.settings, purpose)

    def supports_images(self, purpose: str) -> bool:
        """Whether user messages for `purpose` may carry images: every model of its chain is listed in
        `settings.vision_models`. Raises `LLMNotConfigured`."""
        return route_accepts_images(self.settings, purpose)

    def model_for(self, purpose: str) -> Model:
        """The model (or FallbackModel) serving `purpose`, built once; raises `LLMNotConfigured`."""
        model = self._routes.get(purpose)
        if model is None:
            model = self._registry.chain(route_names(self.settings, purpose))
            self._routes[purpose] = model
        return model

    @asynccontextmanager
    async def deferred_recording(self) -> AsyncIterator[DeferredRecords | None]:
        """Keep the records of this block's exchanges for the caller's own transaction.

        With a `SqlRecorder`, the `llm_calls` rows of the calls made inside the block (in this task and the
        tasks it starts) are not written in a transaction of their own; the caller adds them to its session
        with `records.add_to(session)` before its commit and calls `records.stored()` after it. Whatever is
        not stored by the end of the block goes to the recorder then, as it would have without the block.
        With any other recorder this yields None and recording is unchanged.
        """
        if not isinstance(self.recorder, SqlRecorder):
            yield None
            return
        records = DeferredRecords(self.recorder.database.engine, self.recorder.log)
        token = _deferred.set((self, records))
        try:
            yield records
        finally:
            _deferred.reset(token)
            for record in records.take():
                await self._save_now(record)

    def new_budget(self) -> Budget:
        """A budget of `settings.max_tokens_per_run` tokens, to share between the calls of one run."""
        return Budget(self.settings.max_tokens_per_run)

    def _params(
        self,
        max_tokens: int | None,
        timeout_s: float | None,
        output: OutputSchema | None = None,
        tools: tuple[Tool | ToolDefinition, ...] = (),
        on_sent: Callable[[], None] | None = None,
    ) -> RequestParams:
        cap = self.settings.max_tokens_per_call
        return RequestParams(
            max_tokens=cap if max_tokens is None else min(max_tokens, cap),
            timeout_s=timeout_s or self.settings.timeout_s,
            tools=tuple(t if isinstance(t, ToolDefinition) else t.definition for t in tools),
            output=output,
            on_sent=on_sent,
        )

    async def structured(
        self,
        purpose: str,
        messages: Prompt,
        output_type: type[T],
        *,
        account_id: uuid.UUID | None,
        budget: Budget | None = None,
        context: CallContext | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
    ) -> Result[T]:
        """The model's answer validated into `output_type`.

        The JSON schema goes to the provider natively (OpenAI `response_format`, Anthropic forced tool use).
        An answer that does not validate gets one corrective retry showing the model its output and the
        errors; a second failure raises `StructuredOutputError` with both raw outputs.

        Args:
            purpose: Which route to use (see `Purpose`).
            messages: The conversation, or a str as a single user message.
            output_type: Pydantic model the answer must validate into.
            account_id: Account the call is made for (recorded; None for system calls).
            budget: The run's token budget, shared across its calls; None for no run budget.
            context: Client and session/run the call belongs to, for cost reporting.
            max_tokens: Output cap for this call, at most `settings.max_tokens_per_call`.
            timeout_s: Timeout for each request, default `settings.timeout_s`.
        """
        model = self.model_for(purpose)
        schema = self._schemas.get(output_type)
        if schema is None:
            schema = self._schemas[output_type] = output_schema(output_type)
        history = as_messages(messages)
        params = self._params(max_tokens, timeout_s, schema)
        completion, value, error, record_id, latency_ms = await self._exchange(
            purpose, model, history, params, budget, account_id, context, output_type
        )
        if value is not None:
            return Result(value, _usage(completion, latency_ms), record_id)
        assert error is not None
        first = completion
        usage = _usage(completion, latency_ms)
        history.append(Message.assistant(completion.text or "(empty reply)"))
        history.append(Message.user(correction_prompt(error)))
        completion, value, error, record_id, latency_ms = await self._exchange(
            purpose, model, history, params, budget, account_id, context, output_type
        )
        usage = _add_usage(usage, completion, latency_ms)
        if value is not None:
            return Result(value, usage, record_id)
        assert error is not None
        raise StructuredOutputError(
            f"{completion.model_name} returned output that does not validate as {output_type.__name__}, "
            f"also after a corrective retry: {error}",
            raw_output=completion.text,
            first_raw_output=first.text,
            validation_error=error,
        )

    async def text(
        self,
        purpose: str,
        messages: Prompt,
        *,
        account_id: uuid.UUID | None,
        budget: Budget | None = None,
        context: CallContext | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
    ) -> Result[str]:
        """The model's free-text answer (arguments as for `structured`)."""
        model = self.model_for(purpose)
        params = self._params(max_tokens, timeout_s)
        completion, _, _, record_id, latency_ms = await self._exchange(
            purpose, model, as_messages(messages), params, budget, account_id, context, None
        )
        return Result(completion.text, _usage(completion, latency_ms), record_id)

    def stream(
        self,
        purpose: str,
        messages: Prompt,
        *,
        account_id: uuid.UUID | None,
        budget: Budget | None = None,
        context: CallContext | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
        tools: Iterable[Tool | ToolDefinition] = (),
        on_sent: Callable[[], None] | None = None,
        max_fallbacks: int | None = None,
    ) -> TextStream:
        """Stream the free-text answer as text deltas; see `TextStream` (arguments as for `structured`).

        Routing and budget errors are raised here, before anything is sent. A fallback happens only
        before the first delta reaches the caller. With `tools`, the model may also ask for tool calls:
        they are in `result.tool_calls`, not run. `on_sent` is called once, when the request is written
        (`RequestParams.on_sent`; OpenAI-compatible and test models tell) or at the latest with the first
        event. `max_fallbacks` caps how many times the route's chain moves on (default: the whole chain).
        """
        model = self.model_for(purpose)
        history = as_messages(messages)
        params = self._params(max_tokens, timeout_s, tools=tuple(tools), on_sent=_once(on_sent) if on_sent else None)
        if max_fallbacks is not None:
            params = dataclasses.replace(params, max_fallbacks=max_fallbacks)
        if budget is not None:
            budget.check(history, params.max_tokens or 0)
        return TextStream(self._stream(purpose, model, history, params, budget, account_id, context))

    async def run_tools(
        self,
        purpose: str,
        messages: Prompt,
        tools: Iterable[Tool],
        *,
        account_id: uuid.UUID | None,
        deps: object = None,
        budget: Budget | None = None,
        context: CallContext | None = None,
        max_steps: int | None = None,
        max_tokens: int | None = None,
        timeout_s: float | None = None,
    ) -> Result[str]:
        """Let the model call `tools` until it answers in text; the answer and every message the run added.

        Each round, the tools the model asked for run one after the other (in the order asked). Invalid
        arguments, unknown tools and `ToolRetry` go back to the model as error results; any other exception
        from a tool raises `ToolFailed` (deskpilot errors pass through). After `max_steps` rounds
        (default `settings.max_tool_steps`) a model still asking for tools raises `ToolStepLimitExceeded`.
        Without a `budget`, the run gets its own of `settings.max_tokens_per_run` tokens.

        Args:
            purpose: Which route to use (see `Purpose`).
            messages: The conversation, or a str as a single user message.
            tools: The tools offered, built once with `Tool(...)` or `@tool`.
            account_id: Account the run is for (recorded, and given to tools in `ToolContext`).
            deps: Anything the tools need, handed to them as `ToolContext.deps`.
            budget: The run's token budget.
            context: Client and session/run the calls belong to.
            max_steps: Tool rounds allowed.
            max_tokens: Output cap of each request.
            timeout_s: Timeout of each request.
        """
        model = self.model_for(purpose)
        offered = tuple(tools)
        by_name = {t.name: t for t in offered}
        if len(by_name) != len(offered):
            raise ValueError("two tools share a name")
        limit = self.settings.max_tool_steps if max_steps is None else max_steps
        run_budget = budget if budget is not None else self.new_budget()
        params = self._params(max_tokens, timeout_s, tools=offered)
        history = as_messages(messages)
        start = len(history)
        usage: Usage | None = None
        step = 0
        while True:
            completion, _, _, record_id, latency_ms = await self._exchange(
                purpose, model, history, params, run_budget, account_id, context, None
            )
            usage = _usage(completion, latency_ms) if usage is None else _add_usage(usage, completion, latency_ms)
            if not completion.tool_calls:
                history.append(Message.assistant(completion.text))
                return Result(completion.text, usage, record_id, tuple(history[start:]))
            if step >= limit:
                names = [c.name for c in completion.tool_calls]
                raise ToolStepLimitExceeded(
                    f"the model still asked for tools ({', '.join(names)}) after {limit} tool rounds",
                    max_steps=limit,
                    pending_tools=names,
                )
            step += 1
            history.append(Message.assistant(completion.text, completion.tool_calls))
            for call in completion.tool_calls:
                ctx: ToolContext[object] = ToolContext(deps=deps, account_id=account_id, call=call, step=step)
                history.append(await self._run_tool(by_name, call, ctx))

    async def _run_tool(self, tools: Mapping[str, Tool], call: ToolCall, ctx: ToolContext[object]) -> Message:
        tool = tools.get(call.name)
        if tool is None:
            available = ", ".join(tools) or "none"
            return Message.tool_result(
                call, f"Unknown tool {call.name!r}. Available tools: {available}.", is_error=True
            )
        try:
            args = tool.validate(call.arguments)
        except ValidationError as e:
            return Message.tool_result(
                call,
                f"Invalid arguments for tool {call.name!r}: {describe_validation_error(e)}. "
                "Call it again with corrected arguments.",
                is_error=True,
            )
        with _span(f"execute_tool {call.name}", SpanKind.INTERNAL) as span:
            if span.is_recording():
                span.set_attributes(
                    {
                        "gen_ai.operation.name": "execute_tool",
                        "gen_ai.tool.name": call.name,
                        "gen_ai.tool.call.id": call.id,
                    }
                )
            try:
                content = await tool.run(args, ctx)
            except ToolRetry as e:
                return Message.tool_result(call, str(e), is_error=True)
            except DeskpilotError:
                raise
            except Exception as e:
                logger.warning("tool %r failed", call.name, exc_info=True)
                raise ToolFailed(f"tool {call.name!r} failed: {type(e).__name__}: {e}") from e
        return Message.tool_result(call, content)

    async def _exchange(
        self,
        purpose: str,
        model: Model,
        messages: list[Message],
        params: RequestParams,
        budget: Budget | None,
        account_id: uuid.UUID | None,
        context: CallContext | None,
        output_type: type[T] | None,
    ) -> tuple[Completion, T | None, str | None, uuid.UUID, float]:
        """One request: budget check, span, model call, validation, recording.

        Returns the completion, the validated value or the validation error summary, the record id and
        the latency in milliseconds.
        """
        if budget is not None:
            budget.check(messages, params.max_tokens or 0)
        record_id = uuid.uuid4()
        started_at = time.time()
        started = time.perf_counter()
        with _span(f"chat {model.name}", SpanKind.CLIENT) as span:
            tracing = span.is_recording()
            if tracing:
                _span_request(span, purpose, model, params)
            try:
                completion = await model.request(messages, params)
            except Exception as e:
                if tracing:
                    span.set_attribute("error.type", _error_code(e))
                if self._recording:
                    await self._record_failure(
                        record_id, purpose, model, messages, e, "", started, started_at, account_id, context
                    )
                raise
            latency_ms = (time.perf_counter() - started) * 1000.0
            if budget is not None:
                budget.add(completion.input_tokens, completion.output_tokens)
            value: T | None = None
            error: str | None = None
            if output_type is not None:
                try:
                    value = parse_output(output_type, completion.text)
                except ValidationError as e:
                    error = describe_validation_error(e)
            if tracing:
                _span_response(span, completion, record_id)
                if error is not None:
                    span.set_attribute("error.type", StructuredOutputError.code)
        if self._recording:
            await self._record_completion(
                record_id, purpose, account_id, messages, completion, latency_ms, started_at, context,
                parsed=value,
                error=None if error is None else f"output did not validate: {error}",
                error_code=None if error is None else StructuredOutputError.code,
            )
        return completion, value, error, record_id, latency_ms

    async def _stream(
        self,
        purpose: str,
        model: Model,
        messages: list[Message],
        params: RequestParams,
        budget: Budget | None,
        account_id: uuid.UUID | None,
        context: CallContext | None,
    ) -> AsyncGenerator[str | Result[str], None]:
        record_id = uuid.uuid4()
        started_at = time.time()
        started = time.perf_counter()
        # Not made the current span: the context would leak into the caller between deltas.
        span = _tracer.start_span(f"chat {model.name}", kind=SpanKind.CLIENT) if _tracing() else INVALID_SPAN
        tracing = span.is_recording()
        if tracing:
            _span_request(span, purpose, model, params)
            span.set_attribute("gen_ai.request.stream", True)
        parts: list[str] = []
        completion: Completion | None = None
        try:
            async with aclosing(model.request_stream(messages, params)) as events:
                async for event in events:
                    if params.on_sent is not None:
                        # At the latest now: a model that cannot tell when its request was written says nothing.
                        params.on_sent()
                    if isinstance(event, str):
                        parts.append(event)
                        yield event
                    else:
                        completion = event
        except BaseException as e:
            # Also GeneratorExit (the caller stopped reading) and cancellation: the partial answer is recorded.
            if tracing:
                span.set_attribute("error.type", _error_code(e))
                span.set_status(StatusCode.ERROR, str(e))
            span.end()
            if self._recording:
                await self._record_failure(
                    record_id, purpose, model, messages, e, "".join(parts), started, started_at, account_id, context
                )
            raise
        latency_ms = (time.perf_counter() - started) * 1000.0
        if completion is None:
            completion = Completion("".join(parts), model_name=model.name)
        if budget is not None:
            budget.add(completion.input_tokens, completion.output_tokens)
        if tracing:
            _span_response(span, completion, record_id)
        span.end()
        if self._recording:
            await self._record_completion(
                record_id, purpose, account_id, messages, completion, latency_ms, started_at, context
            )
        yield Result(completion.text, _usage(completion, latency_ms), record_id, tool_calls=completion.tool_calls)

    async def _record_completion(
        self,
        record_id: uuid.UUID,
        purpose: str,
        account_id: uuid.UUID | None,
        messages: list[Message],
        completion: Completion,
        latency_ms: float,
        started_at: float,
        context: CallContext | None,
        *,
        parsed: BaseModel | None = None,
        error: str | None = None,
        error_code: str | None = None,
    ) -> None:
        await self._save(
            CallRecord(
                id=record_id,
                account_id=account_id,
                purpose=purpose,
                model=completion.model_name,
                fallback_used=completion.fallback_used,
                messages=tuple(messages),
                output_text=completion.text,
                tool_calls=completion.tool_calls,
                parsed=parsed,
                error=error,
                error_code=error_code,
                input_tokens=completion.input_tokens,
                output_tokens=completion.output_tokens,
                latency_ms=latency_ms,
                created_at=datetime.fromtimestamp(started_at, UTC),
                context=context,
            )
        )

    async def _record_failure(
        self,
        record_id: uuid.UUID,
        purpose: str,
        model: Model,
        messages: list[Message],
        error: BaseException,
        partial_output: str,
        started: float,
        started_at: float,
        account_id: uuid.UUID | None,
        context: CallContext | None,
    ) -> None:
        detail = error.detail if isinstance(error, DeskpilotError) else (str(error) or type(error).__name__)
        await self._save(
            CallRecord(
                id=record_id,
                account_id=account_id,
                purpose=purpose,
                model=getattr(error, "model", None) or model.name,
                fallback_used=False,
                messages=tuple(messages),
                output_text=partial_output,
                tool_calls=(),
                parsed=None,
                error=detail,
                error_code=_error_code(error),
                input_tokens=0,
                output_tokens=0,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                created_at=datetime.fromtimestamp(started_at, UTC),
                context=context,
            )
        )

    async def _save(self, record: CallRecord) -> None:
        deferred = _deferred.get()
        if deferred is not None and deferred[0] is self:
            deferred[1].collect(record)
            return
        await self._save_now(record)

    async def _save_now(self, record: CallRecord) -> None:
        try:
            await self.recorder.record(record)
        except Exception:
            # Losing a record is bad, failing the user's request over it is worse.
            logger.warning("recording LLM call %s failed", record.id, exc_info=True)

    async def aclose(self) -> None:
        """Close the provider clients this instance built."""
        await self._registry.aclose()
        self._routes.clear()

    async def __aenter__(self) -> LLM:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
