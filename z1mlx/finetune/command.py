"""`z1 finetune`: LoRA/DoRA/full fine-tuning on local JSONL data, with mlx-lm's trainer.

This process checks the data (every line, before anything is written), tokenizes it in
Z1's training format, prepares the output directory and shows progress; the training
itself runs in `z1mlx.finetune.worker`, a child process reporting JSON lines, so that a
crash there is reported here with its cause and Ctrl+C can stop it between two steps.
"""

import argparse
import json
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__, locations
from ..cliutil import ArgumentParser, positive_float, positive_int
from ..errors import Z1Error
from ..fsutil import atomic_write_text, describe_os_error
from . import data as finetune_data
from .fuse import FUSE_AGREEMENT_WARNING, fuse_adapter
from .job import ADAPTER_CONFIG, Job, latest_checkpoint
from .progress import Progress, eta_text, fmt
from .runner import LOG, Outcome, run_worker
from .settings import (
    BATCHINGS,
    MANIFEST,
    Settings,
    check_resume,
    model_fingerprint,
    read_manifest,
    resolve_settings,
    resume_command,
    truncate_metrics,
)

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
  {"prefix": ..., "completion": ...}                  plain text, loss on the completion
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
  --batching length                  mlx-lm's batches: rows sorted by length, cut into
                                     batches, the batches shuffled; little padding. In a
                                     batch of one length, a model can fit every row by
                                     position alone; --batching shuffled draws each batch's
                                     rows at random (more padding, the same rows per epoch)

output (--out, default: z1's data directory/adapters/DATA-NAME-TIMESTAMP):
  adapter_config.json, adapters.safetensors   loadable by mlx-lm (--adapter-path)
  checkpoints/NNNNNNN/                         every --save-every (and on Ctrl+C)
  metrics.jsonl   finetune.json (manifest)     train.log (the training process's output)

Ctrl+C stops after the current step, saves the adapter and prints the command to resume.
"""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="z1 finetune",
        description="Fine-tune Z1 on your own JSONL data with mlx-lm's LoRA trainer (DoRA and full also).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Defaults are None here and filled in later: with --resume, unset options come from the run.
    p.add_argument("--data", type=Path, help="JSONL file, or a directory with train.jsonl (and valid.jsonl)")
    p.add_argument(
        "--valid", type=Path, help="validation JSONL (default: valid.jsonl in --data, else a seeded 5%% hold-out)"
    )
    p.add_argument("--model", help="base model: z1-7b (default), demo, a directory, a store name or a hub id")
    p.add_argument("--out", type=Path, help="output directory (default: a new one under z1's data directory, printed)")
    p.add_argument("--type", choices=("lora", "dora", "full"), help="what to train (default lora)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--iters", type=positive_int, help="training steps")
    length.add_argument("--epochs", type=positive_float, help="passes over the training rows (default 2)")
    p.add_argument("--batch-size", type=positive_int, help="rows per step (default 1)")
    p.add_argument("--lr", type=positive_float, help="peak learning rate (default 1e-4; 1e-5 for full)")
    p.add_argument("--rank", type=positive_int, help="LoRA/DoRA rank (default 8)")
    p.add_argument(
        "--layers", type=positive_int, help="train the last N transformer layers (default 16, or all if fewer)"
    )
    p.add_argument("--max-seq-length", type=positive_int, help="longest row in tokens (default 2048)")
    p.add_argument(
        "--skip-long",
        action="store_true",
        default=None,
        help="leave out rows longer than --max-seq-length instead of stopping",
    )
    p.add_argument("--keep-think-tags", action="store_true", default=None, help="keep <think>/</think> tags in replies")
    p.add_argument(
        "--grad-checkpoint",
        action=argparse.BooleanOptionalAction,
        help="recompute activations to save memory (default on)",
    )
    p.add_argument("--save-every", type=positive_int, help="checkpoint every N steps (default 100)")
    p.add_argument("--eval-every", type=positive_int, help="validation loss every N steps (default 200)")
    p.add_argument("--val-batches", type=int, help="batches per validation, -1 for all (default 25)")
    p.add_argument("--report-every", type=positive_int, help="one progress report every N steps (default 10)")
    p.add_argument("--seed", type=int, help="seed for the hold-out, data order and adapter init (default 0)")
    p.add_argument(
        "--batching",
        choices=BATCHINGS,
        help="length: each batch rows of about one length, as mlx-lm batches them (least padding); shuffled: "
        "rows drawn at random, so that no batch is all of one length (default length)",
    )
    p.add_argument("--resume", action="store_true", help="continue --out DIR from its latest checkpoint")
    p.add_argument(
        "--fuse-dequantize",
        action="store_true",
        help="with --fuse: write full-precision fused weights (exact, larger) instead of re-quantizing",
    )
    p.add_argument(
        "--fuse",
        nargs="?",
        const="",
        metavar="NAME",
        help="after training, write base + adapter as one model to the store (default name: the --out name)",
    )
    p.add_argument("--dry-run", action="store_true", help="check the data, print statistics and stop")
    return p


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
        raise Z1Error(f"{path}: unreadable config.json ({err})") from err


def _default_out(settings: Settings) -> Path:
    stem = Path(settings.data).stem if Path(settings.data).is_file() else Path(settings.data).name
    return locations.data_dir() / "adapters" / f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


def _print_dry_run(settings: Settings, splits: finetune_data.Splits, iters: int) -> None:
    for path, row_format in splits.formats.items():
        print(f"file: {path} ({row_format})")
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
    print(
        f"iterations: {iters} at batch size {settings.batch_size}"
        + (f" ({settings.epochs:g} epochs)" if settings.epochs else "")
    )


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
        raise Z1Error(str(err)) from err
    parsed, issues = finetune_data.parse_all(files, settings.keep_think_tags)
    if issues:
        raise _report_data_errors(finetune_data.DataErrors(issues, f"{len(issues)} problems in the data"))

    # The model: config and tokenizer only; the weights load in the worker.
    from mlx_lm.utils import load_tokenizer

    from ..store import resolve_model

    model_path = resolve_model(settings.model, quantize=settings.type != "full")
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
            parsed,
            load_tokenizer(model_path),
            max_seq_length=settings.max_seq_length,
            batch_size=settings.batch_size,
            seed=settings.seed,
            skip_long=settings.skip_long,
        )
    except finetune_data.DataErrors as err:
        raise _report_data_errors(err) from err
    epochs = settings.epochs or 1.0  # one of --iters and --epochs is always set
    iters = settings.iters or max(1, round(epochs * (len(splits.train) // settings.batch_size)))
    return Plan(settings, files, splits, model_path, settings.layers or min(16, n_layers), iters)


def data_hashes(plan: Plan) -> dict:
    hashes = {}
    for split, path in (("train", plan.files.train), ("valid", plan.files.valid)):
        if path is not None:
            hashes[split] = {
                "path": str(path),
                "sha256": finetune_data.sha256_file(path),
                "format": plan.splits.formats[str(path)],
            }
    return hashes


def write_run_files(
    out: Path, plan: Plan, previous: dict | None, argv: list[str], start: int, hashes: dict, fingerprint: str
) -> None:
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
        "mlx_version": mx.__version__,  # type: ignore[attr-defined]
        "mlx_lm_version": mlx_lm.__version__,
        "python": sys.version.split()[0],
        "created": (previous or {}).get("created", now),
        "settings": asdict(s),
        "iters": plan.iters,
        "num_layers": plan.num_layers,
        "base_model": {"spec": s.model, "path": str(plan.model_path), "fingerprint": fingerprint},
        "data": {
            **hashes,
            "valid_source": plan.splits.valid_source,
            "rows": {"train": len(plan.splits.train), "valid": len(plan.splits.valid)},
            "skipped_long": len(plan.splits.skipped_long),
        },
        "runs": (previous or {}).get("runs", []) + [{"started": now, "argv": argv, "start_iteration": start}],
    }
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    atomic_write_text(out / ADAPTER_CONFIG, json.dumps(adapter_config, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.resume and args.out is None:
        raise Z1Error("--resume needs --out DIR, the run to continue")
    given_out: Path | None = args.out.expanduser().absolute() if args.out else None
    previous = read_manifest(given_out) if args.resume and given_out else None
    settings = resolve_settings(args, previous)
    plan = plan_run(settings)
    if plan.splits.skipped_long:
        log(
            f"leaving out {len(plan.splits.skipped_long)} rows longer than --max-seq-length "
            f"{settings.max_seq_length} (--skip-long)"
        )
    if args.dry_run:
        _print_dry_run(settings, plan.splits, plan.iters)
        return 0

    # The output directory: a fresh one, or the run being resumed (same data, same base).
    hashes, fingerprint = data_hashes(plan), model_fingerprint(plan.model_path)
    start, checkpoint = 0, None
    out: Path = given_out or _default_out(settings)
    if previous is not None:
        check_resume(previous, out, hashes, fingerprint, plan.model_path)
        checkpoint = latest_checkpoint(out)
        start = int(checkpoint.name) if checkpoint else 0
        if start >= plan.iters and args.fuse is None:
            raise Z1Error(
                f"{out} already finished {start} iterations; pass --iters N (more than {start}) to train further"
            )
    else:
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
        raise Z1Error(describe_os_error(err, out)) from err
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
            raise Z1Error(
                f"training failed: {outcome.event.get('message')} (details in {out / LOG}){hint}", exit_code=1
            )
        event = outcome.event
        log(
            f"done: {plan.iters} iterations in {eta_text(event.get('seconds'))}, "
            f"final val_loss {fmt(event.get('val_loss'), '.3f')}, "
            f"peak memory {fmt(event.get('peak_memory_gb'), '.2f')} GB"
        )
    log(f"adapter: {out}  (z1 chat --adapter {shlex.quote(str(out))})")
    if fuse_name:
        log(f"fusing into the store as {fuse_name} ...")
        fused = fuse_adapter(plan.model_path, out, fuse_name, settings.model, dequantize=args.fuse_dequantize)
        from ..convert.command import Manifest

        manifest = Manifest.read(fused)
        agreement = manifest.top1_agreement if manifest and manifest.top1_agreement is not None else 0.0
        log(f"fused model: {fused}  (z1 chat --model {fuse_name}); top-1 agreement with base + adapter {agreement:.1%}")
        if agreement < FUSE_AGREEMENT_WARNING and not args.fuse_dequantize:
            log(
                "warning: quantizing the fused weights again lost part of the adapter; use --adapter "
                f"{shlex.quote(str(out))} instead, or fuse with --fuse-dequantize (full-precision weights)"
            )
    print(out)
    return 0


def _train(plan: Plan, out: Path, start: int, checkpoint: Path | None) -> Outcome:
    import numpy as np

    s = plan.settings
    with tempfile.TemporaryDirectory(prefix="z1-finetune-") as scratch:
        tokens = Path(scratch) / "tokens.npz"
        packed: dict = {}
        for name, rows in (("train", plan.splits.train), ("valid", plan.splits.valid)):
            packed.update({f"{name}_{k}": v for k, v in finetune_data.pack(rows).items()})
        np.savez(tokens, **packed)
        job = Job(
            model=str(plan.model_path),
            out=str(out),
            tokens=str(tokens),
            scratch=scratch,
            fine_tune_type=s.type,
            num_layers=plan.num_layers,
            lora_parameters={"rank": s.rank, "scale": LORA_SCALE, "dropout": 0.0},
            batch_size=s.batch_size,
            learning_rate=s.lr,
            warmup=min(100, plan.iters // 20),
            iters=plan.iters,
            start_iteration=start,
            resume_checkpoint=str(checkpoint) if checkpoint else None,
            save_every=s.save_every,
            eval_every=s.eval_every,
            report_every=s.report_every,
            val_batches=s.val_batches,
            max_seq_length=s.max_seq_length,
            grad_checkpoint=s.grad_checkpoint,
            seed=s.seed,
            batching=s.batching,
        )
        job_path = Path(scratch) / "job.json"
        job.write(job_path)
        with Progress(plan.iters, start, rich=sys.stderr.isatty()) as progress:
            return run_worker(job_path, out, progress)


if __name__ == "__main__":
    sys.exit(main())
