"""The model store, and what `--model` means.

`--model` accepts, in this order: the aliases `z1-7b`, `z1-7b-draft` (its draft model for
`--draft-model`: Qwen2.5-Coder-0.5B-Instruct), `demo` (micro-Z1, shipped in the package),
`demo-long` (its long-only twin), `demo-draft` (its draft) and `demo-random` (random weights
with Z1-7B's architecture, built into the store on first use), a local directory (an
MLX model is used as is; a Hugging Face checkpoint is converted once into the store), a
model name in the store (see `z1 models`), or a hub id (converted once into the store,
unless the repository already holds MLX weights).
"""

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from . import locations
from .convert.command import MANIFEST, Manifest, convert_checkpoint, resolve_dtype, store_name
from .convert.source import (
    DEFAULT_SOURCE,
    SUPPORTED_ARCHITECTURES,
    Checkpoint,
    check_checkpoint,
    fetch,
    looks_like_hub_id,
    offline,
)
from .errors import ModelNotAvailable, Z1Error
from .fsutil import TMP_MARK, describe_os_error, describe_write_failure, is_write_failure

DEFAULT_MODEL = "z1-7b"
DEMO = "demo"
DEMO_LONG = "demo-long"
DEMO_RANDOM = "demo-random"
DEMO_DRAFT = "demo-draft"  # the demo's draft model for --draft-model (speculative decoding)
# Z1-7B's draft for speculative decoding: its base family's smallest coder, same tokenizer.
DRAFT_MODEL = "z1-7b-draft"
DRAFT_SOURCE = "Qwen/Qwen2.5-Coder-0.5B-Instruct"
SHIPPED = (DEMO, DEMO_LONG, DEMO_DRAFT)  # micro-Z1, its twin and its draft, inside the package: no build step
ALIASES = {
    DEFAULT_MODEL: DEFAULT_SOURCE,
    DRAFT_MODEL: DRAFT_SOURCE,
    DEMO: None,
    DEMO_LONG: None,
    DEMO_DRAFT: None,
    DEMO_RANDOM: None,
}


@dataclass(frozen=True)
class StoredModel:
    name: str
    path: Path
    manifest: Manifest | None


def log(msg: str) -> None:
    print(msg, file=sys.stderr)


def list_models() -> list[StoredModel]:
    root = locations.models_dir()
    if not root.is_dir():
        if root.exists() or (root.parent.exists() and not root.parent.is_dir()):
            raise Z1Error(f"the model store {root} is not a directory (check $Z1MLX_HOME)")
        return []
    try:
        paths = sorted(root.iterdir())
    except OSError as err:
        raise Z1Error(f"cannot read the model store {root}: {err.strerror}") from err
    entries = []
    for path in paths:
        if path.name.startswith((".", TMP_MARK)) or not (path / "config.json").is_file():
            continue
        entries.append(StoredModel(path.name, path, Manifest.read(path)))
    return entries


def find(name: str) -> StoredModel | None:
    return next((m for m in list_models() if m.name == name), None)


def remove(name: str) -> Path:
    model = find(name)
    if model is None:
        known = ", ".join(m.name for m in list_models()) or "the store is empty"
        raise Z1Error(f"no model named {name!r} in the store ({known})")
    # Rename first so a half-deleted directory never looks like a model; the pid lets
    # the next build sweep it away if this process is killed mid-delete.
    doomed = model.path.with_name(f"{TMP_MARK}rm-{model.name}-{os.getpid()}")
    try:
        model.path.rename(doomed)
    except OSError as err:
        raise Z1Error(describe_os_error(err, model.path)) from err
    shutil.rmtree(doomed, ignore_errors=True)
    return model.path


def is_mlx_model(path: Path) -> bool:
    """MLX weights: written by z1 (manifest) or by mlx-lm (quantization in config)."""
    if (path / MANIFEST).is_file():
        return True
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return "quantization" in config


def shipped_model(name: str) -> Path:
    """micro-Z1 (`demo`), its long-only twin (`demo-long`) or its draft (`demo-draft`), as shipped."""
    from .microz1 import shipped_dir

    path = shipped_dir(name)
    if not (path / "config.json").is_file():
        raise Z1Error(f"the {name} model is missing from this installation ({path}); reinstall z1-mlx")
    return path


def demo_model(spec: str) -> Path | None:
    """The directory of a demo alias (`demo`, `demo-long`, `demo-draft`, `demo-random`); None otherwise."""
    if spec in SHIPPED:
        return shipped_model(spec)
    if spec == DEMO_RANDOM:
        return ensure_demo()
    return None


def ensure_demo() -> Path:
    """Build the random tiny model (`demo-random`) into the store on first use (seconds)."""
    out = locations.models_dir() / DEMO_RANDOM
    if out.is_dir() and (out / MANIFEST).is_file():
        return out
    damaged = out.exists()  # left by hand or by an older build: rebuilt in its place
    from .convert.demo import DEMO_SPEC, build_checkpoint

    log("[z1] building the random demo model (random weights, Z1-7B's architecture) ...")
    try:
        locations.store_dir().mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise Z1Error(f"cannot create the model store: {describe_os_error(err, locations.store_dir())}") from err
    try:
        scratch = tempfile.TemporaryDirectory(prefix=".demo-hf-", dir=locations.store_dir())
    except OSError as err:
        raise Z1Error(f"cannot build {DEMO_RANDOM}: {describe_os_error(err, locations.store_dir())}") from err
    with scratch as tmp:
        try:
            source = build_checkpoint(Path(tmp), DEMO_SPEC)
        except (OSError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and not is_write_failure(err):
                raise
            raise Z1Error(f"cannot build {DEMO_RANDOM}: {describe_write_failure(err, locations.store_dir())}") from err
        checkpoint = Checkpoint(source, DEMO_RANDOM, None, check_checkpoint(source))
        try:
            convert_checkpoint(checkpoint, out, dtype="auto", verify=True, force=damaged, log=log)
        except Z1Error:
            if not out.is_dir():  # another process may have won the race
                raise
    return out


def _convert_into_store(checkpoint: Checkpoint, label: str, quantize: bool = True) -> Path:
    bits = 4 if quantize else None
    name = store_name(label, bits, resolve_dtype("auto"))
    out = locations.models_dir() / name
    existing = Manifest.read(out) if out.is_dir() else None
    if existing and existing.source == checkpoint.source:
        return out
    if existing:  # same name, other source: keep both
        digest = hashlib.sha256(checkpoint.source.encode()).hexdigest()[:8]
        out = out.with_name(f"{name}-{digest}")
        if out.is_dir():
            return out
    kind = "4-bit" if quantize else "unquantized"
    log(f"[z1] converting {checkpoint.source} to {kind} MLX in the store (once) ...")
    convert_checkpoint(checkpoint, out, quantize=quantize, log=log)
    return out


def _from_hub(repo_id: str) -> Path:
    name = store_name(repo_id, 4, resolve_dtype("auto"))
    stored = find(name)
    if stored and stored.manifest and stored.manifest.source == repo_id:
        return stored.path
    try:
        path = fetch(repo_id)
    except Z1Error as err:
        if offline() or "cannot reach" in str(err):
            raise ModelNotAvailable(
                f"{repo_id} is not in the store and {'offline mode is on' if offline() else 'the hub is unreachable'}; "
                f"when online run: z1 convert {repo_id}"
            ) from err
        raise
    if is_mlx_model(path):
        return path
    path_config = check_checkpoint(path)
    revision = path.name if path.parent.name == "snapshots" else None
    return _convert_into_store(Checkpoint(path, repo_id, revision, path_config), repo_id)


def resolve_model(spec: str | None, quantize: bool = True) -> Path:
    """Turn any `--model` value into a local MLX model directory; a Hugging Face checkpoint
    directory is converted into the store at 4 bits, or unquantized with `quantize=False`
    (what full fine-tuning needs)."""
    spec = spec or DEFAULT_MODEL
    if (local := demo_model(spec)) is not None:
        return local
    if (repo := ALIASES.get(spec)) is not None:
        return _from_hub(repo)
    path = Path(spec).expanduser()
    if path.exists():
        if not path.is_dir():
            raise Z1Error(f"{spec}: not a model directory")
        path = path.resolve()
        if is_mlx_model(path):
            check_checkpoint(path)
            return path
        config = check_checkpoint(path)
        return _convert_into_store(Checkpoint(path, str(path), None, config), path.name, quantize)
    stored = find(spec)
    if stored:
        return stored.path
    if looks_like_hub_id(spec):
        return _from_hub(spec)
    raise Z1Error(
        f"unknown model {spec!r}: not an alias ({', '.join(ALIASES)}), a directory, "
        "a model in the store (see `z1 models`) or a hub id (owner/name)"
    )


def model_name(path: Path) -> str:
    """A model's name: its store name, or owner/name for an MLX repo in the HF cache."""
    path = Path(path)
    if path.parent.name == "snapshots" and path.parent.parent.name.startswith("models--"):
        return path.parent.parent.name[len("models--") :].replace("--", "/")
    return path.name


def describe(path: Path) -> str:
    manifest = Manifest.read(path)
    label = manifest.name if manifest else model_name(path)
    if manifest and manifest.random_weights:
        label += " (random weights: output is noise)"
    from .microz1 import micro_label

    if note := micro_label(path):
        label += f" ({note})"
    return label


__all__ = [
    "resolve_model",
    "list_models",
    "remove",
    "ensure_demo",
    "demo_model",
    "shipped_model",
    "describe",
    "SUPPORTED_ARCHITECTURES",
]
