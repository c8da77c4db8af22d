"""Fine-tuning data: read and check JSONL rows, convert them to Z1's training format.

Pure logic, no mlx: every row format becomes the same `Row` (a conversation whose last
turn is the assistant's reply, or plain text), and every `Row` becomes the same token
ids, the way Z1 was trained: ChatML prompt (Qwen's default system prompt when the row
has none), then the response, then `<|im_end|>`; the loss covers the response and the
end token only. Plain rows have no chat frame: `{"text"}` is trained whole, and
`{"prefix", "completion"}` is the two texts joined, with the loss on the completion (and the
end token) only, as a base model's continuation would be trained. Problems are collected
as `FILE:LINE: message`, never raised one by one, so a user sees them all (up to a limit)
before anything is trained or written.
"""

import hashlib
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# Marker keys decide a row's format; the first format whose marker is present wins.
FORMATS = {
    "question/response": ("question", "response"),
    "messages": ("messages",),
    "prefix/completion": ("prefix",),  # before prompt/completion, which shares "completion"
    "prompt/completion": ("prompt", "completion"),
    "sharegpt": ("conversations",),
    "text": ("text",),
}
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
END_TOKEN = "<|im_end|>"
HOLDOUT_FRACTION = 0.05
MAX_LISTED = 20

_THINK_TAG = re.compile(r"[ \t]*</?think>[ \t]*\n?")


@dataclass(frozen=True)
class Issue:
    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class DataErrors(Exception):
    """Every problem found in the data; `lines()` is what the user sees."""

    def __init__(self, issues: list[Issue], summary: str):
        super().__init__(summary)
        self.issues = issues
        self.summary = summary

    def lines(self, limit: int = MAX_LISTED) -> list[str]:
        shown = [str(issue) for issue in self.issues[:limit]]
        if len(self.issues) > limit:
            shown.append(f"... and {len(self.issues) - limit} more")
        return shown


@dataclass(frozen=True)
class Row:
    """One training example: `messages` ends with the assistant's reply, or `text` is set (plain
    text, after `prefix` where the loss starts past one)."""

    path: str
    line: int
    messages: tuple[tuple[str, str], ...] = ()
    text: str | None = None
    prefix: str | None = None


@dataclass
class ParsedFile:
    path: Path
    format: str | None
    rows: list[Row]
    issues: list[Issue]


@dataclass(frozen=True)
class DataFiles:
    train: Path
    valid: Path | None


@dataclass
class TokenizedRow:
    ids: list[int]
    prompt_len: int  # loss starts here
    path: str
    line: int


@dataclass
class Splits:
    train: list[TokenizedRow]
    valid: list[TokenizedRow]
    formats: dict[str, str]  # file -> detected format
    valid_source: str  # "file" or "holdout"
    skipped_long: list[Issue] = field(default_factory=list)


def strip_think_tags(text: str) -> str:
    """Drop `<think>`/`</think>` tags (and the newline after each), keeping the text between."""
    return _THINK_TAG.sub("", text).strip() if "think>" in text else text


def detect_format(row: dict) -> str | None:
    for name, markers in FORMATS.items():
        if any(key in row for key in markers):
            return name
    return None


def _text_field(row: dict, key: str) -> str:
    if key not in row:
        raise ValueError(f"missing field {key!r}")
    value = row[key]
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field {key!r} is empty")
    return value


def _turns(items, field_name: str, role_key: str, text_key: str, role_map: dict[str, str]) -> list[tuple[str, str]]:
    if not isinstance(items, list) or not items:
        raise ValueError(f"field {field_name!r} must be a non-empty list")
    turns = []
    for i, item in enumerate(items):
        where = f"{field_name}[{i}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where} must be an object")
        for key in (role_key, text_key):
            if key not in item:
                raise ValueError(f"{where} is missing {key!r}")
        role, text = item[role_key], item[text_key]
        if role not in role_map:
            raise ValueError(f"{where}: unknown role {role!r} (expected one of: {', '.join(role_map)})")
        if not isinstance(text, str):
            raise ValueError(f"{where}: {text_key!r} must be a string, got {type(text).__name__}")
        if not text.strip():
            raise ValueError(f"{where}: {text_key!r} is empty")
        turns.append((role_map[role], text))
    if any(role == "system" for role, _ in turns[1:]):
        raise ValueError(f"{field_name}: a system turn may only come first")
    if not any(role == "user" for role, _ in turns):
        raise ValueError(f"{field_name}: no user turn")
    if turns[-1][0] != "assistant":
        raise ValueError(f"{field_name}: the last turn must be the assistant's reply")
    return turns


def row_messages(row: dict, fmt: str) -> tuple[list[tuple[str, str]] | None, str | None]:
    """(turns, None) for chat formats, (None, text) for `text` and `prefix/completion` (whose
    completion this is; the prefix stays in the row); ValueError says what is wrong."""
    if fmt == "question/response":
        return [("user", _text_field(row, "question")), ("assistant", _text_field(row, "response"))], None
    if fmt == "prompt/completion":
        return [("user", _text_field(row, "prompt")), ("assistant", _text_field(row, "completion"))], None
    if fmt == "messages":
        return _turns(row["messages"], "messages", "role", "content", {r: r for r in ROLES}), None
    if fmt == "sharegpt":
        return _turns(row["conversations"], "conversations", "from", "value", SHAREGPT_ROLES), None
    if fmt == "prefix/completion":
        _text_field(row, "prefix")
        return None, _text_field(row, "completion")
    return None, _text_field(row, "text")


def parse_file(path: Path, keep_think_tags: bool = False) -> ParsedFile:
    """Every line of a JSONL file checked; the format is the first row's, and must not change."""
    name = str(path)
    rows: list[Row] = []
    issues: list[Issue] = []
    file_format = format_line = None
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        return ParsedFile(path, None, [], [Issue(name, 0, f"cannot read: {err.strerror or err}")])
    for number, line in enumerate(raw.splitlines(), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            issues.append(Issue(name, number, "not valid UTF-8"))
            continue
        if not text.strip():
            continue  # blank lines (a trailing newline, say) are not rows
        try:
            row = json.loads(text)
        except json.JSONDecodeError as err:
            issues.append(Issue(name, number, f"invalid JSON: {err.msg} at column {err.colno}"))
            continue
        if not isinstance(row, dict):
            issues.append(Issue(name, number, f"expected a JSON object, got {type(row).__name__}"))
            continue
        try:
            json.dumps(row, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            issues.append(Issue(name, number, "invalid unicode escape (a lone surrogate such as \\ud800)"))
            continue
        fmt = detect_format(row)
        if fmt is None:
            keys = ", ".join(sorted(row)) or "none"
            issues.append(Issue(name, number, f"no known fields (has: {keys}; expected one of: {known_formats()})"))
            continue
        if file_format is None:
            file_format, format_line = fmt, number
        elif fmt != file_format:
            issues.append(
                Issue(
                    name,
                    number,
                    f"mixed formats: this row is {fmt} but the file is {file_format} (line {format_line}); "
                    "use one format per file",
                )
            )
            continue
        try:
            turns, plain = row_messages(row, fmt)
        except ValueError as err:
            issues.append(Issue(name, number, str(err)))
            continue
        if turns is not None:
            if not keep_think_tags:
                turns = [(role, strip_think_tags(text) if role == "assistant" else text) for role, text in turns]
                if not turns[-1][1].strip():
                    issues.append(Issue(name, number, "the reply is empty once <think> tags are removed"))
                    continue
            rows.append(Row(name, number, messages=tuple(turns)))
        else:
            rows.append(Row(name, number, text=plain, prefix=row.get("prefix") if fmt == "prefix/completion" else None))
    if not rows and not issues:
        issues.append(Issue(name, 1, "no rows (the file is empty)"))
    return ParsedFile(path, file_format, rows, issues)


def known_formats() -> str:
    # A two-field format names both fields, even where one of them alone marks it.
    fields = [name.split("/") if "/" in name else markers for name, markers in FORMATS.items()]
    return "; ".join("{" + ", ".join(f'"{k}"' for k in keys) + "}" for keys in fields)


def locate_files(data: Path, valid: Path | None) -> DataFiles:
    """`--data` is a JSONL file, or a directory with train.jsonl (and optionally valid.jsonl)."""
    data = Path(data).expanduser()
    if data.is_dir():
        train = data / "train.jsonl"
        if not train.is_file():
            raise FileNotFoundError(f"{data}: a data directory needs train.jsonl (and optionally valid.jsonl)")
        if valid is None and (data / "valid.jsonl").is_file():
            valid = data / "valid.jsonl"
        return DataFiles(train, valid)
    if not data.is_file():
        raise FileNotFoundError(f"{data}: no such file or directory")
    if valid is not None and not Path(valid).expanduser().is_file():
        raise FileNotFoundError(f"{valid}: no such file")
    return DataFiles(data, Path(valid).expanduser() if valid else None)


def end_token_id(tokenizer) -> int:
    """ChatML's `<|im_end|>` where the vocabulary has it (Z1's end token), else the EOS token."""
    vocab = tokenizer.get_vocab()
    return vocab[END_TOKEN] if END_TOKEN in vocab else tokenizer.eos_token_id


def tokenize_row(row: Row, tokenizer, end: int) -> tuple[list[int], int]:
    """(ids, prompt_len): prompt rendered by the chat template, reply + `end` after it. A prefix
    and its completion are tokenized apart, so that the loss starts exactly where the completion
    does (no token spans the seam)."""
    if row.text is not None and row.prefix is not None:
        prefix = list(tokenizer.encode(row.prefix))
        completion = list(tokenizer.encode(row.text, add_special_tokens=False))
        return prefix + completion + ([] if completion[-1:] == [end] else [end]), len(prefix)
    if row.text is not None:
        ids = list(tokenizer.encode(row.text))
        return (ids if ids and ids[-1] == end else ids + [end]), 0
    context = [{"role": role, "content": text} for role, text in row.messages[:-1]]
    prompt = list(tokenizer.apply_chat_template(context, add_generation_prompt=True, tokenize=True, return_dict=False))
    reply = list(tokenizer.encode(row.messages[-1][1], add_special_tokens=False))
    return prompt + reply + [end], len(prompt)


def holdout(n: int, batch_size: int, seed: int) -> tuple[list[int], list[int]]:
    """Seeded 5% (at least one batch) for validation; the rest, in file order, for training."""
    n_valid = max(math.ceil(n * HOLDOUT_FRACTION), batch_size)
    picked = set(np.random.default_rng(seed).permutation(n)[:n_valid].tolist())
    return [i for i in range(n) if i not in picked], sorted(picked)


def parse_all(files: DataFiles, keep_think_tags: bool) -> tuple[list[ParsedFile], list[Issue]]:
    parsed = [parse_file(files.train, keep_think_tags)]
    if files.valid is not None:
        parsed.append(parse_file(files.valid, keep_think_tags))
    return parsed, [issue for p in parsed for issue in p.issues]


def build_splits(
    parsed: list[ParsedFile],
    tokenizer,
    *,
    max_seq_length: int,
    batch_size: int,
    seed: int,
    skip_long: bool = False,
) -> Splits:
    """Tokenize, check lengths and split. Rows longer than `max_seq_length` are errors, or
    with `skip_long` are dropped; they are never truncated (a cut reply loses its end token
    and teaches the model not to stop)."""
    end = end_token_id(tokenizer)
    tokenized = []
    for p in parsed:
        rows = []
        for row in p.rows:
            ids, prompt_len = tokenize_row(row, tokenizer, end)
            rows.append(TokenizedRow(ids, prompt_len, row.path, row.line))
        tokenized.append(rows)
    too_long = [r for rows in tokenized for r in rows if len(r.ids) > max_seq_length]
    long = [
        Issue(r.path, r.line, f"{len(r.ids)} tokens, longer than --max-seq-length {max_seq_length}") for r in too_long
    ]
    if long and not skip_long:
        longest = max(len(r.ids) for r in too_long)
        total = sum(len(rows) for rows in tokenized)
        raise DataErrors(
            long,
            (
                f"{len(long)} of {total} rows are longer than --max-seq-length {max_seq_length} tokens "
                f"(longest {longest}); rows are never truncated: raise --max-seq-length or pass --skip-long "
                "to leave them out"
            ),
        )
    tokenized = [[r for r in rows if len(r.ids) <= max_seq_length] for rows in tokenized]
    formats = {str(p.path): p.format or "?" for p in parsed}
    if len(parsed) > 1:
        train, valid, source = tokenized[0], tokenized[1], "file"
    else:
        train_idx, valid_idx = holdout(len(tokenized[0]), batch_size, seed)
        train = [tokenized[0][i] for i in train_idx]
        valid = [tokenized[0][i] for i in valid_idx]
        source = "holdout"
    problems = []
    for name, rows in (("training", train), ("validation", valid)):
        if len(rows) < batch_size:
            problems.append(f"{len(rows)} {name} rows, fewer than --batch-size {batch_size}")
    if problems:
        first = parsed[0].path
        hint = (
            "" if source == "file" else " (5% or at least one batch is held out for validation unless --valid is given)"
        )
        raise DataErrors([Issue(str(first), 1, "; ".join(problems) + hint)], "not enough data to train")
    return Splits(train, valid, formats, source, long)


@dataclass(frozen=True)
class LengthStats:
    rows: int
    min: int
    median: float
    max: int
    tokens: int
    trained_tokens: int  # tokens inside the loss mask


def length_stats(rows: list[TokenizedRow]) -> LengthStats:
    lengths = [len(r.ids) for r in rows]
    return LengthStats(
        rows=len(rows),
        min=min(lengths),
        median=statistics.median(lengths),
        max=max(lengths),
        tokens=sum(lengths),
        trained_tokens=sum(len(r.ids) - r.prompt_len for r in rows),
    )


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(rows: list[TokenizedRow]) -> dict[str, np.ndarray]:
    """Rows as three flat arrays, for handing to the training worker in one file."""
    lengths = np.array([len(r.ids) for r in rows], dtype=np.int64)
    ids = np.concatenate([np.asarray(r.ids, dtype=np.int32) for r in rows]) if rows else np.zeros(0, np.int32)
    return {"ids": ids, "lengths": lengths, "prompt_lens": np.array([r.prompt_len for r in rows], dtype=np.int64)}


def unpack(ids: np.ndarray, lengths: np.ndarray, prompt_lens: np.ndarray) -> list[tuple[np.ndarray, int]]:
    """The (ids, prompt_len) pairs mlx-lm's trainer takes as a dataset."""
    ends = np.cumsum(lengths)
    starts = ends - lengths
    return [(ids[s:e], int(p)) for s, e, p in zip(starts, ends, prompt_lens)]
