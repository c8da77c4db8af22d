"""The window on a remote engine: against a real `mlx_lm.server` on 127.0.0.1 running the
tiny model, and against scripted HTTP for retries, errors and other dialects."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from z1mlx.errors import ModelNotAvailable, Z1Error
from z1mlx.events import Done, Sampling, Shift, TextDelta
from z1mlx.prompts import solve_messages
from z1mlx.remote import (
    DialectError,
    RemoteEngine,
    RetryPolicy,
    completion_body,
    iter_events,
    pick_served_model,
    read_chunk,
    split_url,
    tokenizer_dir,
)
from z1mlx.window import HINT, ShiftedWindow, WindowControl

from helpers import find_prompt, greedy_reference, one_line_error, serve, stop, wait_healthy, z1

# Pure pieces


def test_split_url():
    assert split_url("http://gpu:8000") == ("http://gpu:8000", None)
    assert split_url("http://gpu:8000/v1/") == ("http://gpu:8000", None)
    assert split_url("https://host/api/v1/completions") == ("https://host/api", None)
    assert split_url("http://gpu:8000#Z1-7B") == ("http://gpu:8000", "Z1-7B")
    for bad in ("gpu:8000", "ftp://x", "", "http://"):
        with pytest.raises(Z1Error, match="expected an http"):
            split_url(bad)


def test_pick_served_model():
    vllm = {"data": [{"id": "efficientscaling/Z1-7B", "owned_by": "vllm"}]}
    assert pick_served_model(vllm, None, "Z1-7B", "B") == ("efficientscaling/Z1-7B", True)
    mlx = {"data": [{"id": "mlx-community/other"}, {"id": "/models/z1"}]}
    assert pick_served_model(mlx, None, "something", "B") == ("/models/z1", False)  # mlx_lm: leave "model" out
    two = {"data": [{"id": "a", "owned_by": "vllm"}, {"id": "b", "owned_by": "vllm"}]}
    with pytest.raises(Z1Error, match="several models"):
        pick_served_model(two, None, "z1", "B")
    assert pick_served_model(two, "b", "z1", "B") == ("b", True)
    with pytest.raises(Z1Error, match="does not serve 'c'"):
        pick_served_model(two, "c", "z1", "B")
    with pytest.raises(Z1Error, match="applies the window itself"):
        pick_served_model({"data": [{"id": "tiny", "owned_by": "z1-mlx"}]}, None, "tiny", "B")
    with pytest.raises(DialectError):
        pick_served_model({"models": []}, None, "z1", "B")
    assert pick_served_model(None, None, "z1", "B") == ("z1", False)  # mlx_lm.server's empty 200


def event_stream(lines: list[str]) -> httpx.Response:
    body = "".join(line + "\n" for line in lines).encode()
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)


def test_sse_and_chunks():
    lines = [
        ": keepalive 1/1",
        "",
        'data: {"choices": [{"text": "a", "finish_reason": null}]}',
        "",
        'data: {"choices": [{"text": "", "finish_reason": "length"}]}',
        "",
        "event: ping",
        "",
        'data: {"choices": [], "usage": {"completion_tokens": 2}}',
        "",
        "data: [DONE]",
        "",
        "data: never read",
        "",
    ]
    chunks = [read_chunk(p) for p in iter_events(event_stream(lines))]
    assert [(c.text, c.finish_reason) for c in chunks] == [("a", None), ("", "length"), ("", None)]
    assert chunks[-1].usage == {"completion_tokens": 2}
    assert read_chunk({"choices": [{"text": "x", "token_ids": [5, 6]}]}).token_ids == [5, 6]
    with pytest.raises(DialectError, match="chat chunks"):
        read_chunk({"choices": [{"delta": {"content": "x"}}]})
    assert list(iter_events(event_stream(["<html>", ""]))) == []  # no events: the caller finds no finish
    with pytest.raises(DialectError, match="not JSON"):
        list(iter_events(event_stream(["data: {oops", ""])))
    with pytest.raises(Z1Error, match="overloaded"):
        read_chunk({"error": {"message": "overloaded"}})


def test_request_body_and_backoff():
    body = completion_body("m", "p", 7, Sampling())
    assert body == {
        "prompt": "p",
        "max_tokens": 7,
        "temperature": 0.0,
        "top_p": 1.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "model": "m",
    }
    extra = completion_body(None, "p", 7, Sampling(0.5, 0.9, 20, 0.1, 1.2, 4))
    assert "model" not in extra and (extra["top_k"], extra["min_p"], extra["repetition_penalty"], extra["seed"]) == (
        20,
        0.1,
        1.2,
        4,
    )
    policy = RetryPolicy(retries=3, base_delay=0.5, max_delay=2.0)
    assert [policy.delay(a) for a in range(4)] == [0.5, 1.0, 2.0, 2.0]
    assert policy.delay(0, "3") == 3.0 and policy.delay(0, "Wed, 21 Oct 2015 07:28:00 GMT") == 0.5


def test_the_tokenizer_comes_from_a_directory_the_store_or_the_hub(tiny_model, tmp_path):
    assert tokenizer_dir(str(tiny_model)) == tiny_model.resolve()
    with pytest.raises(ModelNotAvailable, match="offline mode is on"):  # conftest sets HF_HUB_OFFLINE=1
        tokenizer_dir("nobody/not-cached-anywhere")
    with pytest.raises(Z1Error, match="unknown model"):
        tokenizer_dir("no-such-model")
    with pytest.raises(Z1Error, match="no tokenizer files"):
        tokenizer_dir(str(tmp_path))


# Scripted servers (httpx.MockTransport): the HTTP conversation, exactly


def sse_body(*texts, finish="length", usage=None):
    events = [{"choices": [{"text": t, "finish_reason": None}]} for t in texts]
    events.append({"choices": [{"text": "", "finish_reason": finish}]})
    if usage:
        events.append({"choices": [], "usage": usage})
    return "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"


MODELS = {"object": "list", "data": [{"id": "z1", "object": "model", "owned_by": "vllm"}]}


class Script:
    """A fake server: answers GET /v1/models, then POSTs from a list of responses; records requests."""

    def __init__(self, *posts, models=MODELS):
        self.posts = list(posts)
        self.models = models
        self.requests = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.method == "GET":
            return self.models if isinstance(self.models, httpx.Response) else httpx.Response(200, json=self.models)
        response = self.posts.pop(0)
        if isinstance(response, str):
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=response.encode())
        return response

    @property
    def bodies(self):
        return [json.loads(r.content) for r in self.requests if r.method == "POST"]


def connect(script, tiny_model, **kwargs):
    sleeps = []
    engine = RemoteEngine.connect(
        "http://fake:1",
        model=str(tiny_model),
        api_key="k",
        transport=httpx.MockTransport(script),
        sleep=sleeps.append,
        retry=RetryPolicy(retries=2),
        **kwargs,
    )
    return engine, sleeps


def run(engine, prompt, window, control=None):
    events = list(engine.generate(prompt, window, Sampling(), control=control))
    assert isinstance(events[-1], Done)
    return events, events[-1].result


def test_phases_on_the_wire_as_the_reference_sends_them(tiny_model):
    script = Script(sse_body("think", "ing", usage={"completion_tokens": 5}), sse_body("42", finish="stop"))
    engine, _ = connect(script, tiny_model)
    prompt = engine.chat_prompt([{"role": "user", "content": "hi"}])
    text = engine.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    events, result = run(engine, prompt, ShiftedWindow(5, 9))
    first, second = script.bodies
    assert first["prompt"] == text and first["max_tokens"] == 5 and first["stream"] and first["model"] == "z1"
    assert second["prompt"] == text + "thinking" + HINT and second["max_tokens"] == 9
    assert script.requests[0].headers["authorization"] == "Bearer k"
    assert [type(e).__name__ for e in events] == ["TextDelta", "TextDelta", "Shift", "TextDelta", "Done"]
    assert result.window_hit and result.thinking_tokens == 5 and result.thinking_text == "thinking"
    assert result.answer_text == "42" and result.finish_reason == "stop" and result.hint == HINT
    assert result.answer_token_ids == engine.encode("42") and result.hint_token_ids == engine.encode(HINT)
    assert result.prompt_token_ids == prompt


def test_ends_inside_the_window_is_one_request(tiny_model):
    script = Script(sse_body("done", finish="stop"))
    engine, _ = connect(script, tiny_model)
    _, result = run(engine, engine.encode("x"), ShiftedWindow(50, 9))
    assert len(script.bodies) == 1 and not result.window_hit and result.finish_reason == "stop"
    assert result.thinking_text == "done" and result.thinking_tokens == len(engine.encode("done"))


def test_budget_zero_sends_only_the_answer_request(tiny_model):
    script = Script(sse_body("a", finish="length"))
    engine, _ = connect(script, tiny_model)
    _, result = run(engine, engine.encode("x"), ShiftedWindow(0, 3))
    assert [b["max_tokens"] for b in script.bodies] == [3] and script.bodies[0]["prompt"] == "x" + HINT
    assert result.window_hit and result.thinking_tokens == 0 and result.answer_tokens == 3


def test_answer_now_and_cancel_end_the_stream(tiny_model):
    script = Script(sse_body("a", "b", "c", "d"), sse_body("x", finish="stop"))
    engine, _ = connect(script, tiny_model)
    control = WindowControl(100)
    events = []
    for event in engine.generate(engine.encode("p"), ShiftedWindow(100, 5), Sampling(), control=control):
        events.append(event)
        if isinstance(event, TextDelta) and event.text == "b":
            control.answer_now()
    result = events[-1].result
    assert result.thinking_text == "ab" and result.shift_reason == "answer_now" and result.answer_text == "x"
    assert script.bodies[1]["prompt"] == "pab" + HINT

    script = Script(sse_body("a", "b", "c"))
    engine, _ = connect(script, tiny_model)
    control = WindowControl(100)
    for event in engine.generate(engine.encode("p"), ShiftedWindow(100, 5), Sampling(), control=control):
        if isinstance(event, TextDelta):
            control.cancel()
    assert event.result.finish_reason == "cancelled" and event.result.thinking_text == "a"
    assert len(script.bodies) == 1


def test_a_budget_raised_mid_stream_thinks_on(tiny_model):
    script = Script(sse_body("ab"), sse_body("cd"), sse_body("x", finish="stop"))
    engine, _ = connect(script, tiny_model)
    control = WindowControl(4)
    for event in engine.generate(engine.encode("p"), ShiftedWindow(4, 5), Sampling(), control=control):
        if isinstance(event, TextDelta) and event.text == "ab":
            control.set_budget(6)
    assert [b["max_tokens"] for b in script.bodies] == [4, 2, 5]
    assert script.bodies[1]["prompt"] == "pab" and event.result.thinking_tokens == 6


def test_think_longer_sends_the_continuation_after_an_early_end(tiny_model):
    """min-thinking on a remote engine: the early end is replaced by the continuation text,
    phase 1 goes on in a new request from the partial text, as the local engine does."""
    script = Script(sse_body("ab", finish="stop"), sse_body("cdefghij", finish="stop"))
    engine, _ = connect(script, tiny_model)
    window = ShiftedWindow(100, 5, min_thinking=3, continue_text=" Wait")
    _, result = run(engine, engine.encode("p"), window)
    assert [b["prompt"] for b in script.bodies] == ["p", "pab Wait"]
    assert [b["max_tokens"] for b in script.bodies] == [100, 100 - len(engine.encode("ab Wait"))]
    assert result.thinking_text == "ab Waitcdefghij" and result.finish_reason == "stop"
    assert result.forced_continuations == 1 and result.forced_tokens == len(engine.encode(" Wait"))
    assert not result.window_hit


def test_retries_on_429_and_5xx_with_backoff(tiny_model):
    script = Script(
        httpx.Response(429, headers={"retry-after": "2"}), httpx.Response(503), sse_body("ok", finish="stop")
    )
    engine, sleeps = connect(script, tiny_model)
    _, result = run(engine, engine.encode("p"), ShiftedWindow(8, 2))
    assert result.thinking_text == "ok" and sleeps == [2.0, 1.0]

    script = Script(*[httpx.Response(502, json={"error": {"message": "bad gateway"}})] * 3)
    engine, sleeps = connect(script, tiny_model)
    with pytest.raises(Z1Error, match=r"kept failing \(502 after 2 retries\): bad gateway"):
        run(engine, engine.encode("p"), ShiftedWindow(8, 2))
    assert len(sleeps) == 2


@pytest.mark.parametrize(
    "models, posts, message",
    [
        (httpx.Response(404, text="Not Found"), [], "does not speak the OpenAI API"),
        (httpx.Response(200, text="<html>hello</html>"), [], "did not return JSON"),
        (httpx.Response(401, json={"error": {"message": "Invalid key"}}), [], "refused the API key"),
        (MODELS, [httpx.Response(404, text="nope")], "no raw-prompt /v1/completions"),
        (MODELS, [httpx.Response(200, headers={"content-type": "text/html"}, text="<html>")], "not an event stream"),
        (
            MODELS,
            [httpx.Response(400, json={"error": "max_tokens must be at least 1"})],
            "max_tokens must be at least 1",
        ),
        (MODELS, ['data: {"choices": [{"delta": {"content": "x"}}]}\n\n'], "chat chunks"),
        (MODELS, ['data: {"choices": [{"text": "x"}]}\n\n'], "without a finish_reason"),
    ],
)
def test_other_dialects_and_refusals_are_one_line_errors(tiny_model, models, posts, message):
    with pytest.raises(Z1Error, match=message) as info:
        engine, _ = connect(Script(*posts, models=models), tiny_model)
        run(engine, engine.encode("p"), ShiftedWindow(4, 2))
    assert "\n" not in str(info.value)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_a_server_that_is_down(tiny_model):
    start = time.monotonic()
    with pytest.raises(Z1Error, match=r"cannot reach http://127.0.0.1:\d+: connection refused \(is the server"):
        RemoteEngine.connect(
            f"http://127.0.0.1:{free_port()}", model=str(tiny_model), retry=RetryPolicy(retries=1, base_delay=0.01)
        )
    assert time.monotonic() - start < 10
    proc = z1("solve", "-", "--model", tiny_model, "--backend", f"http://127.0.0.1:{free_port()}", input="2+2?")
    assert proc.returncode == 2 and "connection refused" in one_line_error(proc)


# A real mlx_lm.server with the tiny model


@pytest.fixture(scope="module")
def mlx_server(tiny_model, tmp_path_factory):
    port = free_port()
    cache = tmp_path_factory.mktemp("hf-cache")  # mlx_lm.server's /v1/models needs an existing HF cache
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlx_lm",
            "server",
            "--model",
            str(tiny_model),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, time.monotonic() + 90, lambda: "mlx_lm.server did not start")
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def remote(mlx_server, tiny_model):
    engine = RemoteEngine.connect(mlx_server, model=str(tiny_model))
    yield engine
    engine.close()


def leading_space(engine, ids) -> bool:
    return bool(ids) and engine.tokenizer.decode(ids[:1]).startswith(" ")


def text_path_is_exact(engine, result) -> bool:
    """Whether text re-sent to a server tokenizes back to the ids the engine used, and no
    phase starts with a space (mlx_lm.server drops it): then remote == in-process, token for token."""
    encode = engine.encode
    prompt_text = engine.tokenizer.decode(result.prompt_token_ids)
    parts = [(result.thinking_token_ids, result.thinking_text)]
    if result.window_hit:
        parts.append((result.answer_token_ids, result.answer_text))
        joined = encode(prompt_text + result.thinking_text + result.hint)
        if joined != result.prompt_token_ids + result.thinking_token_ids + result.hint_token_ids:
            return False
    return all(encode(text) == ids and not leading_space(engine, ids) for ids, text in parts)


def exact_case(engine, window, hit: bool):
    for i in range(200):
        prompt = engine.chat_prompt([{"role": "user", "content": f"Task {i}: {'abcdefghij'[i % 10]} {i * 13}"}])
        result = list(engine.generate(prompt, window))[-1].result
        if result.window_hit == hit and text_path_is_exact(engine, result):
            return prompt, result
    raise AssertionError("no candidate prompt with an exact text path")


@pytest.mark.slow
@pytest.mark.parametrize("window, hit", [(ShiftedWindow(40, 8), False), (ShiftedWindow(4, 6), True)])
def test_same_greedy_tokens_as_the_in_process_engine(remote, engine, window, hit):
    prompt, local = exact_case(engine, window, hit)
    events, result = run(remote, prompt, window)
    for name in (
        "window_hit",
        "finish_reason",
        "thinking_tokens",
        "answer_tokens",
        "thinking_text",
        "answer_text",
        "prompt_token_ids",
        "thinking_token_ids",
        "hint_token_ids",
        "answer_token_ids",
        "hint",
    ):
        assert getattr(result, name) == getattr(local, name), name
    assert result.window_hit is hit
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == result.thinking_text + result.answer_text
    assert sum(isinstance(e, Shift) for e in events) == int(hit)


@pytest.mark.slow
def test_window_hit_phase_two_is_the_reference_re_tokenized_request(remote, engine):
    """Any prompt: phase 1 is the engine's greedy text; phase 2 is exactly greedy decoding of
    prompt + partial text + hint re-tokenized, as the reference sends it (its leading space
    dropped by mlx_lm.server), which may differ from the in-cache continuation."""
    prompt, reference = find_prompt(engine, longer_than=30)
    window = ShiftedWindow(12, 6)
    _, result = run(remote, prompt, window)
    local = list(engine.generate(prompt, window))[-1].result
    assert result.window_hit and result.thinking_tokens == 12 and result.finish_reason == local.finish_reason
    assert result.thinking_text == local.thinking_text.removeprefix(" ")
    resent = engine.encode(engine.tokenizer.decode(prompt) + result.thinking_text + HINT)
    answer = greedy_reference(engine, resent, 6)
    assert result.answer_text == engine.tokenizer.decode(answer).removeprefix(" ")
    assert result.answer_tokens == len(answer) == 6


@pytest.mark.slow
def test_live_controls_against_the_server(remote, engine):
    prompt, _ = find_prompt(engine, longer_than=40)
    control = WindowControl(200)
    events = []
    for event in remote.generate(prompt, ShiftedWindow(200, 3), Sampling(), control=control):
        events.append(event)
        if isinstance(event, TextDelta) and event.tokens >= 3:
            control.answer_now()
    result = events[-1].result
    assert result.shift_reason == "answer_now" and 3 <= result.thinking_tokens < 40 and result.answer_tokens == 3
    # The server is free again at once.
    _, again = run(remote, prompt, ShiftedWindow(2, 2))
    assert again.thinking_tokens == 2 and again.answer_tokens == 2


@pytest.mark.slow
def test_z1_solve_and_z1_serve_with_backend(mlx_server, remote, tiny_model, tmp_path, session_home):
    source = 'def double(x):\n    """Return 2 * x."""\n'
    (tmp_path / "p.py").write_text(source)
    window = ShiftedWindow(10, 5)
    prompt = remote.chat_prompt(solve_messages(source, "py"))
    _, direct = run(remote, prompt, window)
    proc = z1(
        "solve",
        tmp_path / "p.py",
        "--model",
        tiny_model,
        "--backend",
        mlx_server,
        "--budget",
        10,
        "--answer-tokens",
        5,
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    solved = json.loads(proc.stdout)
    assert solved["model"] == "tiny-f32" and solved["window_hit"] == direct.window_hit
    assert solved["thinking_tokens"] == direct.thinking_tokens == 10
    assert solved["answer_token_ids"] == direct.answer_token_ids and solved["prompt_token_ids"] == prompt
    with serve(tiny_model, "--backend", mlx_server, env={"Z1MLX_HOME": str(session_home)}) as (url, _):
        body = {"messages": solve_messages(source, "py"), "thinking_budget": 10, "max_tokens": 5}
        reply = httpx.post(f"{url}/v1/chat/completions", timeout=60, json=body).json()
    message = reply["choices"][0]["message"]
    assert message["reasoning_content"] == direct.thinking_text and message["content"] == direct.answer_text
    assert reply["usage"]["completion_tokens_details"]["reasoning_tokens"] == 10


@pytest.mark.slow
def test_z1_chat_plain_with_backend(mlx_server, remote, tiny_model):
    """The chat front ends take --backend too: the REPL's reply is the remote window's."""
    from z1mlx.chat.conversation import Conversation

    conversation = Conversation(remote, None, answer_tokens=4)
    direct = None
    for event in conversation.send("Say hi.", WindowControl(6)):
        direct = getattr(event, "result", direct)
    proc = z1(
        "chat",
        "--plain",
        "--model",
        tiny_model,
        "--backend",
        mlx_server,
        "--budget",
        6,
        "--answer-tokens",
        4,
        input="Say hi.\n/quit\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert direct.window_hit and direct.thinking_tokens == 6 and direct.answer_tokens == 4
    assert "thinking 6/6 · answer 4 · window hit" in proc.stdout
    assert direct.thinking_text in proc.stdout
