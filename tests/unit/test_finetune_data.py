"""Fine-tuning data: formats, Z1's training tokens, validation errors, splits (no training)."""

import json
from pathlib import Path

import numpy as np
import pytest

from z1mlx.finetune import data as fd

QUESTION = "Write a function that adds two numbers."
RESPONSE = "def add(a, b):\n    return a + b"

SAME_CONTENT = {
    "question/response": {"question": QUESTION, "response": RESPONSE},
    "messages": {"messages": [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": RESPONSE}]},
    "prompt/completion": {"prompt": QUESTION, "completion": RESPONSE},
    "sharegpt": {"conversations": [{"from": "human", "value": QUESTION}, {"from": "gpt", "value": RESPONSE}]},
}


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint):
    from mlx_lm.utils import load_tokenizer

    return load_tokenizer(tiny_checkpoint)


def write_jsonl(path: Path, rows) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("".join(line + "\n" for line in lines))
    return path


def tokens_of(path: Path, tokenizer, **kw) -> list[list[int]]:
    parsed = fd.parse_file(path, **kw)
    assert parsed.issues == []
    end = fd.end_token_id(tokenizer)
    return [fd.tokenize_row(row, tokenizer, end)[0] for row in parsed.rows]


def test_every_chat_format_gives_the_same_training_tokens(tmp_path, tokenizer):
    results = {}
    for name, row in SAME_CONTENT.items():
        path = write_jsonl(tmp_path / f"{name.replace('/', '-')}.jsonl", [row])
        parsed = fd.parse_file(path)
        assert parsed.format == name
        results[name] = fd.tokenize_row(parsed.rows[0], tokenizer, fd.end_token_id(tokenizer))
    assert len({json.dumps(v) for v in results.values()}) == 1


def test_training_tokens_are_z1s_format(tmp_path, tokenizer):
    """ChatML with Qwen's default system prompt, response, then <|im_end|>; loss on the response."""
    path = write_jsonl(tmp_path / "z1.jsonl", [SAME_CONTENT["question/response"]])
    row = fd.parse_file(path).rows[0]
    ids, prompt_len = fd.tokenize_row(row, tokenizer, fd.end_token_id(tokenizer))
    prompt = tokenizer.decode(ids[:prompt_len])
    assert prompt.startswith("<|im_start|>system\nYou are Qwen")
    assert prompt.endswith(f"<|im_start|>user\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.decode(ids[prompt_len:]) == RESPONSE + "<|im_end|>"
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    # The same as the chat template's rendering of the whole turn, without its trailing newline.
    full = tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": RESPONSE}], return_dict=False
    )
    assert ids == list(full)[: len(ids)] and tokenizer.decode(list(full)[len(ids) :]) == "\n"


def test_a_system_turn_replaces_the_default(tmp_path, tokenizer):
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ]
    }
    ids = tokens_of(write_jsonl(tmp_path / "s.jsonl", [row]), tokenizer)[0]
    assert tokenizer.decode(ids).startswith("<|im_start|>system\nBe brief.<|im_end|>")


def test_multi_turn_rows_train_on_the_last_reply(tmp_path, tokenizer):
    row = {
        "messages": [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "c"},
            {"role": "assistant", "content": "d"},
        ]
    }
    parsed = fd.parse_file(write_jsonl(tmp_path / "m.jsonl", [row]))
    ids, prompt_len = fd.tokenize_row(parsed.rows[0], tokenizer, fd.end_token_id(tokenizer))
    assert tokenizer.decode(ids[prompt_len:]) == "d<|im_end|>"
    assert "assistant\nb<|im_end|>" in tokenizer.decode(ids[:prompt_len])


def test_text_rows_are_trained_whole(tmp_path, tokenizer):
    ids, prompt_len = fd.tokenize_row(fd.Row("f", 1, text="print(1)"), tokenizer, fd.end_token_id(tokenizer))
    assert prompt_len == 0 and tokenizer.decode(ids) == "print(1)<|im_end|>"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("<think>\nreasoning\n</think>\n\nanswer", "reasoning\n\nanswer"),
        ("<think>plan</think>done", "plandone"),
        ("no tags here", "no tags here"),
        ("a </think> b", "ab"),
    ],
)
def test_strip_think_tags(text, expected):
    assert fd.strip_think_tags(text) == expected


def test_think_tags_are_stripped_from_replies_unless_kept(tmp_path, tokenizer):
    tagged = {"question": QUESTION, "response": f"<think>\nLet me see.\n</think>\n{RESPONSE}"}
    plain = {"question": QUESTION, "response": f"Let me see.\n{RESPONSE}"}
    path_tagged = write_jsonl(tmp_path / "t.jsonl", [tagged])
    assert tokens_of(path_tagged, tokenizer) == tokens_of(write_jsonl(tmp_path / "p.jsonl", [plain]), tokenizer)
    kept = tokens_of(path_tagged, tokenizer, keep_think_tags=True)[0]
    assert "<think>" in tokenizer.decode(kept)
    # Only replies are touched: a question mentioning the tag keeps it.
    row = fd.parse_file(write_jsonl(tmp_path / "q.jsonl", [{"question": "what is <think>?", "response": "x"}])).rows[0]
    assert row.messages[0][1] == "what is <think>?"


GOOD = {
    "z1": {"question": "q", "response": "r"},
    "messages": SAME_CONTENT["messages"],
    "sharegpt": SAME_CONTENT["sharegpt"],
}
BAD_ROWS = [
    ("z1", '{"question": "q", "response": ', "invalid JSON"),
    ("z1", '["question", "response"]', "expected a JSON object, got list"),
    ("z1", {"question": "q"}, "missing field 'response'"),
    ("z1", {"question": "q", "response": "   "}, "field 'response' is empty"),
    ("z1", {"question": 3, "response": "r"}, "field 'question' must be a string"),
    (
        "messages",
        {"messages": [{"role": "user", "content": "q"}, {"role": "robot", "content": "r"}]},
        "messages[1]: unknown role 'robot'",
    ),
    (
        "messages",
        {"messages": [{"role": "user", "content": "q"}]},
        "messages: the last turn must be the assistant's reply",
    ),
    ("messages", {"messages": []}, "field 'messages' must be a non-empty list"),
    ("messages", {"messages": [{"role": "assistant", "content": "r"}]}, "messages: no user turn"),
    (
        "messages",
        {"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "r"}]},
        "messages[0]: 'content' is empty",
    ),
    (
        "sharegpt",
        {"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "r"}]},
        "conversations[1]: unknown role 'bot'",
    ),
    (
        "z1",
        {"prompt": "q", "completion": "r"},
        "mixed formats: this row is prompt/completion but the file is question/response (line 1)",
    ),
    ("z1", {"answer": "r"}, "no known fields (has: answer"),
    ("z1", {"question": "q", "response": "<think></think>"}, "the reply is empty once <think> tags are removed"),
    ("z1", '{"question": "\\ud800", "response": "r"}', "invalid unicode escape"),
]


@pytest.mark.parametrize("good, bad, message", BAD_ROWS, ids=[m for _, _, m in BAD_ROWS])
def test_each_bad_row_is_reported_with_file_and_line(tmp_path, good, bad, message):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD[good], "", bad, GOOD[good]])
    parsed = fd.parse_file(path)
    assert len(parsed.issues) == 1 and str(parsed.issues[0]).startswith(f"{path}:3: {message}")
    assert len(parsed.rows) == 2


def test_invalid_utf8_and_empty_files(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "\xff"}\n')
    assert [str(i) for i in fd.parse_file(path).issues] == [f"{path}:2: not valid UTF-8"]
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    assert [str(i) for i in fd.parse_file(empty).issues] == [f"{empty}:1: no rows (the file is empty)"]


def test_data_errors_list_twenty_then_a_count():
    issues = [fd.Issue("f.jsonl", n, "bad") for n in range(1, 26)]
    lines = fd.DataErrors(issues, "25 problems").lines()
    assert len(lines) == 21 and lines[0] == "f.jsonl:1: bad" and lines[-1] == "... and 5 more"


def test_locate_files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    with pytest.raises(FileNotFoundError, match="train.jsonl"):
        fd.locate_files(d, None)
    write_jsonl(d / "train.jsonl", [{"text": "a"}])
    assert fd.locate_files(d, None) == fd.DataFiles(d / "train.jsonl", None)
    write_jsonl(d / "valid.jsonl", [{"text": "a"}])
    assert fd.locate_files(d, None) == fd.DataFiles(d / "train.jsonl", d / "valid.jsonl")
    other = write_jsonl(tmp_path / "v.jsonl", [{"text": "a"}])
    assert fd.locate_files(d, other).valid == other
    with pytest.raises(FileNotFoundError):
        fd.locate_files(tmp_path / "missing.jsonl", None)


def test_holdout_is_seeded_five_percent_and_at_least_a_batch():
    train, valid = fd.holdout(200, batch_size=4, seed=0)
    assert len(valid) == 10 and sorted(train + valid) == list(range(200))
    assert fd.holdout(200, 4, 0) == (train, valid) and fd.holdout(200, 4, 1) != (train, valid)
    assert len(fd.holdout(20, batch_size=4, seed=0)[1]) == 4


def _rows(tmp_path, n, response="r"):
    path = write_jsonl(
        tmp_path / "d.jsonl", [{"question": f"q{i}", "response": response * (1 + i % 3)} for i in range(n)]
    )
    return fd.parse_all(fd.DataFiles(path, None), keep_think_tags=False)[0], path


def test_splits_and_stats(tmp_path, tokenizer):
    parsed, _ = _rows(tmp_path, 40)
    splits = fd.build_splits(parsed, tokenizer, max_seq_length=4096, batch_size=2, seed=0)
    assert (len(splits.train), len(splits.valid), splits.valid_source) == (38, 2, "holdout")
    stats = fd.length_stats(splits.train)
    assert stats.min <= stats.median <= stats.max and stats.trained_tokens < stats.tokens


def test_long_rows_are_errors_or_skipped_never_truncated(tmp_path, tokenizer):
    parsed, path = _rows(tmp_path, 12, response="word " * 40)
    lengths = sorted(len(fd.tokenize_row(r, tokenizer, fd.end_token_id(tokenizer))[0]) for r in parsed[0].rows)
    limit = lengths[3]  # rows longer than this: the 8 of the two longer response kinds
    with pytest.raises(fd.DataErrors) as err:
        fd.build_splits(parsed, tokenizer, max_seq_length=limit, batch_size=1, seed=0)
    n_long = sum(1 for n in lengths if n > limit)
    assert err.value.summary.startswith(f"{n_long} of 12 rows are longer than --max-seq-length {limit} tokens")
    assert "never truncated" in err.value.summary and "--skip-long" in err.value.summary
    assert all(
        str(i).startswith(f"{path}:") and f"longer than --max-seq-length {limit}" in str(i) for i in err.value.issues
    )
    splits = fd.build_splits(parsed, tokenizer, max_seq_length=limit, batch_size=1, seed=0, skip_long=True)
    assert len(splits.skipped_long) == n_long and len(splits.train) + len(splits.valid) == 12 - n_long
    assert all(len(r.ids) <= limit for r in splits.train + splits.valid)


def test_too_few_rows_for_a_batch(tmp_path, tokenizer):
    parsed, path = _rows(tmp_path, 5)
    with pytest.raises(fd.DataErrors) as err:
        fd.build_splits(parsed, tokenizer, max_seq_length=4096, batch_size=4, seed=0)
    assert str(err.value.issues[0]).startswith(f"{path}:1: 1 training rows, fewer than --batch-size 4")


def test_pack_and_unpack_round_trip():
    rows = [fd.TokenizedRow([1, 2, 3], 1, "f", 1), fd.TokenizedRow([4, 5], 0, "f", 2)]
    back = fd.unpack(**fd.pack(rows))
    assert [(list(map(int, ids)), p) for ids, p in back] == [([1, 2, 3], 1), ([4, 5], 0)]
    assert all(isinstance(ids, np.ndarray) for ids, _ in back)


def test_prefix_completion_rows_are_plain_with_the_loss_on_the_completion(tmp_path, tokenizer):
    rows = [{"prefix": "x = 3\nprint(x)\n", "completion": "3"}, {"prefix": "ab", "completion": "ab"}]
    parsed = fd.parse_file(write_jsonl(tmp_path / "p.jsonl", rows))
    assert parsed.format == "prefix/completion" and parsed.issues == []
    end = fd.end_token_id(tokenizer)
    for row, raw in zip(parsed.rows, rows):
        ids, prompt_len = fd.tokenize_row(row, tokenizer, end)
        # No chat frame: the prefix's own tokens, then the completion's, tokenized apart.
        assert ids[:prompt_len] == list(tokenizer.encode(raw["prefix"]))
        assert ids[prompt_len:-1] == list(tokenizer.encode(raw["completion"], add_special_tokens=False))
        assert ids[-1] == end and "<|im_start|>" not in tokenizer.decode(ids)
    # Tokenized apart: "ab" + "ab" keeps its seam even where "abab" would merge across it.
    ids, prompt_len = fd.tokenize_row(parsed.rows[1], tokenizer, end)
    assert tokenizer.decode(ids[prompt_len:]) == "ab<|im_end|>"


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prefix": "x", "completion": ""}, "field 'completion' is empty"),
        ({"prefix": "", "completion": "y"}, "field 'prefix' is empty"),
        ({"prefix": "x"}, "missing field 'completion'"),
        ({"prefix": 3, "completion": "y"}, "field 'prefix' must be a string, got int"),
    ],
)
def test_bad_prefix_completion_rows_are_named(tmp_path, row, message):
    parsed = fd.parse_file(write_jsonl(tmp_path / "bad.jsonl", [row]))
    assert [str(issue) for issue in parsed.issues] == [f"{tmp_path / 'bad.jsonl'}:1: {message}"]


def test_the_known_formats_name_every_field_of_a_two_field_format():
    listed = fd.known_formats()
    assert '{"prefix", "completion"}' in listed and '{"prompt", "completion"}' in listed
    assert '{"conversations"}' in listed and '{"text"}' in listed
