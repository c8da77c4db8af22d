"""The OpenAI wire format of `z1 serve`, as pure functions: parsing, stop sequences, replies."""

import asyncio
import json
import threading

import pytest

from z1mlx.events import Done, GenerationResult, Shift, TextDelta
from z1mlx.serve.command import bind_warning, is_loopback
from z1mlx.serve.openai_api import (
    APIError,
    Defaults,
    ReplyAssembler,
    ResponseShape,
    StopMatcher,
    parse_chat,
    parse_completion,
    parse_json,
    parse_messages,
    sse,
)
from z1mlx.serve.scheduler import _END, Job, Scheduler
from z1mlx.window import HINT, ShiftedWindow

USER = [{"role": "user", "content": "hi"}]


def chat(**fields):
    return parse_chat({"messages": USER, **fields}, Defaults(budget=100, answer_tokens=50))


def error_of(fn, *args) -> APIError:
    with pytest.raises(APIError) as info:
        fn(*args)
    assert 400 <= info.value.status < 500
    return info.value


def test_defaults_and_budget_sources():
    parsed = chat()
    assert (parsed.window.budget, parsed.window.answer_tokens, parsed.window.hint) == (100, 50, HINT)
    assert parsed.sampling.temperature == 0.0 and not parsed.stream
    assert chat(thinking_budget=7).window.budget == 7
    assert chat(max_thinking_tokens=9).window.budget == 9
    assert chat(thinking_budget=0).window.budget == 0
    assert [chat(reasoning_effort=e).window.budget for e in ("none", "low", "medium", "high")] == [0, 1024, 2048, 4096]
    assert chat(reasoning_effort="high", thinking_budget=5).window.budget == 5  # explicit wins
    assert chat(max_tokens=3).window.answer_tokens == 3
    assert chat(max_completion_tokens=4).window.answer_tokens == 4
    assert chat(thinking_hint="Answer:").window.hint == "Answer:"


def test_sampling_fields():
    parsed = chat(temperature=0.7, top_p=0.9, top_k=40, min_p=0.05, repetition_penalty=1.1, seed=3)
    s = parsed.sampling
    assert (s.temperature, s.top_p, s.top_k, s.min_p, s.repetition_penalty, s.seed) == (0.7, 0.9, 40, 0.05, 1.1, 3)
    neutral = chat(n=1, presence_penalty=0, frequency_penalty=0.0, logprobs=False, user="u", tools=None)
    assert neutral.window.budget == 100
    streamed = chat(stream=True, stream_options={"include_usage": True}, stop=["\n\n", "END"], return_token_ids=True)
    assert streamed.stream and streamed.include_usage and streamed.stop == ("\n\n", "END") and streamed.return_token_ids


@pytest.mark.parametrize(
    "fields, param, fragment",
    [
        ({"thinking_budget": -1}, "thinking_budget", "between 0 and 32768"),
        ({"max_thinking_tokens": -5}, "max_thinking_tokens", "between 0"),
        ({"thinking_budget": 10**9}, "thinking_budget", "between 0"),
        ({"thinking_budget": 1.5}, "thinking_budget", "must be an integer"),
        ({"thinking_budget": True}, "thinking_budget", "must be an integer"),
        ({"thinking_budget": "12"}, "thinking_budget", "must be an integer"),
        ({"thinking_budget": 3, "max_thinking_tokens": 4}, "max_thinking_tokens", "disagree"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort", "none, low, medium, high"),
        ({"reasoning_effort": ["low"]}, "reasoning_effort", "none, low, medium, high"),
        ({"max_tokens": 0}, "max_tokens", "between 1"),
        ({"max_tokens": -3}, "max_tokens", "between 1"),
        ({"temperature": -0.1}, "temperature", "between 0"),
        ({"temperature": "hot"}, "temperature", "must be a number"),
        ({"top_p": 0}, "top_p", "greater than 0"),
        ({"top_k": -1}, "top_k", "between 0"),
        ({"seed": -1}, "seed", "between 0"),
        ({"n": 2}, "n", "n must be 1"),
        ({"presence_penalty": 0.5}, "presence_penalty", "repetition_penalty"),
        ({"logprobs": True}, "logprobs", "not supported"),
        ({"tools": [{"type": "function"}]}, "tools", "tool calling"),
        ({"response_format": {"type": "json_object"}}, "response_format", "structured output"),
        ({"stream": "yes"}, "stream", "true or false"),
        ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when stream"),
        ({"stop": ["a"] * 5}, "stop", "up to 4"),
        ({"stop": [""]}, "stop", "non-empty"),
        ({"thinking_hint": ""}, "thinking_hint", "non-empty"),
        ({"min_thinking_tokens": -1}, "min_thinking_tokens", "between 0"),
        ({"min_thinking_tokens": "9"}, "min_thinking_tokens", "must be an integer"),
        ({"continue_text": ""}, "continue_text", "non-empty"),
        ({"frobnicate": 1}, "frobnicate", "Unrecognized request argument supplied: frobnicate"),
        ({"prompt": "x"}, "prompt", "Unrecognized"),
        ({"model": 5}, "model", "must be a string"),
    ],
)
def test_bad_fields_are_400_with_the_param(fields, param, fragment):
    error = error_of(lambda: chat(**fields))
    assert error.status == 400 and error.param == param and fragment in error.message
    body = error.body()["error"]
    assert body["type"] == "invalid_request_error" and body["message"] == error.message


@pytest.mark.parametrize("raw", [b"{", b"", b"[1, 2]", b'"text"', b"\xff\xfe"])
def test_malformed_json_is_400(raw):
    assert error_of(parse_json, raw).code == "invalid_json"


def test_messages_normalized_and_prefill():
    messages, prefill = parse_messages(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "x", "reasoning_content": "hidden", "name": "z1"},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "```python\n"},
        ]
    )
    assert messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "ab"},
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": "again"},
    ]
    assert prefill == "```python\n"


@pytest.mark.parametrize(
    "messages, fragment",
    [
        ([], "non-empty list"),
        ("hi", "non-empty list"),
        ([{"role": "robot", "content": "x"}], "role must be one of"),
        ([{"role": "user"}], "must be a string or a list of text parts"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}], "only text content parts"),
        ([{"role": "user", "content": "x", "tool_calls": []}], "tool_calls is not supported"),
        ([{"role": "assistant", "content": "x"}], "more than one assistant message"),
        (["text"], "must be an object"),
    ],
)
def test_bad_messages(messages, fragment):
    assert fragment in error_of(lambda: parse_chat({"messages": messages})).message


def test_missing_messages_and_prompt():
    assert error_of(lambda: parse_chat({})).code == "missing_required_parameter"
    assert error_of(lambda: parse_completion({})).code == "missing_required_parameter"


def test_completion_prompt_forms():
    assert parse_completion({"prompt": "def f():"}).prompt_text == "def f():"
    assert parse_completion({"prompt": ["def f():"]}).prompt_text == "def f():"
    assert parse_completion({"prompt": [1, 2, 3]}).prompt_ids == [1, 2, 3]
    assert parse_completion({"prompt": [[4, 5]]}).prompt_ids == [4, 5]
    assert parse_completion({"prompt": "x", "echo": False, "suffix": None, "best_of": 1}).kind == "text"
    assert "batched prompts" in error_of(lambda: parse_completion({"prompt": ["a", "b"]})).message
    for bad in ("", [], [-1], [1.5], {"a": 1}, [True]):
        error_of(lambda bad=bad: parse_completion({"prompt": bad}))
    assert error_of(lambda: parse_completion({"prompt": "x", "echo": True})).param == "echo"
    assert error_of(lambda: parse_completion({"prompt": "x", "messages": USER})).param == "messages"


# Stop sequences


def feed_all(matcher, pieces):
    return "".join(matcher.feed(p) for p in pieces)


def test_stop_matcher_across_pieces_and_holdback():
    m = StopMatcher(("END",))
    assert m.feed("abc E") == "abc "  # "E" may start END: held back
    assert m.feed("N") == ""
    assert m.feed("D tail") == "" and m.stopped
    m = StopMatcher(("END",))
    assert feed_all(m, ["a", "E", "x"]) == "aEx" and not m.stopped
    m = StopMatcher(("\n\n", "###"))
    assert feed_all(m, ["one\n", "two\n", "\nthree"]) == "one\ntwo" and m.stopped
    m = StopMatcher(("zz",))
    assert m.feed("az") == "a" and m.flush() == "z"
    assert StopMatcher(()).feed("anything") == "anything"


# Replies from engine events


def result(**overrides) -> GenerationResult:
    fields = dict(
        prompt_tokens=5,
        thinking_tokens=3,
        answer_tokens=0,
        window_hit=False,
        finish_reason="stop",
        budget=8,
        answer_cap=4,
        hint=None,
        shift_reason=None,
        thinking_text="",
        answer_text="",
        prompt_token_ids=[1, 2, 3, 4, 5],
        thinking_token_ids=[6, 7, 8],
        hint_token_ids=[],
        answer_token_ids=[],
        ttft_s=0.1,
        prompt_tps=1.0,
        generation_tps=1.0,
        peak_memory_gb=0.0,
    )
    fields.update(overrides)
    return GenerationResult(**fields)


def assemble(events, **fields):
    assembler = ReplyAssembler(chat(**fields))
    deltas = []
    for event in events:
        deltas += assembler.feed(event)
    return assembler, deltas


def joined(deltas, field):
    return "".join(d.text for d in deltas if d.field == field)


def test_window_hit_reasoning_then_answer():
    events = [
        TextDelta("think", "thinking", 1),
        TextDelta("ing", "thinking", 2),
        Shift(2, HINT, "budget"),
        TextDelta("42", "answer", 1),
        Done(
            result(
                thinking_tokens=2,
                answer_tokens=1,
                window_hit=True,
                finish_reason="length",
                hint=HINT,
                shift_reason="budget",
                thinking_text="thinking",
                answer_text="42",
                hint_token_ids=[9, 9],
                answer_token_ids=[10],
            )
        ),
    ]
    assembler, deltas = assemble(events, return_token_ids=True)
    reply = assembler.reply
    assert joined(deltas, "reasoning") == reply.reasoning == "thinking"
    assert joined(deltas, "content") == reply.content == "42"
    assert reply.usage() == {
        "prompt_tokens": 5,
        "completion_tokens": 3,
        "total_tokens": 8,
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    info = reply.z1()
    assert info["window_hit"] and info["hint"] == HINT and info["hint_tokens"] == 2
    assert info["thinking_token_ids"] == [6, 7, 8] and info["answer_token_ids"] == [10]
    assert reply.finish_reason == "length"


def test_inside_the_window_the_reply_is_the_answer():
    text = "Let me think.\n\nFinal Answer: 42"
    events = [
        TextDelta(text[:10], "thinking", 2),
        TextDelta(text[10:], "thinking", 4),
        Done(result(thinking_tokens=4, thinking_text=text)),
    ]
    assembler, deltas = assemble(events)
    reply = assembler.reply
    assert reply.reasoning == text and reply.content == "Final Answer: 42"
    assert [d.field for d in deltas][-1] == "content"  # the answer arrives once phase 1 has ended
    assert (
        not reply.window_hit
        and reply.hint is None
        and reply.usage()["completion_tokens_details"] == {"reasoning_tokens": 4}
    )
    plain = assemble([TextDelta("just this", "thinking", 2), Done(result(thinking_text="just this"))])[0].reply
    assert plain.content == "just this"


def test_a_cancelled_reply_has_no_answer():
    reply = assemble(
        [
            TextDelta("half a thou", "thinking", 3),
            Done(result(thinking_tokens=3, finish_reason="cancelled", thinking_text="half a thou")),
        ]
    )[0].reply
    assert reply.reasoning == "half a thou" and reply.content == "" and reply.finish_reason == "cancelled"


def test_stop_sequence_in_phase_one_ends_the_reply_there():
    events = [
        TextDelta("abc", "thinking", 1),
        TextDelta("STOPxyz", "thinking", 2),
        TextDelta("more", "thinking", 3),
        Shift(3, HINT, "budget"),
        TextDelta("ans", "answer", 1),
        Done(
            result(
                thinking_tokens=3,
                answer_tokens=1,
                window_hit=True,
                finish_reason="cancelled",
                hint=HINT,
                shift_reason="budget",
            )
        ),
    ]
    assembler, deltas = assemble(events, stop="STOP")
    assert assembler.stopped
    reply = assembler.reply
    assert reply.reasoning == "abc" and reply.content == "abc" and not reply.window_hit
    assert reply.finish_reason == "stop" and reply.reasoning_tokens == 2 and reply.answer_tokens == 0


def test_stop_sequence_in_the_answer():
    events = [
        TextDelta("th", "thinking", 1),
        Shift(1, HINT, "budget"),
        TextDelta("x = 1", "answer", 1),
        TextDelta("\n\nmore", "answer", 2),
        Done(result(thinking_tokens=1, answer_tokens=3, window_hit=True, finish_reason="cancelled", hint=HINT)),
    ]
    reply = assemble(events, stop=["\n\n"])[0].reply
    assert reply.content == "x = 1" and reply.window_hit and reply.finish_reason == "stop"
    assert reply.answer_tokens == 2


def test_response_shapes_chat_and_text():
    reply = assemble(
        [
            TextDelta("t", "thinking", 1),
            Shift(1, HINT, "budget"),
            TextDelta("a", "answer", 1),
            Done(result(thinking_tokens=1, answer_tokens=1, window_hit=True, finish_reason="stop", hint=HINT)),
        ]
    )[0].reply
    body = ResponseShape("chat", "chatcmpl-1", 7, "m").completion(reply)
    message = body["choices"][0]["message"]
    assert body["object"] == "chat.completion" and body["model"] == "m"
    assert message == {"role": "assistant", "content": "a", "reasoning_content": "t", "reasoning": "t"}
    assert body["usage"]["completion_tokens_details"]["reasoning_tokens"] == 1 and body["z1"]["window_hit"]
    text = ResponseShape("text", "cmpl-1", 7, "m").completion(reply)
    assert text["object"] == "text_completion"
    assert text["choices"][0]["text"] == "a" and text["choices"][0]["reasoning_content"] == "t"

    shape = ResponseShape("chat", "chatcmpl-1", 7, "m")
    assert shape.first_chunk()["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    from z1mlx.serve.openai_api import Delta

    assert shape.delta_chunk(Delta("reasoning", "r"))["choices"][0]["delta"] == {
        "reasoning_content": "r",
        "reasoning": "r",
    }
    final = shape.final_chunk(reply)
    assert final["choices"][0]["finish_reason"] == "stop" and final["z1"]["thinking_tokens"] == 1
    assert shape.usage_chunk(reply)["choices"] == []
    text_shape = ResponseShape("text", "cmpl-1", 7, "m")
    assert text_shape.first_chunk() is None
    assert text_shape.delta_chunk(Delta("reasoning", "r"))["choices"][0]["text"] == ""
    assert text_shape.delta_chunk(Delta("content", "c"))["choices"][0]["text"] == "c"
    line = sse({"a": "é"})
    assert line.startswith("data: ") and line.endswith("\n\n") and json.loads(line[6:]) == {"a": "é"}


def test_reasoning_is_null_when_nothing_was_thought():
    reply = assemble(
        [
            Shift(0, HINT, "budget"),
            TextDelta("a", "answer", 1),
            Done(result(thinking_tokens=0, answer_tokens=1, window_hit=True, hint=HINT)),
        ]
    )[0].reply
    message = ResponseShape("chat", "c", 1, "m").completion(reply)["choices"][0]["message"]
    assert message["reasoning_content"] is None and message["content"] == "a"


def test_loopback_and_the_bind_warning():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5") and not is_loopback("example.com")
    assert bind_warning("127.0.0.1", None) is None
    assert bind_warning("0.0.0.0", "key") is None
    assert "without an API key" in bind_warning("0.0.0.0", None)


class BlockingEngine:
    """Generates nothing until released; records what ran, and whether it was cancelled."""

    def __init__(self):
        self.release = threading.Event()
        self.started = threading.Event()
        self.ran = []

    def new_conversation_cache(self, pool=0):
        return None

    def batch(self, size, prompt_cache_size=0):
        from z1mlx.batch import ThreadBatch

        return ThreadBatch(self, size)

    def generate(self, prompt, window, sampling, control=None, conversation=None):
        self.ran.append(prompt)
        self.started.set()
        while not (control.cancelled or self.release.wait(0.01)):
            pass
        yield Done(result(finish_reason="cancelled" if control.cancelled else "stop"))


def test_scheduler_queues_in_order_refuses_when_full_and_cancels_on_close():
    from z1mlx.events import Sampling

    engine = BlockingEngine()
    scheduler = Scheduler(engine, parallel=1, max_queue=1)
    loop = asyncio.new_event_loop()
    jobs = [Job([i], ShiftedWindow(4, 2), Sampling(), loop) for i in range(3)]
    try:
        scheduler.submit(jobs[0])
        assert engine.started.wait(5)
        scheduler.submit(jobs[1])
        assert scheduler.stats() == {"running": 1, "queued": 1, "parallel": 1, "peak_batch": 1}
        with pytest.raises(APIError) as info:
            scheduler.submit(jobs[2])
        assert info.value.status == 429 and info.value.code == "queue_full"
        scheduler.close()  # cancels the running job and the waiting one; both still end with a result
        for job in jobs[:2]:
            items = []
            while _END not in items:
                loop.run_until_complete(asyncio.sleep(0.01))
                while not job.events.empty():
                    items.append(job.events.get_nowait())
            assert job.control.cancelled and items[-2].result.finish_reason == "cancelled"
        assert engine.ran == [[0], [1]]
        with pytest.raises(APIError) as info:
            scheduler.submit(jobs[2])
        assert info.value.status == 503
    finally:
        loop.close()


def test_think_longer_per_request():
    parsed = chat(min_thinking_tokens=64, continue_text=" Hmm,")
    assert parsed.window.min_thinking == 64 and parsed.window.continue_text == " Hmm,"
    default = chat()
    assert default.window.min_thinking == 0 and default.window.continue_text == "\n\nWait"
    served = parse_chat({"messages": USER}, Defaults(min_thinking=16))
    assert served.window.min_thinking == 16
