"""`z1 finetune`: LoRA/DoRA/full fine-tuning on local JSONL data, with mlx-lm's trainer.

This process checks the data (every line, before anything is written), tokenizes it in
Z1's training format, prepares the output directory and shows progress; the training
itself runs in `z1mlx.finetune_worker`, a child process reporting JSON lines, so that a
crash there is reported here with its cause and Ctrl+C can stop it between two steps.
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import __version__, finetune_data, locations
from .cliutil import ArgumentParser, positive_float, positive_int
from .errors import Z1Error
from .fsutil import atomic_write_text, building_dir, describe_os_error
from .finetune_worker import ADAPTER_CONFIG, METRICS, Job, latest_checkpoint

MANIFEST = "finetune.json"
LOG = "train.log"
LORA_SCALE = 20.0  # mlx-lm's default; with rank 8 the adapter starts as a small update

EXAMPLES = """\
examples:
  z1 finetune --data local.jsonl                      QLoRA on Z1-7B (4-bit), 2 epochs
  z1 finetune --data local.jsonl --dry-run            check the data, print statistics, stop
  z1 finetune --data data/ --iters 600 --out ft       data/train.jsonl (+ valid.jsonl)
  z1 finetune --data local.jsonl --out ft --resume    continue ft from its latest checkpoint
  z1 finetune --data local.jsonl --fuse my-z1         also write a fused model to the store
  z1 chat --adapter ft                                use the adapter without fusing
  z1 solve problem.py --model my-z1                   use the fused model

data (JSONL, one format per file, every line checked):
  {"question": ..., "response": ...}                 Z1's own format
  {"messages": [{"role": "system"|"user"|"assistant", "content": ...}, ...]}
  {"prompt": ..., "completion": ...}
  {"conversations": [{"from": "system"|"human"|"gpt", "value": ...}, ...]}
  {"text": ...}                                       plain text, loss on all of it
  Chat rows are trained as Z1 was: ChatML, user turn = question, assistant turn =
  response + <|im_end|>, loss on the response only (multi-turn rows: on the last reply).
  <think>/</think> tags are removed from replies (the text stays) unless --keep-think-tags.
  Rows longer than --max-seq-length are errors, or with --skip-long are left out; they are
  never truncated (a cut reply loses its end token and teaches the model not to stop).

defaults, chosen for a 16 GB Mac and the store's 4-bit Z1-7B (QLoRA):
  --type lora --rank 8 --layers 16   ~12M trainable parameters (0.15%): the 4-bit base
                                     (4.3 GB) stays frozen, the adapter and its Adam
                                     state take ~150 MB (--type full needs an unquantized
                                     model and far more memory than 16 GB)
  --batch-size 1 --max-seq-length 2048 --grad-checkpoint
                                     Z1's reasoning traces are long; at 2048 tokens the
                                     logits alone take ~1.2 GB per row, and checkpointing
                                     keeps activations to about one layer's worth: an
                                     estimated 7-8 GB peak, inside the ~10.7 GB macOS
                                     lets the GPU use on a 16 GB Mac
  --lr 1e-4 (lora/dora), 1e-5 (full) linear warmup (5%, at most 100 steps), cosine decay
                                     to a tenth, as in Z1's recipe; 1e-5 is Z1's full-
                                     fine-tune rate, LoRA needs about ten times more
  --epochs 2                         Z1's recipe
  --save-every 100 --eval-every 200 --val-batches 25 --report-every 10

output (--out, default: z1's data directory/adapters/DATA-NAME-TIMESTAMP):
  adapter_config.json, adapters.safetensors   loadable by mlx-lm (--adapter-path)
  checkpoints/NNNNNNN/                         every --save-every (and on Ctrl+C)
  metrics.jsonl   finetune.json (manifest)     train.log (the training process's output)

Ctrl+C stops after the current step, saves the adapter and prints the command to resume.
"""


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


DEFAULTS = {
    "valid": None, "model": "z1-7b", "type": "lora", "iters": None, "epochs": 2.0, "batch_size": 1,
    "lr": None, "rank": 8, "layers": None, "max_seq_length": 2048, "grad_checkpoint": True,
    "save_every": 100, "eval_every": 200, "val_batches": 25, "report_every": 10, "seed": 0,
    "keep_think_tags": False, "skip_long": False,
}
# A resumed run must train the same thing the same way; only its length and reporting may change.
FIXED_ON_RESUME = ("type", "batch_size", "lr", "rank", "layers", "max_seq_length", "seed", "keep_think_tags", "skip_long")


def default_lr(fine_tune_type: str) -> float:
    return 1e-5 if fine_tune_type == "full" else 1e-4


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="z1 finetune",
        description="Fine-tune Z1 on your own JSONL data with mlx-lm's LoRA trainer (DoRA and full also).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Defaults are None here and filled in later: with --resume, unset options come from the run.
    p.add_argument("--data", type=Path, help="JSONL file, or a directory with train.jsonl (and valid.jsonl)")
    p.add_argument("--valid", type=Path, help="validation JSONL (default: valid.jsonl in --data, else a seeded 5%% hold-out)")
    p.add_argument("--model", help="base model: z1-7b (default), demo, a directory, a store name or a hub id")
    p.add_argument("--out", type=Path, help="output directory (default: a new one under z1's data directory, printed)")
    p.add_argument("--type", choices=("lora", "dora", "full"), help="what to train (default lora)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=positive_int, help="training steps")
    length.add_argument("--epochs", type=positive_float, help="passes over the training rows (default 2)")
    p.add_argument("--batch-size", type=positive_int, help="rows per step (default 1)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default 1e-4; 1e-5 for full)")
    p.add_argument("--rank", type=positive_int, help="LoRA/DoRA rank (default 8)")
    p.add_argument("--layers", type=positive_int, help="train the last N transformer layers (default 16, or all if fewer)")
    p.add_argument("--max-seq-length", type=positive_int, help="longest row in tokens (default 2048)")
    p.add_argument("--skip-long", action="store_true", default=None, help="leave out rows longer than --max-seq-length instead of stopping")
    p.add_argument("--keep-think-tags", action="store_true", default=None, help="keep <think>/</think> tags in replies")
    p.add_argument("--grad-checkpoint", action=argparse.BooleanOptionalAction, help="recompute activations to save memory (default on)")
    p.add_argument("--save-every", type=positive_int, help="checkpoint every N steps (default 100)")
    p.add_argument("--eval-every", type=positive_int, help="validation loss every N steps (default 200)")
    p.add_argument("--val-batches", type=int, help="batches per validation, -1 for all (default 25)")
    p.add_argument("--report-every", type=positive_int, help="one progress report every N steps (default 10)")
    p.add_argument("--seed", type=int, help="seed for the hold-out, data order and adapter init (default 0)")
    p.add_argument("--resume", action="store_true", help="continue --out DIR from its latest checkpoint")
    p.add_argument("--fuse-dequantize", action="store_true",
                   help="with --fuse: write full-precision fused weights (exact, larger) instead of re-quantizing")
    p.add_argument("--fuse", nargs="?", const="", metavar="NAME",
                   help="after training, write base + adapter as one model to the store (default name: the --out name)")
    p.add_argument("--dry-run", action="store_true", help="check the data, print statistics and stop")
    return p


# ---------------------------------------------------------------- manifest and resume


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
        raise Z1Error(f"{out} has no {MANIFEST}: nothing to resume (is it a `z1 finetune` output directory?)")
    except (OSError, json.JSONDecodeError) as err:
        raise Z1Error(f"{out / MANIFEST} is unreadable ({err}); cannot resume")


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
    stored = previous["settings"]
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


# ---------------------------------------------------------------- progress


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "-:--:--"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


class Progress:
    """Iteration/total, losses, tokens/s, ETA and peak memory: a rich bar on a terminal,
    one plain line per report otherwise (logs, CI, pipes)."""

    def __init__(self, total: int, start: int, rich: bool):
        self.total, self.start = total, start
        self.t0 = None
        self.first = start
        self.stats = {"train_loss": None, "val_loss": None, "tokens_per_second": None, "peak_memory_gb": None}
        self._bar = None
        if rich:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn

            self._bar = RichProgress(
                TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[line]}"),
                console=Console(stderr=True),
            )
            self._task = self._bar.add_task("train", total=total, completed=start, line="starting ...")

    def __enter__(self):
        if self._bar:
            self._bar.__enter__()
        return self

    def __exit__(self, *exc):
        if self._bar:
            self._bar.__exit__(*exc)

    def eta(self, iteration: int) -> float | None:
        if self.t0 is None or iteration <= self.first:
            return None
        rate = (time.perf_counter() - self.t0) / (iteration - self.first)
        return rate * (self.total - iteration)

    def line(self, iteration: int) -> str:
        s = self.stats
        return (
            f"train_loss {_fmt(s['train_loss'], '.3f')}  val_loss {_fmt(s['val_loss'], '.3f')}  "
            f"{_fmt(s['tokens_per_second'], ',.0f')} tok/s  peak {_fmt(s['peak_memory_gb'], '.2f')} GB  "
            f"ETA {_eta(self.eta(iteration))}"
        )

    def note(self, message: str) -> None:
        if self._bar:
            self._bar.console.print(f"[z1] {message}", markup=False, highlight=False)
        else:
            print(f"[z1] {message}", file=sys.stderr, flush=True)

    def step(self, iteration: int) -> None:
        if self.t0 is None:
            self.t0, self.first = time.perf_counter(), iteration - 1
        if self._bar:
            self._bar.update(self._task, completed=iteration, line=self.line(iteration))

    def report(self, event: dict) -> None:
        for key in self.stats:
            if event.get(key) is not None:
                self.stats[key] = event[key]
        it = event["iteration"]
        if self._bar:
            self._bar.update(self._task, completed=it, line=self.line(it))
        else:
            print(f"[z1] iter {it}/{self.total}  {self.line(it)}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the worker


@dataclass
class Outcome:
    status: str  # done, interrupted, error
    iteration: int
    event: dict


def run_worker(job_path: Path, out: Path, progress: Progress) -> Outcome:
    log = open(out / LOG, "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "z1mlx.finetune_worker", str(job_path)],
        stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True, env=env,
    )
    interrupts = 0

    def on_sigint(signum, frame):
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1:
            progress.note("stopping after the current step and saving the adapter (Ctrl+C again to abort)")
            # A terminal's Ctrl+C reaches the worker too; `kill` covers a SIGINT sent to us alone.
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        elif proc.poll() is None:
            proc.kill()

    previous = signal.signal(signal.SIGINT, on_sigint)
    final, iteration = None, progress.start
    try:
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = event.get("event")
            if kind == "step":
                iteration = event["iteration"]
                progress.step(iteration)
            elif kind == "report":
                progress.report(event)
            elif kind == "checkpoint":
                progress.note(f"checkpoint {event['iteration']}: {event['path']}")
            elif kind == "start":
                progress.note(
                    f"training {event['trainable_parameters'] / 1e6:.2f}M of {event['total_parameters'] / 1e6:.1f}M "
                    f"parameters on {event['train_rows']} rows (validation: {event['valid_rows']})"
                )
            elif kind in ("done", "interrupted", "error"):
                final = event
        proc.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    if final is not None:
        status = final["event"]
        return Outcome(status, final.get("iteration", iteration), final)
    if interrupts:
        return Outcome("interrupted", iteration, {"checkpoint": None})
    code = proc.returncode
    if code < 0:
        name = signal.Signals(-code).name
        cause = f"the training process was killed by {name}"
        if -code == signal.SIGKILL:
            cause += " (out of memory? try a smaller --batch-size or --max-seq-length, or --grad-checkpoint)"
    else:
        cause = f"the training process exited with status {code}: {_last_line(out / LOG)}"
    return Outcome("error", iteration, {"message": cause})


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    return lines[-1].strip() if lines else "no output"


# ---------------------------------------------------------------- fuse


FUSE_AGREEMENT_WARNING = 0.9


def fuse_adapter(base: Path, adapter: Path, name: str, base_label: str, dequantize: bool = False) -> Path:
    """Base + adapter as one model in the store, the way `mlx_lm fuse` does it.

    On a quantized base the fused weights are quantized again, which can round away
    part of a small adapter's change; the fused model's top-1 agreement with base +
    adapter on a fixed probe is measured and recorded, with a warning when it is low.
    """
    import contextlib

    import mlx_lm
    from mlx.utils import tree_unflatten
    from mlx_lm.utils import compute_bits_per_weight, load, save

    from .convert.command import Manifest

    out = locations.models_dir() / name
    if out.exists():
        raise Z1Error(f"a model named {name!r} is already in the store ({out}); choose another --fuse NAME")
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model

    from .convert.verify import next_token_predictions, probe_ids

    model, tokenizer, config = load(str(base), adapter_path=str(adapter), return_config=True)
    ids = probe_ids(tokenizer)
    with_adapter = mx.argmax(model(mx.array(ids)[None])[0], axis=-1).tolist()
    fused = [(n, m.fuse(dequantize=dequantize)) for n, m in model.named_modules() if hasattr(m, "fuse")]
    if fused:
        model.update_modules(tree_unflatten(fused))
    if dequantize:
        model = dequantize_model(model)
        config.pop("quantization", None)
        config.pop("quantization_config", None)
    base_manifest = Manifest.read(base)
    quant = config.get("quantization") or {}
    with building_dir(out) as tmp:
        with contextlib.redirect_stdout(sys.stderr):
            save(tmp, str(base), model, tokenizer, config, donate_model=False)
        fused_top1, _ = next_token_predictions(tmp, ids)
        agreement = sum(a == b for a, b in zip(with_adapter, fused_top1)) / len(ids)
        Manifest(
            name=name,
            source=f"{base_label} + {adapter}",
            revision=None,
            bits=None if dequantize else quant.get("bits"),
            group_size=None if dequantize else quant.get("group_size"),
            dtype=base_manifest.dtype if base_manifest else str(config.get("torch_dtype", "?")),
            top1_agreement=agreement,
            size_bytes=0,
            bits_per_weight=round(compute_bits_per_weight(model), 3),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            random_weights=bool(base_manifest and base_manifest.random_weights),
            mlx_lm_version=mlx_lm.__version__,
            base_model=base_label,
        ).write_with_size(tmp)
    return out


# ---------------------------------------------------------------- main


def log(message: str) -> None:
    print(f"[z1] {message}", file=sys.stderr, flush=True)


def _report_data_errors(err: finetune_data.DataErrors) -> Z1Error:
    for line in err.lines():
        print(line, file=sys.stderr)
    return Z1Error(f"{err.summary}; nothing was written")


def _model_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise Z1Error(f"{path}: unreadable config.json ({err})")


def _default_out(settings: Settings) -> Path:
    stem = Path(settings.data).stem if Path(settings.data).is_file() else Path(settings.data).name
    return locations.data_dir() / "adapters" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _print_dry_run(settings: Settings, splits: finetune_data.Splits, iters: int) -> None:
    for path, fmt in splits.formats.items():
        print(f"file: {path} ({fmt})")
    source = "the --valid file" if splits.valid_source == "file" else "a seeded 5% hold-out"
    print(f"validation: {source}")
    for name, rows in (("train", splits.train), ("valid", splits.valid)):
        s = finetune_data.length_stats(rows)
        print(
            f"{name}: {s.rows} rows; tokens per row min {s.min} / median {s.median:g} / max {s.max}; "
            f"{s.tokens:,} tokens, {s.trained_tokens:,} in the loss"
        )
    if splits.skipped_long:
        print(f"skipped: {len(splits.skipped_long)} rows longer than --max-seq-length {settings.max_seq_length}")
    print(f"iterations: {iters} at batch size {settings.batch_size}"
          + (f" ({settings.epochs:g} epochs)" if settings.epochs else ""))


@dataclass
class Plan:
    """Everything resolved and checked before the output directory is touched."""

    settings: Settings
    files: finetune_data.DataFiles
    splits: finetune_data.Splits
    model_path: Path
    num_layers: int
    iters: int


def plan_run(settings: Settings) -> Plan:
    # The data's structure first: no model download or load for a typo in line 7.
    try:
        files = finetune_data.locate_files(Path(settings.data), Path(settings.valid) if settings.valid else None)
    except FileNotFoundError as err:
        raise Z1Error(str(err))
    parsed, issues = finetune_data.parse_all(files, settings.keep_think_tags)
    if issues:
        raise _report_data_errors(finetune_data.DataErrors(issues, f"{len(issues)} problems in the data"))

    # The model: config and tokenizer only; the weights load in the worker.
    from mlx_lm.utils import load_tokenizer

    from .store import resolve_model

    model_path = resolve_model(settings.model)
    config = _model_config(model_path)
    n_layers = int(config.get("num_hidden_layers", 0))
    if settings.layers is not None and n_layers and settings.layers > n_layers:
        raise Z1Error(f"--layers {settings.layers}: {model_path.name} has {n_layers} layers")
    if settings.type == "full" and "quantization" in config:
        raise Z1Error(
            f"--type full needs unquantized weights and {model_path.name} is quantized; "
            "use --type lora/dora, or a model converted with `z1 convert --no-quantize`"
        )
    try:
        splits = finetune_data.build_splits(
            parsed, load_tokenizer(model_path), max_seq_length=settings.max_seq_length,
            batch_size=settings.batch_size, seed=settings.seed, skip_long=settings.skip_long,
        )
    except finetune_data.DataErrors as err:
        raise _report_data_errors(err)
    iters = settings.iters or max(1, round(settings.epochs * (len(splits.train) // settings.batch_size)))
    return Plan(settings, files, splits, model_path, settings.layers or min(16, n_layers), iters)


def data_hashes(plan: Plan) -> dict:
    hashes = {}
    for split, path in (("train", plan.files.train), ("valid", plan.files.valid)):
        if path is not None:
            hashes[split] = {"path": str(path), "sha256": finetune_data.sha256_file(path),
                             "format": plan.splits.formats[str(path)]}
    return hashes


def write_run_files(out: Path, plan: Plan, previous: dict | None, argv: list[str], start: int,
                    hashes: dict, fingerprint: str) -> None:
    import mlx.core as mx
    import mlx_lm

    s = plan.settings
    adapter_config = {
        "fine_tune_type": s.type,
        "num_layers": plan.num_layers,
        "lora_parameters": {"rank": s.rank, "scale": LORA_SCALE, "dropout": 0.0},
        "model": str(plan.model_path),
        "base_model": s.model,
        "batch_size": s.batch_size,
        "iters": plan.iters,
        "learning_rate": s.lr,
        "max_seq_length": s.max_seq_length,
        "mask_prompt": True,
        "seed": s.seed,
    }
    now = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    manifest = {
        "z1mlx_version": __version__,
        "mlx_version": mx.__version__,
        "mlx_lm_version": mlx_lm.__version__,
        "python": sys.version.split()[0],
        "created": (previous or {}).get("created", now),
        "settings": asdict(s),
        "iters": plan.iters,
        "num_layers": plan.num_layers,
        "base_model": {"spec": s.model, "path": str(plan.model_path), "fingerprint": fingerprint},
        "data": {**hashes, "valid_source": plan.splits.valid_source,
                 "rows": {"train": len(plan.splits.train), "valid": len(plan.splits.valid)},
                 "skipped_long": len(plan.splits.skipped_long)},
        "runs": (previous or {}).get("runs", []) + [{"started": now, "argv": argv, "start_iteration": start}],
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(out / ADAPTER_CONFIG, json.dumps(adapter_config, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.resume and args.out is None:
        raise Z1Error("--resume needs --out DIR, the run to continue")
    out = args.out.expanduser().absolute() if args.out else None
    previous = read_manifest(out) if args.resume else None
    settings = resolve_settings(args, previous)
    plan = plan_run(settings)
    if plan.splits.skipped_long:
        log(f"leaving out {len(plan.splits.skipped_long)} rows longer than --max-seq-length {settings.max_seq_length} (--skip-long)")
    if args.dry_run:
        _print_dry_run(settings, plan.splits, plan.iters)
        return 0

    # The output directory: a fresh one, or the run being resumed (same data, same base).
    hashes, fingerprint = data_hashes(plan), model_fingerprint(plan.model_path)
    start, checkpoint = 0, None
    if previous is not None:
        check_resume(previous, out, hashes, fingerprint, plan.model_path)
        checkpoint = latest_checkpoint(out)
        start = int(checkpoint.name) if checkpoint else 0
        if start >= plan.iters and args.fuse is None:
            raise Z1Error(f"{out} already finished {start} iterations; pass --iters N (more than {start}) to train further")
    else:
        out = out or _default_out(settings)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise Z1Error(f"{out} already exists; pass --resume to continue it, or choose another --out")
    fuse_name = None
    if args.fuse is not None:
        fuse_name = args.fuse or out.name
        if "/" in fuse_name or fuse_name.startswith("."):
            raise Z1Error(f"--fuse {fuse_name!r}: a store name has no '/' and does not start with '.'")
        if (locations.models_dir() / fuse_name).exists():
            raise Z1Error(f"a model named {fuse_name!r} is already in the store; choose another --fuse NAME")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise Z1Error(describe_os_error(err, out))
    log(f"output: {out}")
    write_run_files(out, plan, previous, argv, start, hashes, fingerprint)
    truncate_metrics(out, start)

    if start < plan.iters:
        if start:
            log(f"resuming at iteration {start} of {plan.iters} from {checkpoint}")
        outcome = _train(plan, out, start, checkpoint)
        if outcome.status == "interrupted":
            saved = outcome.event.get("checkpoint")
            log(f"interrupted at iteration {outcome.iteration}" + (f"; adapter saved in {saved}" if saved else ""))
            log(f"resume with: {resume_command(argv, out)}")
            return 130
        if outcome.status == "error":
            hint = f"; resume with: {resume_command(argv, out)}" if latest_checkpoint(out) else ""
            raise Z1Error(f"training failed: {outcome.event.get('message')} (details in {out / LOG}){hint}", exit_code=1)
        event = outcome.event
        log(f"done: {plan.iters} iterations in {_eta(event.get('seconds'))}, "
            f"final val_loss {_fmt(event.get('val_loss'), '.3f')}, peak memory {_fmt(event.get('peak_memory_gb'), '.2f')} GB")
    log(f"adapter: {out}  (z1 chat --adapter {shlex.quote(str(out))})")
    if fuse_name:
        log(f"fusing into the store as {fuse_name} ...")
        fused = fuse_adapter(plan.model_path, out, fuse_name, settings.model, dequantize=args.fuse_dequantize)
        from .convert.command import Manifest

        agreement = Manifest.read(fused).top1_agreement
        log(f"fused model: {fused}  (z1 chat --model {fuse_name}); "
            f"top-1 agreement with base + adapter {agreement:.1%}")
        if agreement < FUSE_AGREEMENT_WARNING and not args.fuse_dequantize:
            log("warning: quantizing the fused weights again lost part of the adapter; use --adapter "
                f"{shlex.quote(str(out))} instead, or fuse with --fuse-dequantize (full-precision weights)")
    print(out)
    return 0


def _train(plan: Plan, out: Path, start: int, checkpoint: Path | None) -> Outcome:
    import numpy as np

    s = plan.settings
    with tempfile.TemporaryDirectory(prefix="z1-finetune-") as scratch:
        tokens = Path(scratch) / "tokens.npz"
        packed = {}
        for name, rows in (("train", plan.splits.train), ("valid", plan.splits.valid)):
            packed.update({f"{name}_{k}": v for k, v in finetune_data.pack(rows).items()})
        np.savez(tokens, **packed)
        job = Job(
            model=str(plan.model_path), out=str(out), tokens=str(tokens), scratch=scratch,
            fine_tune_type=s.type, num_layers=plan.num_layers,
            lora_parameters={"rank": s.rank, "scale": LORA_SCALE, "dropout": 0.0},
            batch_size=s.batch_size, learning_rate=s.lr, warmup=min(100, plan.iters // 20),
            iters=plan.iters, start_iteration=start, resume_checkpoint=str(checkpoint) if checkpoint else None,
            save_every=s.save_every, eval_every=s.eval_every, report_every=s.report_every,
            val_batches=s.val_batches, max_seq_length=s.max_seq_length,
            grad_checkpoint=s.grad_checkpoint, seed=s.seed,
        )
        job_path = Path(scratch) / "job.json"
        job.write(job_path)
        with Progress(plan.iters, start, rich=sys.stderr.isatty()) as progress:
            return run_worker(job_path, out, progress)


if __name__ == "__main__":
    sys.exit(main())
