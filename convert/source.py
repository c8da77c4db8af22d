"""Finding a checkpoint: a local Hugging Face directory or a hub id in the HF cache."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import Z1Error

DEFAULT_SOURCE = "efficientscaling/Z1-7B"
# Architectures z1 converts and runs; Z1-7B is qwen2. Others are mlx-lm decoders
# whose chat template and cache behave like Qwen's.
SUPPORTED_ARCHITECTURES = ("qwen2", "qwen3", "llama", "mistral")
HUB_PATTERNS = ["*.json", "model*.safetensors", "*.py", "tokenizer.model", "*.txt", "*.jinja"]


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    source: str  # what the user named: a hub id or an absolute directory
    revision: str | None  # hub commit, when it came from the hub
    config: dict


def read_config(path: Path) -> dict:
    config_path = path / "config.json"
    if not config_path.is_file():
        raise Z1Error(f"{path}: no config.json; not a model checkpoint directory")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except OSError as err:
        raise Z1Error(f"{config_path}: cannot read ({err.strerror})") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise Z1Error(f"{config_path}: not valid JSON ({err})") from err
    if not isinstance(config, dict):
        raise Z1Error(f"{config_path}: expected a JSON object")
    return config


def check_checkpoint(path: Path) -> dict:
    """Validate a directory as a loadable checkpoint and return its config."""
    if not path.is_dir():
        raise Z1Error(f"{path}: not a directory")
    config = read_config(path)
    if not any(path.glob("*.safetensors")):
        extra = " (only PyTorch .bin weights; convert them to safetensors first)" if any(path.glob("*.bin")) else ""
        raise Z1Error(f"{path}: no .safetensors weights{extra}")
    model_type = config.get("model_type")
    if model_type not in SUPPORTED_ARCHITECTURES:
        raise Z1Error(
            f"{path / 'config.json'}: unsupported architecture {model_type!r}; "
            f"supported: {', '.join(SUPPORTED_ARCHITECTURES)}"
        )
    return config


def looks_like_hub_id(text: str) -> bool:
    parts = text.split("/")
    return len(parts) == 2 and all(parts) and not text.startswith((".", "~", "/"))


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def fetch(repo_id: str, revision: str | None = None) -> Path:
    """Download (or find in the HF cache) a hub checkpoint, with huggingface_hub's progress bars."""
    from huggingface_hub import errors as hf_errors
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=HUB_PATTERNS))
    except hf_errors.RepositoryNotFoundError:
        raise Z1Error(
            f"{repo_id}: repository not found on the Hugging Face hub (check the id, or log in if it is private)"
        ) from None
    except hf_errors.GatedRepoError:
        raise Z1Error(f"{repo_id}: gated repository; accept its terms on the hub and run `hf auth login`") from None
    except hf_errors.RevisionNotFoundError:
        raise Z1Error(f"{repo_id}: revision {revision!r} not found") from None
    except (hf_errors.LocalEntryNotFoundError, hf_errors.OfflineModeIsEnabled) as err:
        if offline():
            raise Z1Error(
                f"{repo_id}: not in the Hugging Face cache and offline mode is on (HF_HUB_OFFLINE=1)"
            ) from err
        raise Z1Error(
            f"{repo_id}: cannot reach the Hugging Face hub (network down?) and it is not cached: {type(err).__name__}"
        ) from err
    except OSError as err:
        raise Z1Error(f"{repo_id}: download failed: {err}") from err


def locate(source: str, revision: str | None = None) -> Checkpoint:
    """A local directory if one exists at `source`, else a hub id."""
    path = Path(source).expanduser()
    if path.exists():
        path = path.resolve()
        return Checkpoint(path, str(path), None, check_checkpoint(path))
    if not looks_like_hub_id(source):
        raise Z1Error(f"{source}: no such directory, and not a hub id of the form owner/name")
    path = fetch(source, revision)
    # Snapshots live in .../snapshots/<commit>: that is the exact revision converted.
    commit = path.name if path.parent.name == "snapshots" else revision
    return Checkpoint(path, source, commit, check_checkpoint(path))
