"""`z1 convert`: a Hugging Face checkpoint to MLX weights, 4-bit by default, atomically."""

import argparse
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import __version__, locations
from ..cliutil import ArgumentParser
from ..errors import Z1Error
from ..fsutil import building_dir, dir_size, is_write_failure
from .source import DEFAULT_SOURCE, Checkpoint, locate

MANIFEST = "z1mlx.json"
DTYPES = ("auto", "float16", "bfloat16", "float32")

EXAMPLES = """\
examples:
  z1 convert                                   Z1-7B from the hub to 4-bit MLX in the store
  z1 convert ./my-checkpoint -o ./my-mlx       a local Hugging Face directory
  z1 convert efficientscaling/Z1-7B --q-bits 8 --q-group-size 32
  z1 convert ./ckpt --no-quantize --dtype float32 --force

--dtype auto picks float16 where Metal is available and float32 on CPU-only hosts:
quantization scales in bfloat16 make CPU quantized matmuls about 7x slower.
"""


@dataclass
class Manifest:
    name: str
    source: str
    revision: str | None
    bits: int | None
    group_size: int | None
    dtype: str
    top1_agreement: float | None
    size_bytes: int
    bits_per_weight: float
    created: str
    random_weights: bool = False
    z1mlx_version: str = __version__
    mlx_lm_version: str = ""
    base_model: str | None = None  # for fused fine-tunes: the store model they came from

    def write(self, directory: Path) -> None:
        (directory / MANIFEST).write_text(json.dumps(asdict(self), indent=2) + "\n")

    def write_with_size(self, directory: Path) -> None:
        """Write last, once the rest of the directory is complete, with its size on disk."""
        self.write(directory)
        self.size_bytes = dir_size(directory)
        self.write(directory)

    @classmethod
    def read(cls, directory: Path) -> "Manifest | None":
        try:
            data = json.loads((Path(directory) / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError):
            return None
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError:
            return None


def metal_available() -> bool:
    import mlx.core as mx

    metal = getattr(mx, "metal", None)
    return bool(metal and metal.is_available())


def resolve_dtype(dtype: str) -> str:
    if dtype != "auto":
        return dtype
    return "float16" if metal_available() else "float32"


def store_name(source: str, bits: int | None, dtype: str) -> str:
    """`efficientscaling/Z1-7B` at 4 bits -> `z1-7b-4bit`."""
    base = Path(source.rstrip("/")).name.lower()
    return f"{base}-{bits}bit" if bits else f"{base}-{dtype}"


def _bits_per_weight(path: Path) -> float:
    from mlx_lm.utils import compute_bits_per_weight, load_model

    model, _ = load_model(path, lazy=True)
    return compute_bits_per_weight(model)


@contextlib.contextmanager
def damaged_checkpoint_errors(checkpoint: Checkpoint):
    """mlx-lm fails in many ways on a damaged checkpoint (truncated weights, a config
    missing fields); each becomes one line naming the directory."""
    try:
        yield
    except (OSError, Z1Error, KeyboardInterrupt):
        raise
    except Exception as err:
        if is_write_failure(err):  # the output's disk, not the source: `building_dir` says so
            raise
        message = str(err).splitlines()[0] if str(err) else ""
        raise Z1Error(f"{checkpoint.path}: cannot convert ({type(err).__name__}: {message})") from err


def convert_checkpoint(
    checkpoint: Checkpoint,
    out: Path,
    *,
    quantize: bool = True,
    q_bits: int = 4,
    q_group_size: int = 64,
    dtype: str = "auto",
    force: bool = False,
    verify: bool = True,
    log=print,
) -> Manifest:
    """Convert with mlx-lm into a hidden sibling of `out`, check it, then rename into place."""
    import mlx_lm
    from mlx_lm.convert import convert
    from mlx_lm.utils import load_tokenizer

    out = Path(out).expanduser().absolute()
    dtype = resolve_dtype(dtype)
    started = time.perf_counter()
    with building_dir(out, replace=force) as tmp:
        agreement = None
        with damaged_checkpoint_errors(checkpoint):
            # mlx-lm reports on stdout; stdout is kept for results.
            with contextlib.redirect_stdout(sys.stderr):
                convert(
                    str(checkpoint.path),
                    mlx_path=str(tmp),
                    quantize=quantize,
                    q_bits=q_bits if quantize else None,
                    q_group_size=q_group_size if quantize else None,
                    dtype=dtype,
                )
            if verify:
                log("[z1] checking next-token predictions against the source")
                from .verify import top1_agreement

                agreement = top1_agreement(checkpoint.path, tmp, load_tokenizer(tmp))
        manifest = Manifest(
            name=out.name,
            source=checkpoint.source,
            revision=checkpoint.revision,
            bits=q_bits if quantize else None,
            group_size=q_group_size if quantize else None,
            dtype=dtype,
            top1_agreement=agreement,
            size_bytes=0,
            bits_per_weight=round(_bits_per_weight(tmp), 3),
            created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            random_weights=bool(checkpoint.config.get("z1mlx_demo", {}).get("random_weights")),
            mlx_lm_version=mlx_lm.__version__,
        )
        manifest.write_with_size(tmp)
    log(
        f"[z1] wrote {out}: {manifest.size_bytes / 1e6:.1f} MB, {manifest.bits_per_weight:.2f} bits/weight, "
        + (f"top-1 agreement {manifest.top1_agreement:.1%}, " if agreement is not None else "")
        + f"{time.perf_counter() - started:.1f}s"
    )
    return manifest


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="z1 convert",
        description="Convert a Hugging Face checkpoint to MLX weights (4-bit by default) in the model store.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", nargs="?", default=DEFAULT_SOURCE, help=f"local HF directory or hub id (default {DEFAULT_SOURCE})"
    )
    parser.add_argument("-o", "--out", type=Path, help="output directory (default: the store, named after the source)")
    parser.add_argument("--q-bits", type=int, choices=(2, 3, 4, 6, 8), default=4, help="bits per weight (default 4)")
    parser.add_argument(
        "--q-group-size", type=int, choices=(32, 64, 128), default=64, help="quantization group size (default 64)"
    )
    parser.add_argument("--no-quantize", action="store_true", help="keep full-precision weights")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="weight/scale dtype (default auto)")
    parser.add_argument("--revision", help="hub branch, tag or commit")
    parser.add_argument("--force", action="store_true", help="replace an existing output directory")
    parser.add_argument("--no-verify", action="store_true", help="skip the next-token agreement check")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint = locate(args.source, args.revision)
    quantize = not args.no_quantize
    dtype = resolve_dtype(args.dtype)
    out = args.out or locations.models_dir() / store_name(args.source, args.q_bits if quantize else None, dtype)
    manifest = convert_checkpoint(
        checkpoint,
        out,
        quantize=quantize,
        q_bits=args.q_bits,
        q_group_size=args.q_group_size,
        dtype=dtype,
        force=args.force,
        verify=not args.no_verify,
        log=lambda msg: print(msg, file=sys.stderr),
    )
    print(out)
    if manifest.top1_agreement is not None and manifest.top1_agreement < 0.9 and quantize and args.q_bits >= 4:
        print(
            f"[z1] warning: top-1 agreement {manifest.top1_agreement:.1%} is low for {args.q_bits}-bit", file=sys.stderr
        )
    return 0
