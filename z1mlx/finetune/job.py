"""What the `z1 finetune` command and its training worker share: the job file, the output
directory's file names, and which checkpoint a run resumes from. No mlx here."""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

CHECKPOINTS = "checkpoints"
ADAPTERS = "adapters.safetensors"
OPTIMIZER = "optimizer.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
STATE = "state.json"
METRICS = "metrics.jsonl"


@dataclass
class Job:
    model: str
    out: str
    tokens: str
    scratch: str
    fine_tune_type: str
    num_layers: int
    lora_parameters: dict
    batch_size: int
    learning_rate: float
    warmup: int
    iters: int
    start_iteration: int
    resume_checkpoint: str | None
    save_every: int
    eval_every: int
    report_every: int
    val_batches: int
    max_seq_length: int
    grad_checkpoint: bool
    seed: int
    batching: str

    @classmethod
    def read(cls, path: Path) -> "Job":
        return cls(**json.loads(Path(path).read_text()))

    def write(self, path: Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=2))


def checkpoint_dirs(out: Path) -> list[Path]:
    """Complete checkpoints (a state file is written last), oldest first."""
    root = Path(out) / CHECKPOINTS
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.isdigit() and (p / STATE).is_file()]
    return sorted(found, key=lambda p: int(p.name))


def latest_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint that can be resumed from (it keeps the optimizer state)."""
    resumable = [p for p in checkpoint_dirs(out) if (p / OPTIMIZER).is_file()]
    return resumable[-1] if resumable else None
