"""The ASGI app of `z1 serve`: Starlette routes around one backend and its scheduler.

The wire format lives in `openai_api`, the queue in `scheduler`; this module checks keys
and bodies, tokenizes, fits the window to the context and streams replies.
"""

import asyncio
import hmac
import json
import logging
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from ..backend import Backend
from ..window import WindowControl, fit_to_context
from .openai_api import (
    SSE_DONE,
    APIError,
    CompletionRequest,
    Defaults,
    ReplyAssembler,
    ResponseShape,
    parse_chat,
    parse_completion,
    parse_json,
    sse,
)
from .scheduler import _END, GenerationFailed, Job, Scheduler

MAX_BODY_BYTES = 4 * 1024 * 1024
DRAIN_BYTES = 64 * 1024 * 1024  # read (and drop) up to this much of an oversize body, so the 413 arrives cleanly
DEFAULT_CONTEXT = 32768


@dataclass(frozen=True)
class ServeConfig:
    defaults: Defaults = Defaults()
    api_key: str | None = None
    max_queue: int = 64
    max_prompt_tokens: int | None = None  # None: the model's context length
    max_body_bytes: int = MAX_BODY_BYTES
    parallel: int = 8  # generations at once (a local batch, or requests in flight to a remote engine)
    prompt_cache_size: int = 10  # prompts whose KV caches are kept; 0: a fresh cache per request


LOG = logging.getLogger("z1.serve")


def model_limits(engine) -> tuple[int, int | None]:
    """(context length, vocabulary size) from the model's config.json, where it has one."""
    try:
        config = json.loads((Path(engine.model_path) / "config.json").read_text())
    except (OSError, ValueError, AttributeError, TypeError):
        config = {}
    context, vocab = config.get("max_position_embeddings"), config.get("vocab_size")
    valid = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0
    return (context if valid(context) else DEFAULT_CONTEXT), (vocab if valid(vocab) else None)


async def _watch_disconnect(request: Request, control: WindowControl) -> None:
    """Cancel the generation when the client goes away (queued or mid-reply)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            control.cancel()
            return


class Z1Server:
    """The routes' handlers, around one engine and its scheduler."""

    def __init__(self, engine: Backend, config: ServeConfig):
        self.engine = engine
        self.config = config
        self.context, self.vocab_size = model_limits(engine)
        self.max_prompt_tokens = config.max_prompt_tokens or self.context
        self.scheduler = Scheduler(engine, config.parallel, config.max_queue, config.prompt_cache_size)
        self.started = int(time.time())

    # Checks

    def authorize(self, request: Request) -> None:
        key = self.config.api_key
        if not key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(
                401, "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'.", code="invalid_api_key"
            )

    async def read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_big = APIError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
        if declared.isdigit() and int(declared) > DRAIN_BYTES:
            raise too_big
        data, size = bytearray(), 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > DRAIN_BYTES:
                    raise too_big
                if size <= limit:
                    data += chunk
        except ClientDisconnect:
            client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
            LOG.warning("%s disconnected before its request body was complete (%d bytes read)", client, size)
            raise APIError(400, "The client disconnected before the request body was complete.") from None
        if size > limit:
            raise too_big
        return bytes(data)

    def tokenize(self, parsed: CompletionRequest) -> list[int]:
        param = "messages" if parsed.kind == "chat" else "prompt"
        try:
            if parsed.kind == "chat":
                ids = self.engine.chat_prompt(parsed.messages or [], prefill=parsed.prefill)
            elif parsed.prompt_ids is not None:
                ids = parsed.prompt_ids
                if self.vocab_size and max(ids) >= self.vocab_size:
                    raise APIError(
                        400,
                        f"prompt token id {max(ids)} is outside the vocabulary (size {self.vocab_size})",
                        param=param,
                        code="invalid_value",
                    )
            else:
                ids = self.engine.encode(parsed.prompt_text or "")
        except APIError:
            raise
        except Exception as err:  # a chat template may raise on messages it does not accept
            raise APIError(400, f"cannot render the prompt: {type(err).__name__}: {err}", param=param) from err
        if not ids:
            raise APIError(400, "the prompt is empty after tokenization", param=param)
        if len(ids) >= self.max_prompt_tokens:
            raise APIError(
                400,
                f"This model's maximum context length is {self.max_prompt_tokens} tokens, "
                f"but the prompt has {len(ids)} tokens.",
                param=param,
                code="context_length_exceeded",
            )
        return ids

    # Routes

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "model": self.engine.name, **self.scheduler.stats()})

    def model_card(self) -> dict:
        return {"id": self.engine.name, "object": "model", "created": self.started, "owned_by": "z1-mlx"}

    async def models(self, request: Request) -> JSONResponse:
        self.authorize(request)
        return JSONResponse({"object": "list", "data": [self.model_card()]})

    async def model(self, request: Request) -> JSONResponse:
        self.authorize(request)
        if request.path_params["model"] != self.engine.name:
            raise APIError(
                404,
                f"The model '{request.path_params['model']}' does not exist; this server serves '{self.engine.name}'.",
                param="model",
                code="model_not_found",
            )
        return JSONResponse(self.model_card())

    async def chat_completions(self, request: Request):
        return await self.complete(request, "chat")

    async def completions(self, request: Request):
        return await self.complete(request, "text")

    async def complete(self, request: Request, kind: Literal["chat", "text"]):
        self.authorize(request)
        body = parse_json(await self.read_body(request))
        parsed = (parse_chat if kind == "chat" else parse_completion)(body, self.config.defaults)
        prompt = await run_in_threadpool(self.tokenize, parsed)
        window = fit_to_context(parsed.window, len(prompt), len(self.engine.encode(parsed.window.hint)), self.context)
        if window is None:
            raise APIError(
                400,
                f"This model's maximum context length is {self.context} tokens: the prompt "
                f"({len(prompt)} tokens) leaves no room for a reply.",
                param="messages" if kind == "chat" else "prompt",
                code="context_length_exceeded",
            )
        job = Job(prompt, window, parsed.sampling, asyncio.get_running_loop())
        self.scheduler.submit(job)
        # Watch from now on, so a client gone before its stream starts still cancels its job.
        control = job.control
        watcher = asyncio.create_task(_watch_disconnect(request, control))
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        shape = ResponseShape(kind, f"{prefix}-{uuid.uuid4().hex}", int(time.time()), self.engine.name)
        if parsed.stream:
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(
                self.stream(job, watcher, parsed, shape), media_type="text/event-stream", headers=headers
            )
        assembler = ReplyAssembler(parsed)
        failure = None
        try:
            while (item := await job.events.get()) is not _END:
                if isinstance(item, GenerationFailed):
                    failure = item
                    continue
                assembler.feed(item)
                if assembler.stopped:
                    job.control.cancel()  # a stop sequence: free the engine now
        finally:
            watcher.cancel()
            job.control.cancel()
        if failure or assembler.reply is None:
            raise APIError(500, str(failure or "generation ended without a result"), type="server_error")
        return JSONResponse(shape.completion(assembler.reply))

    async def stream(self, job: Job, watcher: asyncio.Task, parsed: CompletionRequest, shape: ResponseShape):
        """Server-sent events: reasoning deltas, then content deltas, the final chunk, [DONE]."""
        assembler = ReplyAssembler(parsed)
        try:
            if first := shape.first_chunk():
                yield sse(first)
            while (item := await job.events.get()) is not _END:
                if isinstance(item, GenerationFailed):
                    yield sse(APIError(500, str(item), type="server_error").body())
                    continue
                for delta in assembler.feed(item):
                    yield sse(shape.delta_chunk(delta))
                if assembler.stopped:
                    job.control.cancel()
            if assembler.reply is not None:
                yield sse(shape.final_chunk(assembler.reply))
                if parsed.include_usage:
                    yield sse(shape.usage_chunk(assembler.reply))
            yield SSE_DONE
        finally:
            watcher.cancel()
            job.control.cancel()


def _error_response(error: APIError) -> JSONResponse:
    headers = {"Retry-After": "1"} if error.status == 429 else None
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


async def _on_api_error(request: Request, exc: APIError) -> JSONResponse:
    return _error_response(exc)


async def _on_http_error(request: Request, exc: HTTPException) -> JSONResponse:
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return _error_response(APIError(exc.status_code, message, code=code))


async def _on_server_error(request: Request, exc: Exception) -> JSONResponse:
    return _error_response(APIError(500, f"internal error: {type(exc).__name__}", type="server_error"))


def create_app(engine: Backend, config: ServeConfig = ServeConfig()) -> Starlette:
    """The ASGI app serving `engine` (an `Engine` or a `RemoteEngine`)."""
    server = Z1Server(engine, config)

    @asynccontextmanager
    async def lifespan(app):
        yield
        server.scheduler.close()

    routes = [
        Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
        Route("/v1/completions", server.completions, methods=["POST"]),
        Route("/v1/models", server.models, methods=["GET"]),
        Route("/v1/models/{model:path}", server.model, methods=["GET"]),
        Route("/health", server.health, methods=["GET"]),
    ]
    handlers: dict = {APIError: _on_api_error, HTTPException: _on_http_error, Exception: _on_server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.server = server
    return app
