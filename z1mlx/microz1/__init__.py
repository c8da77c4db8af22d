"""micro-Z1: a tiny model trained the way Z1 was, shipped as the offline `demo` model.

It knows one task family only (see `tasks`): tiny straight-line Python programs, answered
at once when easy and with a step-by-step trace when hard. `demo-long` is its long-only
twin (every reply a long trace with a re-check), the R1-Distill analogue. The recipe that
made both is `python -m z1mlx.microz1.recipe`.
"""

import json
from pathlib import Path

MODELS = Path(__file__).parent / "models"


def shipped_dir(name: str) -> Path:
    return MODELS / name


def reply_style(path: Path) -> tuple[bool, str]:
    """(re-checks, trace) of the micro-Z1 model in `path`: whether it is the long-only twin, and
    how its traces walk a program (`tasks.TRACES`; models trained before the choice: in order)."""
    try:
        config = json.loads((Path(path) / "config.json").read_text()).get("micro_z1", {})
    except (OSError, json.JSONDecodeError):
        config = {}
    return config.get("style") == "long-only", config.get("trace", "in-order")


def parameter_count(config: dict) -> int:
    """Parameters of a Qwen2 model with tied embeddings, from its config."""
    h, inter, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    kv = config["num_key_value_heads"] * (h // config["num_attention_heads"])
    per_layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * inter + 2 * h
    return config["vocab_size"] * h + layers * per_layer + h


def micro_label(path: Path) -> str | None:
    """What a micro-Z1 model is, for every place that names it; None for other models."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if "micro_z1" not in config:
        return None
    millions = parameter_count(config) / 1e6
    style = config["micro_z1"].get("style", "mixed")
    kinds = {"long-only": "long-only twin, every reply a long trace", "draft": "the demo's draft for --draft-model"}
    kind = kinds.get(style, "short or step-by-step replies")
    measured = ""
    try:
        figures = json.loads((MODELS / "figures.json").read_text())["models"][Path(path).name]
        easy, hard = figures["easy"]["accuracy"], figures["hard"][-1]["accuracy"]
        measured = f"; measured accuracy: easy {easy:.0%}, hard {hard:.0%}"
    except (OSError, KeyError, IndexError, TypeError, json.JSONDecodeError):
        pass
    return (
        f"micro-Z1: a {millions:.1f}M-parameter model trained only on tiny straight-line Python programs, "
        f"{kind}{measured}; anything else gets nonsense"
    )
