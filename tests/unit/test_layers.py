"""The layer rule, read from the source: every import, deferred ones included, and what
each module pulls in through the modules it imports.

- the window, its events and the backend contract import no mlx, no HTTP client, no UI;
- the TUI never imports mlx or the local engine;
- the core (window, engine, remote, store, convert, ...) imports no front end and no UI.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Source folders and the package each one installs as (pyproject's package-dir).
PACKAGES = {"z1mlx": ROOT / "z1mlx", "z1mlx.convert": ROOT / "convert", "z1mlx.tui": ROOT / "tui"}


def modules() -> dict[str, Path]:
    found = {}
    for package, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = modules()


def imports_of(name: str) -> set[str]:
    """Every module `name` imports anywhere in its file, as absolute names."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names if f"{module}.{alias.name}" in MODULES)
    return out


def reach(start: str) -> dict[str, str]:
    """Every module reachable from `start`, with the module that first imported it."""
    seen, todo = {start: start}, [start]
    while todo:
        current = todo.pop()
        for imported in imports_of(current):
            local = imported
            while local and local not in MODULES:
                local = local.rpartition(".")[0]  # `z1mlx.store.find` -> `z1mlx.store`
            key = local or imported
            if key not in seen:
                seen[key] = current
                if local:
                    todo.append(local)
    return seen


def offenders(sources: list[str], forbidden: list[str]) -> list[str]:
    bad = []
    for source in sources:
        for module, via in reach(source).items():
            if module != source and any(module == f or module.startswith(f + ".") for f in forbidden):
                bad.append(f"{source} reaches {module} (imported by {via})")
    return bad


CORE = [
    "z1mlx.window",
    "z1mlx.events",
    "z1mlx.backend",
    "z1mlx.batch",
    "z1mlx.engine",
    "z1mlx.remote",
    "z1mlx.store",
    "z1mlx.answer",
    "z1mlx.prompts",
    "z1mlx.convert.command",
]
UI = ["textual", "rich", "prompt_toolkit"]


@pytest.mark.parametrize(
    "sources, forbidden",
    [
        (["z1mlx.window", "z1mlx.events", "z1mlx.backend"], ["mlx", "mlx_lm", "httpx", "starlette", "uvicorn", *UI]),
        ([m for m in MODULES if m.startswith("z1mlx.tui")], ["mlx", "mlx_lm", "z1mlx.engine"]),
        (CORE, ["z1mlx.solve", "z1mlx.chat", "z1mlx.serve", "z1mlx.tui", "z1mlx.finetune", "z1mlx.cli", *UI]),
    ],
    ids=["window-pure", "tui-no-mlx", "core-no-front-end"],
)
def test_layer_rule(sources, forbidden):
    assert all(s in MODULES for s in sources)
    assert offenders(sources, forbidden) == []


def test_the_rule_catches_a_violation(tmp_path, monkeypatch):
    """The checker itself: a module that imports mlx in a function is found."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import mlx.core as mx\n")
    monkeypatch.setitem(MODULES, "z1mlx.bad", bad)
    assert offenders(["z1mlx.bad"], ["mlx"]) == ["z1mlx.bad reaches mlx.core (imported by z1mlx.bad)"]
