"""A fresh Qwen2-architecture model for micro-Z1: Z1-7B's architecture at a tiny size.

The tokenizer is a byte-level BPE trained on the task's own text with Qwen2's
pre-tokenizer (digits one per token), so the ids `mlx_lm.load` produces are the ids it
was trained on; the chat template is Qwen2.5's ChatML, as in the demo builder. The
weights are a seeded random initialisation in Hugging Face layout, ready for
`z1 finetune --type full --model DIR`.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import cast

from ..convert.demo import SPECIAL_TOKENS, _tokenizer_files, qwen2_config
from .tasks import tokenizer_corpus

# Qwen2's pre-tokenizer pattern (tokenizer.json of Qwen2.5 models).
QWEN2_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2's pattern with no space or punctuation glued to a word: what a `words` tokenizer is
# trained on (it is saved, and loaded, with Qwen2's own pattern).
WORDS_APART = QWEN2_PATTERN.replace(r"[^\r\n\p{L}\p{N}]?\p{L}+", r"\p{L}+")
LETTERS_ALONE, WORDS = "letters", "words"
TOKENIZERS = (LETTERS_ALONE, WORDS)
ROLE_NAMES = ("system", "user", "assistant")


@dataclass(frozen=True)
class MicroSpec:
    hidden_size: int = 192
    num_hidden_layers: int = 4
    num_attention_heads: int = 6
    num_key_value_heads: int = 2
    intermediate_size: int = 512
    vocab_target: int = 512
    seed: int = 0
    tokenizer: str = LETTERS_ALONE  # or WORDS (see build_tokenizer)


def build_tokenizer(vocab_target: int, kind: str = LETTERS_ALONE):
    """`letters` (the shipped models'): Qwen2's pre-tokenizer, then the merges that glue a space
    or "(" to a single letter dropped (`_letters_alone`), which also takes apart every word of
    the chat frame that such a merge began (`system` is six letter tokens, `are` is `ar` `e`),
    so the frame is full of the very tokens that name variables. `words`: trained on text split
    with no space or "(" glued to a word, so no merge ever joins one to a letter: loaded with
    Qwen2's own pattern (as mlx-lm's loader does), a variable is one token wherever it appears
    (` a` -> ` ` `a`) while the frame's words (the role names included) stay whole (` are` ->
    ` ` `are`); only the word "a" is still a variable's token, and a rendered prompt is about a
    fifth shorter."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()

    def pattern(text: str):
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(text), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )

    tokenizer.pre_tokenizer = pattern(WORDS_APART if kind == WORDS else QWEN2_PATTERN)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_target,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    if kind != WORDS:
        tokenizer.train_from_iterator(tokenizer_corpus(), trainer=trainer)
        return _letters_alone(tokenizer)
    tokenizer.train_from_iterator(tokenizer_corpus() + [f"{role}\n" for role in ROLE_NAMES] * 200, trainer=trainer)
    tokenizer.pre_tokenizer = pattern(QWEN2_PATTERN)
    tokenizer.add_special_tokens(SPECIAL_TOKENS)
    return tokenizer


def _letters_alone(tokenizer):
    """Drop the merges that glue a space or "(" to a single letter, so a variable is one and
    the same token wherever it appears (`b = a + 3`, `print(a)`): looking a name up is then
    matching a token with itself. Without this, each letter has three ids (`a`, ` a`, `(a`),
    and a model this small was measured not to learn the lookups at all."""
    from tokenizers import Tokenizer, models

    spec = json.loads(tokenizer.to_str())
    dropped = {prefix + letter for prefix in ("\u0120", "(") for letter in "abcdefghijklmnopqrstuvwxyz"}
    merges = []
    for pair in spec["model"]["merges"]:
        a, b = pair if isinstance(pair, list) else pair.split(" ")
        if a + b in dropped or a in dropped or b in dropped:
            dropped.add(a + b)
            continue
        merges.append((a, b))
    kept = [
        token for token, _ in sorted(spec["model"]["vocab"].items(), key=lambda item: item[1]) if token not in dropped
    ]
    vocab = {token: index for index, token in enumerate(kept)}
    rebuilt = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    rebuilt.normalizer = tokenizer.normalizer
    rebuilt.pre_tokenizer = tokenizer.pre_tokenizer
    rebuilt.decoder = tokenizer.decoder
    rebuilt.add_special_tokens(SPECIAL_TOKENS)
    return rebuilt


def build_fresh_model(out: Path, spec: MicroSpec = MicroSpec()) -> Path:
    """config.json, model.safetensors (seeded random init), tokenizer files, in `out`."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen2

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec.vocab_target, spec.tokenizer)
    vocab = tokenizer.get_vocab_size()
    config = qwen2_config(
        spec,
        vocab,
        rope_theta=10000.0,
        tie_word_embeddings=True,
        torch_dtype="float32",
        bos_token_id=None,
        eos_token_id=tokenizer.token_to_id("<|im_end|>"),
        micro_z1=asdict(spec),
    )
    mx.random.seed(spec.seed)
    args = qwen2.ModelArgs.from_dict(config)
    # mlx's own initialisation throughout.
    model = qwen2.Model(args)
    weights = dict(tree_flatten(model.parameters()))
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [config["eos_token_id"]], "do_sample": False}, indent=2)
    )
    _tokenizer_files(out, tokenizer)
    return out


def grown_layers(old: int, new: int) -> list[int | None]:
    """Where each layer of a deeper model comes from: an old layer's index, or None for a new
    one, spread evenly (4 -> 6: old 0, 1, new, old 2, 3, new)."""
    if new < old:
        raise ValueError(f"cannot grow {old} layers into {new}")
    added = new - old
    plan: list[int | None] = []
    for index in range(old):
        plan.append(index)
        # After old layer `index`, as many new ones as bring the count to its even share.
        while len(plan) - (index + 1) < added * (index + 1) // old:
            plan.append(None)
    return plan


def grow_model(source: Path, out: Path, layers: int, seed: int = 0) -> Path:
    """A trained model made deeper without changing what it computes: its layers are kept and
    new ones spread among them, each with its output projections (attention `o_proj`, MLP
    `down_proj`) at zero, so a new layer adds nothing to the residual stream until training
    moves them. The rest of a new layer is mlx's own random initialisation (seeded).

    This is how micro-Z1 gained depth after its fourth stage: the 4-layer model's lookups had
    stopped improving, and growing keeps the hours it had trained."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.models import qwen2

    source, out = Path(source), Path(out)
    config = json.loads((source / "config.json").read_text())
    old = config["num_hidden_layers"]
    plan = grown_layers(old, layers)
    weights = cast("dict[str, mx.array]", mx.load(str(source / "model.safetensors")))
    grown_config = {**config, "num_hidden_layers": layers}
    grown_config["micro_z1"] = {**config.get("micro_z1", {}), "num_hidden_layers": layers, "grown_from": old}
    mx.random.seed(seed)
    fresh = dict(tree_flatten(qwen2.Model(qwen2.ModelArgs.from_dict(grown_config)).parameters()))
    grown = {name: value for name, value in weights.items() if not name.startswith("model.layers.")}
    for index, origin in enumerate(plan):
        prefix = f"model.layers.{index}."
        if origin is None:
            for name, value in fresh.items():
                if name.startswith(prefix):
                    zero = name.endswith(("self_attn.o_proj.weight", "mlp.down_proj.weight"))
                    grown[name] = mx.zeros_like(value) if zero else value
        else:
            old_prefix = f"model.layers.{origin}."
            for name, value in weights.items():
                if name.startswith(old_prefix):
                    grown[prefix + name[len(old_prefix) :]] = value
    missing = set(fresh) - set(grown)
    if missing:
        raise RuntimeError(f"growing {source}: no weights for {sorted(missing)[:3]}")
    return _write_model(source, out, grown, grown_config)


def float32_copy(source: Path, out: Path) -> Path:
    """A shipped (quantized) model as float32 weights that training can go on from: every
    quantized layer dequantized, the rest cast; config, tokenizer and template copied."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_lm.utils import dequantize_model, load_model

    source, out = Path(source), Path(out)
    model, config = load_model(source)
    model = dequantize_model(model)
    flat = cast("list[tuple[str, mx.array]]", tree_flatten(model.parameters()))
    weights = {name: value.astype(mx.float32) for name, value in flat}
    config = {k: v for k, v in config.items() if k not in ("quantization", "quantization_config")}
    config["torch_dtype"] = "float32"
    return _write_model(source, out, weights, config)


def _write_model(source: Path, out: Path, weights: dict, config: dict) -> Path:
    """`out` as a model directory: these weights and config, and the source's tokenizer, chat
    template and generation settings (not its weights, their index or the store's record)."""
    import mlx.core as mx

    out.mkdir(parents=True, exist_ok=True)
    skipped = ("config.json", "model.safetensors.index.json", "z1mlx.json")
    for path in source.iterdir():
        if path.suffix in (".json", ".jinja") and path.name not in skipped:
            (out / path.name).write_bytes(path.read_bytes())
    mx.save_safetensors(str(out / "model.safetensors"), weights, metadata={"format": "mlx"})
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def check_tokenizer(model_dir: Path, texts: list[str]) -> None:
    """The ids mlx-lm's loader gives must be the ids of the trained tokenizer."""
    from mlx_lm.utils import load_tokenizer
    from tokenizers import Tokenizer

    trained = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    loaded = load_tokenizer(Path(model_dir))
    for text in texts:
        a, b = trained.encode(text).ids, loaded.encode(text, add_special_tokens=False)
        if a != b:
            raise RuntimeError(f"tokenizer mismatch on {text!r}: trained {a[:12]} vs loaded {b[:12]}")
