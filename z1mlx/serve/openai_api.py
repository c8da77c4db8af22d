"""The OpenAI wire format for `z1 serve`: request parsing and validation, response shaping.

Pure: no I/O, no HTTP framework, no mlx. The server feeds engine events through a
`ReplyAssembler` and serializes what the functions here build.

Per request, on top of the usual fields:
- `thinking_budget` (or `max_thinking_tokens`): phase-1 tokens, 0 answers at once;
- `reasoning_effort`: none/low/medium/high = 0/1024/2048/4096 thinking tokens
  (an explicit budget wins);
- `max_tokens` (or `max_completion_tokens`): the answer cap after the window shifts;
- `thinking_hint`: the text appended when the window fills (default: Z1's hint);
- `min_thinking_tokens` (think longer): an end of turn before this many thinking tokens is
  replaced by `continue_text` (default "\\n\\nWait") and thinking goes on;
- `return_token_ids`: add the exact token ids of every part to the `z1` object.

What the reply fields mean (Z1 has no tags that separate thinking from answer):
- `reasoning_content` and `reasoning`: the text generated in the thinking window (phase 1).
- `content` (`text` for /v1/completions): the answer. When the window was hit, the text
  generated after the hint. When the model finished inside the window, its reply is the
  whole answer per the paper; `content` is then the part marked as the answer (from the
  last "Final answer"-style heading or code block, see `answer.split_reply`), else the
  whole reply, and the reasoning fields still carry all of phase 1.
- `usage.completion_tokens_details.reasoning_tokens`: phase-1 tokens (the paper's
  "thinking tokens"); `completion_tokens` = phase 1 + phase 2. The hint is fed to the
  model, not generated, and is counted in neither (see `z1.hint_tokens`).
"""

import json
from dataclasses import dataclass, field
from typing import Literal

from ..answer import split_reply
from ..events import Done, GenerationResult, Sampling, Shift, TextDelta
from ..window import CONTINUE_TEXT, DEFAULT_ANSWER_TOKENS, DEFAULT_BUDGET, HINT, MAX_BUDGET, ShiftedWindow

REASONING_EFFORT_BUDGETS = {"none": 0, "low": 1024, "medium": 2048, "high": 4096}
MAX_ANSWER_TOKENS = 32768
MAX_STOP_SEQUENCES = 4
MAX_HINT_CHARS = 1000

Kind = Literal["chat", "text"]

_COMMON = {
    "model",
    "stream",
    "stream_options",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "seed",
    "stop",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logprobs",
    "thinking_budget",
    "max_thinking_tokens",
    "reasoning_effort",
    "thinking_hint",
    "return_token_ids",
    "min_thinking_tokens",
    "continue_text",
}
# Accepted and ignored: bookkeeping fields that do not change the generation.
_IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls"}
# Features Z1 serve does not have: fine when absent, null or off, a 400 otherwise.
_UNSUPPORTED = {
    "tools": "tool calling",
    "tool_choice": "tool calling",
    "functions": "function calling",
    "function_call": "function calling",
    "response_format": "structured output",
    "logit_bias": "logit_bias",
    "top_logprobs": "logprobs",
    "audio": "audio",
    "modalities": "other modalities",
    "prediction": "predicted outputs",
    "echo": "echo",
    "suffix": "suffix (fill in the middle)",
    "best_of": "best_of",
    "web_search_options": "web search",
}
_CHAT_FIELDS = _COMMON | {"messages"}
_TEXT_FIELDS = _COMMON | {"prompt"}
_MESSAGE_KEYS = {"role", "content", "name", "reasoning_content", "reasoning"}
_ROLES = {"system", "developer", "user", "assistant"}


class APIError(Exception):
    """A request the server refuses, as OpenAI reports it: status code and JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def _bad(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


@dataclass(frozen=True)
class Defaults:
    """What a request gets for the fields it leaves out (set by `z1 serve` flags)."""

    budget: int = DEFAULT_BUDGET
    answer_tokens: int = DEFAULT_ANSWER_TOKENS
    temperature: float = 0.0  # greedy, as in the paper
    hint: str = HINT
    min_thinking: int = 0
    continue_text: str = CONTINUE_TEXT


@dataclass(frozen=True)
class CompletionRequest:
    kind: Kind
    window: ShiftedWindow
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False
    stop: tuple[str, ...] = ()
    return_token_ids: bool = False
    messages: list[dict] | None = None  # chat: rendered by the engine's chat template
    prefill: str = ""  # chat: a trailing assistant message is continued, not answered
    prompt_text: str | None = None  # text completions: a raw prompt, no template
    prompt_ids: list[int] | None = None  # text completions given as token ids


# Deeper than any real request; a body nested past it is refused before anything recurses.
MAX_JSON_DEPTH = 64


def _json_depth_ok(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether no array/object in `raw` nests deeper than `limit` (brackets inside strings skipped)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # the usual body: too few brackets to nest that deep
        return True
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def parse_json(raw: bytes) -> dict:
    if not _json_depth_ok(raw):
        raise _bad(f"The JSON body of your request nests deeper than {MAX_JSON_DEPTH} levels.", code="invalid_json")
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise _bad(f"We could not parse the JSON body of your request: {err}", code="invalid_json") from err
    if not isinstance(body, dict):
        raise _bad("The request body must be a JSON object.", code="invalid_json")
    try:  # a \ud800 escape decodes to a lone surrogate, which no UTF-8 output can carry
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as err:
        raise _bad(
            "The JSON body of your request holds a lone surrogate (an unpaired \\ud800-\\udfff escape), "
            "which is not text.",
            code="invalid_json",
        ) from err
    return body


# Field checks. bool is an int in Python; JSON true must not pass for a number.


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(body: dict, name: str, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise _bad(f"{name} must be an integer, got {json.dumps(value)}", name, "invalid_type")
    if not low <= value <= high:
        raise _bad(f"{name} must be between {low} and {high}, got {value}", name, "invalid_value")
    return value


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value):
        raise _bad(f"{name} must be a number, got {json.dumps(value)}", name, "invalid_type")
    if not low <= value <= high:
        raise _bad(f"{name} must be between {low} and {high}, got {value}", name, "invalid_value")
    return float(value)


def _bool(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"{name} must be true or false, got {json.dumps(value)}", name, "invalid_type")
    return value


def _one_of(body: dict, names: tuple[str, str], check) -> int | None:
    """Two names for one field (e.g. max_tokens and max_completion_tokens): equal if both given."""
    values = {name: check(body, name) for name in names}
    given = {name: v for name, v in values.items() if v is not None}
    if len(set(given.values())) > 1:
        raise _bad(f"{names[0]} and {names[1]} are the same setting and disagree ({given})", names[1], "invalid_value")
    return next(iter(given.values()), None)


def _neutral(name: str, value) -> bool:
    """An unsupported feature left off: null, false, empty, "none", or best_of 1."""
    if value is None or value is False or value == [] or value == {} or value == "none":
        return True
    return name == "best_of" and _is_int(value) and value == 1


def _check_fields(body: dict, allowed: set[str]) -> None:
    for name, value in body.items():
        if name in allowed or name in _IGNORED:
            continue
        if name in _UNSUPPORTED:
            if _neutral(name, value):
                continue
            raise _bad(f"{name} is not supported by z1 serve ({_UNSUPPORTED[name]})", name, "unsupported_parameter")
        raise _bad(f"Unrecognized request argument supplied: {name}", name, "unknown_parameter")


def _budget(body: dict, defaults: Defaults) -> int:
    budget = _one_of(body, ("thinking_budget", "max_thinking_tokens"), lambda b, n: _int(b, n, 0, MAX_BUDGET))
    effort = body.get("reasoning_effort")
    if effort is not None and (not isinstance(effort, str) or effort not in REASONING_EFFORT_BUDGETS):
        choices = ", ".join(REASONING_EFFORT_BUDGETS)
        raise _bad(
            f"reasoning_effort must be one of {choices}, got {json.dumps(effort)}", "reasoning_effort", "invalid_value"
        )
    if budget is not None:
        return budget
    if effort is not None:
        return REASONING_EFFORT_BUDGETS[effort]
    return defaults.budget


def _window(body: dict, defaults: Defaults) -> ShiftedWindow:
    answer = _one_of(body, ("max_tokens", "max_completion_tokens"), lambda b, n: _int(b, n, 1, MAX_ANSWER_TOKENS))
    hint = body.get("thinking_hint")
    if hint is not None and (not isinstance(hint, str) or not hint or len(hint) > MAX_HINT_CHARS):
        raise _bad(f"thinking_hint must be a non-empty string of at most {MAX_HINT_CHARS} characters", "thinking_hint")
    min_thinking = _int(body, "min_thinking_tokens", 0, MAX_BUDGET)
    continue_text = body.get("continue_text")
    if continue_text is not None and (
        not isinstance(continue_text, str) or not continue_text or len(continue_text) > MAX_HINT_CHARS
    ):
        raise _bad(f"continue_text must be a non-empty string of at most {MAX_HINT_CHARS} characters", "continue_text")
    return ShiftedWindow(
        _budget(body, defaults),
        answer or defaults.answer_tokens,
        hint or defaults.hint,
        defaults.min_thinking if min_thinking is None else min_thinking,
        continue_text or defaults.continue_text,
    )


def _sampling(body: dict, defaults: Defaults) -> Sampling:
    for name in ("presence_penalty", "frequency_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise _bad(f"{name} is not supported by z1 serve; use repetition_penalty", name, "unsupported_parameter")
    if body.get("n") not in (None, 1):
        raise _bad("n must be 1: z1 serve generates one choice per request", "n", "unsupported_parameter")
    if body.get("logprobs") not in (None, False, 0):
        raise _bad("logprobs is not supported by z1 serve", "logprobs", "unsupported_parameter")
    temperature = _number(body, "temperature", 0.0, 2.0)
    top_p = _number(body, "top_p", 0.0, 1.0)
    if top_p == 0.0:
        raise _bad("top_p must be greater than 0", "top_p", "invalid_value")
    repetition = _number(body, "repetition_penalty", 0.0, 10.0)
    if repetition is not None and repetition <= 0:
        raise _bad("repetition_penalty must be greater than 0", "repetition_penalty", "invalid_value")
    return Sampling(
        temperature=defaults.temperature if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=_int(body, "top_k", 0, 1_000_000) or 0,
        min_p=_number(body, "min_p", 0.0, 1.0) or 0.0,
        repetition_penalty=repetition,
        seed=_int(body, "seed", 0, 2**63 - 1),
    )


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if (
        not isinstance(stops, list)
        or not all(isinstance(s, str) and s for s in stops)
        or len(stops) > MAX_STOP_SEQUENCES
    ):
        raise _bad(f"stop must be a non-empty string or a list of up to {MAX_STOP_SEQUENCES} of them", "stop")
    return tuple(stops)


def _stream_options(body: dict, stream: bool) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not stream:
        raise _bad("stream_options is only allowed when stream is true", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise _bad('stream_options must be an object like {"include_usage": true}', "stream_options")
    return _bool(options, "include_usage")


def _common(body: dict, defaults: Defaults, kind: Kind) -> dict:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise _bad("model must be a string", "model", "invalid_type")
    stream = _bool(body, "stream")
    try:
        window = _window(body, defaults)
        sampling = _sampling(body, defaults)
    except ValueError as err:  # the dataclasses' own checks
        raise _bad(str(err)) from err
    return dict(
        kind=kind,
        window=window,
        sampling=sampling,
        stream=stream,
        include_usage=_stream_options(body, stream),
        stop=_stop(body),
        return_token_ids=_bool(body, "return_token_ids"),
    )


def _message_text(content, where: str) -> str:
    """Message content: a string, or a list of text parts (images and audio are refused)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise _bad(f"{where}: only text content parts are supported, got {kind!r}", where)
            texts.append(part["text"])
        return "".join(texts)
    raise _bad(f"{where} must be a string or a list of text parts", where, "invalid_type")


def parse_messages(messages) -> tuple[list[dict], str]:
    """Normalized (role, content) messages and the prefill: a trailing assistant message
    is a partial reply to continue (as the reference pre-fills a ```python fence)."""
    if not isinstance(messages, list) or not messages:
        raise _bad("messages must be a non-empty list", "messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _bad(f"{where} must be an object", where, "invalid_type")
        extra = sorted(set(message) - _MESSAGE_KEYS)
        if extra:
            name = f"{where}.{extra[0]}"
            raise _bad(f"{name} is not supported by z1 serve", name, "unsupported_parameter")
        role = message.get("role")
        if role not in _ROLES:
            roles = ", ".join(sorted(_ROLES))
            raise _bad(f"{where}.role must be one of {roles}, got {json.dumps(role)}", f"{where}.role")
        content = message.get("content")
        if content is None and role == "assistant":
            content = ""
        text = _message_text(content, f"{where}.content")
        out.append({"role": "system" if role == "developer" else role, "content": text})
    prefill = ""
    if out[-1]["role"] == "assistant":
        prefill = out.pop()["content"]
        if not out:
            raise _bad("messages must hold more than one assistant message", "messages")
    return out, prefill


def parse_chat(body: dict, defaults: Defaults = Defaults()) -> CompletionRequest:
    _check_fields(body, _CHAT_FIELDS)
    if "messages" not in body:
        raise _bad("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    messages, prefill = parse_messages(body["messages"])
    return CompletionRequest(**_common(body, defaults, "chat"), messages=messages, prefill=prefill)


def parse_completion(body: dict, defaults: Defaults = Defaults()) -> CompletionRequest:
    _check_fields(body, _TEXT_FIELDS)
    if "prompt" not in body:
        raise _bad("Missing required parameter: 'prompt'.", "prompt", "missing_required_parameter")
    prompt = body["prompt"]
    # The OpenAI shapes: "text", [ids], ["text"], [[ids]]; one prompt per request here.
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]
    fields = _common(body, defaults, "text")
    if isinstance(prompt, str):
        if not prompt:
            raise _bad("prompt must not be empty", "prompt")
        return CompletionRequest(**fields, prompt_text=prompt)
    if isinstance(prompt, list) and prompt and all(_is_int(t) and t >= 0 for t in prompt):
        return CompletionRequest(**fields, prompt_ids=list(prompt))
    if isinstance(prompt, list) and len(prompt) > 1 and all(isinstance(p, (str, list)) for p in prompt):
        raise _bad("one prompt per request: batched prompts are not supported", "prompt", "unsupported_parameter")
    raise _bad("prompt must be a non-empty string or a list of token ids", "prompt", "invalid_type")


# Stop sequences, applied to the text as it streams.


class StopMatcher:
    """Finds the first stop sequence in streamed text; holds back a tail that may start one."""

    def __init__(self, stops: tuple[str, ...]):
        self.stops = stops
        self.pending = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """The text that is safe to emit now."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self.pending += text
        found = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if found:
            out, self.pending, self.stopped = self.pending[: min(found)], "", True
            return out
        keep = 0
        for stop in self.stops:
            for size in range(min(len(stop) - 1, len(self.pending)), keep, -1):
                if self.pending.endswith(stop[:size]):
                    keep = size
                    break
        out = self.pending[: len(self.pending) - keep]
        self.pending = self.pending[len(self.pending) - keep :]
        return out

    def flush(self) -> str:
        out, self.pending = self.pending, ""
        return out


# Replies.


@dataclass
class Delta:
    field: Literal["reasoning", "content"]
    text: str


@dataclass
class Reply:
    reasoning: str
    content: str
    finish_reason: str  # "stop", "length", or "cancelled" (the server shut down mid-reply)
    prompt_tokens: int
    reasoning_tokens: int
    answer_tokens: int
    window_hit: bool
    shift_reason: str | None
    hint: str | None
    hint_tokens: int
    budget: int
    answer_cap: int
    token_ids: dict | None = None
    min_thinking: int = 0
    forced_continuations: int = 0

    @property
    def completion_tokens(self) -> int:
        return self.reasoning_tokens + self.answer_tokens

    def usage(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }

    def z1(self) -> dict:
        """The window's own account, under a `z1` key next to `usage`."""
        info = {
            "window_hit": self.window_hit,
            "shift_reason": self.shift_reason,
            "budget": self.budget,
            "answer_cap": self.answer_cap,
            "thinking_tokens": self.reasoning_tokens,
            "answer_tokens": self.answer_tokens,
            "hint": self.hint,
            "hint_tokens": self.hint_tokens,
            "min_thinking_tokens": self.min_thinking,
            "forced_continuations": self.forced_continuations,
        }
        if self.token_ids is not None:
            info.update(self.token_ids)
        return info


@dataclass
class ReplyAssembler:
    """Turns engine events into reasoning/content deltas and, at the end, the `Reply`.

    Streaming and non-streaming responses both go through it, so they always agree.
    After a stop sequence, `stopped` is set: the caller cancels the generation and keeps
    feeding events until `Done`; events after the stop are ignored.
    """

    request: CompletionRequest
    reply: Reply | None = None
    _matcher: StopMatcher = field(init=False)
    _texts: dict = field(init=False)
    _tokens: dict = field(init=False)
    _stopped_in: str | None = field(init=False, default=None)

    def __post_init__(self):
        self._matcher = StopMatcher(self.request.stop)
        self._texts = {"reasoning": "", "content": ""}
        self._tokens = {"reasoning": 0, "content": 0}

    @property
    def stopped(self) -> bool:
        return self._stopped_in is not None

    def _emit(self, name: Literal["reasoning", "content"], text: str) -> list[Delta]:
        if not text:
            return []
        self._texts[name] += text
        return [Delta(name, text)]

    def feed(self, event) -> list[Delta]:
        if isinstance(event, Done):
            return self._finish(event.result)
        if self.stopped:
            return []
        if isinstance(event, Shift):
            return self._emit("reasoning", self._matcher.flush())
        if isinstance(event, TextDelta):
            name: Literal["reasoning", "content"] = "reasoning" if event.phase == "thinking" else "content"
            out = self._emit(name, self._matcher.feed(event.text))
            self._tokens[name] = event.tokens
            if self._matcher.stopped:
                self._stopped_in = name
            return out
        return []

    def _finish(self, result: GenerationResult) -> list[Delta]:
        out = (
            []
            if self.stopped
            else self._emit("reasoning" if not result.window_hit else "content", self._matcher.flush())
        )
        shifted = result.window_hit and self._stopped_in != "reasoning"
        if not shifted and (self.stopped or result.finish_reason != "cancelled"):
            # Finished inside the window (or at a stop sequence there): the reply is the answer.
            # A reply cut off by the server's shutdown never got to one.
            out += self._emit("content", split_reply(self._texts["reasoning"])[1])
        if self.stopped:
            finish = "stop"
            reasoning_tokens = self._tokens["reasoning"] if self._stopped_in == "reasoning" else result.thinking_tokens
            answer_tokens = self._tokens["content"] if self._stopped_in == "content" else 0
        else:
            finish = result.finish_reason
            reasoning_tokens, answer_tokens = result.thinking_tokens, result.answer_tokens
        ids = None
        if self.request.return_token_ids:
            ids = {
                "prompt_token_ids": result.prompt_token_ids,
                "thinking_token_ids": result.thinking_token_ids,
                "hint_token_ids": result.hint_token_ids if shifted else [],
                "answer_token_ids": result.answer_token_ids if shifted else [],
            }
        self.reply = Reply(
            reasoning=self._texts["reasoning"],
            content=self._texts["content"],
            finish_reason=finish,
            prompt_tokens=result.prompt_tokens,
            reasoning_tokens=reasoning_tokens,
            answer_tokens=answer_tokens,
            window_hit=shifted,
            shift_reason=result.shift_reason if shifted else None,
            hint=result.hint if shifted else None,
            hint_tokens=len(result.hint_token_ids) if shifted else 0,
            budget=result.budget,
            answer_cap=result.answer_cap,
            token_ids=ids,
            min_thinking=result.min_thinking,
            forced_continuations=result.forced_continuations,
        )
        return out


# Response bodies.


@dataclass(frozen=True)
class ResponseShape:
    """Builds the JSON bodies of one response (chat or text completion, streamed or not)."""

    kind: Kind
    id: str
    created: int
    model: str

    def _envelope(self, object_name: str, choices: list) -> dict:
        return {"id": self.id, "object": object_name, "created": self.created, "model": self.model, "choices": choices}

    def completion(self, reply: Reply) -> dict:
        reasoning = reply.reasoning or None
        if self.kind == "chat":
            message = {
                "role": "assistant",
                "content": reply.content,
                "reasoning_content": reasoning,
                "reasoning": reasoning,
            }
            choice = {"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}
            body = self._envelope("chat.completion", [choice])
        else:
            choice = {
                "index": 0,
                "text": reply.content,
                "reasoning_content": reasoning,
                "reasoning": reasoning,
                "finish_reason": reply.finish_reason,
                "logprobs": None,
            }
            body = self._envelope("text_completion", [choice])
        body["usage"] = reply.usage()
        body["z1"] = reply.z1()
        return body

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> dict:
        if self.kind == "chat":
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            return self._envelope("chat.completion.chunk", [choice])
        choice = {
            "index": 0,
            "text": delta.pop("content", ""),
            **delta,
            "finish_reason": finish_reason,
            "logprobs": None,
        }
        return self._envelope("text_completion", [choice])

    def first_chunk(self) -> dict | None:
        return self._chunk({"role": "assistant", "content": ""}) if self.kind == "chat" else None

    def delta_chunk(self, delta: Delta) -> dict:
        if delta.field == "reasoning":
            return self._chunk({"reasoning_content": delta.text, "reasoning": delta.text})
        return self._chunk({"content": delta.text})

    def final_chunk(self, reply: Reply) -> dict:
        body = self._chunk({}, reply.finish_reason)
        body["z1"] = reply.z1()
        return body

    def usage_chunk(self, reply: Reply) -> dict:
        body = self._envelope("chat.completion.chunk" if self.kind == "chat" else "text_completion", [])
        body["usage"] = reply.usage()
        return body


def sse(body: dict) -> str:
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"
