"""The micro-Z1 recipe: data, a fresh model, `z1 finetune --type full`, `z1 convert`.

    python -m z1mlx.microz1.recipe --work build/microz1              # both models, as shipped
    python -m z1mlx.microz1.recipe --work /tmp/mz --rows 200 --iters 4 --twin-iters 4   # a smoke run
    python -m z1mlx.microz1.recipe --work build/mz2 --continue-from build/microz1 \
        --rows 43200 --iters 3600 --twin-rows 24000 --twin-iters 2000 --lr 3e-4         # stage 2
    python -m z1mlx.microz1.recipe --work build/mz3 --continue-from build/mz2 --stage 3 ...  # stage 3
    python -m z1mlx.microz1.recipe --work build/mz6 --from-shipped --stage 6 ...              # from the package
    python -m z1mlx.microz1.recipe --work build/mz9 --from-shipped --stage 9 --trace goal ... # another trace
    python -m z1mlx.microz1.recipe --work build/mzg --style mixed --tokenizer words \
        --layers 2 --plain-steps 1500 --grow-layers 4 ...        # a plain first phase on 2 layers, then 4
    python -m z1mlx.microz1.recipe --work build/mzf --style mixed --tokenizer words \
        --layers 2 --echo-steps 1500 --lookup-steps 3000 --grow-layers 4 ...  # copying, the lookup, then 4
    python -m z1mlx.microz1.recipe --work build/mz --style mixed --tokenizer words --layers 2 \
        --echo-steps 1500 --lookup-steps 3000 --lookup-lines 8 --grow-layers 4 --trace named \
        --recall-share 0.3 --batching shuffled --rows 12000 --iters 1000  # the shipped models' first phases

Every step is seeded and runs z1's own commands in child processes, with the store in
`WORK/home`, so the recipe is also the end-to-end proof of full fine-tuning:

1. a tokenizer trained on the task's text and a fresh Qwen2 model (`build.py`), in `WORK/base`;
2. the training sets in Z1's `{"question", "response"}` JSONL: `WORK/data-mixed` (easy rows
   get a one-sentence reply, hard rows a trace, as Z1's short and long trajectories) and
   `WORK/data-long-only` (every row a long trace with a re-check, the R1-Distill analogue);
3. `z1 finetune --type full --fuse` on each (all layers, so the whole model trains,
   embeddings included); with both styles the two runs go side by side, one BLAS thread each
   (on 2 cores that trains more tokens per second in all than one run on both);
4. `z1 convert --q-bits 8` (or `--no-quantize`) into `WORK/out/demo` and `WORK/out/demo-long`;
   `--install` copies them into the package, where `--model demo` / `demo-long` load them.

On Linux, float32 training on mlx's bundled BLAS is about ten times slower than on
Debian's OpenBLAS (`apt install libopenblas0-pthread`); the recipe preloads it when it is
there (`LD_PRELOAD=/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3`), and names the
kernel set the CPU runs (`OPENBLAS_CORETYPE=SkylakeX` with AVX-512, `Haswell` with AVX2): that
OpenBLAS falls back to generic kernels on CPUs it does not know, about 2x slower training here.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

from ..finetune.settings import BATCHINGS
from . import MODELS
from .build import TOKENIZERS, MicroSpec, build_fresh_model, check_tokenizer, float32_copy, grow_model
from .tasks import (
    IN_ORDER,
    LONG_ONLY,
    MIXED,
    TRACES,
    tokenizer_corpus,
    write_bare_dataset,
    write_copy_dataset,
    write_dataset,
    write_echo_dataset,
    write_lookup_dataset,
    write_plain_dataset,
)

DRAFT = "draft"  # the demo's draft for speculative decoding: a far smaller model, the same data

OPENBLAS = Path("/usr/lib/x86_64-linux-gnu/openblas-pthread/libblas.so.3")
NAMES = {MIXED: "demo", LONG_ONLY: "demo-long", DRAFT: "demo-draft"}
# The draft: about 0.1M parameters (a few hundred KB), the demo's tokenizer (same vocabulary target).
DRAFT_SPEC = MicroSpec(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=192)  # fmt: skip
# What the shipped models were trained with (2 cores, no GPU, both runs side by side).
DEFAULTS = {
    MIXED: {"rows": 32000, "iters": 2600, "seed": 1},
    LONG_ONLY: {"rows": 22000, "iters": 1800, "seed": 2},
    DRAFT: {"rows": 14400, "iters": 1200, "seed": 3},
}
# A later stage (--continue-from, --stage N) writes its rows from these seeds plus 10 x (N - 1).
STAGE_SEED_OFFSET = 10
BATCH_SIZE = 12
# Measured: at 2e-3 the loss on the looked-up values stayed flat (the model guessed, ~5%); at 5e-4 the
# lookups are learned (EASY 4% -> 70% on the same data).
LEARNING_RATE = 5e-4


def log(message: str) -> None:
    print(f"[recipe] {message}", file=sys.stderr, flush=True)


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The instruction-set flags of this machine's CPU (Linux); empty where they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def openblas_core(flags: frozenset[str]) -> str | None:
    """The OpenBLAS kernel set a CPU with these flags runs, for `OPENBLAS_CORETYPE`.

    Debian's OpenBLAS (0.3.21) does not know every newer x86 CPU; where it does not, it falls
    back to its generic Prescott kernels. Measured on a 2-core Xeon it did not know: float32
    matrix products 15-25 GFLOP/s (SkylakeX kernels: 85-100), and `z1 finetune` of micro-Z1's
    fresh model 322 tokens/s (SkylakeX: 724, the same losses; `bench/bench_blas.py`).
    """
    if {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags:
        return "SkylakeX"
    if {"avx2", "fma"} <= flags:
        return "Haswell"
    return None


def child_env(work: Path, threads: int | None) -> dict:
    env = {**os.environ, "Z1MLX_HOME": str(work / "home"), "HF_HUB_OFFLINE": "1"}
    if sys.platform.startswith("linux"):
        if OPENBLAS.is_file() and "LD_PRELOAD" not in env:
            env["LD_PRELOAD"] = str(OPENBLAS)
        core = openblas_core(cpu_flags())
        if core:
            env.setdefault("OPENBLAS_CORETYPE", core)  # a choice made outside is kept
    if threads:
        env["OPENBLAS_NUM_THREADS"] = str(threads)
    return env


def z1_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "z1mlx", *args]


def data_style(style: str) -> str:
    return MIXED if style == DRAFT else style  # the draft learns the demo's own replies


def finetune_command(
    work: Path, base: Path, style: str, iters: int, batch_size: int, lr: float, batching: str = "length"
) -> list[str]:
    name = f"{NAMES[style]}-float32"
    return full_finetune(base, work / f"data-{style}", work / f"run-{style}", name, iters, batch_size, lr, batching)


def full_finetune(
    base: Path, data: Path, out: Path, name: str, iters: int, batch_size: int, lr: float, batching: str = "length"
) -> list[str]:
    """`z1 finetune --type full` of every weight, fused into the store as `name`."""
    return z1_command(
        "finetune",
        "--model",
        str(base),
        "--type",
        "full",
        "--data",
        str(data),
        "--iters",
        str(iters),
        "--batch-size",
        str(batch_size),
        "--lr",
        str(lr),
        "--no-grad-checkpoint",
        "--out",
        str(out),
        "--report-every",
        "25",
        "--eval-every",
        "500",
        "--val-batches",
        "5",
        "--save-every",
        "250",
        "--batching",
        batching,
        "--fuse",
        name,
    )


def convert(work: Path, style: str, q_bits: int | None, env: dict, trace: str = IN_ORDER) -> Path:
    name = NAMES[style]
    source = work / "home" / "models" / f"{name}-float32"
    out = work / "out" / name
    quant = ["--q-bits", str(q_bits)] if q_bits else ["--no-quantize", "--dtype", "float32"]
    subprocess.run(z1_command("convert", str(source), "--out", str(out), "--force", *quant), env=env, check=True)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config["micro_z1"] = {**config.get("micro_z1", {}), "style": style, "trace": trace}
    config_path.write_text(json.dumps(config, indent=2))
    return out


def grow(source: Path, out: Path, layers: int, seed: int = 0) -> int | None:
    """`source` grown to `layers` in `out` (`build.grow_model`): its depth before, or None (and
    a line saying why) when it already has more layers."""
    depth = json.loads((source / "config.json").read_text())["num_hidden_layers"]
    if layers < depth:
        log(f"--grow-layers {layers}: {source} already has {depth} layers")
        return None
    grow_model(source, out, layers, seed=seed)
    return depth


def shipped_tokenizer() -> str:
    """Which tokenizer the shipped demo was built with (`build.TOKENIZERS`)."""
    path = MODELS / NAMES[MIXED] / "config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    return config.get("micro_z1", {}).get("tokenizer", TOKENIZERS[0])


def same_vocabulary(model_dir: Path, other: Path) -> None:
    """A draft must share the demo's tokenizer, id for id (speculative decoding refuses otherwise)."""
    from tokenizers import Tokenizer

    if not (other / "tokenizer.json").is_file():
        return  # no shipped demo to match (a fresh checkout building everything)
    mine = Tokenizer.from_file(str(model_dir / "tokenizer.json")).get_vocab()
    theirs = Tokenizer.from_file(str(other / "tokenizer.json")).get_vocab()
    if mine != theirs:
        raise RuntimeError(f"the draft's tokenizer differs from {other}'s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m z1mlx.microz1.recipe", description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="working directory (created)")
    p.add_argument(
        "--style",
        choices=(MIXED, LONG_ONLY, "both", DRAFT),
        default="both",
        help="both: the demo and its twin (default); draft: the demo's draft model, for --draft-model",
    )
    p.add_argument("--rows", type=int, help="training rows of the mixed set (default 32000)")
    p.add_argument("--iters", type=int, help="training steps of the mixed model (default 2600)")
    p.add_argument("--twin-rows", type=int, help="training rows of the long-only set (default 22000)")
    p.add_argument("--twin-iters", type=int, help="training steps of the twin (default 1800)")
    p.add_argument("--draft-rows", type=int, help="training rows of the draft (default 14400)")
    p.add_argument("--draft-iters", type=int, help="training steps of the draft (default 1200)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--lr", type=float, default=LEARNING_RATE)
    p.add_argument(
        "--batching",
        choices=BATCHINGS,
        default="length",
        help="how `z1 finetune` batches the task's rows (its --batching; default length, as the shipped models "
        "were trained); the --echo-steps, --bare-steps and --lookup-steps phases are always shuffled",
    )
    p.add_argument("--q-bits", type=int, default=8, help="bits of the shipped weights; 0 for float32 (default 8)")
    p.add_argument("--install", action="store_true", help="copy the converted models into the package")
    p.add_argument(
        "--continue-from",
        type=Path,
        metavar="WORK",
        help="a later stage: train on fresh rows (other seeds) from the float32 models an earlier run left in WORK",
    )
    p.add_argument(
        "--from-shipped",
        action="store_true",
        help="a later stage that goes on from the models in the package (their weights dequantized to float32)",
    )
    p.add_argument(
        "--stage",
        type=int,
        default=2,
        help="with --continue-from: which stage this is (2, 3, ...); each stage's rows come from its own seeds",
    )
    p.add_argument(
        "--grow-layers",
        type=int,
        metavar="N",
        help="with --continue-from: make each model N layers deep first (new layers start as the identity)",
    )
    p.add_argument(
        "--spread-share",
        type=float,
        default=0.0,
        metavar="F",
        help="share of the HARD training rows whose chain lookups reach 1, 2 or 3 lines back, evenly, so that "
        "recency does not tell a value (default 0: the evaluation's layout)",
    )
    p.add_argument(
        "--copy-steps",
        type=int,
        default=0,
        metavar="N",
        help="a fresh model's first phase: N steps of copying random strings (as a base model's pretraining "
        "would teach), then the task (default 0)",
    )
    p.add_argument(
        "--plain-steps",
        type=int,
        default=0,
        metavar="N",
        help="a fresh model's first phase: N steps on plain-text rows with no chat frame (copying strings, and "
        "the task's programs with their replies), then the task in the chat frame (default 0)",
    )
    p.add_argument(
        "--echo-steps",
        type=int,
        default=0,
        metavar="N",
        help="a fresh model's first phase: N steps of plain copying rows (a random string, then the same "
        "again; no chat frame, the loss on the copy alone), as a base model's pretraining would teach (default 0)",
    )
    p.add_argument(
        "--bare-steps",
        type=int,
        default=0,
        metavar="N",
        help="after any first phase: N steps of two-constant programs (`z = 11`, `y = 6`, `print(z)`) and their "
        "replies with no chat frame (the loss on the reply alone), the lookup by name alone (default 0)",
    )
    p.add_argument(
        "--lookup-steps",
        type=int,
        default=0,
        metavar="N",
        help="after any first phase: N steps of two-constant programs in the chat frame, as the front ends "
        "render them, and their replies: the lookup by name where the task needs it (default 0)",
    )
    p.add_argument(
        "--lookup-lines",
        type=int,
        default=2,
        metavar="N",
        help="programs of 2 to N constant lines (at most 8) in place of two-constant ones, in the --lookup-steps "
        "phase and the --recall-share rows: the lookup among many lines that a trace needs (default 2)",
    )
    p.add_argument(
        "--layers",
        type=int,
        metavar="N",
        help="a fresh model's depth (default 4); with a first phase and --grow-layers M, the first phase "
        "trains N layers and the task M",
    )
    p.add_argument(
        "--tokenizer",
        choices=TOKENIZERS,
        default=TOKENIZERS[0],
        help="a fresh model's tokenizer: letters (the shipped models'), or words: the chat frame's words "
        "whole, single letters apart (default letters)",
    )
    p.add_argument(
        "--recall-share",
        type=float,
        default=0.0,
        metavar="F",
        help="share of the training rows that are EASY programs of two constants (`z = 11`, `y = 6`, "
        "`print(z)`), where only the printed name tells the value (default 0: the family's own mix)",
    )
    p.add_argument(
        "--trace",
        choices=TRACES,
        default=IN_ORDER,
        help="how a HARD trace walks the program: every line in order; goal: the printed variable's chain "
        "copied backward, then evaluated forward; scan: read upward from the print, carrying its expression; "
        "named: in order, every value written next to its name (`a = c - 2, c = 9, 9 - 2 = 7, a = 7`) "
        "(default in-order)",
    )
    args = p.parse_args(argv)
    if not 0.0 <= args.spread_share <= 1.0:
        p.error(f"--spread-share {args.spread_share}: a share is between 0 and 1")
    if not 2 <= args.lookup_lines <= 8:
        p.error(f"--lookup-lines {args.lookup_lines}: programs of 2 to 8 lines")
    if not 0.0 <= args.recall_share <= 1.0:
        p.error(f"--recall-share {args.recall_share}: a share is between 0 and 1")
    if args.stage < 2:
        p.error(f"--stage {args.stage}: a later stage is 2 or more (the first stage has no --continue-from)")
    if args.from_shipped and args.continue_from:
        p.error("--from-shipped and --continue-from: a later stage goes on from one of them")
    first_phases = {"copy": args.copy_steps, "plain": args.plain_steps, "echo": args.echo_steps}
    later_phases = {"bare": args.bare_steps, "lookup": args.lookup_steps}
    phase_steps = {**first_phases, **later_phases}  # the order they run in
    for phase, steps in phase_steps.items():
        if steps < 0:
            p.error(f"--{phase}-steps {steps}: a number of steps is 0 or more")
        if steps and (args.continue_from or args.from_shipped):
            p.error(f"--{phase}-steps: the first phase of a fresh model, not of a later stage")
    chosen = [f"--{phase}-steps" for phase, steps in first_phases.items() if steps]
    if len(chosen) > 1:
        p.error(
            f"{' and '.join(chosen)}: a fresh model has one first phase (--bare-steps and --lookup-steps may follow it)"
        )
    first_steps = sum(phase_steps.values())
    if args.grow_layers is not None and not (args.continue_from or args.from_shipped or first_steps):
        p.error(
            "--grow-layers: grows a trained model, so it needs --continue-from WORK, --from-shipped or a first phase"
        )
    if args.layers is not None and args.layers < 1:
        p.error(f"--layers {args.layers}: a depth is 1 or more")
    if args.layers is not None and (args.continue_from or args.from_shipped):
        p.error("--layers: a fresh model's depth; a later stage deepens a model with --grow-layers")

    def fresh_spec(spec: MicroSpec) -> MicroSpec:
        return replace(spec, tokenizer=args.tokenizer, num_hidden_layers=args.layers or spec.num_hidden_layers)

    work = args.work.absolute()
    styles = [MIXED, LONG_ONLY] if args.style == "both" else [args.style]
    sizes = {
        MIXED: (args.rows or DEFAULTS[MIXED]["rows"], args.iters or DEFAULTS[MIXED]["iters"]),
        LONG_ONLY: (args.twin_rows or DEFAULTS[LONG_ONLY]["rows"], args.twin_iters or DEFAULTS[LONG_ONLY]["iters"]),
        DRAFT: (args.draft_rows or DEFAULTS[DRAFT]["rows"], args.draft_iters or DEFAULTS[DRAFT]["iters"]),
    }
    started = time.perf_counter()
    bases: dict[str, Path] = {}
    seed_offset = 0
    if args.continue_from or args.from_shipped:
        # Each model goes on from its own earlier weights, copied so the store names them apart
        # from the models this stage fuses; the rows come from seeds the earlier stage never used.
        seed_offset = STAGE_SEED_OFFSET * (args.stage - 1)
        for style in styles:
            earlier = (
                MODELS / NAMES[style]
                if args.from_shipped
                else args.continue_from.absolute() / "home" / "models" / f"{NAMES[style]}-float32"
            )
            if not (earlier / "config.json").is_file():
                log(f"{earlier} holds no trained model" + ("" if args.from_shipped else " (run the first stage there)"))
                return 2
            if args.from_shipped:
                earlier = float32_copy(earlier, work / f"shipped-{NAMES[style]}")
            bases[style] = work / f"init-{NAMES[style]}"
            shutil.rmtree(bases[style], ignore_errors=True)
            if args.grow_layers is None:
                shutil.copytree(earlier, bases[style])
                log(f"{NAMES[style]} continues from {earlier}")
                continue
            depth = grow(earlier, bases[style], args.grow_layers, seed=args.stage)
            if depth is None:
                return 2
            log(f"{NAMES[style]} continues from {earlier}, grown from {depth} to {args.grow_layers} layers")
    elif styles == [DRAFT]:
        log(f"building a fresh draft model in {work / 'base-draft'}")
        bases[DRAFT] = build_fresh_model(work / "base-draft", fresh_spec(DRAFT_SPEC))
        check_tokenizer(bases[DRAFT], tokenizer_corpus(200, seed=99))
        if args.tokenizer == shipped_tokenizer():
            same_vocabulary(bases[DRAFT], MODELS / NAMES[MIXED])
    else:
        log(f"building a fresh model in {work / 'base'}")
        base = build_fresh_model(work / "base", fresh_spec(MicroSpec()))
        check_tokenizer(base, tokenizer_corpus(200, seed=99))
        bases = {style: base for style in styles}
    if first_steps:
        # The first phases, in order, each from the model the one before it left; every style's
        # task training goes on from the last.
        # These phases' rows are batched at random: in mlx-lm's batches of one length a copy by
        # position fits a whole batch (see `tasks.echo_row`).
        writers: dict[str, Callable[..., Path]] = {
            "copy": write_copy_dataset,
            "plain": write_plain_dataset,
            "echo": write_echo_dataset,
            "bare": write_bare_dataset,
            "lookup": partial(write_lookup_dataset, lines=args.lookup_lines),
        }
        model = next(iter(bases.values()))
        chosen_phases = {phase: steps for phase, steps in phase_steps.items() if steps}
        for phase, steps in chosen_phases.items():
            rows = steps * args.batch_size
            log(f"writing {rows} {phase} rows to {work / f'data-{phase}'}")
            writers[phase](work / f"data-{phase}", rows, seed=DEFAULTS[data_style(styles[0])]["seed"])
            name = f"{model.name.removesuffix('-float32')}-{phase}-float32"
            shutil.rmtree(work / f"run-{phase}", ignore_errors=True)
            shutil.rmtree(work / "home" / "models" / name, ignore_errors=True)
            batching = "shuffled" if phase in ("echo", *later_phases) else args.batching
            command = full_finetune(
                model, work / f"data-{phase}", work / f"run-{phase}", name, steps, args.batch_size, args.lr, batching
            )
            log(f"{phase} rows first: {' '.join(command[2:])}")
            with open(work / f"train-{phase}.log", "w") as log_file:
                code = subprocess.run(
                    command, env=child_env(work, None), stdout=log_file, stderr=subprocess.STDOUT
                ).returncode
            if code:
                log(f"the {phase} phase failed (exit {code}); see {work / f'train-{phase}.log'}")
                return 1
            model = work / "home" / "models" / name
        bases = {style: model for style in styles}
        if args.grow_layers is not None:
            first, grown = model, work / f"base-{phase}-grown"
            depth = grow(first, grown, args.grow_layers)
            if depth is None:
                return 2
            log(f"the task goes on from {first}, grown from {depth} to {args.grow_layers} layers")
            bases = {style: grown for style in styles}
    for style in styles:
        rows, _ = sizes[style]
        seed = DEFAULTS[style]["seed"] + seed_offset
        log(f"writing {rows} {data_style(style)} rows (seed {seed}) to {work / f'data-{style}'}")
        write_dataset(
            work / f"data-{style}",
            rows,
            seed=seed,
            style=data_style(style),
            spread_share=args.spread_share,
            trace=args.trace,
            recall_share=args.recall_share,
            recall_lines=args.lookup_lines,
        )
    for style in styles:  # a rerun starts these from scratch
        shutil.rmtree(work / f"run-{style}", ignore_errors=True)
        shutil.rmtree(work / "home" / "models" / f"{NAMES[style]}-float32", ignore_errors=True)

    threads = 1 if len(styles) > 1 else None
    env = child_env(work, threads)
    # Each base is converted into the store once, before the runs could race to do it.
    for base in dict.fromkeys(bases.values()):
        style = next(s for s in styles if bases[s] == base)
        subprocess.run(
            z1_command("finetune", "--model", str(base), "--type", "full", "--data", str(work / f"data-{style}"))
            + ["--dry-run"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    runs = []
    for style in styles:
        _, iters = sizes[style]
        command = finetune_command(work, bases[style], style, iters, args.batch_size, args.lr, args.batching)
        log(f"training {NAMES[style]}: {' '.join(command[2:])}")
        log_file = open(work / f"train-{style}.log", "w")
        runs.append((style, subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT), log_file))
    failed = False
    for style, proc, log_file in runs:
        code = proc.wait()
        log_file.close()
        if code:
            log(f"training {NAMES[style]} failed (exit {code}); see {work / f'train-{style}.log'}")
            failed = True
    if failed:
        return 1
    for style in styles:
        out = convert(work, style, args.q_bits or None, child_env(work, None), trace=args.trace)
        log(f"{NAMES[style]}: {out}")
        if args.install:
            target = MODELS / NAMES[style]
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(out, target)
            log(f"installed {target}")
    log(f"done in {(time.perf_counter() - started) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
