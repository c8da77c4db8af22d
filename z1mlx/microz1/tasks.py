"""micro-Z1's task family: tiny straight-line Python programs, and the replies it is trained on.

A program is lines `x = N`, `x = y + N` or `x = y - N` over single-letter variables (each
assigned once), N in 1..9, every value in 0..19, then one `print(x)`; the answer is the
printed number. EASY programs have 1-2 assignment lines and get a one-sentence reply;
HARD ones have 4-8 lines with a dependency chain of 3-6 and lines that do not matter,
and get a trace that evaluates every line in order, then the same sentence:

    a = 4                      It prints b = a + 3 = 4 + 3 = 7.     (EASY)
    b = a + 3
    print(b)

    c = 9                      c = 9                                 (HARD)
    a = c - 2                  a = c - 2 = 9 - 2 = 7
    ...                        ...
    print(e)                   So it prints e = e's line = its value.

Each step of the trace is local (copy the next line, look up one value, add or subtract),
which is what a 2-3M-parameter model can learn in CPU-minutes. Every reply's last number
is the answer. Pure Python, no mlx: the generator, the reply formats and the scoring.
"""

import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..prompts import solve_messages
from ..window import HINT

LETTERS = "abcdefghijklmnopqrstuvwxyz"
MAX_VALUE = 19
EASY, HARD = "easy", "hard"
# The share of HARD rows whose trace is cut at a random point and followed by the hint
# and the answer. Z1 never saw the hint in training; a model this small follows it only
# if it has seen it (a documented deviation from the paper's recipe).
CUT_SHARE = 0.15
# The prompt renderings the front ends use: `z1 solve` on a .py file, and the program
# typed as a chat message (`z1 chat`, `z1 serve`).
RENDERINGS = ("solve", "chat")
RECHECK = "Let me check it again."


@dataclass(frozen=True)
class Line:
    target: str
    source: str | None  # None: a constant line
    op: str  # "+" or "-" (unused for a constant)
    number: int

    def text(self) -> str:
        if self.source is None:
            return f"{self.target} = {self.number}"
        return f"{self.target} = {self.source} {self.op} {self.number}"


@dataclass(frozen=True)
class Program:
    lines: tuple[Line, ...]
    printed: str
    kind: str

    def text(self) -> str:
        return "\n".join([*(line.text() for line in self.lines), f"print({self.printed})"]) + "\n"

    def values(self) -> dict[str, int]:
        return evaluate_lines(self.lines)

    def answer(self) -> int:
        return self.values()[self.printed]

    def chain(self) -> list[str]:
        """The printed variable's dependency chain, from the printed one back to its constant."""
        by_target = {line.target: line for line in self.lines}
        out: list[str] = []
        name: str | None = self.printed
        while name is not None:
            out.append(name)
            name = by_target[name].source
        return out

    def chain_lookups(self) -> list[tuple[int, int]]:
        """(line index, lines back to where its source was assigned) of each chain line that looks one up."""
        at = {line.target: index for index, line in enumerate(self.lines)}
        chain = set(self.chain())
        return [
            (index, index - at[line.source])
            for index, line in enumerate(self.lines)
            if line.source is not None and line.target in chain
        ]


def line_value(line: Line, values: dict[str, int]) -> int:
    if line.source is None:
        return line.number
    base = values[line.source]
    return base + line.number if line.op == "+" else base - line.number


def evaluate_lines(lines) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in lines:
        values[line.target] = line_value(line, values)
    return values


def _line(rng: random.Random, target: str, source: str | None, values: dict[str, int]) -> Line:
    if source is None:
        return Line(target, None, "", rng.randint(0, MAX_VALUE))
    base = values[source]
    ops = [op for op in "+-" if (base + 1 <= MAX_VALUE if op == "+" else base - 1 >= 0)]
    op = rng.choice(ops)
    limit = MAX_VALUE - base if op == "+" else base
    return Line(target, source, op, rng.randint(1, min(9, limit)))


def easy_program(rng: random.Random) -> Program:
    names = rng.sample(LETTERS, 2)
    values: dict[str, int] = {}
    lines = [_line(rng, names[0], None, values)]
    values[names[0]] = lines[0].number
    if rng.random() < 0.5:
        source = names[0] if rng.random() < 0.6 else None
        lines.append(_line(rng, names[1], source, values))
    printed = rng.choice([line.target for line in lines])
    return Program(tuple(lines), printed, EASY)


def hard_program(rng: random.Random, spread: bool = False) -> Program:
    """4-8 lines; the printed variable's chain has 3-6 lines; at least one line does not matter.

    `spread` (a training layout, the same family): a chain of 3-4 whose lookups reach 1, 2 or 3
    lines back, evenly (0-2 lines that do not matter between each two of its lines). In the plain
    layout 72% of the chain's lookups are of the line just above, and a model trained on it was
    measured taking the line above's value for any variable's (recency, not the name); with
    every distance alike, only the name tells which value is meant."""
    if spread:
        chain_length = rng.randint(3, 4)
        while True:
            gaps = [rng.randint(0, 2) for _ in range(chain_length - 1)]
            if chain_length + sum(gaps) <= 8:
                break
        span = chain_length + sum(gaps)
        total = rng.randint(max(4, span + (sum(gaps) == 0)), 8)
        first = rng.randint(0, total - span)  # the rest of the lines that do not matter: before or after
        slots = [first + index + sum(gaps[:index]) for index in range(chain_length)]
        names = rng.sample(LETTERS, total)
    else:
        chain_length = rng.randint(3, 6)
        total = rng.randint(max(4, chain_length + 1), 8)
        names = rng.sample(LETTERS, total)
        slots = sorted(rng.sample(range(total), chain_length))  # where the chain's lines sit
    chain_names, other_names = names[:chain_length], names[chain_length:]
    order: list[tuple[str, bool]] = []
    chain_iter, other_iter = iter(chain_names), iter(other_names)
    for index in range(total):
        order.append((next(chain_iter), True) if index in slots else (next(other_iter), False))
    lines: list[Line] = []
    values: dict[str, int] = {}
    previous_chain: str | None = None
    for name, in_chain in order:
        if in_chain:
            source = previous_chain
            previous_chain = name
        else:
            defined = [line.target for line in lines]
            source = rng.choice(defined) if defined and rng.random() < 0.7 else None
        line = _line(rng, name, source, values)
        lines.append(line)
        values[name] = line_value(line, values)
    assert previous_chain is not None
    return Program(tuple(lines), previous_chain, HARD)


def make_program(rng: random.Random, kind: str) -> Program:
    return easy_program(rng) if kind == EASY else hard_program(rng)


# --- replies -------------------------------------------------------------------------------


def step_text(line: Line, values: dict[str, int]) -> str:
    """One line evaluated as one expression: `b = a + 3 = 4 + 3 = 7`, or `c = 9` for a constant."""
    if line.source is None:
        return line.text()
    return f"{line.text()} = {values[line.source]} {line.op} {line.number} = {values[line.target]}"


IS = " is "


def binding(name: str, value: int) -> str:
    """How a trace states a variable's value: `a is 16`. Looking a value up is then finding an
    earlier `a is` and copying what follows it."""
    return f"{name}{IS}{value}"


def lookup_column(line: Line) -> int:
    """Where the looked-up value begins in a chained line's `trace_step` (after `a = v - 3, v is `)."""
    assert line.source is not None
    return len(f"{line.text()}, {line.source}{IS}")


def trace_step(line: Line, values: dict[str, int]) -> str:
    """One line of the trace, each part local: `a = v - 3, v is 19, 19 - 3 = 16, a is 16` (the
    line copied, its source's value looked up, the sum, the new value stated); `v is 19` for a
    constant."""
    if line.source is None:
        return binding(line.target, line.number)
    base = values[line.source]
    return (
        f"{line.text()}, {binding(line.source, base)}, {base} {line.op} {line.number} = {values[line.target]}, "
        f"{binding(line.target, values[line.target])}"
    )


def answer_sentence(program: Program, opening: str = "So it prints") -> str:
    """`So it prints a, and a is 16.`: the printed variable, then its value looked up as in the trace."""
    return f"{opening} {program.printed}, and {binding(program.printed, program.answer())}."


def short_reply(program: Program) -> str:
    """EASY: one sentence, `It prints a = 4.` or `It prints b = a + 3 = 4 + 3 = 7.`"""
    values = program.values()
    line = next(line for line in program.lines if line.target == program.printed)
    return f"It prints {step_text(line, values)}."


def trace_lines(program: Program) -> list[str]:
    values = program.values()
    return [trace_step(line, values) for line in program.lines]


def long_reply(program: Program, recheck: bool = False) -> str:
    """The trace, then `So it prints x, and x is V.`; with `recheck` (the long-only twin), the
    whole trace again before the sentence, as a model trained only on long trajectories verifies."""
    return _traced(trace_lines(program), recheck) + "\n" + answer_sentence(program)


def expected_reply(program: Program, recheck: bool = False) -> str:
    """The reply a model trained on this style gives: the twin (`recheck`) traces every problem."""
    if program.kind == EASY and not recheck:
        return short_reply(program)
    return long_reply(program, recheck=recheck)


CutRule = Callable[[str, int], bool]


def _token_ends(text: str, i: int) -> bool:
    """Whether a cut before text[i] ends the trace on a whole token that the hint, encoded alone
    as the window appends it, does not join: after a name, a number or a word. (Under Qwen2's
    pre-tokenizer an operator or a full stop would take the hint's line ends into its token.)"""
    return text[i] in " \n" and text[i - 1].isalnum()


def _space_follows(text: str, i: int) -> bool:
    """The cut points of the first four training stages: before any space or line end. About
    43% of those rows had ids the window never gives (an operator glued to the hint's line
    ends); the tokenizer's corpus keeps them, so that it stays the shipped one, id for id."""
    return text[i] in " \n"


def cut_reply(program: Program, rng: random.Random, recheck: bool = False) -> str:
    """A trace cut after a random whole token (`_token_ends`), the hint, then the answer
    sentence: its ids are the trace's own, then the hint's, as the window appends them."""
    trace = _traced(trace_lines(program), recheck)
    return _cut(trace, rng, _token_ends) + HINT + answer_sentence(program, "It prints")


def _traced(lines: list[str], recheck: bool) -> str:
    return "\n".join(lines + [RECHECK, *lines] if recheck else lines)


def _cut(trace: str, rng: random.Random, cut_at: CutRule) -> str:
    """The trace up to a random cut point that `cut_at` allows (never its very end)."""
    cuts = [i for i in range(1, len(trace)) if cut_at(trace, i)] + [len(trace)]
    return trace[: rng.choice(cuts[: max(1, len(cuts) - 1)])]


def question(program: Program, rendering: str) -> str:
    """The user turn exactly as a front end renders it."""
    if rendering == "solve":
        return solve_messages(program.text(), "py")[-1]["content"]
    return program.text().rstrip("\n")


# --- data sets -----------------------------------------------------------------------------

MIXED, LONG_ONLY = "mixed", "long-only"


def make_row(rng: random.Random, style: str, easy_share: float, spread_share: float = 0.0) -> dict:
    """One training row; `spread_share` of the HARD programs get `hard_program`'s spread layout."""
    kind = EASY if rng.random() < easy_share else HARD
    if kind == HARD and spread_share and rng.random() < spread_share:
        program = hard_program(rng, spread=True)
    else:
        program = make_program(rng, kind)
    recheck = style == LONG_ONLY
    if (kind == HARD or recheck) and rng.random() < CUT_SHARE:  # every long trace may be cut
        response = cut_reply(program, rng, recheck=recheck)
    else:
        response = expected_reply(program, recheck)
    return {"question": question(program, rng.choice(RENDERINGS)), "response": response}


def write_dataset(
    out: Path, rows: int, seed: int, style: str = MIXED, easy_share: float = 0.3, spread_share: float = 0.0
) -> Path:
    """`out/train.jsonl` (and a small `valid.jsonl` from another seed) in Z1's format; the
    validation rows have the evaluation's layout (no spread), whatever `spread_share` is."""
    out.mkdir(parents=True, exist_ok=True)
    for name, count, split_seed in (("train", rows, seed), ("valid", max(64, rows // 100), seed + 1_000_003)):
        rng = random.Random(split_seed)
        path = out / f"{name}.jsonl"
        tmp = path.with_suffix(".jsonl.tmp")
        share = spread_share if name == "train" else 0.0
        with open(tmp, "w", encoding="utf-8") as f:
            for _ in range(count):
                f.write(json.dumps(make_row(rng, style, easy_share, spread_share=share)) + "\n")
        tmp.replace(path)
    return out


def fresh_programs(kind: str, count: int, seed: int) -> list[Program]:
    """Programs for evaluation; the seeds used here are never used to write training data."""
    rng = random.Random(f"eval-{kind}-{seed}")
    return [make_program(rng, kind) for _ in range(count)]


# --- scoring -------------------------------------------------------------------------------

_NUMBER = re.compile(r"-?\d+")


def last_number(text: str) -> int | None:
    found = _NUMBER.findall(text)
    return int(found[-1]) if found else None


COPY, LOOKUP, ARITHMETIC, OTHER = "copy", "lookup", "arithmetic", "other"
ERRORS = (COPY, LOOKUP, ARITHMETIC, OTHER)
_SENTENCE = re.compile(r"^(So it prints |It prints )")


def first_error(program: Program, reply: str, recheck: bool = False) -> str | None:
    """Where a reply first leaves the one it was trained to give, or None when it does not.

    `copy`: a program line copied wrong, or the wrong line taken (a trace line's copied
    line, a name, which variable is printed, a value carried within the line); `lookup`: a
    variable's value fetched wrong (after `v is` in a trace line or the final sentence, or
    the first number after an EASY sentence's expression); `arithmetic`: a line's sum or
    difference wrong; `other`: anything else (wording, length, the re-check).
    """
    expected = expected_reply(program, recheck)
    reply = reply.strip()
    if reply == expected:
        return None
    at = next((i for i, (a, b) in enumerate(zip(reply, expected)) if a != b), None)
    if at is None:  # one is the other's start: the reply ended early, or went on past the end
        return OTHER
    start = expected.rfind("\n", 0, at) + 1
    end = expected.find("\n", at)
    line = expected[start : end if end >= 0 else len(expected)]
    column = at - start
    sentence = _SENTENCE.match(line)
    if sentence:
        if column < sentence.end():
            return OTHER
        line, column = line[sentence.end() :], column - sentence.end()
        if sentence.group(1) == "It prints ":
            return _sentence_error(line, column)
        return _binding_error(line.rstrip("."), column)  # `x, and x is V`: which variable, then its value
    if line == RECHECK:
        return OTHER
    return _trace_error(line, column)


def _binding_error(text: str, column: int) -> str:
    """In text ending `x is V`: the value is looked up, everything before it copied."""
    return LOOKUP if column >= text.rindex(IS) + len(IS) else COPY


def _trace_error(line: str, column: int) -> str:
    """`a = v - 3, v is 19, 19 - 3 = 16, a is 16` (or `v is 19`): the line copied, the source's
    value looked up, the sum worked out, the new value stated (a copy within the line)."""
    parts = line.split(", ")
    if len(parts) == 1:
        return COPY  # a constant, copied from the program
    offset = 0
    for index, part in enumerate(parts):
        if column < offset + len(part) + len(", ") or index == len(parts) - 1:
            inside = column - offset
            if index == 1:
                return _binding_error(part, inside)
            if index == 2:
                return ARITHMETIC if inside >= part.index(" = ") + len(" = ") else COPY
            return COPY
        offset += len(part) + len(", ")
    return OTHER


def _sentence_error(line: str, column: int) -> str:
    """An EASY sentence, `b = a + 3 = 4 + 3 = 7.`: target and expression copied, a's value
    looked up, then copied into the sum, the sum worked out."""
    body = line.rstrip(".")
    parts = body.split(" = ")  # target, expression, looked-up values, result
    if len(parts) < 2 or column >= len(body):
        return OTHER
    before = body[:column].split(" = ")  # the parts up to where the reply left it
    if len(before) <= 2:
        return COPY
    if len(before) == 3 and len(parts) == 4:  # in `4 + 3`: the looked-up value, then the copied rest
        return LOOKUP if len(before[2]) <= len(parts[2].split(" ")[0]) else COPY
    return ARITHMETIC


def tokenizer_corpus(rows: int = 4000, seed: int = 7) -> list[str]:
    """Text the tokenizer is trained on: both renderings, every reply style, the chat frame.

    The tokenizer is the first stage's, kept id for id by every later stage, so its corpus is
    the first stages' text: the same programs and rows, with their trace wording (each line one
    expression, `a = v - 3 = 19 - 3 = 16`, and `So it prints a = 16.`). Its vocabulary covers
    today's wording as well (`is` and `,` are tokens of it)."""
    from ..convert.demo import DEFAULT_SYSTEM

    rng = random.Random(seed)
    texts = [DEFAULT_SYSTEM, HINT] * 200
    for _ in range(rows):
        for style in (MIXED, LONG_ONLY):
            question, response = _first_stage_row(rng, style, 0.3)
            texts.append(question)
            texts.append(response)
    return texts


def _first_stage_row(rng: random.Random, style: str, easy_share: float) -> tuple[str, str]:
    """`make_row` as the first stages drew and worded it, for the tokenizer's corpus."""
    kind = EASY if rng.random() < easy_share else HARD
    program = make_program(rng, kind)
    recheck = style == LONG_ONLY
    values = program.values()
    lines = [step_text(line, values) for line in program.lines]
    trace = _traced(lines, recheck)
    if (kind == HARD or recheck) and rng.random() < CUT_SHARE:
        response = _cut(trace, rng, _space_follows) + HINT + f"It prints {program.printed} = {program.answer()}."
    elif kind == EASY and not recheck:
        response = short_reply(program)
    else:
        response = f"{trace}\nSo it prints {program.printed} = {program.answer()}."
    return question(program, rng.choice(RENDERINGS)), response
