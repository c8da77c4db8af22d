"""Prompts in the reference's style (BigCodeBench/LiveCodeBench evaluations of Z1)."""

CODE_INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following problem in a markdown code block"
)


def solve_messages(problem: str, kind: str = "py", system: str | None = None) -> list[dict]:
    """Chat messages for a problem file: `kind` is "py" (source with a stub, docstring,
    doctests or asserts) or "text" (a prose statement from a .md/.txt file)."""
    problem = problem.strip("\n")
    if kind == "py":
        user = f"{CODE_INSTRUCTION}:\n```python\n{problem}\n```"
    else:
        user = f"{CODE_INSTRUCTION}:\n{problem}"
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": user}]
