"""`z1 serve` as clients use it: the real command on 127.0.0.1, the official `openai` client,
raw HTTP, concurrent clients, bad requests, disconnects, and a bounded load test."""

import json
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from openai import BadRequestError, OpenAI

from z1mlx.answer import split_reply
from z1mlx.events import Done, Sampling
from z1mlx.prompts import solve_messages
from z1mlx.window import HINT, ShiftedWindow

from helpers import greedy_reference, one_line_error, serve, z1

pytestmark = pytest.mark.slow  # real subprocesses, servers or training: see `make test-fast`

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server(tiny_model, session_home):
    with serve(tiny_model, env={"Z1MLX_HOME": str(session_home)}) as (url, _):
        yield url


ENDLESS_KEY = {"Authorization": "Bearer s3cret"}


@pytest.fixture(scope="module")
def endless_server(endless_model, session_home):
    """A model that never ends its turn; its server requires a key, set through the environment."""
    with serve(endless_model, env={"Z1MLX_HOME": str(session_home), "Z1MLX_SERVE_API_KEY": "s3cret"}) as (url, _):
        yield url


def client(url) -> OpenAI:
    return OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def expected(engine, prompt, budget, cap):
    events = list(engine.generate(prompt, ShiftedWindow(budget, cap), Sampling()))
    assert isinstance(events[-1], Done)
    return events[-1].result


def chat_once(url, messages, budget, cap, stream, **extra):
    """(reasoning, content, finish_reason, usage, z1) from the openai client, streamed or not."""
    body = {"thinking_budget": budget, "return_token_ids": True, **extra}
    if not stream:
        reply = client(url).chat.completions.create(model="z1", messages=messages, max_tokens=cap, extra_body=body)
        message = reply.choices[0].message
        assert message.reasoning == message.reasoning_content
        return message.reasoning_content or "", message.content, reply.choices[0].finish_reason, reply.usage, reply.z1
    chunks = client(url).chat.completions.create(
        model="z1",
        messages=messages,
        max_tokens=cap,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=body,
    )
    reasoning, mirror, content, finish, usage, info = "", "", "", None, None, None
    for chunk in chunks:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            extra_fields = choice.delta.model_extra or {}
            reasoning += extra_fields.get("reasoning_content") or ""
            mirror += extra_fields.get("reasoning") or ""
            content += choice.delta.content or ""
            finish = choice.finish_reason or finish
        info = getattr(chunk, "z1", None) or info
    assert mirror == reasoning
    return reasoning, content, finish, usage, info


def problems(engine, count=60):
    """Problem sources for `z1 solve`: one whose greedy reply ends within 30 tokens, one that runs past 40."""
    short = long = None
    for i in range(count):
        source = f'def f{i}(x):\n    """Return x plus {i * 3}."""\n'
        reply = greedy_reference(engine, engine.chat_prompt(solve_messages(source, "py")), 41)
        if short is None and 3 <= len(reply) < 30:
            short = source
        if long is None and len(reply) > 40:
            long = source
        if short and long:
            return short, long
    raise AssertionError("no suitable problems among the seeded candidates")


def test_same_greedy_tokens_as_z1_solve_json(server, engine, tiny_model, tmp_path):
    short, long = problems(engine)
    for source, budget, cap, hit in ((short, 40, 8, False), (long, 12, 6, True)):
        path = tmp_path / "problem.py"
        path.write_text(source)
        proc = z1("solve", path, "--model", tiny_model, "--budget", budget, "--answer-tokens", cap, "--json")
        assert proc.returncode == 0, proc.stderr
        solved = json.loads(proc.stdout)
        assert solved["window_hit"] is hit
        thinking = engine.tokenizer.decode(solved["thinking_token_ids"])
        answer = engine.tokenizer.decode(solved["answer_token_ids"])
        for stream in (False, True):
            messages = solve_messages(source, "py")
            reasoning, content, finish, usage, info = chat_once(server, messages, budget, cap, stream)
            assert reasoning == thinking
            assert usage.completion_tokens_details.reasoning_tokens == solved["thinking_tokens"]
            assert usage.prompt_tokens == solved["prompt_tokens"]
            assert usage.completion_tokens == solved["thinking_tokens"] + solved["answer_tokens"]
            assert info["window_hit"] is hit and info["thinking_tokens"] == solved["thinking_tokens"]
            assert finish == solved["finish_reason"]
            if hit:
                assert content == answer and info["hint"] == HINT and solved["thinking_tokens"] == budget
            else:
                assert content == split_reply(thinking)[1] and info["hint"] is None and solved["answer_tokens"] == 0
            if not stream:
                assert info["prompt_token_ids"] == solved["prompt_token_ids"]
                assert info["thinking_token_ids"] == solved["thinking_token_ids"]
                assert info["answer_token_ids"] == solved["answer_token_ids"]


def test_text_completions_raw_prompt_streaming_and_not(server, engine):
    prompt_text = "<|im_start|>user\nSort a list<|im_end|>\n<|im_start|>assistant\n"
    result = expected(engine, engine.encode(prompt_text), 6, 4)
    assert result.window_hit
    api = client(server)
    reply = api.completions.create(model="z1", prompt=prompt_text, max_tokens=4, extra_body={"thinking_budget": 6})
    choice = reply.choices[0]
    assert choice.text == result.answer_text and choice.reasoning_content == result.thinking_text
    assert reply.usage.completion_tokens_details.reasoning_tokens == 6
    text, reasoning = "", ""
    for chunk in api.completions.create(
        model="z1", prompt=prompt_text, max_tokens=4, stream=True, extra_body={"thinking_budget": 6}
    ):
        text += chunk.choices[0].text
        reasoning += (chunk.choices[0].model_extra or {}).get("reasoning_content") or ""
    assert (reasoning, text) == (result.thinking_text, result.answer_text)
    by_ids = httpx.post(
        f"{server}/v1/completions",
        json={"prompt": engine.encode(prompt_text), "max_tokens": 4, "thinking_budget": 6},
        timeout=60,
    ).json()
    assert by_ids["choices"][0]["text"] == result.answer_text


def test_eight_concurrent_clients_get_their_own_answers(server, engine):
    cases = []
    for i in range(8):
        messages = [{"role": "user", "content": f"Client {i}: what is {i} squared?"}]
        budget, cap = (5 + i, 4) if i % 2 else (60, 6)
        result = expected(engine, engine.chat_prompt(messages), budget, cap)
        reasoning_expected = result.thinking_text
        content_expected = result.answer_text if result.window_hit else split_reply(result.thinking_text)[1]
        cases.append((messages, budget, cap, i % 4 < 2, reasoning_expected, content_expected))
    outcomes = [None] * len(cases)
    barrier = threading.Barrier(len(cases))

    def run(index):
        messages, budget, cap, stream, *_ = cases[index]
        barrier.wait()
        try:
            outcomes[index] = chat_once(server, messages, budget, cap, stream)[:2]
        except Exception as err:  # surfaced by the assertion below
            outcomes[index] = err

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for case, outcome in zip(cases, outcomes):
        assert outcome == (case[4], case[5])
    assert len({outcome for outcome in outcomes}) == len(cases)
    health = httpx.get(f"{server}/health").json()
    assert health["running"] == 0 and health["queued"] == 0
    assert health["parallel"] == 8 and health["peak_batch"] > 1  # generated side by side, one batch


def test_stop_sequence_cuts_the_reply(server, engine):
    messages = [{"role": "user", "content": "Client stop: count"}]
    result = expected(engine, engine.chat_prompt(messages), 30, 4)
    text = result.thinking_text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    reply = httpx.post(
        f"{server}/v1/chat/completions",
        json={"messages": messages, "thinking_budget": 30, "max_tokens": 4, "stop": stop},
        timeout=60,
    ).json()
    choice = reply["choices"][0]
    assert choice["message"]["reasoning_content"] == text[: text.index(stop)]
    assert choice["finish_reason"] == "stop" and not reply["z1"]["window_hit"]


def test_models_and_health(server):
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["tiny-f32"] and models.data[0].owned_by == "z1-mlx"
    assert httpx.get(f"{server}/v1/models/tiny-f32").json()["id"] == "tiny-f32"
    assert httpx.get(f"{server}/v1/models/other").status_code == 404
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    post = lambda path, **kw: httpx.post(f"{server}{path}", timeout=60, **kw)
    user = [{"role": "user", "content": "hi"}]
    cases = [
        (post("/v1/chat/completions", content=b"{not json"), 400, "invalid_json"),
        (post("/v1/chat/completions", content=b"[1]"), 400, "invalid_json"),
        (post("/v1/chat/completions", json={"messages": user, "bogus": 1}), 400, "unknown_parameter"),
        (post("/v1/chat/completions", json={"messages": user, "thinking_budget": -1}), 400, "invalid_value"),
        (post("/v1/completions", json={"prompt": "x", "max_thinking_tokens": -7}), 400, "invalid_value"),
        (post("/v1/chat/completions", json={"messages": user, "reasoning_effort": "max"}), 400, "invalid_value"),
        (
            post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "word " * 5000}]}),
            400,
            "context_length_exceeded",
        ),
        (post("/v1/completions", json={"prompt": [1, 2, 10**6]}), 400, "invalid_value"),
        (post("/v1/chat/completions", content=b"x" * (5 * 1024 * 1024)), 413, "request_too_large"),
        (post("/v1/chat/completions", json={"messages": []}), 400, None),
        (httpx.get(f"{server}/v1/chat/completions"), 405, "method_not_allowed"),
        (httpx.get(f"{server}/v2/nothing"), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert error["message"] and error["type"] and error["code"] == code
    with pytest.raises(BadRequestError) as info:
        client(server).chat.completions.create(model="z1", messages=user, extra_body={"thinking_budget": -3})
    assert info.value.status_code == 400 and "thinking_budget" in str(info.value)
    ok = post("/v1/chat/completions", json={"messages": user, "thinking_budget": 2, "max_tokens": 2})
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens_details"]["reasoning_tokens"] <= 2


def wait_idle(url, timeout=15.0):
    """/health needs no key."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = httpx.get(f"{url}/health").json()
        if health["running"] == 0 and health["queued"] == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the engine is still busy: {health}")


def test_disconnecting_clients_free_the_engine(endless_server):
    body = {"messages": [{"role": "user", "content": "go on forever"}], "thinking_budget": 32768}
    # A streaming client that reads a little and hangs up: its generation would run for minutes.
    with httpx.stream(
        "POST", f"{endless_server}/v1/chat/completions", json={**body, "stream": True}, timeout=60, headers=ENDLESS_KEY
    ) as r:
        lines = r.iter_lines()
        assert sum(1 for line, _ in zip(lines, range(6)) if line.startswith("data: ")) >= 3
        assert httpx.get(f"{endless_server}/health").json()["running"] == 1
    wait_idle(endless_server)
    # Non-streaming clients that give up: one while generating, one while queued behind it.
    outcomes = []

    def give_up(read_timeout):
        try:
            httpx.post(
                f"{endless_server}/v1/chat/completions",
                json=body,
                headers=ENDLESS_KEY,
                timeout=httpx.Timeout(10, read=read_timeout),
            )
            outcomes.append("answered")
        except httpx.ReadTimeout:
            outcomes.append("gave up")

    running = threading.Thread(target=give_up, args=(3,))
    running.start()
    time.sleep(0.5)
    give_up(1)  # queued behind the first, leaves first
    running.join(timeout=30)
    assert outcomes == ["gave up", "gave up"]
    wait_idle(endless_server)
    small = {**body, "thinking_budget": 3, "max_tokens": 2}
    assert httpx.post(f"{endless_server}/v1/chat/completions", json=small).status_code == 401
    done = httpx.post(f"{endless_server}/v1/chat/completions", timeout=60, json=small, headers=ENDLESS_KEY).json()
    assert done["usage"]["completion_tokens"] == 5 and done["z1"]["window_hit"]


def test_api_key_is_checked(engine):
    from starlette.testclient import TestClient

    from z1mlx.serve.app import ServeConfig, create_app

    with TestClient(create_app(engine, ServeConfig(api_key="s3cret"))) as http:
        body = {"messages": [{"role": "user", "content": "hi"}], "thinking_budget": 1, "max_tokens": 1}
        assert http.post("/v1/chat/completions", json=body).status_code == 401
        wrong = http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert http.get("/v1/models").status_code == 401
        assert http.get("/health").status_code == 200  # for load balancers: no key
        ok = http.post("/v1/chat/completions", json=body, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["z1"]["budget"] == 1


def test_a_taken_port_is_a_one_line_error(tiny_model):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        proc = z1("serve", "--model", tiny_model, "--port", taken.getsockname()[1], timeout=60)
    assert proc.returncode == 2 and "cannot listen on 127.0.0.1" in one_line_error(proc)


def test_help_has_worked_examples_and_no_ui_imports():
    proc = z1("serve", "--help")
    assert proc.returncode == 0
    for text in (
        "z1 serve --model demo",
        "curl -s http://127.0.0.1:8080/v1/chat/completions",
        "from openai import",
        "reasoning_effort",
        "none=0, low=1024",
        "--backend",
        "--api-key",
    ):
        assert text in proc.stdout
    check = (
        "import sys, z1mlx.serve.command, z1mlx.serve.openai_api, z1mlx.remote; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'textual', 'rich', 'mlx'}))"
    )
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr


def test_load_from_a_second_process(server):
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_serve.py"),
            "--url",
            server,
            "--requests",
            "200",
            "--concurrency",
            "8",
            "--budget",
            "12",
            "--answer-tokens",
            "6",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    print("load test:", summary)
    assert summary["errors"] == 0 and summary["requests"] == 200
    assert summary["latency_s"]["p50"] <= summary["latency_s"]["p99"]


def test_a_long_prompt_shrinks_the_window_to_fit_the_context(server):
    """The tiny model has 4096 positions: prompt + thinking + hint + answer must fit."""
    prompt = [10 + i % 500 for i in range(4070)]  # ids inside the tiny vocabulary
    reply = httpx.post(
        f"{server}/v1/completions", timeout=120, json={"prompt": prompt, "thinking_budget": 200, "max_tokens": 8}
    ).json()
    usage = reply["usage"]
    assert usage["prompt_tokens"] == 4070
    assert usage["prompt_tokens"] + usage["completion_tokens"] + reply["z1"]["hint_tokens"] <= 4096
    assert reply["z1"]["budget"] < 200
