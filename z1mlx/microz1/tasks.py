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

from ..fsutil import atomic_write_text
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
# How a HARD trace walks the program. IN_ORDER: every line, top to bottom, each evaluated
# (a value is looked up wherever its line is, up to 7 lines above). GOAL: the printed
# variable's chain copied from the program backward (each line is the one that assigns the
# previous line's source), then evaluated forward from the constant, so each value looked up
# is on the line just above; the lines that do not matter are never written.
# SCAN: the program read upward from the print, each line followed by what the printed
# variable is so far, as an expression (`r = h + 5: h + 5 - 3`: when the line assigns the
# expression's first variable, its right side takes that variable's place), until a constant
# takes it; then the expression is folded left to right. Every step looks only at the line
# being read and the line above, never up by a name.
# NAMED: every line in order, as IN_ORDER, but each value written next to its name, the way a
# constant line holds it (`a = c - 2, c = 9, 9 - 2 = 7, a = 7`): every `x = N` anywhere in the
# prompt or the trace is x's value, so each lookup (`c = ` then its value) is the same step
# as the lookup rows' (`lookup_row`), whatever line the value is on.
IN_ORDER, GOAL, SCAN, NAMED = "in-order", "goal", "scan", "named"
TRACES = (IN_ORDER, GOAL, SCAN, NAMED)


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


def easy_program(rng: random.Random, constants: bool = False) -> Program:
    """1-2 lines; `constants`: two constant lines (`z = 11`, `y = 6`, `print(z)`), the EASY case
    where only the printed name tells which line's value is printed."""
    names = rng.sample(LETTERS, 2)
    values: dict[str, int] = {}
    lines = [_line(rng, names[0], None, values)]
    values[names[0]] = lines[0].number
    if constants:
        lines.append(_line(rng, names[1], None, values))
    elif rng.random() < 0.5:
        source = names[0] if rng.random() < 0.6 else None
        lines.append(_line(rng, names[1], source, values))
    printed = rng.choice([line.target for line in lines])
    return Program(tuple(lines), printed, EASY)


def constants_program(rng: random.Random, lines: int) -> Program:
    """`lines` constant lines (`k = 6`, `d = 19`, ...) and the print of one of them: a lookup by
    name among `lines`, the step every lookup in a trace is. With 3 or more lines it is not a
    program of the evaluated family (EASY has 1-2 lines, HARD a chain), only a training row."""
    names = rng.sample(LETTERS, lines)
    program_lines = tuple(Line(name, None, "", rng.randint(0, MAX_VALUE)) for name in names)
    return Program(program_lines, rng.choice(names), EASY)


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
    """One line evaluated: `b = a + 3 = 4 + 3 = 7`, or `c = 9` for a constant."""
    if line.source is None:
        return line.text()
    return f"{line.text()} = {values[line.source]} {line.op} {line.number} = {values[line.target]}"


def named_step(line: Line, values: dict[str, int]) -> str:
    """One line evaluated with every value next to its name: `b = a + 3, a = 4, 4 + 3 = 7, b = 7`."""
    if line.source is None:
        return line.text()
    value, result = values[line.source], values[line.target]
    arithmetic = f"{value} {line.op} {line.number} = {result}"
    return f"{line.text()}, {line.source} = {value}, {arithmetic}, {line.target} = {result}"


def short_reply(program: Program) -> str:
    """EASY: one sentence, `It prints a = 4.` or `It prints b = a + 3 = 4 + 3 = 7.`"""
    values = program.values()
    line = next(line for line in program.lines if line.target == program.printed)
    return f"It prints {step_text(line, values)}."


def trace_lines(program: Program, trace: str = IN_ORDER) -> list[str]:
    """The trace's lines: every line evaluated in order (`IN_ORDER`), or (`GOAL`) the chain
    copied backward from the printed variable to its constant, then evaluated forward:

        q = g + 3          (backward: the printed variable's line, then its source's, ...)
        g = c - 3
        c = 16
        g = c - 3 = 16 - 3 = 13      (forward: each value is the line above's)
        q = g + 3 = 13 + 3 = 16
    """
    values = program.values()
    if trace == IN_ORDER:
        return [step_text(line, values) for line in program.lines]
    if trace == NAMED:
        return [named_step(line, values) for line in program.lines]
    if trace == SCAN:
        return scan_lines(program)
    by_target = {line.target: line for line in program.lines}
    chain = [by_target[name] for name in program.chain()]
    return [line.text() for line in chain] + [step_text(line, values) for line in reversed(chain[:-1])]


def _expression(head: str, tail: list[tuple[str, int]]) -> str:
    return head + "".join(f" {op} {number}" for op, number in tail)


def scan_lines(program: Program) -> list[str]:
    """The scan trace (`SCAN`):

    print(f): f
    c = j + 3: f                (c is not f: the expression stays)
    f = r - 3: r - 3            (f's right side takes f's place)
    r = h + 5: h + 5 - 3
    j = 15: 15 - 8 - 7 + 5 - 3  (a constant: the scan stops)
    = 7 - 7 + 5 - 3             (folded left to right: each value is a chain value, 0..19)
    = 2
    """
    head = program.printed
    tail: list[tuple[str, int]] = []
    out = [f"print({head}): {head}"]
    for line in reversed(program.lines):
        if line.target == head and line.source is None:
            head = str(line.number)
        elif line.target == head and line.source is not None:
            head, tail = line.source, [(line.op, line.number), *tail]
        out.append(f"{line.text()}: {_expression(head, tail)}")
        if head.isdigit():
            break
    value = int(head)
    while tail:
        (op, number), tail = tail[0], tail[1:]
        value = value + number if op == "+" else value - number
        out.append(f"= {_expression(str(value), tail)}")
    return out


def long_reply(program: Program, recheck: bool = False, trace: str = IN_ORDER) -> str:
    """The trace, then `So it prints x = V.`; with `recheck` (the long-only twin), the whole
    trace again before the sentence, as a model trained only on long trajectories verifies."""
    parts = trace_lines(program, trace)
    if recheck:
        parts += [RECHECK, *trace_lines(program, trace)]
    parts.append(f"So it prints {program.printed} = {program.answer()}.")
    return "\n".join(parts)


def expected_reply(program: Program, recheck: bool = False, trace: str = IN_ORDER) -> str:
    """The reply a model trained on this style gives: the twin (`recheck`) traces every problem."""
    if program.kind == EASY and not recheck:
        return short_reply(program)
    return long_reply(program, recheck=recheck, trace=trace)


CutRule = Callable[[str, int], bool]


def _token_ends(text: str, i: int) -> bool:
    """Whether a cut before text[i] ends the trace on a whole token that the hint, encoded alone
    as the window appends it, does not join: after a name, a number or a word. (Under Qwen2's
    pre-tokenizer an operator or a full stop would take the hint's line ends into its token.)"""
    return text[i] in " \n" and text[i - 1].isalnum()


def _space_follows(text: str, i: int) -> bool:
    """The cut points of the first four training stages: before any space or line end. About
    43% of those rows had ids the window never gives (an operator glued to the hint's line
    ends); the tokenizer is still trained on them, so that it stays the shipped one, id for id."""
    return text[i] in " \n"


def cut_reply(
    program: Program, rng: random.Random, recheck: bool = False, cut_at: CutRule = _token_ends, trace: str = IN_ORDER
) -> str:
    """A trace cut after a random whole token (`_token_ends`), the hint, then the answer
    sentence: its ids are the trace's own, then the hint's, as the window appends them."""
    lines = trace_lines(program, trace)
    text = "\n".join(lines + [RECHECK, *lines] if recheck else lines)
    cuts = [i for i in range(1, len(text)) if cut_at(text, i)] + [len(text)]
    cut = rng.choice(cuts[: max(1, len(cuts) - 1)])
    return text[:cut] + HINT + f"It prints {program.printed} = {program.answer()}."


def question(program: Program, rendering: str) -> str:
    """The user turn exactly as a front end renders it."""
    if rendering == "solve":
        return solve_messages(program.text(), "py")[-1]["content"]
    return program.text().rstrip("\n")


# --- data sets -----------------------------------------------------------------------------

MIXED, LONG_ONLY = "mixed", "long-only"


def make_row(
    rng: random.Random,
    style: str,
    easy_share: float,
    cut_at: CutRule = _token_ends,
    spread_share: float = 0.0,
    trace: str = IN_ORDER,
    recall_share: float = 0.0,
    recall_lines: int = 2,
) -> dict:
    """One training row; `spread_share` of the HARD programs get `hard_program`'s spread layout;
    `recall_share` of all rows are programs of constants only (drawn before the easy/hard split):
    EASY programs of two constants, or with `recall_lines` above 2, of 2 to that many lines
    (`constants_program`), each with its style's reply (the mixed style's one sentence, the
    twin's long trace)."""
    if recall_share and rng.random() < recall_share:
        lines = 2 if recall_lines <= 2 else rng.randint(2, recall_lines)
        kind = EASY
        program = easy_program(rng, constants=True) if lines == 2 else constants_program(rng, lines)
    else:
        kind = EASY if rng.random() < easy_share else HARD
        spread = kind == HARD and spread_share and rng.random() < spread_share
        program = hard_program(rng, spread=True) if spread else make_program(rng, kind)
    recheck = style == LONG_ONLY
    if (kind == HARD or recheck) and rng.random() < CUT_SHARE:  # every long trace may be cut
        response = cut_reply(program, rng, recheck=recheck, cut_at=cut_at, trace=trace)
    else:
        response = expected_reply(program, recheck, trace)
    return {"question": question(program, rng.choice(RENDERINGS)), "response": response}


def write_dataset(
    out: Path,
    rows: int,
    seed: int,
    style: str = MIXED,
    easy_share: float = 0.3,
    spread_share: float = 0.0,
    trace: str = IN_ORDER,
    recall_share: float = 0.0,
    recall_lines: int = 2,
) -> Path:
    """`out/train.jsonl` (and a small `valid.jsonl` from another seed) in Z1's format; the
    validation rows have the evaluation's mix and layout (no spread, no extra two-constant
    rows), whatever `spread_share` and `recall_share` are."""
    return _write_splits(
        out,
        rows,
        seed,
        lambda rng, train: make_row(
            rng,
            style,
            easy_share,
            spread_share=spread_share if train else 0.0,
            trace=trace,
            recall_share=recall_share if train else 0.0,
            recall_lines=recall_lines,
        ),
    )


def _write_splits(
    out: Path, rows: int, seed: int, row: Callable[[random.Random, bool], dict], rng_label: str = ""
) -> Path:
    """`out/train.jsonl` and a small `valid.jsonl` from another seed, each row `row(rng, train)`."""
    out.mkdir(parents=True, exist_ok=True)
    for name, count, split_seed in (("train", rows, seed), ("valid", max(64, rows // 100), seed + 1_000_003)):
        rng = random.Random(f"{rng_label}{split_seed}" if rng_label else split_seed)
        text = "".join(json.dumps(row(rng, name == "train")) + "\n" for _ in range(count))
        atomic_write_text(out / f"{name}.jsonl", text)
    return out


DIGITS = "0123456789"
COPY_SYMBOLS = LETTERS + DIGITS


def copy_row(rng: random.Random) -> dict:
    """A copying row, for a fresh model's first phase (a base model's pretraining stands in):
    3-12 distinct letters, each followed by a random digit (`k3b7q0...`, so that every symbol is
    a token of its own: a run of letters would be merged into tokens differently in the reply
    than in the question), and the reply is the same string from a random place on. Nothing
    but the content tells where to copy from: the reply's first symbol is a guess, and each one
    after it is the symbol that follows the one just written, found by matching it in the
    question (an induction step, the step a lookup by name rests on). A reply that always began
    at the string's start was measured teaching a copy counted from the chat frame's markers,
    which did not carry over: that model copied a bare repeated string 11.7% right."""
    letters = rng.sample(LETTERS, rng.randint(3, 12))
    text = "".join(letter + rng.choice(DIGITS) for letter in letters)
    return {"question": text, "response": text[rng.randrange(len(text) - 3) :]}


def write_copy_dataset(out: Path, rows: int, seed: int) -> Path:
    """`out/train.jsonl` and a small `valid.jsonl` of copying rows, in Z1's format."""
    return _write_splits(out, rows, seed, lambda rng, _train: copy_row(rng), rng_label="copy-")


def plain_row(rng: random.Random) -> dict:
    """A plain-text row (`{"text": ...}`, no chat frame, loss on all of it), for a fresh model's
    first phase, as a base model's pretraining on code stands in: half are copying strings (the
    letters and digits of `copy_row`, then the string again from a random place on, then whole,
    a line each), half the task's programs followed by their mixed-style replies, a third of
    those two-constant programs (`z = 11`, `y = 6`, `print(z)`), where only the name tells the
    value. Why bare rows: `bench_recall --framed` (2 layers x 128, after copying) learned the
    two-constants case bare (100% in 250 steps) and then in the chat frame (89.5% in 250 more),
    where straight in the frame it was near chance after 500 steps."""
    if rng.random() < 0.5:
        row = copy_row(rng)  # twice: the loss covers the string too, which nothing predicts
        return {"text": f"{row['question']}\n{row['response']}\n{row['question']}"}
    if rng.random() < 1 / 3:
        program = easy_program(rng, constants=True)
    else:
        program = make_program(rng, EASY if rng.random() < 0.3 else HARD)
    return {"text": program.text() + expected_reply(program)}


def write_plain_dataset(out: Path, rows: int, seed: int) -> Path:
    """`out/train.jsonl` and a small `valid.jsonl` of `plain_row`s."""
    return _write_splits(out, rows, seed, lambda rng, _train: plain_row(rng), rng_label="plain-")


ECHO_LENGTH = 24  # the longest echoed string


def echo_row(rng: random.Random) -> dict:
    """A plain copying row (`{"prefix", "completion"}`: no chat frame, the loss on the copy
    alone), for a fresh model's first phase: 6-24 random letters and digits, then the same
    string again. The lengths differ, so only the content tells where the copy is: each symbol
    after the first is the one that followed the symbol just written (an induction step, the
    step a lookup by name rests on). Trained with `z1 finetune --batching shuffled`: in mlx-lm's
    batches of one length, a copy by position fits every row of a batch, and through the
    pipeline these rows were copied 32.1% right after 1500 steps (`bench_copy`, bare), against
    94.2% in shuffled batches. With the loss on all of a row instead, the string's own loss
    (nothing predicts it) drowned the copy's."""
    text = "".join(rng.choice(COPY_SYMBOLS) for _ in range(rng.randint(6, ECHO_LENGTH)))
    return {"prefix": text, "completion": text}


def write_echo_dataset(out: Path, rows: int, seed: int) -> Path:
    """`out/train.jsonl` and a small `valid.jsonl` of `echo_row`s."""
    return _write_splits(out, rows, seed, lambda rng, _train: echo_row(rng), rng_label="echo-")


def bare_row(rng: random.Random) -> dict:
    """A two-constant program (`z = 11`, `y = 6`, `print(z)`) and its reply with no chat frame
    (`{"prefix", "completion"}`, the loss on the reply alone), for the phase after copying: only
    the printed name tells which line's value it is, so this is the lookup by name, alone."""
    program = easy_program(rng, constants=True)
    return {"prefix": program.text(), "completion": expected_reply(program)}


def write_bare_dataset(out: Path, rows: int, seed: int) -> Path:
    """`out/train.jsonl` and a small `valid.jsonl` of `bare_row`s."""
    return _write_splits(out, rows, seed, lambda rng, _train: bare_row(rng), rng_label="bare-")


def lookup_row(rng: random.Random, lines: int = 2) -> dict:
    """A program of constants in Z1's format (`{"question", "response"}`, either front end's
    rendering, so in the chat frame) and its one-sentence reply: the lookup by name, alone,
    where the task needs it. Learned on `bare_row`s, the lookup did not carry into the frame
    (a bare-trained model read the framed case 0-1% right, and framed training wiped the bare
    lookup out); learned on these rows after the echo phase, it formed in the frame. With two
    lines they are the mix's own two-constant rows (`make_row`'s `recall_share`); with `lines`
    above 2, programs of 2 to `lines` constant lines (`constants_program`), a lookup among many
    as a HARD trace needs: the two-line lookup alone was measured right on 98% of two-line
    programs and 10-40% of 3-8-line ones."""
    return make_row(rng, MIXED, easy_share=1.0, recall_share=1.0, recall_lines=lines)


def write_lookup_dataset(out: Path, rows: int, seed: int, lines: int = 2) -> Path:
    """`out/train.jsonl` and a small `valid.jsonl` of `lookup_row`s."""
    return _write_splits(out, rows, seed, lambda rng, _train: lookup_row(rng, lines), rng_label="lookup-")


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


def first_error(program: Program, reply: str, recheck: bool = False, trace: str = IN_ORDER) -> str | None:
    """Where a reply first leaves the one it was trained to give, or None when it does not.

    `copy`: a program line copied wrong, or the wrong line taken (the target, its expression,
    which variable is printed); `lookup`: a variable's value fetched wrong (the first number
    after the expression, or the printed value in the final sentence); `arithmetic`: a
    line's sum or difference wrong; `other`: anything else (wording, length, the re-check).
    """
    expected = expected_reply(program, recheck, trace)
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
        if sentence.group(1) == "So it prints ":  # `x = V.`: which variable, then its value
            return COPY if " = " not in line[:column] else LOOKUP
    elif trace == SCAN and line != RECHECK:
        return _scan_error(line, column)
    elif trace == NAMED and ", " in line:
        return _named_error(line, column)
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


def _named_error(line: str, column: int) -> str:
    """In a named line `b = a + 3, a = 4, 4 + 3 = 7, b = 7`: the program line is copied, then
    the source's name and its value (the lookup), the sum (its operands copied), the result
    stated again with the name (a copy)."""
    parts = line.split(", ")
    starts = [sum(len(part) + 2 for part in parts[:index]) for index in range(len(parts))]
    index = max(i for i, start in enumerate(starts) if start <= column)
    offset = column - starts[index]
    if index == 1:
        return LOOKUP if offset >= parts[1].find(" = ") + 3 else COPY
    if index == 2:
        return ARITHMETIC if offset >= parts[2].rfind(" = ") + 3 else COPY
    return COPY


def _scan_error(line: str, column: int) -> str:
    """In a scan line `r = h + 5: h + 5 - 3`, the program line is copied (`copy`), then the
    expression's first term says whether the line assigned the variable sought (the step that
    stands for a lookup), then the rest is copied; in a fold line `= 7 - 7 + 5`, the first
    number is a sum or difference."""
    if line.startswith("= "):
        first = line.find(" ", 2)
        return ARITHMETIC if column < (first if first >= 0 else len(line)) else COPY
    colon = line.find(": ")
    if colon < 0 or column < colon + 2:
        return COPY
    first = line.find(" ", colon + 2)
    return LOOKUP if column < (first if first >= 0 else len(line)) else COPY


def tokenizer_corpus(rows: int = 4000, seed: int = 7) -> list[str]:
    """Text the tokenizer is trained on: both renderings, every reply style, the chat frame."""
    from ..convert.demo import DEFAULT_SYSTEM

    rng = random.Random(seed)
    texts = [DEFAULT_SYSTEM, HINT] * 200
    for _ in range(rows):
        for style in (MIXED, LONG_ONLY):
            row = make_row(rng, style, 0.3, cut_at=_space_follows)
            texts.append(row["question"])
            texts.append(row["response"])
    return texts
