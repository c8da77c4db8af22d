"""`z1 serve` against hostile bodies: nested past any parser's recursion, lone surrogates in a
value or a field name, clients that hang up mid-body. Each gets an OpenAI-style 4xx (or one
log line), and the server keeps serving."""

import socket
import time
from urllib.parse import urlparse

import httpx
import pytest

from z1mlx.serve.openai_api import MAX_JSON_DEPTH, parse_json

from helpers import serve

pytestmark = pytest.mark.slow

USER = b'[{"role": "user", "content": "hi"}]'


@pytest.fixture(scope="module")
def server(tiny_model, session_home):
    with serve(tiny_model, env={"Z1MLX_HOME": str(session_home)}) as (url, log):
        yield url, log


def post(url: str, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", content=body, headers={"Content-Type": "application/json"}, timeout=120
    )


def assert_error(response: httpx.Response, status: int, code: str, fragment: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error" and fragment in error["message"]


def assert_serving(url: str) -> None:
    ok = post(url, b'{"messages": ' + USER + b', "max_tokens": 2, "thinking_budget": 2}')
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["role"] == "assistant"


def test_a_body_nested_100000_deep_is_400(server):
    url, _ = server
    deep = b'{"messages": ' + USER + b', "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    assert_error(post(url, deep), 400, "invalid_json", f"deeper than {MAX_JSON_DEPTH} levels")
    deep_object = b'{"messages": ' + USER + b', "x": ' + b'{"a": ' * 100_000 + b"1" + b"}" * 100_000 + b"}"
    assert_error(post(url, deep_object), 400, "invalid_json", "deeper than")
    assert_serving(url)


def test_brackets_inside_strings_are_text_not_nesting(server):
    url, _ = server
    content = "[" * 1000 + "{" * 1000 + '\\"['
    body = (
        b'{"messages": [{"role": "user", "content": "'
        + content.encode()
        + b'"}], "max_tokens": 1, "thinking_budget": 1}'
    )
    response = post(url, body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "body",
    [
        b'{"messages": ' + USER + b', "thinking_hint": "\\ud800 and more"}',
        b'{"messages": ' + USER + b', "\\udc00": 1}',
        b'{"messages": [{"role": "user", "content": "a \\udfff b"}]}',
    ],
    ids=["in thinking_hint", "in a field name", "in a message"],
)
def test_a_lone_surrogate_is_400(server, body):
    url, _ = server
    assert_error(post(url, body), 400, "invalid_json", "lone surrogate")
    assert_serving(url)


def test_a_surrogate_pair_is_text():
    body = parse_json(b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}')
    assert body["messages"][0]["content"] == "\U0001f600"


def test_clients_that_hang_up_mid_body_are_one_log_line_each(server):
    url, log = server
    parsed = urlparse(url)
    before = log.read_text()
    for _ in range(3):
        with socket.create_connection((parsed.hostname, parsed.port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 5000\r\n\r\n" + b'{"messages": [{"role": "user", "content": "'
            )
            time.sleep(0.2)  # the server is reading the body when the client goes
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and log.read_text()[len(before) :].count("disconnected") < 3:
        time.sleep(0.1)
    assert_serving(url)
    new = [line for line in log.read_text()[len(before) :].splitlines() if line.strip()]
    assert len(new) == 3, new
    assert all("disconnected before its request body was complete" in line for line in new), new
    assert "Traceback" not in log.read_text() and "ERROR" not in log.read_text()
