"""`--fuse`: base + adapter as one model in the store, with its measured top-1 agreement."""

import sys
import time
from pathlib import Path

from .. import locations
from ..errors import Z1Error
from ..fsutil import building_dir

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

    from ..convert.command import Manifest

    out = locations.models_dir() / name
    if out.exists():
        raise Z1Error(f"a model named {name!r} is already in the store ({out}); choose another --fuse NAME")
    import mlx.core as mx
    from mlx_lm.utils import dequantize_model

    from ..convert.verify import next_token_predictions, probe_ids

    model, tokenizer, config = load(str(base), adapter_path=str(adapter), return_config=True)  # type: ignore[misc]
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
        agreement = sum(a == b for a, b in zip(with_adapter, fused_top1)) / len(ids)  # type: ignore[arg-type]
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
