"""`z1 serve`: an OpenAI-compatible HTTP server with the Shifted Thinking Window per request.

The command: flags, the listening socket, uvicorn. The app is `app.create_app`; one
worker thread owns a local engine and takes jobs from a queue (`scheduler`), so
generations never share a KV cache; the wire format lives in `openai_api`.
"""

import argparse
import ipaddress
import os
import socket
import sys

import uvicorn

from ..cliutil import (
    ArgumentParser,
    add_backend_args,
    add_model_args,
    add_window_args,
    hint_from,
    load_engine,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from ..errors import Z1Error
from ..events import Sampling
from ..window import ShiftedWindow
from .app import ServeConfig, create_app
from .openai_api import Defaults

API_KEY_ENV = "Z1MLX_SERVE_API_KEY"

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
    return (
        f"[z1] warning: serving on {host} without an API key: anyone who can reach this machine can use the "
        f"model. Pass --api-key or set ${API_KEY_ENV}."
    )


def bind_socket(host: str, port: int) -> socket.socket:
    """Listen before the model loads, so a taken port fails in a second with one line."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as err:
        raise Z1Error(f"--host {host}: cannot resolve ({err.strerror})") from err
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as err:
        sock.close()
        raise Z1Error(f"cannot listen on {host}:{port}: {err.strerror}") from err
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
    parser.add_argument(
        "--temp",
        type=non_negative_float,
        default=0.0,
        help="temperature for requests that set none (default 0: greedy, as in the paper)",
    )
    parser.add_argument(
        "--api-key", default=None, help=f"require 'Authorization: Bearer KEY' on /v1 routes (or ${API_KEY_ENV})"
    )
    parser.add_argument(
        "--max-queue",
        type=positive_int,
        default=64,
        help="requests that may wait for the engine; more get 429 (default 64)",
    )
    parser.add_argument(
        "--max-prompt-tokens",
        type=positive_int,
        default=None,
        help="refuse longer prompts with 400 (default: the model's context length)",
    )
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--prompt-cache-size",
        type=non_negative_int,
        default=10,
        metavar="N",
        help="keep the KV caches of the last N prompts, so a request sharing a prefix with any of them "
        "prefills only the rest (default 10; 0: a fresh cache per request)",
    )
    cache.add_argument(
        "--no-prompt-cache",
        dest="prompt_cache_size",
        action="store_const",
        const=0,
        help="a fresh KV cache per request (same as --prompt-cache-size 0)",
    )
    add_backend_args(parser, key_flag="--backend-api-key")  # --api-key guards this server itself
    parser.add_argument(
        "--parallel",
        type=positive_int,
        default=None,
        help="requests generated at once: one batch on a local model (mlx-lm's BatchGenerator), or "
        "requests in flight to --backend (default 8)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level; info logs every request (default info)",
    )
    return parser


# Sequences per batch step: on Apple silicon decoding is bound by memory bandwidth, so 8 cost
# little more per step than one (mlx_lm.server batches up to 32); on a CPU the gain is small.
DEFAULT_PARALLEL = 8


class _Uvicorn(uvicorn.Server):
    """On Ctrl+C or SIGTERM, end the running generations first, so open replies finish at
    once (finish_reason "cancelled") instead of holding up the shutdown."""

    on_exit = None

    def handle_exit(self, sig, frame):
        if self.on_exit is not None:
            self.on_exit()
        super().handle_exit(sig, frame)


def engine_and_parallel(args):
    return load_engine(args), args.parallel or DEFAULT_PARALLEL


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        defaults = Defaults(
            args.budget, args.answer_tokens, args.temp, hint_from(args), args.min_thinking, args.continue_text
        )
        ShiftedWindow(args.budget, args.answer_tokens, defaults.hint, args.min_thinking, args.continue_text)
        Sampling(temperature=args.temp)
    except ValueError as err:
        raise Z1Error(str(err)) from err
    api_key = args.api_key or os.environ.get(API_KEY_ENV) or None
    sock = bind_socket(args.host, args.port)
    try:
        engine, parallel = engine_and_parallel(args)
    except BaseException:
        sock.close()
        raise
    config = ServeConfig(
        defaults=defaults,
        api_key=api_key,
        max_queue=args.max_queue,
        max_prompt_tokens=args.max_prompt_tokens,
        parallel=parallel,
        prompt_cache_size=args.prompt_cache_size,
    )
    app = create_app(engine, config)
    if warning := bind_warning(args.host, api_key):
        print(warning, file=sys.stderr)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    label = engine.label
    print(
        f"[z1] serving {label} at http://{shown}:{port}/v1 · budget {args.budget} · "
        f"answer cap {args.answer_tokens}{' · API key required' if api_key else ''} · Ctrl+C stops",
        file=sys.stderr,
        flush=True,
    )
    server = _Uvicorn(uvicorn.Config(app, log_level=args.log_level, timeout_graceful_shutdown=5, lifespan="on"))
    server.on_exit = app.state.server.scheduler.close
    server.run(sockets=[sock])
    return 0
