"""The settings of a `z1 finetune` run, in ONE place: their defaults, how flags and a resumed
run's manifest combine into them, and the checks that a resume trains the same thing."""

import argparse
import json
import shlex
from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import Z1Error
from ..fsutil import atomic_write_text
from .job import METRICS

MANIFEST = "finetune.json"


@dataclass
class Settings:
    """Every training argument, resolved; stored in the manifest."""

    data: str
    valid: str | None
    model: str
    type: str
    iters: int | None
    epochs: float | None
    batch_size: int
    lr: float
    rank: int
    layers: int | None  # None: min(16, the model's layers)
    max_seq_length: int
    grad_checkpoint: bool
    save_every: int
    eval_every: int
    val_batches: int
    report_every: int
    seed: int
    keep_think_tags: bool
    skip_long: bool
    batching: str  # "length": mlx-lm's batches of similar length; "shuffled": rows drawn at random


BATCHINGS = ("length", "shuffled")
DEFAULTS = {
    "valid": None,
    "model": "z1-7b",
    "type": "lora",
    "iters": None,
    "epochs": 2.0,
    "batch_size": 1,
    "lr": None,
    "rank": 8,
    "layers": None,
    "max_seq_length": 2048,
    "grad_checkpoint": True,
    "save_every": 100,
    "eval_every": 200,
    "val_batches": 25,
    "report_every": 10,
    "seed": 0,
    "keep_think_tags": False,
    "skip_long": False,
    "batching": "length",
}
# A resumed run must train the same thing the same way; only its length and reporting may change.
FIXED_ON_RESUME = (
    "type",
    "batch_size",
    "lr",
    "rank",
    "layers",
    "max_seq_length",
    "seed",
    "keep_think_tags",
    "skip_long",
    "batching",
)


def default_lr(fine_tune_type: str) -> float:
    return 1e-5 if fine_tune_type == "full" else 1e-4


def model_fingerprint(path: Path) -> str:
    """Config and weight file sizes: cheap, and different for any other model."""
    import hashlib

    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights in sorted(path.glob("*.safetensors")):
        digest.update(f"{weights.name}:{weights.stat().st_size}".encode())
    return digest.hexdigest()


def read_manifest(out: Path) -> dict:
    try:
        return json.loads((out / MANIFEST).read_text())
    except FileNotFoundError:
        raise Z1Error(f"{out} has no {MANIFEST}: nothing to resume (is it a `z1 finetune` output directory?)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise Z1Error(f"{out / MANIFEST} is unreadable ({err}); cannot resume") from err


def resolve_settings(args: argparse.Namespace, previous: dict | None) -> Settings:
    given = {f.name: getattr(args, f.name) for f in fields(Settings) if getattr(args, f.name, None) is not None}
    for key in ("data", "valid"):
        if key in given:
            given[key] = str(Path(given[key]).expanduser().absolute())
    if "model" in given and Path(given["model"]).expanduser().exists():
        given["model"] = str(Path(given["model"]).expanduser().absolute())  # resumable from any directory
    if given.get("val_batches", 1) < 1 and given.get("val_batches") != -1:
        raise Z1Error("--val-batches must be -1 (all) or at least 1")
    if previous is None:
        if "data" not in given:
            raise Z1Error("--data is required (a JSONL file or a directory with train.jsonl)")
        values = {**DEFAULTS, **given}
        if "iters" in given:
            values["epochs"] = None
        if values["lr"] is None:
            values["lr"] = default_lr(values["type"])
        return Settings(**values)
    stored = {**DEFAULTS, **previous["settings"]}  # a run from before a setting existed had its default
    for key in FIXED_ON_RESUME:
        if key in given and given[key] != stored[key]:
            raise Z1Error(
                f"refusing to resume: --{key.replace('_', '-')} {given[key]} differs from the run being resumed "
                f"({stored[key]}); resume with the same settings, or start a new run with another --out"
            )
    values = {**stored, **given}
    if "iters" in given:
        values["epochs"] = None
    elif "epochs" in given:
        values["iters"] = None
    return Settings(**values)


def check_resume(previous: dict, out: Path, hashes: dict, fingerprint: str, model_path: Path) -> None:
    for split in ("train", "valid"):
        before, now = previous["data"].get(split), hashes.get(split)
        if (before or {}).get("sha256") != (now or {}).get("sha256"):
            old = f"{before['path']} (sha256 {before['sha256'][:12]})" if before else "no separate validation file"
            new = f"{now['path']} (sha256 {now['sha256'][:12]})" if now else "no separate validation file"
            raise Z1Error(
                f"refusing to resume {out}: it was trained on {split} data {old}, but this run has {new}; "
                "resume with the same data, or start a new run with another --out"
            )
    base = previous["base_model"]
    if base["fingerprint"] != fingerprint:
        raise Z1Error(
            f"refusing to resume {out}: it was trained on base model {base['spec']} ({base['path']}), "
            f"but this run uses {model_path}, a different model; resume with --model {base['spec']}"
        )


def resume_command(argv: list[str], out: Path) -> str:
    args = [a for a in argv if a != "--resume"]
    if not any(a == "--out" or a.startswith("--out=") for a in args):
        args += ["--out", str(out)]
    return shlex.join(["z1", "finetune", *args, "--resume"])


def truncate_metrics(out: Path, iteration: int) -> None:
    """Drop rows past the checkpoint being resumed from (a hard kill can leave some)."""
    path = out / METRICS
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["iteration"] <= iteration:
                keep.append(line)
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    atomic_write_text(path, "".join(line + "\n" for line in keep))
