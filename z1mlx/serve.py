"""`z1 serve`: an OpenAI-compatible HTTP server with the Shifted Thinking Window per request.

Starlette routes on uvicorn; the wire format lives in `openai_api`. One worker thread
owns the local engine and takes jobs from a queue, so generations never share a KV cache;
each streams its events back to its request's event loop. A client that disconnects
cancels its job (queued or running) at the next token.
"""

import argparse
import asyncio
import hmac
import ipaddress
import json
import os
import queue
import socket
import sys
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from .cliutil import (
    ArgumentParser, add_backend_args, add_model_args, add_window_args, hint_from, load_engine, non_negative_float,
    positive_int,
)
from .events import Sampling
from .errors import Z1Error
from .openai_api import (
    SSE_DONE, APIError, CompletionRequest, Defaults, ReplyAssembler, ResponseShape, parse_chat, parse_completion,
    parse_json, sse,
)
from .window import ShiftedWindow, WindowControl, fit_to_context

API_KEY_ENV = "Z1MLX_SERVE_API_KEY"
MAX_BODY_BYTES = 4 * 1024 * 1024
DRAIN_BYTES = 64 * 1024 * 1024  # read (and drop) up to this much of an oversize body, so the 413 arrives cleanly
DEFAULT_CONTEXT = 32768

EXAMPLES = """\
examples:
  z1 serve                                     Z1-7B at http://127.0.0.1:8080/v1
  z1 serve --model demo --port 9000            the tiny offline model, for trying clients
  z1 serve --budget 4096 --answer-tokens 2048  defaults for requests that set neither
  Z1MLX_SERVE_API_KEY=s3cret z1 serve --host 0.0.0.0       on the network, bearer token required
  z1 serve --backend http://gpu-box:8000 --model z1-7b     the window on vLLM/SGLang/llama.cpp,
                                                          this API in front (8 requests at a time)

  curl -s http://127.0.0.1:8080/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"messages": [{"role": "user", "content": "Reverse a list in Python"}], "thinking_budget": 512}'

  curl -sN http://127.0.0.1:8080/v1/completions -H 'Content-Type: application/json' \\
    -d '{"prompt": "def fib(n):", "reasoning_effort": "low", "max_tokens": 256, "stream": true}'

  from openai import OpenAI      # pip install openai
  client = OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="none")  # the key, with --api-key
  reply = client.chat.completions.create(
      model="z1", messages=[{"role": "user", "content": "Is 97 prime?"}],
      reasoning_effort="low", max_tokens=512)        # or extra_body={"thinking_budget": 300}
  print(reply.choices[0].message.reasoning_content, reply.choices[0].message.content)

per-request fields, besides messages/prompt, stream, temperature, top_p, top_k, min_p,
repetition_penalty, seed and stop:
  thinking_budget, max_thinking_tokens   thinking tokens before the window shifts (0..32768)
  reasoning_effort                       none=0, low=1024, medium=2048, high=4096 thinking tokens
  max_tokens, max_completion_tokens      cap on the answer after the shift
  thinking_hint                          text appended when the window fills
  return_token_ids                       exact token ids of each part, in the reply's "z1" object

replies: reasoning_content and reasoning hold the thinking-window text, content the answer
(the text after the hint; or, when the model finished inside the window, the part of its
reply marked as the answer), usage.completion_tokens_details.reasoning_tokens the thinking
tokens, and "z1" the window's account (window_hit, budget, hint, ...).

endpoints: POST /v1/chat/completions, POST /v1/completions, GET /v1/models, GET /health.
Requests run one at a time in arrival order (up to --max-queue waiting, then 429).
"""

_END = object()


class GenerationFailed(Exception):
    """The engine raised while generating; the request gets a 500."""


@dataclass(eq=False)
class Job:
    """One request's generation: the worker thread pushes events to the request's loop."""

    prompt: list[int]
    window: ShiftedWindow
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    control: WindowControl | None = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)

    def __post_init__(self):
        self.control = self.control or WindowControl(self.window.budget)

    def push(self, item) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, item)
        except RuntimeError:  # the event loop is closed: the server is shutting down
            pass


class Scheduler:
    """Worker threads that run jobs in arrival order, one generation per worker.

    A local engine gets one worker, and its KV cache is a `ConversationCache` reused from
    request to request: a prompt sharing a prefix with the previous one (a chat resent
    with one more turn) prefills only the rest. A remote engine may take several workers.
    """

    def __init__(self, engine, workers: int = 1, max_queue: int = 64, reuse_cache: bool = True):
        self.engine = engine
        self.max_queue = max_queue
        self.reuse_cache = reuse_cache
        self._jobs: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._waiting: set[Job] = set()
        self._running: set[Job] = set()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"z1-generate-{i}", daemon=True)
                         for i in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise APIError(503, "The server is shutting down.", type="server_error", code="shutting_down")
            if len(self._waiting) >= self.max_queue:
                raise APIError(429, f"The server is busy ({len(self._waiting)} requests waiting); retry shortly.",
                               type="rate_limit_error", code="queue_full")
            self._waiting.add(job)
        self._jobs.put(job)

    def stats(self) -> dict:
        with self._lock:
            return {"running": len(self._running), "queued": len(self._waiting)}

    def _work(self) -> None:
        conversation = self.engine.new_conversation_cache() if self.reuse_cache else None
        while (job := self._jobs.get()) is not None:
            with self._lock:
                self._waiting.discard(job)
                self._running.add(job)
            try:
                for event in self.engine.generate(job.prompt, job.window, job.sampling, control=job.control,
                                                  conversation=conversation):
                    job.push(event)
            except Exception as err:  # one bad generation must not stop the worker
                job.push(GenerationFailed(f"generation failed: {type(err).__name__}: {err}"))
                if conversation is not None:
                    conversation.reset()  # the cache may hold a half-written step
            finally:
                with self._lock:
                    self._running.discard(job)
                job.push(_END)

    def close(self) -> None:
        """Cancel every job, running or waiting; each still ends with a (cancelled) result,
        so its client gets a well-formed reply. Then the workers exit."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            jobs = self._running | self._waiting
        for job in jobs:
            job.control.cancel()
        for _ in self._threads:
            self._jobs.put(None)  # after the waiting jobs, which end at once


@dataclass(frozen=True)
class ServeConfig:
    defaults: Defaults = Defaults()
    api_key: str | None = None
    max_queue: int = 64
    max_prompt_tokens: int | None = None  # None: the model's context length
    max_body_bytes: int = MAX_BODY_BYTES
    workers: int = 1
    prompt_cache: bool = True


def model_limits(engine) -> tuple[int, int | None]:
    """(context length, vocabulary size) from the model's config.json, where it has one."""
    try:
        config = json.loads((Path(engine.model_path) / "config.json").read_text())
    except (OSError, ValueError, AttributeError, TypeError):
        config = {}
    context, vocab = config.get("max_position_embeddings"), config.get("vocab_size")
    valid = lambda v: isinstance(v, int) and not isinstance(v, bool) and v > 0  # noqa: E731
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

    def __init__(self, engine, config: ServeConfig):
        self.engine = engine
        self.config = config
        self.context, self.vocab_size = model_limits(engine)
        self.max_prompt_tokens = config.max_prompt_tokens or self.context
        self.scheduler = Scheduler(engine, config.workers, config.max_queue, config.prompt_cache)
        self.started = int(time.time())

    # Checks

    def authorize(self, request: Request) -> None:
        key = self.config.api_key
        if not key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "Incorrect or missing API key: send it as 'Authorization: Bearer KEY'.",
                           code="invalid_api_key")

    async def read_body(self, request: Request) -> bytes:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length", "")
        too_big = APIError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
        if declared.isdigit() and int(declared) > DRAIN_BYTES:
            raise too_big
        data, size = bytearray(), 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > DRAIN_BYTES:
                raise too_big
            if size <= limit:
                data += chunk
        if size > limit:
            raise too_big
        return bytes(data)

    def tokenize(self, parsed: CompletionRequest) -> list[int]:
        param = "messages" if parsed.kind == "chat" else "prompt"
        try:
            if parsed.kind == "chat":
                ids = self.engine.chat_prompt(parsed.messages, prefill=parsed.prefill)
            elif parsed.prompt_ids is not None:
                ids = parsed.prompt_ids
                if self.vocab_size and max(ids) >= self.vocab_size:
                    raise APIError(400, f"prompt token id {max(ids)} is outside the vocabulary "
                                        f"(size {self.vocab_size})", param=param, code="invalid_value")
            else:
                ids = self.engine.encode(parsed.prompt_text)
        except APIError:
            raise
        except Exception as err:  # a chat template may raise on messages it does not accept
            raise APIError(400, f"cannot render the prompt: {type(err).__name__}: {err}", param=param)
        if not ids:
            raise APIError(400, "the prompt is empty after tokenization", param=param)
        if len(ids) >= self.max_prompt_tokens:
            raise APIError(400, f"This model's maximum context length is {self.max_prompt_tokens} tokens, "
                                f"but the prompt has {len(ids)} tokens.", param=param, code="context_length_exceeded")
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
            raise APIError(404, f"The model '{request.path_params['model']}' does not exist; this server serves "
                                f"'{self.engine.name}'.", param="model", code="model_not_found")
        return JSONResponse(self.model_card())

    async def chat_completions(self, request: Request):
        return await self.complete(request, "chat")

    async def completions(self, request: Request):
        return await self.complete(request, "text")

    async def complete(self, request: Request, kind: str):
        self.authorize(request)
        body = parse_json(await self.read_body(request))
        parsed = (parse_chat if kind == "chat" else parse_completion)(body, self.config.defaults)
        prompt = await run_in_threadpool(self.tokenize, parsed)
        window = fit_to_context(parsed.window, len(prompt), len(self.engine.encode(parsed.window.hint)), self.context)
        if window is None:
            raise APIError(400, f"This model's maximum context length is {self.context} tokens: the prompt "
                                f"({len(prompt)} tokens) leaves no room for a reply.",
                           param="messages" if kind == "chat" else "prompt", code="context_length_exceeded")
        job = Job(prompt, window, parsed.sampling, asyncio.get_running_loop())
        self.scheduler.submit(job)
        # Watch from now on, so a client gone before its stream starts still cancels its job.
        watcher = asyncio.create_task(_watch_disconnect(request, job.control))
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        shape = ResponseShape(kind, f"{prefix}-{uuid.uuid4().hex}", int(time.time()), self.engine.name)
        if parsed.stream:
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            return StreamingResponse(self.stream(job, watcher, parsed, shape), media_type="text/event-stream",
                                     headers=headers)
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


def create_app(engine, config: ServeConfig = ServeConfig()) -> Starlette:
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
    handlers = {APIError: _on_api_error, HTTPException: _on_http_error, Exception: _on_server_error}
    app = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    app.state.server = server
    return app


# The command

def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_warning(host: str, api_key: str | None) -> str | None:
    if is_loopback(host) or api_key:
        return None
    return (f"[z1] warning: serving on {host} without an API key: anyone who can reach this machine can use the "
            f"model. Pass --api-key or set ${API_KEY_ENV}.")


def bind_socket(host: str, port: int) -> socket.socket:
    """Listen before the model loads, so a taken port fails in a second with one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise Z1Error(f"--host {host}: cannot resolve ({err.strerror})")
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise Z1Error(f"cannot listen on {host}:{port}: {err.strerror}")
    return sock


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="z1 serve",
        description="An OpenAI-compatible server that applies Z1's Shifted Thinking Window to every request: "
        "think up to the request's budget; if the window fills, append the hint and answer.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    add_window_args(parser)
    parser.add_argument("--temp", type=non_negative_float, default=0.0,
                        help="temperature for requests that set none (default 0: greedy, as in the paper)")
    parser.add_argument("--api-key", default=None,
                        help=f"require 'Authorization: Bearer KEY' on /v1 routes (or ${API_KEY_ENV})")
    parser.add_argument("--max-queue", type=positive_int, default=64,
                        help="requests that may wait for the engine; more get 429 (default 64)")
    parser.add_argument("--max-prompt-tokens", type=positive_int, default=None,
                        help="refuse longer prompts with 400 (default: the model's context length)")
    parser.add_argument("--no-prompt-cache", action="store_true",
                        help="a fresh KV cache per request instead of reusing the previous request's common prefix")
    add_backend_args(parser, key_flag="--backend-api-key")  # --api-key guards this server itself
    parser.add_argument("--parallel", type=positive_int, default=None,
                        help="requests sent to --backend at once (default 8; a local model runs one at a time)")
    parser.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                        help="uvicorn's log level; info logs every request (default info)")
    return parser


class _Uvicorn(uvicorn.Server):
    """On Ctrl+C or SIGTERM, end the running generations first, so open replies finish at
    once (finish_reason "cancelled") instead of holding up the shutdown."""

    on_exit = None

    def handle_exit(self, sig, frame):
        if self.on_exit is not None:
            self.on_exit()
        super().handle_exit(sig, frame)


def engine_and_parallel(args):
    if args.backend:
        return load_engine(args), args.parallel or 8
    if args.parallel not in (None, 1):
        raise Z1Error("--parallel needs --backend: a local model generates one reply at a time")
    return load_engine(args), 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        defaults = Defaults(args.budget, args.answer_tokens, args.temp, hint_from(args), args.min_thinking,
                            args.continue_text)
        ShiftedWindow(args.budget, args.answer_tokens, defaults.hint, args.min_thinking, args.continue_text)
        Sampling(temperature=args.temp)
    except ValueError as err:
        raise Z1Error(str(err)) from err
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    sock = bind_socket(args.host, args.port)
    try:
        engine, workers = engine_and_parallel(args)
    except BaseException:
        sock.close()
        raise
    config = ServeConfig(defaults=defaults, api_key=api_key, max_queue=args.max_queue,
                         max_prompt_tokens=args.max_prompt_tokens, workers=workers,
                         prompt_cache=not args.no_prompt_cache)
    app = create_app(engine, config)
    if warning := bind_warning(args.host, api_key):
        print(warning, file=sys.stderr)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    label = engine.label
    print(f"[z1] serving {label} at http://{shown}:{port}/v1 · budget {args.budget} · "
          f"answer cap {args.answer_tokens}{' · API key required' if api_key else ''} · Ctrl+C stops",
          file=sys.stderr, flush=True)
    server = _Uvicorn(uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5, lifespan="on"))
    server.on_exit = app.state.server.scheduler.close
    server.run(sockets=[sock])
    return 0
