"""micro-Z1's figures: accuracy and thinking tokens on fresh programs, under the window.

Every reply goes through the engine and the window driver exactly as `z1 solve` runs
it (greedy, the problem rendered as a `.py` file, or as a chat message), so the figures
are the product's, not a separate decoding loop's.
"""

import statistics
from dataclasses import asdict, dataclass

from ..prompts import solve_messages
from ..window import ShiftedWindow
from .tasks import ERRORS, IN_ORDER, Program, first_error, fresh_programs, last_number

FULL_BUDGET = 512  # covers the longest trace of either model
ANSWER_TOKENS = 24
BUDGETS = (0, 8, 16, 32, 64, FULL_BUDGET)


@dataclass(frozen=True)
class Outcome:
    correct: bool
    thinking_tokens: int
    window_hit: bool
    answered: bool  # the reply holds a number (after the hint, when the window shifted)
    trace: bool  # more than one line of phase-1 text: a step-by-step trace
    error: str | None = None  # a wrong reply that ended inside its window: where it first went wrong


@dataclass(frozen=True)
class Summary:
    kind: str
    budget: int
    problems: int
    accuracy: float
    mean_thinking_tokens: float
    window_hits: int
    answered_after_hint: float | None  # share of shifted replies that gave a number
    traces: float  # share of replies with a multi-line trace
    errors: dict[str, int]  # wrong replies that ended inside the window, by where they first went wrong

    def as_dict(self) -> dict:
        return asdict(self)


def messages_for(program: Program, rendering: str = "solve") -> list[dict]:
    if rendering == "solve":
        return solve_messages(program.text(), "py")
    return [{"role": "user", "content": program.text().rstrip("\n")}]


def run_one(
    engine, program: Program, budget: int, rendering: str = "solve", recheck: bool = False, trace: str = IN_ORDER
) -> Outcome:
    from ..events import Done

    window = ShiftedWindow(budget=budget, answer_tokens=ANSWER_TOKENS)
    result = None
    for event in engine.generate(engine.chat_prompt(messages_for(program, rendering)), window):
        if isinstance(event, Done):
            result = event.result
    assert result is not None
    return outcome_of(result, program, recheck, trace)


def outcome_of(result, program: Program, recheck: bool = False, trace: str = IN_ORDER) -> Outcome:
    number = last_number(result.text)
    answered = last_number(result.answer_text) is not None if result.window_hit else number is not None
    correct = number == program.answer()
    return Outcome(
        correct=correct,
        thinking_tokens=result.thinking_tokens,
        window_hit=result.window_hit,
        answered=answered,
        trace=result.thinking_text.strip().count("\n") >= 1,
        error=first_error(program, result.text, recheck, trace) if not correct and not result.window_hit else None,
    )


def summarize(kind: str, budget: int, outcomes: list[Outcome]) -> Summary:
    shifted = [o for o in outcomes if o.window_hit]
    return Summary(
        kind=kind,
        budget=budget,
        problems=len(outcomes),
        accuracy=sum(o.correct for o in outcomes) / len(outcomes),
        mean_thinking_tokens=statistics.mean(o.thinking_tokens for o in outcomes),
        window_hits=len(shifted),
        answered_after_hint=sum(o.answered for o in shifted) / len(shifted) if shifted else None,
        traces=sum(o.trace for o in outcomes) / len(outcomes),
        errors={kind: sum(o.error == kind for o in outcomes) for kind in ERRORS},
    )


def evaluate(
    engine,
    kind: str,
    count: int,
    budgets=(FULL_BUDGET,),
    seed: int = 0,
    rendering: str = "solve",
    recheck: bool = False,
    trace: str = IN_ORDER,
):
    """One `Summary` per budget, on `count` fresh programs of `kind`; every budget of a program
    comes from one phase 1 (`Engine.sweep`), each equal to a separate run with that budget.
    `recheck`, `trace`: the model's reply style (the long-only twin re-checks; how its trace walks
    the program), against which its wrong replies are diagnosed (`reply_style` reads both)."""
    programs = fresh_programs(kind, count, seed)
    window = ShiftedWindow(budget=max(budgets), answer_tokens=ANSWER_TOKENS)
    outcomes: dict[int, list[Outcome]] = {b: [] for b in budgets}
    for program in programs:
        results, _ = engine.sweep(engine.chat_prompt(messages_for(program, rendering)), window, list(budgets))
        for budget in budgets:
            outcomes[budget].append(outcome_of(results[budget], program, recheck, trace))
    return [summarize(kind, b, outcomes[b]) for b in budgets]
