"""The Shifted Thinking Window on a remote OpenAI-compatible engine.

vLLM, SGLang, llama.cpp's server and mlx_lm.server scale across GPUs and nodes; the window
needs only their raw-prompt `/v1/completions` endpoint. Phase 1 streams the prompt text
with `max_tokens = budget`. If it ends with `finish_reason == "length"`, phase 2 sends
prompt + partial text + hint with `max_tokens = answer cap`: the reference's vLLM loop.
The prompt is rendered here, from the model's own tokenizer, so any engine serving
Z1-7B works; `RemoteEngine` has the interface of `Engine` that front ends use.

Where a result can differ from the in-process engine, which continues in one KV cache:
- Re-tokenization. Phase 2's prompt is text, tokenized afresh by the server. BPE merges
  across the joins (thinking that ends in "\\n" followed by the hint's "\\n\\n"), a phase
  cut inside a multi-byte character (its text holds U+FFFD), or special-token text in the
  reply give other ids than prompt + generated + hint ids, and so another phase 2. The
  reference behaves the same way.
- Token ids. Streamed completions carry text; unless the server sends ids (vLLM's
  `token_ids`), the result's ids are its text re-tokenized. The count of a phase cut by
  its cap is exact (the server's, or max_tokens).
- mlx_lm.server drops a leading space from the first token of each completion (its BPE
  detokenizer trims it), so a reply or answer starting with " word" arrives as "word".
- A server adds its tokenizer's special tokens to a text prompt (a BOS for Llama-style
  tokenizers; none for Qwen2.5 and so Z1). Generation stops at the server's end-of-
  sequence tokens (Qwen's generation config: <|im_end|> and <|endoftext|>).

mlx_lm.server 0.32 (checked in its source): raw /v1/completions applies no chat template
and encodes the prompt string with the model's tokenizer; it stops at the model's EOS ids
(finish_reason "stop", the EOS text dropped but counted in usage) or at max_tokens
("length"); streamed chunks carry text only (ids come only in non-streamed `logprobs`);
a closed connection stops its generation at the next write.

Live controls work as in-process: cancel and answer-now close the phase-1 stream; a
budget lowered under the request's cap ends phase 1 at the next chunk; a budget raised
while streaming continues thinking with another request from the partial text.
"""

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .backend import Events, Piece, Segment
from .errors import ModelNotAvailable, Z1Error
from .events import Sampling
from .window import ShiftedWindow, WindowControl, drive

DEFAULT_TIMEOUT = 600.0
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# Enough of a hub repository to render prompts: no weights.
TOKENIZER_PATTERNS = [
    "tokenizer*",
    "vocab*",
    "merges.txt",
    "special_tokens_map.json",
    "added_tokens.json",
    "config.json",
    "generation_config.json",
    "*.jinja",
]


class DialectError(Z1Error):
    """The server answered, but not in the OpenAI completions dialect."""


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for connection failures, 429 and 5xx, before any text has streamed."""

    retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Exponential backoff; a server's Retry-After (seconds) wins, within max_delay x 4."""
        if retry_after:
            try:
                return min(max(float(retry_after), 0.0), self.max_delay * 4)
            except ValueError:
                pass  # an HTTP date: fall back to our own backoff
        return min(self.base_delay * 2**attempt, self.max_delay)


def split_url(url: str) -> tuple[str, str | None]:
    """(base URL without /v1, served model from a `#name` fragment or None)."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise Z1Error(f"--backend {url!r}: expected an http(s) URL such as http://127.0.0.1:8000")
    path = parts.path.rstrip("/")
    for suffix in ("/v1/completions", "/v1"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return f"{parts.scheme}://{parts.netloc}{path}", parts.fragment or None


def pick_served_model(listing, wanted: str | None, local_name: str, base: str) -> tuple[str, bool]:
    """The model to name in requests, and whether to name it at all.

    mlx_lm.server lists local paths and Hugging Face cache repositories, and a request
    naming any of them makes it load that model (and drop its adapter); a request without
    a model uses the one it was started with. So with mlx_lm.server (entries without
    `owned_by`) the field is left out.
    """
    if listing is None:
        return wanted or local_name, bool(wanted)
    data = listing.get("data") if isinstance(listing, dict) else None
    if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
        raise DialectError(f"{base} does not speak the OpenAI API: GET /v1/models did not return a model list")
    if any(m.get("owned_by") == "z1-mlx" for m in data):
        raise Z1Error(
            f"{base} is a `z1 serve` server, which applies the window itself: point OpenAI clients at it, "
            "or --backend at the raw engine"
        )
    ids = [m["id"] for m in data]
    names_it = bool(data) and any("owned_by" in m for m in data)
    if wanted:
        if ids and wanted not in ids:
            raise Z1Error(f"{base} does not serve {wanted!r}; it serves: {', '.join(ids)}")
        return wanted, True
    matches = [i for i in ids if i == local_name or i.rstrip("/").rsplit("/", 1)[-1] == local_name]
    if matches:
        return matches[0], names_it
    if len(ids) == 1 or (ids and not names_it):
        return ids[-1], names_it  # mlx_lm.server lists its own model last
    if not ids:
        return local_name, False
    raise Z1Error(f"{base} serves several models ({', '.join(ids)}); pick one with --backend {base}#NAME")


def iter_events(response) -> Iterator[dict]:
    """The JSON payloads of a server-sent event stream (parsed by httpx-sse), up to `data: [DONE]`."""
    from httpx_sse import EventSource

    for event in EventSource(response).iter_sse():
        if event.data == "[DONE]":
            return
        if not event.data:
            continue  # keep-alive comments and data-less events (mlx_lm.server sends them during long prefills)
        try:
            payload = json.loads(event.data)
        except json.JSONDecodeError:
            raise DialectError(f"a streamed event is not JSON ({event.data[:80]!r})") from None
        if not isinstance(payload, dict):
            raise DialectError(f"a streamed event is not a JSON object ({event.data[:80]!r})")
        yield payload


@dataclass
class Chunk:
    text: str
    finish_reason: str | None
    usage: dict | None
    token_ids: list[int] | None


def read_chunk(payload: dict) -> Chunk:
    """One completions chunk (or a whole non-streamed completion)."""
    if "error" in payload:
        raise Z1Error(f"the server reported an error mid-reply: {_error_text(payload)}")
    choices = payload.get("choices")
    usage = payload.get("usage") if isinstance(payload.get("usage"), dict) else None
    if choices == [] or (choices is None and usage is not None):
        return Chunk("", None, usage, None)  # the usage-only chunk of stream_options.include_usage
    if not isinstance(choices, list) or not isinstance(choices[0], dict):
        raise DialectError("a completions chunk without choices")
    choice = choices[0]
    if "text" not in choice:
        if "delta" in choice or "message" in choice:
            raise DialectError("/v1/completions answered with chat chunks")
        raise DialectError("a completions choice without text")
    ids = choice.get("token_ids")
    ids = ids if isinstance(ids, list) and all(isinstance(i, int) for i in ids) else None
    return Chunk(choice.get("text") or "", choice.get("finish_reason"), usage, ids)


def completion_body(model: str | None, prompt: str, max_tokens: int, sampling: Sampling) -> dict:
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if model is not None:
        body["model"] = model
    # Common extensions (vLLM, SGLang, llama.cpp, mlx_lm.server); sent only when set.
    if sampling.top_k:
        body["top_k"] = sampling.top_k
    if sampling.min_p:
        body["min_p"] = sampling.min_p
    if sampling.repetition_penalty is not None:
        body["repetition_penalty"] = sampling.repetition_penalty
    if sampling.seed is not None:
        body["seed"] = sampling.seed
    return body


def _error_text(payload) -> str:
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error)
    if error:
        return str(error)  # mlx_lm.server: {"error": "message"}
    if isinstance(payload, dict) and payload.get("detail"):
        return str(payload["detail"])
    return json.dumps(payload)[:200]


def tokenizer_dir(spec: str | None) -> Path:
    """A local directory with the model's tokenizer and chat template.

    A directory or a model in the store is used as is; a hub id (or the z1-7b alias) uses
    its converted copy in the store if there is one, else fetches only the tokenizer
    files (a few MB, not the weights) into the Hugging Face cache.
    """
    from .convert.source import looks_like_hub_id, offline
    from .store import ALIASES, DEFAULT_MODEL, demo_model, find, list_models

    spec = spec or DEFAULT_MODEL
    if (local := demo_model(spec)) is not None:
        return local
    path = Path(spec).expanduser()
    if path.is_dir():
        directory = path.resolve()
    elif stored := find(spec):
        directory = stored.path
    else:
        repo = ALIASES.get(spec) or spec
        if not looks_like_hub_id(repo):
            raise Z1Error(f"unknown model {spec!r}: not a directory, a model in the store or a hub id (owner/name)")
        stored = next((m for m in list_models() if m.manifest and m.manifest.source == repo), None)
        if stored:
            directory = stored.path
        else:
            from huggingface_hub import snapshot_download

            try:
                directory = Path(snapshot_download(repo, allow_patterns=TOKENIZER_PATTERNS))
            except Exception as err:  # huggingface_hub raises many kinds; the user needs one line
                if offline():
                    raise ModelNotAvailable(
                        f"{repo}: its tokenizer is not in the Hugging Face cache and offline mode "
                        "is on (HF_HUB_OFFLINE=1)"
                    ) from err
                raise Z1Error(
                    f"{repo}: cannot fetch the tokenizer from the Hugging Face hub ({type(err).__name__})"
                ) from err
    if not any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        raise Z1Error(f"{directory}: no tokenizer files (tokenizer.json, tokenizer_config.json)")
    return directory


class _Transient(Exception):
    """A failure worth retrying; `error` is what the user sees if the retries run out."""

    def __init__(self, error: Z1Error, retry_after: str | None = None):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _retry_after(state) -> str | None:
    failure = state.outcome.exception() if state.outcome else None
    return getattr(failure, "retry_after", None)


class HttpClient:
    """An httpx client for one server: retries on connection errors, 429 and 5xx; one-line errors."""

    def __init__(self, client, base: str, retry: RetryPolicy = RetryPolicy(), sleep=time.sleep):
        self.client = client
        self.base = base
        self.retry = retry
        self._sleep = sleep

    def close(self) -> None:
        self.client.close()

    def send(self, method: str, path: str, body: dict | None = None, stream: bool = False):
        """One request, retried by tenacity on connection failures, 429 and 5xx."""
        from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

        retrying = Retrying(
            stop=stop_after_attempt(self.retry.retries + 1),
            retry=retry_if_exception_type(_Transient),
            wait=lambda state: self.retry.delay(state.attempt_number - 1, _retry_after(state)),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._send_once(method, path, body, stream)
        except _Transient as failure:
            raise failure.error from failure.__cause__
        raise AssertionError("unreachable")

    def _send_once(self, method: str, path: str, body: dict | None, stream: bool):
        import httpx

        try:
            request = self.client.build_request(method, path, json=body)
            response = self.client.send(request, stream=stream)
        except (httpx.ConnectError, httpx.ConnectTimeout) as err:
            reason = "connection refused" if "refused" in str(err).lower() else (str(err) or type(err).__name__)
            raise _Transient(Z1Error(f"cannot reach {self.base}: {reason} (is the server running?)")) from err
        except httpx.TimeoutException:
            raise Z1Error(f"{self.base} did not answer {method} {path} within the timeout") from None
        except httpx.HTTPError as err:
            raise Z1Error(f"{self.base}: {method} {path} failed: {type(err).__name__}: {err}") from err
        if response.status_code in RETRY_STATUSES:
            retry_after = response.headers.get("retry-after")
            raise _Transient(self._error(method, path, response), retry_after)
        if response.status_code >= 400:
            raise self._error(method, path, response)
        return response

    def _error(self, method: str, path: str, response) -> Z1Error:
        try:
            response.read()
            detail = _error_text(response.json())
        except Exception:  # not JSON, or the body broke off: show what there is
            detail = (response.text or response.reason_phrase or "")[:200].strip()
        finally:
            response.close()
        status = response.status_code
        if status in (401, 403):
            return Z1Error(
                f"{self.base} refused the API key ({status}: {detail}); pass --api-key or set $Z1MLX_API_KEY"
            )
        if status == 404 and path == "/v1/models":
            return DialectError(f"{self.base} does not speak the OpenAI API (GET /v1/models: 404)")
        if status in (404, 405) and path == "/v1/completions":
            return DialectError(
                f"{self.base} has no raw-prompt /v1/completions endpoint ({status}); the window needs "
                "one (vLLM, SGLang, llama.cpp's server and mlx_lm.server have it)"
            )
        if status in RETRY_STATUSES:
            return Z1Error(f"{self.base} kept failing ({status} after {self.retry.retries} retries): {detail}")
        return Z1Error(f"{self.base} refused {method} {path} ({status}): {detail}")


class RemoteConversation:
    """A stand-in for `ConversationCache`: the remote engine keeps its own prefix cache."""

    def __init__(self):
        self.tokens: list[int] = []

    def reset(self) -> None:
        self.tokens = []

    def reuse(self, prompt: list[int]) -> int:
        return 0


class RemoteEngine:
    """The shifted window over HTTP; `generate` yields the events `Engine.generate` yields."""

    def __init__(self, http: HttpClient, tokenizer, tokenizer_path: Path, served_model: str, name_model: bool):
        self.http = http
        self.base = http.base
        self.tokenizer = tokenizer
        self.model_path = Path(tokenizer_path)  # the tokenizer's directory (config.json, when present)
        self.served_model = served_model
        self.name_model = name_model  # False: requests leave out "model" (see pick_served_model)
        self.name = served_model.rstrip("/").rsplit("/", 1)[-1] if served_model.startswith("/") else served_model
        self.label = f"{self.name} at {self.base}"
        self.eos_token_ids = set(getattr(tokenizer, "eos_token_ids", None) or ())
        self._rendered: OrderedDict[tuple, str] = OrderedDict()  # prompt ids -> the exact text they came from
        self._lock = threading.Lock()

    @classmethod
    def connect(
        cls,
        url: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        served_model: str | None = None,
        retry: RetryPolicy = RetryPolicy(),
        transport=None,
        sleep=time.sleep,
    ) -> "RemoteEngine":
        """Check the server at `url` and load the tokenizer of `model` locally.

        `url` is the server's base (http://host:8000, with or without /v1); `#NAME` at its
        end (or `served_model`) picks one of several served models. `model` is any
        `--model` form and only provides the tokenizer and chat template. `timeout` is
        per connect/read, in seconds. Raises `Z1Error` with one line when the server is
        down, refuses the key, or does not speak the OpenAI API.
        """
        import httpx

        base, fragment = split_url(url)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        client = httpx.Client(
            base_url=base,
            headers=headers,
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
        )
        http = HttpClient(client, base, retry, sleep)
        try:
            response = http.send("GET", "/v1/models")
            listing = None  # mlx_lm.server answers 200 with no body when the HF cache directory is missing
            if response.content.strip():
                try:
                    listing = response.json()
                except ValueError:
                    raise DialectError(
                        f"{base} does not speak the OpenAI API: GET /v1/models did not return JSON"
                    ) from None
            path = tokenizer_dir(model)
            name, name_model = pick_served_model(listing, served_model or fragment, path.name, base)
            tokenizer = _load_tokenizer(path)
        except BaseException:
            http.close()
            raise
        return cls(http, tokenizer, path, name, name_model)

    def close(self) -> None:
        self.http.close()

    # Prompts, as Engine renders them

    def render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def chat_prompt(self, messages: list[dict], prefill: str = "") -> list[int]:
        text = self.render(messages) + prefill
        ids = self.encode(text)
        with self._lock:
            self._rendered[tuple(ids)] = text
            while len(self._rendered) > 32:
                self._rendered.popitem(last=False)
        return ids

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def batch(self, size: int, prompt_cache_size: int = 0):
        """`size` requests in flight at once: the server batches them (see `batch.ThreadBatch`)."""
        from .batch import ThreadBatch

        return ThreadBatch(self, size)

    def new_conversation_cache(self, pool: int = 0) -> RemoteConversation:
        return RemoteConversation()

    def _prompt_text(self, prompt: list[int]) -> str:
        with self._lock:
            text = self._rendered.get(tuple(prompt))
        return text if text is not None else self.decode(prompt)

    # Generation

    def generate(
        self,
        prompt: list[int],
        window: ShiftedWindow = ShiftedWindow(),
        sampling: Sampling = Sampling(),
        control: WindowControl | None = None,
        conversation: RemoteConversation | None = None,
    ) -> Events:
        """Generate a reply to `prompt` (token ids) under the shifted window, as events."""
        return drive(RemoteTokens(self, sampling), prompt, window, control, self.encode)


class RemoteTokens:
    """Completions requests as a token source (see `backend.TokenSource`).

    The context is text: each segment sends the prompt's text plus everything fed and
    generated so far, with `max_tokens` = the segment's limit, and streams the reply.
    Live counts are estimates (about one chunk per token); a segment's final count is
    exact when the server stopped it (its usage, or max_tokens).
    """

    exact_counts = False
    reports_prefill = False  # the server's prefill is not visible from here

    def __init__(self, engine: "RemoteEngine", sampling: Sampling):
        self.engine = engine
        self.sampling = sampling
        self.text = ""

    def begin(self, prompt: list[int]) -> int:
        self.text = self.engine._prompt_text(prompt)
        return 0

    def drop_end(self) -> None:
        pass  # the server drops the end token's text itself

    def peak_memory_gb(self) -> float:
        return 0.0

    def stream(
        self, feed_ids: list[int], feed_text: str, limit: int, should_stop: Callable[[int], str | None]
    ) -> Generator[Piece, None, Segment]:
        import httpx

        engine = self.engine
        self.text += feed_text
        body = completion_body(engine.served_model if engine.name_model else None, self.text, limit, self.sampling)
        response = engine.http.send("POST", "/v1/completions", body, stream=True)
        pieces: list[str] = []
        server_ids: list[int] = []
        have_ids, finish, usage, received, stopped = False, None, None, 0, False
        try:
            if "json" in response.headers.get("content-type", ""):
                response.read()  # a server that ignores stream=true answers in one piece
                payloads = iter([response.json()])
            elif "text/event-stream" in response.headers.get("content-type", ""):
                payloads = iter_events(response)
            else:
                raise DialectError(
                    f"{engine.base}: /v1/completions answered "
                    f"{response.headers.get('content-type')!r}, not an event stream"
                )
            for payload in payloads:
                chunk = read_chunk(payload)
                usage = chunk.usage or usage
                if chunk.token_ids is not None:
                    have_ids = True
                    server_ids.extend(chunk.token_ids)
                if chunk.text:
                    received = max(received + 1, len(server_ids))  # about one chunk per token
                    pieces.append(chunk.text)
                    yield Piece(chunk.text, list(chunk.token_ids or []), received)
                finish = chunk.finish_reason or finish
                if should_stop(received):
                    stopped = True
                    break
        except httpx.HTTPError as err:
            raise Z1Error(f"lost the connection to {engine.base} mid-reply ({type(err).__name__})") from err
        except ValueError as err:
            raise DialectError(f"{engine.base}: /v1/completions returned something else than JSON ({err})") from err
        finally:
            response.close()  # closing mid-stream makes the server stop generating
        text = "".join(pieces)
        self.text += text
        if not stopped and finish is None:
            raise DialectError(f"{engine.base}: the completion stream ended without a finish_reason")
        while have_ids and server_ids and server_ids[-1] in engine.eos_token_ids:
            server_ids.pop()
        ids = server_ids if have_ids else engine.encode(text)
        tokens = len(ids)
        if stopped:
            end = "stopped"
            tokens = received  # what streamed so far, as the live counts showed it
        elif finish == "length":
            end = "length"  # cut by its cap: the server's count is exact (and so is max_tokens)
            reported = (usage or {}).get("completion_tokens")
            tokens = reported if isinstance(reported, int) and 0 < reported <= limit else limit
        else:
            end = "stop"
        details = (usage or {}).get("prompt_tokens_details") or {}
        cached = details.get("cached_tokens") if isinstance(details, dict) else None
        return Segment(end, text, ids, tokens, cached if isinstance(cached, int) else 0)  # type: ignore[arg-type]


def _load_tokenizer(path: Path):
    """mlx-lm's tokenizer wrapper, as `Engine` loads it (chat template, eos ids)."""
    try:
        from mlx_lm.utils import load_tokenizer

        config = json.loads((path / "config.json").read_text()) if (path / "config.json").is_file() else {}
        eos = config.get("eos_token_id")
        return load_tokenizer(path, eos_token_ids=[eos] if isinstance(eos, int) else eos)
    except Exception as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise Z1Error(f"{path}: cannot load the tokenizer ({type(err).__name__}: {message})") from err
