"""micro-Z1's task family and training data: checked against Python itself."""

import contextlib
import io
import json
import random
import re

import pytest

from z1mlx.finetune.data import parse_file
from z1mlx.microz1 import tasks
from z1mlx.prompts import solve_messages
from z1mlx.window import HINT

# a = 4 / c = 9 / b = a + 3 / d = b - 2 / print(d): a chain of three and a line that does not matter.
FOUR_LINES = tasks.Program(
    (
        tasks.Line("a", None, "", 4),
        tasks.Line("c", None, "", 9),
        tasks.Line("b", "a", "+", 3),
        tasks.Line("d", "b", "-", 2),
    ),
    "d",
    tasks.HARD,
)


def run_python(source: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<program>", "exec"), {})
    return out.getvalue()


@pytest.mark.parametrize("kind", [tasks.EASY, tasks.HARD])
def test_programs_are_the_family_and_python_agrees_with_the_answer(kind):
    rng = random.Random(3)
    for _ in range(400):
        program = tasks.make_program(rng, kind)
        assert run_python(program.text()) == f"{program.answer()}\n"
        assert all(0 <= v <= tasks.MAX_VALUE for v in program.values().values())
        assert all(1 <= line.number <= 9 for line in program.lines if line.source is not None)
        targets = [line.target for line in program.lines]
        assert len(set(targets)) == len(targets) and all(len(t) == 1 for t in targets)
        if kind == tasks.EASY:
            assert 1 <= len(program.lines) <= 2
        else:
            assert 4 <= len(program.lines) <= 8
            chain = program.chain()
            assert 3 <= len(chain) <= 6 and len(chain) < len(program.lines)  # lines that do not matter


def test_replies_end_with_the_answer_in_each_style():
    rng = random.Random(5)
    for _ in range(300):
        program = tasks.make_program(rng, rng.choice([tasks.EASY, tasks.HARD]))
        for reply in (
            tasks.short_reply(program),
            tasks.long_reply(program),
            tasks.long_reply(program, recheck=True),
            tasks.cut_reply(program, rng),
        ):
            assert tasks.last_number(reply) == program.answer()
    program = tasks.Program(
        (tasks.Line("a", None, "", 4), tasks.Line("c", None, "", 9), tasks.Line("b", "a", "+", 3)), "b", tasks.HARD
    )
    assert tasks.short_reply(program) == "It prints b = a + 3 = 4 + 3 = 7."
    assert tasks.long_reply(program) == "a = 4\nc = 9\nb = a + 3 = 4 + 3 = 7\nSo it prints b = 7."
    assert tasks.long_reply(program, recheck=True).count("b = a + 3 = 4 + 3 = 7") == 2


def test_the_goal_trace_copies_the_chain_backward_then_evaluates_it_from_the_line_above():
    rng = random.Random(8)
    for _ in range(300):
        program = tasks.hard_program(rng)
        values = program.values()
        program_lines = program.text().splitlines()
        chain = program.chain()
        lines = tasks.trace_lines(program, tasks.GOAL)
        backward, forward = lines[: len(chain)], lines[len(chain) :]
        # Backward: the printed variable's own line, then each time the line of the one before's source.
        assert [line.split(" = ")[0] for line in backward] == chain
        assert all(line in program_lines for line in backward)
        assert all(a.split(" ")[2] == b.split(" ")[0] for a, b in zip(backward, backward[1:]))
        assert backward[-1].split(" = ")[1].isdigit()  # it ends at the constant
        # Forward: the chain from the constant up, each value looked up the last number on the line above.
        assert [line.split(" = ")[0] for line in forward] == chain[-2::-1]
        for above, line in zip(lines[len(chain) - 1 :], forward):
            target, expression, looked_up, result = line.split(" = ")
            assert int(looked_up.split(" ")[0]) == tasks.last_number(above)
            assert int(result) == values[target] and expression.split(" ")[0] == above.split(" = ")[0]
        # The lines that do not matter are never written; the reply ends with the answer.
        reply = tasks.long_reply(program, trace=tasks.GOAL)
        assert not {line.target for line in program.lines} - set(chain) & {x.split(" = ")[0] for x in lines}
        assert run_python(program.text()) == f"{tasks.last_number(reply)}\n"
        assert tasks.first_error(program, reply, trace=tasks.GOAL) is None
    line = tasks.Line
    program = FOUR_LINES
    right = tasks.long_reply(program, trace=tasks.GOAL)
    assert right == "d = b - 2\nb = a + 3\na = 4\nb = a + 3 = 4 + 3 = 7\nd = b - 2 = 7 - 2 = 5\nSo it prints d = 5."
    assert tasks.long_reply(program, recheck=True, trace=tasks.GOAL) == (
        right.replace("\nSo", f"\n{tasks.RECHECK}\n{right.rsplit(chr(10), 1)[0]}\nSo")
    )
    cases = {
        right.replace("b = a + 3\na = 4", "b = c + 3\nc = 9"): tasks.COPY,  # the wrong line taken backward
        right.replace("= 4 + 3", "= 9 + 3"): tasks.LOOKUP,
        right.replace("= 7 - 2 = 5", "= 7 - 2 = 4"): tasks.ARITHMETIC,
        tasks.long_reply(program): tasks.COPY,  # the in-order trace, from a goal model
    }
    for reply, where in cases.items():
        assert tasks.first_error(program, reply, trace=tasks.GOAL) == where, reply
    # An easy program keeps its one sentence in the mixed style; the twin traces it too.
    easy = tasks.Program((line("m", None, "", 8), line("q", "m", "-", 8)), "q", tasks.EASY)
    assert tasks.expected_reply(easy, trace=tasks.GOAL) == tasks.short_reply(easy)
    assert tasks.expected_reply(easy, recheck=True, trace=tasks.GOAL).startswith("q = m - 8\nm = 8\nq = m - 8 = 8")


def test_the_scan_trace_reads_upward_and_every_step_looks_only_at_the_line_above():
    rng = random.Random(9)
    for _ in range(300):
        program = tasks.hard_program(rng)
        values = program.values()
        lines = tasks.trace_lines(program, tasks.SCAN)
        assert lines[0] == f"print({program.printed}): {program.printed}"
        scanned = [line for line in lines[1:] if not line.startswith("= ")]
        # Upward from the print, line for line, up to the chain's constant line (the lines above it never).
        texts = [line.text() for line in program.lines]
        assert [line.split(": ")[0] for line in scanned] == texts[::-1][: len(scanned)]
        constant = next(line for line in program.lines if line.target == program.chain()[-1])
        assert scanned[-1].split(": ")[0] == constant.text()
        previous = lines[0].split(": ")[1]
        for line in scanned:  # the expression changes only where the line assigns its first variable
            text, expression = line.split(": ")
            target, right = text.split(" = ")
            head, rest = (previous.split(" ", 1) + [""])[:2]
            assert expression == (f"{right} {rest}".strip() if target == head else previous)
            previous = expression
        assert previous.split(" ")[0].isdigit() and eval(previous) == program.answer()  # a sum of constants
        folds = [int(line[2:].split(" ")[0]) for line in lines if line.startswith("= ")]
        assert set(folds) <= set(values.values()) and folds[-1] == program.answer()  # chain values, 0..19
        reply = tasks.long_reply(program, trace=tasks.SCAN)
        assert tasks.first_error(program, reply, trace=tasks.SCAN) is None
        assert tasks.last_number(tasks.cut_reply(program, rng, trace=tasks.SCAN)) == program.answer()
    program = FOUR_LINES
    right = tasks.long_reply(program, trace=tasks.SCAN)
    assert right == (
        "print(d): d\nd = b - 2: b - 2\nb = a + 3: a + 3 - 2\nc = 9: a + 3 - 2\na = 4: 4 + 3 - 2\n= 7 - 2\n= 5\n"
        "So it prints d = 5."
    )
    cases = {
        right.replace("b = a + 3: a", "b = a + 3: c"): tasks.LOOKUP,  # took the wrong variable's place
        right.replace("print(d): d", "print(d): b"): tasks.LOOKUP,
        right.replace("b = a + 3", "b = c + 3"): tasks.COPY,  # read the line wrong
        right.replace("a + 3 - 2\nc", "a + 3 - 3\nc"): tasks.COPY,
        right.replace("= 7 - 2", "= 8 - 2"): tasks.ARITHMETIC,
        right.replace("= 5\n", "= 6\n"): tasks.ARITHMETIC,
    }
    for reply, where in cases.items():
        assert tasks.first_error(program, reply, trace=tasks.SCAN) == where, reply
    assert tasks.first_error(program, tasks.long_reply(program, True, tasks.SCAN), True, tasks.SCAN) is None


def test_the_named_trace_states_every_value_with_its_name():
    rng = random.Random(10)
    for _ in range(300):
        program = tasks.hard_program(rng)
        values = program.values()
        lines = tasks.trace_lines(program, tasks.NAMED)
        assert [line.split(", ")[0] for line in lines] == [line.text() for line in program.lines]
        reply = tasks.long_reply(program, trace=tasks.NAMED)
        # Every `x = N` anywhere in the prompt or the reply is x's value: a lookup is that step alone.
        stated = re.findall(r"\b([a-z]) = (\d+)\b", program.text() + reply)
        assert stated and all(values[name] == int(number) for name, number in stated)
        for line in program.lines:
            assert (line.target, str(values[line.target])) in stated
        assert run_python(program.text()) == f"{tasks.last_number(reply)}\n"
        assert tasks.first_error(program, reply, trace=tasks.NAMED) is None
        assert tasks.last_number(tasks.cut_reply(program, rng, trace=tasks.NAMED)) == program.answer()
    program = FOUR_LINES
    right = tasks.long_reply(program, trace=tasks.NAMED)
    assert right == (
        "a = 4\nc = 9\nb = a + 3, a = 4, 4 + 3 = 7, b = 7\nd = b - 2, b = 7, 7 - 2 = 5, d = 5\nSo it prints d = 5."
    )
    cases = {
        right.replace("b = a + 3, a", "b = c + 3, a"): tasks.COPY,  # the line copied wrong
        right.replace(", a = 4,", ", c = 4,"): tasks.COPY,  # the source's name
        right.replace(", b = 7, 7", ", b = 9, 9"): tasks.LOOKUP,
        right.replace("7 - 2 = 5", "7 - 2 = 6"): tasks.ARITHMETIC,
        right.replace("d = 5\nSo", "d = 4\nSo"): tasks.COPY,  # the result stated again
        right.replace("prints d = 5", "prints d = 7"): tasks.LOOKUP,
        tasks.long_reply(program): tasks.COPY,  # the in-order trace, from a named model
    }
    for reply, where in cases.items():
        assert tasks.first_error(program, reply, trace=tasks.NAMED) == where, reply
    easy = tasks.Program((tasks.Line("m", None, "", 8), tasks.Line("q", "m", "-", 8)), "q", tasks.EASY)
    assert tasks.expected_reply(easy, trace=tasks.NAMED) == tasks.short_reply(easy)


def test_a_goal_dataset_has_goal_traces(tmp_path):
    tasks.write_dataset(tmp_path / "g", 300, seed=11, trace=tasks.GOAL)
    tasks.write_dataset(tmp_path / "o", 300, seed=11)
    goal = [json.loads(line) for line in (tmp_path / "g" / "train.jsonl").read_text().splitlines()]
    order = [json.loads(line) for line in (tmp_path / "o" / "train.jsonl").read_text().splitlines()]
    first_cut = next(i for i, r in enumerate(order) if HINT in r["response"])  # the cut point's draw differs
    assert [r["question"] for r in goal[: first_cut + 1]] == [r["question"] for r in order[: first_cut + 1]]
    assert all(g["response"] != o["response"] for g, o in zip(goal, order[:first_cut]) if "\n" in o["response"])
    long = [r for r in goal if "\n" in r["response"] and HINT not in r["response"]]
    assert len(long) > 100
    for row in long:  # the first line is the printed variable's own line
        printed = row["question"].rsplit("print(", 1)[1].split(")")[0]
        assert row["response"].startswith(f"{printed} = ")
        assert row["response"].endswith(f"So it prints {printed} = {tasks.last_number(row['response'])}.")


def test_dataset_mixes_short_and_long_and_the_twin_is_long_only(tmp_path):
    tasks.write_dataset(tmp_path / "mixed", 600, seed=11)
    tasks.write_dataset(tmp_path / "twin", 600, seed=11, style=tasks.LONG_ONLY)
    mixed = [json.loads(line) for line in (tmp_path / "mixed" / "train.jsonl").read_text().splitlines()]
    twin = [json.loads(line) for line in (tmp_path / "twin" / "train.jsonl").read_text().splitlines()]
    assert len(mixed) == 600 and (tmp_path / "mixed" / "valid.jsonl").is_file()
    short = [r for r in mixed if r["response"].startswith("It prints") and "\n" not in r["response"]]
    cut = [r for r in mixed if HINT in r["response"]]
    assert 0.2 < len(short) / 600 < 0.4 and 0.05 < len(cut) / 600 < 0.2
    assert not any(r["response"].startswith("It prints") for r in twin)
    assert all(tasks.RECHECK in r["response"] or HINT in r["response"] for r in twin)
    # Both prompt renderings appear: the .py problem through `z1 solve`, the bare program through chat.
    assert any(r["question"].startswith(solve_messages("x", "py")[-1]["content"][:40]) for r in mixed)
    assert any(r["question"].endswith(")") and "```" not in r["question"] for r in mixed)
    # Same seed, same bytes; and z1 finetune reads every row as Z1's question/response format.
    tasks.write_dataset(tmp_path / "again", 600, seed=11)
    assert (tmp_path / "again" / "train.jsonl").read_bytes() == (tmp_path / "mixed" / "train.jsonl").read_bytes()
    parsed = [parse_file(tmp_path / "mixed" / "train.jsonl", False)]
    issues = parsed[0].issues
    assert not issues and parsed[0].format == "question/response" and len(parsed[0].rows) == 600


def test_evaluation_programs_are_not_training_programs(tmp_path):
    tasks.write_dataset(tmp_path / "d", 3000, seed=1)
    trained = {json.loads(line)["question"] for line in (tmp_path / "d" / "train.jsonl").read_text().splitlines()}
    fresh = tasks.fresh_programs(tasks.HARD, 200, 0)
    assert not any(tasks.question(p, r) in trained for p in fresh for r in tasks.RENDERINGS)


def test_a_wrong_reply_is_diagnosed_where_it_first_goes_wrong():
    line = tasks.Line
    program = FOUR_LINES
    right = tasks.long_reply(program)
    assert right == "a = 4\nc = 9\nb = a + 3 = 4 + 3 = 7\nd = b - 2 = 7 - 2 = 5\nSo it prints d = 5."
    cases = {
        right: None,
        right.replace("b = a + 3 = 4", "b = a + 3 = 9"): tasks.LOOKUP,  # took c's value for a's
        right.replace("= 7 - 2 = 5", "= 17 - 2 = 15"): tasks.LOOKUP,
        right.replace("b = a + 3", "b = c + 3", 1): tasks.COPY,
        right.replace("c = 9", "c = 8"): tasks.COPY,
        right.replace("= 4 + 3", "= 4 - 3"): tasks.COPY,
        right.replace("= 4 + 3 = 7", "= 4 + 3 = 8"): tasks.ARITHMETIC,
        right.replace("So it prints d = 5", "So it prints d = 6"): tasks.LOOKUP,
        right.replace("So it prints d", "So it prints b"): tasks.COPY,
        right + "\nmore": tasks.OTHER,
        right[:10]: tasks.OTHER,
        tasks.long_reply(program, recheck=True): tasks.OTHER,  # the twin's style from the mixed model
    }
    for reply, where in cases.items():
        assert tasks.first_error(program, reply) == where, reply
    assert tasks.first_error(program, tasks.long_reply(program, recheck=True), recheck=True) is None
    easy = tasks.Program((line("m", None, "", 8), line("q", "m", "-", 8)), "q", tasks.EASY)
    assert tasks.short_reply(easy) == "It prints q = m - 8 = 8 - 8 = 0."
    assert tasks.first_error(easy, "It prints m = 8.") == tasks.COPY  # the other line
    assert tasks.first_error(easy, "It prints q = m - 8 = 9 - 8 = 1.") == tasks.LOOKUP
    assert tasks.first_error(easy, "It prints q = m - 8 = 8 - 8 = 1.") == tasks.ARITHMETIC
    assert tasks.first_error(easy, "It prints q = m - 8 = 8 - 8 = 0.") is None
    assert tasks.first_error(easy, "m = 8\nq = m - 8 = 8 - 8 = 0\nSo it prints q = 0.") == tasks.OTHER


def test_a_cut_row_has_the_ids_the_window_gives_the_model():
    """The window appends the hint's own ids to what the model wrote; a cut training row must
    tokenize to exactly that: the trace's first ids, then the hint's, then the answer's."""
    from mlx_lm.utils import load_tokenizer

    from z1mlx.microz1 import MODELS

    tokenizer = load_tokenizer(MODELS / "demo")

    def encode(text):
        return tokenizer.encode(text, add_special_tokens=False)

    hint = encode(HINT)
    rng = random.Random(11)
    for index in range(600):
        program = tasks.hard_program(rng)
        recheck, wording = rng.random() < 0.5, (tasks.IN_ORDER, tasks.NAMED)[index % 2]
        row = tasks.cut_reply(program, rng, recheck, trace=wording)
        trace, answer = row.split(HINT)
        start = encode(trace)
        assert encode(tasks.long_reply(program, recheck, wording))[: len(start)] == start, row
        assert encode(row) == start + hint + encode(answer), row


def test_the_recipe_builds_the_shipped_tokenizer_id_for_id():
    """Every stage trains on the first stage's tokenizer; a fresh recipe run must build it again."""
    from tokenizers import Tokenizer

    from z1mlx.microz1 import MODELS
    from z1mlx.microz1.build import build_tokenizer

    for name in ("demo", "demo-long", "demo-draft"):
        shipped = Tokenizer.from_file(str(MODELS / name / "tokenizer.json")).get_vocab()
        kind = json.loads((MODELS / name / "config.json").read_text())["micro_z1"].get("tokenizer", "letters")
        assert build_tokenizer(512, kind).get_vocab() == shipped, name


def chain_lookup_distances(program: tasks.Program) -> list[int]:
    return [distance for _, distance in program.chain_lookups()]


def program_of(question: str) -> tasks.Program:
    """The program a training row's question holds, in either rendering."""
    body = question.split("```python\n")[-1].split("\n```")[0]
    *assignments, printed = body.strip().split("\n")
    lines = []
    for text in assignments:
        target, expression = text.split(" = ")
        parts = expression.split(" ")
        lines.append(tasks.Line(target, None, "", int(parts[0])) if len(parts) == 1 else
                     tasks.Line(target, parts[0], parts[1], int(parts[2])))  # fmt: skip
    kind = tasks.EASY if len(lines) <= 2 else tasks.HARD
    return tasks.Program(tuple(lines), printed[len("print(") : -1], kind)


def test_the_spread_layout_is_the_same_family_with_lookups_at_every_distance_alike():
    rng = random.Random(11)
    plain = [d for _ in range(500) for d in chain_lookup_distances(tasks.hard_program(rng))]
    assert plain.count(1) / len(plain) > 0.6  # the evaluation's layout: mostly the line just above
    spread = []
    for _ in range(600):
        program = tasks.hard_program(rng, spread=True)
        assert run_python(program.text()) == f"{program.answer()}\n"
        assert all(0 <= v <= tasks.MAX_VALUE for v in program.values().values())
        assert 4 <= len(program.lines) <= 8 and 3 <= len(program.chain()) <= 4
        assert len(program.chain()) < len(program.lines)  # a line that does not matter
        spread += chain_lookup_distances(program)
    assert set(spread) == {1, 2, 3}
    assert all(0.25 < spread.count(d) / len(spread) < 0.42 for d in (1, 2, 3))


def test_spread_rows_are_training_rows_only_and_a_zero_share_changes_no_row(tmp_path):
    tasks.write_dataset(tmp_path / "plain", 300, seed=4)
    tasks.write_dataset(tmp_path / "zero", 300, seed=4, spread_share=0.0)
    tasks.write_dataset(tmp_path / "spread", 300, seed=4, spread_share=1.0)
    for split in ("train", "valid"):
        assert (tmp_path / "plain" / f"{split}.jsonl").read_text() == (tmp_path / "zero" / f"{split}.jsonl").read_text()

    def hard_distances(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        programs = [program_of(row["question"]) for row in rows]
        for row, program in zip(rows, programs):
            assert tasks.last_number(row["response"]) == program.answer()
        return [chain_lookup_distances(p) for p in programs if p.kind == tasks.HARD]

    spread = hard_distances(tmp_path / "spread" / "train.jsonl")
    assert len(spread) > 150 and all(max(d) <= 3 for d in spread) and any(min(d) >= 2 for d in spread)
    valid = hard_distances(tmp_path / "spread" / "valid.jsonl")  # validation keeps the evaluation's layout
    assert any(max(d) >= 4 or len(d) >= 4 for d in valid)  # chains of 5-6 or lookups past 3 lines


def test_two_constant_rows_are_training_rows_only_and_a_zero_share_changes_no_row(tmp_path):
    tasks.write_dataset(tmp_path / "plain", 400, seed=5)
    tasks.write_dataset(tmp_path / "zero", 400, seed=5, recall_share=0.0)
    tasks.write_dataset(tmp_path / "recall", 400, seed=5, recall_share=0.5)
    tasks.write_dataset(tmp_path / "twin", 400, seed=5, recall_share=0.5, style=tasks.LONG_ONLY)
    for split in ("train", "valid"):
        assert (tmp_path / "plain" / f"{split}.jsonl").read_text() == (tmp_path / "zero" / f"{split}.jsonl").read_text()
    # validation keeps the evaluation's mix, whatever the share
    assert (tmp_path / "plain" / "valid.jsonl").read_text() == (tmp_path / "recall" / "valid.jsonl").read_text()

    def constants(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        found = []
        for row in rows:
            program = program_of(row["question"])
            assert run_python(program.text()) == f"{program.answer()}\n"
            assert tasks.last_number(row["response"]) == program.answer()
            if program.kind == tasks.EASY and len(program.lines) == 2 and program.lines[1].source is None:
                found.append((program, row["response"]))
        return len(rows), found

    total, plain = constants(tmp_path / "plain" / "train.jsonl")
    assert len(plain) / total < 0.12  # the family's own mix: about 6% of the rows
    total, extra = constants(tmp_path / "recall" / "train.jsonl")
    assert 0.45 < len(extra) / total < 0.65  # half the rows drawn as two constants, plus the mix's own
    assert all(reply == tasks.short_reply(program) for program, reply in extra)  # the mixed set's one sentence
    total, twin = constants(tmp_path / "twin" / "train.jsonl")
    assert 0.45 < len(twin) / total < 0.65
    assert all(tasks.RECHECK in reply or HINT in reply for _, reply in twin)  # a long trace, or one cut


def test_a_copying_row_is_its_question_from_a_random_place_on(tmp_path):
    tasks.write_copy_dataset(tmp_path, 300, seed=2)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    for row in rows:
        text, reply = row["question"], row["response"]
        letters, digits = text[0::2], text[1::2]
        assert 3 <= len(letters) == len(set(letters)) <= 12  # distinct letters: one place to copy a letter from
        assert set(letters) <= set(tasks.LETTERS) and len(digits) == len(letters) and digits.isdigit()
        assert text.endswith(reply) and len(reply) >= 4
    starts = [row["question"].index(row["response"]) for row in rows]
    assert 0 in starts and len(set(starts)) >= 15  # from the start sometimes, mostly from further on
    assert sum(start == 0 for start in starts) < len(rows) / 4


def test_the_evaluation_programs_stay_the_ones_the_figures_were_measured_on():
    """figures.json and every stage's seeds assume these exact programs: a change to how a
    program is drawn (even the order of the random draws) would change them."""
    import hashlib

    for kind, digest in ((tasks.EASY, "ea0e1a5e6b9be6e7"), (tasks.HARD, "18373b830d36063b")):
        text = "".join(program.text() for program in tasks.fresh_programs(kind, 200, 0))
        assert hashlib.sha256(text.encode()).hexdigest()[:16] == digest, kind


def test_a_model_says_its_reply_style(tmp_path):
    from z1mlx.microz1 import reply_style

    (tmp_path / "config.json").write_text(json.dumps({"micro_z1": {"style": "long-only", "trace": "goal"}}))
    assert reply_style(tmp_path) == (True, tasks.GOAL)
    (tmp_path / "config.json").write_text(json.dumps({"micro_z1": {"style": "mixed"}}))
    assert reply_style(tmp_path) == (False, tasks.IN_ORDER)  # trained before the choice
    assert reply_style(tmp_path / "none") == (False, tasks.IN_ORDER)


def test_a_plain_row_is_a_copying_string_or_a_program_and_its_reply_with_no_frame(tmp_path):
    tasks.write_plain_dataset(tmp_path, 600, seed=4)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert all(set(row) == {"text"} for row in rows)  # plain text: no chat frame, loss on all of it
    copies = [row["text"] for row in rows if "=" not in row["text"]]
    programs = [row["text"] for row in rows if "=" in row["text"]]
    assert 240 <= len(copies) <= 360
    for text in copies:
        string, copy, again = text.split("\n")
        assert string.endswith(copy) and len(copy) >= 4 and string[0] in tasks.LETTERS and again == string
    constants = 0
    for text in programs:
        head, reply = text.split(")\n", 1)
        program = program_of(head + ")")
        assert reply == tasks.expected_reply(program)  # the mixed style's reply, exactly
        constants += len(program.lines) == 2 and all(line.source is None for line in program.lines)
    assert 0.28 <= constants / len(programs) <= 0.5  # a third drawn as two constants, plus the family's own


def test_the_words_tokenizer_keeps_each_variable_one_token_and_the_frames_words_whole(tmp_path):
    """What mlx-lm's loader makes of it (Qwen2's own pattern) is what it was trained on."""
    from z1mlx.convert.demo import _tokenizer_files
    from z1mlx.microz1.build import WORDS, build_tokenizer, check_tokenizer

    tokenizer = build_tokenizer(512, WORDS)
    _tokenizer_files(tmp_path, tokenizer)
    check_tokenizer(tmp_path, tasks.tokenizer_corpus(100, seed=5))
    from mlx_lm.utils import load_tokenizer

    loaded = load_tokenizer(tmp_path)
    program = tasks.Program((tasks.Line("a", None, "", 4), tasks.Line("s", "a", "+", 3)), "s", tasks.EASY)
    text = loaded.apply_chat_template(
        [{"role": "user", "content": tasks.question(program, "solve")}], tokenize=False, add_generation_prompt=True
    )
    pieces = [loaded.decode([i]) for i in loaded.encode(text, add_special_tokens=False)]
    for word in ("system", "user", "assistant", "helpful", "script", "print"):
        assert word in pieces, word
    # the word "a" three times in the frame, then `a = 4`, `s = a + 3`, `print(s)`
    assert [p for p in pieces if p in ("s", "a")] == ["a", "a", "a", "a", "s", "a", "s"]
    assert "(" in pieces and " " in pieces and not any(p.strip() in ("s", "a") and p != p.strip() for p in pieces)
    letters = build_tokenizer(512)
    assert len(tokenizer.encode(text).ids) < 0.85 * len(letters.encode(text).ids)  # the frame is shorter


def test_an_echo_row_is_a_string_then_its_copy(tmp_path):
    tasks.write_echo_dataset(tmp_path, 400, seed=4)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 400 and all(set(row) == {"prefix", "completion"} for row in rows)  # loss on the copy
    lengths = set()
    for row in rows:
        string = row["prefix"]
        assert set(string) <= set(tasks.COPY_SYMBOLS) and 6 <= len(string) <= tasks.ECHO_LENGTH
        assert row["completion"] == string
        lengths.add(len(string))
    assert len(lengths) >= 15  # the strings' lengths differ: only the content tells where the copy is
    again = tmp_path / "again"
    tasks.write_echo_dataset(again, 400, seed=4)
    assert (again / "train.jsonl").read_bytes() == (tmp_path / "train.jsonl").read_bytes()  # seeded


def test_a_bare_row_is_a_two_constant_program_and_its_reply_with_no_frame(tmp_path):
    tasks.write_bare_dataset(tmp_path, 300, seed=4)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert all(set(row) == {"prefix", "completion"} for row in rows)  # loss on the reply alone
    printed_first = 0
    for row in rows:
        program = program_of(row["prefix"].rstrip("\n"))
        assert row["prefix"] == program.text() and row["completion"] == tasks.expected_reply(program)
        assert len(program.lines) == 2 and all(line.source is None for line in program.lines)
        assert program.lines[0].target != program.lines[1].target
        printed_first += program.printed == program.lines[0].target
    assert 0.35 <= printed_first / len(rows) <= 0.65  # either line's name printed: only the name tells which


def test_lookup_rows_of_many_lines_and_recall_rows_of_many_lines_in_the_mix(tmp_path):
    tasks.write_lookup_dataset(tmp_path / "many", 400, seed=4, lines=8)
    rows = [json.loads(line) for line in (tmp_path / "many" / "train.jsonl").read_text().splitlines()]
    counts, printed_at = set(), set()
    for row in rows:
        program = program_of(row["question"])
        assert all(line.source is None for line in program.lines)
        assert len({line.target for line in program.lines}) == len(program.lines)
        assert row["response"] == tasks.short_reply(program)
        assert run_python(program.text()) == f"{program.answer()}\n"
        counts.add(len(program.lines))
        printed_at.add([line.target for line in program.lines].index(program.printed))
    assert counts == set(range(2, 9)) and printed_at == set(range(8))  # any line's name may be printed
    tasks.write_dataset(tmp_path / "mix", 400, seed=5, recall_share=0.5, recall_lines=8)
    tasks.write_dataset(tmp_path / "two", 400, seed=5, recall_share=0.5)
    mixed = [json.loads(line) for line in (tmp_path / "mix" / "train.jsonl").read_text().splitlines()]
    many = [row for row in mixed if all(line.source is None for line in program_of(row["question"]).lines)]
    assert 0.45 < len(many) / len(mixed) < 0.65 and max(len(program_of(r["question"]).lines) for r in many) > 2
    assert (tmp_path / "mix" / "valid.jsonl").read_text() == (tmp_path / "two" / "valid.jsonl").read_text()
    tasks.write_dataset(tmp_path / "twin", 400, seed=5, style=tasks.LONG_ONLY, recall_share=0.5, recall_lines=8)
    twin = [json.loads(line) for line in (tmp_path / "twin" / "train.jsonl").read_text().splitlines()]
    many = [row for row in twin if all(line.source is None for line in program_of(row["question"]).lines)]
    assert max(len(program_of(r["question"]).lines) for r in many) > 2
    assert all(tasks.RECHECK in row["response"] or HINT in row["response"] for row in many)  # the twin's long trace


def test_a_lookup_row_is_a_two_constant_program_in_z1s_format_as_the_front_ends_render_it(tmp_path):
    tasks.write_lookup_dataset(tmp_path, 300, seed=4)
    rows = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 300 and all(set(row) == {"question", "response"} for row in rows)  # the chat frame
    renderings = set()
    for row in rows:
        program = program_of(row["question"])
        rendering = next(r for r in tasks.RENDERINGS if tasks.question(program, r) == row["question"])
        renderings.add(rendering)
        assert row["response"] == tasks.short_reply(program)
        assert len(program.lines) == 2 and all(line.source is None for line in program.lines)
    assert renderings == set(tasks.RENDERINGS)  # as `z1 solve` and `z1 chat` render it
    again = tmp_path / "again"
    tasks.write_lookup_dataset(again, 300, seed=4)
    assert (again / "train.jsonl").read_bytes() == (tmp_path / "train.jsonl").read_bytes()  # seeded
