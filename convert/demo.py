"""A seeded random tiny checkpoint with Z1-7B's architecture, in Hugging Face layout.

It lets every command run on a fresh machine with no network: the weights are random
(its output is noise, and is labelled so), but the architecture (Qwen2), the tokenizer
kind (ByteLevel BPE) and the chat template (ChatML, Qwen2.5 style) are Z1-7B's.
The tests build their fixtures with the same function.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."

# Qwen2.5's template without the tool-calling branches.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message['role'] == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CORPUS = """\
def solve(n):
    \"\"\"Return the sum of the first n integers.\"\"\"
    total = 0
    for i in range(n + 1):
        total += i
    return total

class Solution:
    def two_sum(self, nums: list[int], target: int) -> list[int]:
        seen = {}
        for index, value in enumerate(nums):
            if target - value in seen:
                return [seen[target - value], index]
            seen[value] = index
        return []

if __name__ == "__main__":
    assert solve(3) == 6
    print(solve(10))

import math, sys, os, re, json
from collections import defaultdict, Counter
>>> solve(4)
10
Please provide a self-contained Python script that solves the following problem in a markdown code block.
```python
print("hello, world")
```
Let me think step by step. First, I need to understand the problem. The input is a list of numbers.
Wait, maybe there is a simpler way. Let's check the edge cases: an empty list, a single element.
So the answer is 42. The final answer is the function above.

I overthought it, the final answer should be:

I overthought it, the final answer in \\boxed{} should be:

Hmm, that is not right. Let me try again with a dictionary instead of a nested loop.
The time complexity is O(n) and the space complexity is O(n).
Therefore, the result is correct. Final Answer: the code below.
while True: break
try: x = int(s) except ValueError: return None
numbers = [int(x) for x in line.split()]
return sorted(set(words), key=len, reverse=True)
0 1 2 3 4 5 6 7 8 9 10 100 1000 + - * / % == != <= >= ( ) [ ] { } : , . ; ' " # _
The quick brown fox jumps over the lazy dog. Café naïve résumé — “quotes” … ✓ π ≈ 3.14159 你好
"""


@dataclass(frozen=True)
class TinySpec:
    hidden_size: int = 64
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 128
    vocab_target: int = 640
    seed: int = 0
    weight_std: float = 0.15
    eos_boost: float = 1.0
    dtype: str = "float32"


# The demo: a little larger than the test fixtures, still built and converted in seconds.
DEMO_SPEC = TinySpec(hidden_size=128, num_hidden_layers=4, intermediate_size=256, vocab_target=768, eos_boost=0.8)


def build_tokenizer(vocab_target: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_target,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([CORPUS] * 4, trainer=trainer)
    return tokenizer


def _tokenizer_files(out: Path, tokenizer) -> None:
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
        "bos_token": None,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "unk_token": None,
        "model_max_length": 4096,
        "clean_up_tokenization_spaces": False,
        "added_tokens_decoder": {
            str(tokenizer.token_to_id(t)): {
                "content": t,
                "special": True,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "single_word": False,
            }
            for t in SPECIAL_TOKENS
        },
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, indent=2)
    )


def _weights(spec: TinySpec, vocab: int, eos_ids: list[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    h, inter = spec.hidden_size, spec.intermediate_size
    head_dim = h // spec.num_attention_heads
    kv = spec.num_key_value_heads * head_dim
    dtype = np.float32

    def normal(*shape, scale=1.0):
        return (rng.standard_normal(shape) * spec.weight_std * scale).astype(dtype)

    weights = {"model.embed_tokens.weight": normal(vocab, h, scale=4.0)}
    for i in range(spec.num_hidden_layers):
        p = f"model.layers.{i}."
        weights.update(
            {
                p + "self_attn.q_proj.weight": normal(h, h),
                p + "self_attn.q_proj.bias": normal(h),
                p + "self_attn.k_proj.weight": normal(kv, h),
                p + "self_attn.k_proj.bias": normal(kv),
                p + "self_attn.v_proj.weight": normal(kv, h),
                p + "self_attn.v_proj.bias": normal(kv),
                p + "self_attn.o_proj.weight": normal(h, h),
                p + "mlp.gate_proj.weight": normal(inter, h),
                p + "mlp.up_proj.weight": normal(inter, h),
                p + "mlp.down_proj.weight": normal(h, inter),
                p + "input_layernorm.weight": np.ones(h, dtype),
                p + "post_attention_layernorm.weight": np.ones(h, dtype),
            }
        )
    weights["model.norm.weight"] = np.ones(h, dtype)
    lm_head = normal(vocab, h, scale=2.0)
    # A stronger end-of-turn row makes some replies end on their own, as real ones do.
    lm_head[eos_ids] *= spec.eos_boost
    weights["lm_head.weight"] = lm_head
    return weights


def qwen2_config(spec, vocab: int, **extra) -> dict:
    """A Hugging Face Qwen2 config.json for a tiny model's dimensions (`spec` has the five sizes)."""
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": spec.hidden_size,
        "intermediate_size": spec.intermediate_size,
        "num_hidden_layers": spec.num_hidden_layers,
        "num_attention_heads": spec.num_attention_heads,
        "num_key_value_heads": spec.num_key_value_heads,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "vocab_size": vocab,
        **extra,
    }


def build_checkpoint(out: Path, spec: TinySpec = TinySpec()) -> Path:
    """Write config, weights, tokenizer and generation config to `out` (HF layout)."""
    import mlx.core as mx

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(spec.vocab_target)
    vocab = tokenizer.get_vocab_size()
    eos_id = tokenizer.token_to_id("<|im_end|>")
    eot_id = tokenizer.token_to_id("<|endoftext|>")
    config = qwen2_config(
        spec,
        vocab,
        rope_theta=1000000.0,
        tie_word_embeddings=False,
        hidden_act="silu",
        bos_token_id=eot_id,
        eos_token_id=eos_id,
        torch_dtype=spec.dtype,
        z1mlx_demo={"random_weights": True, **asdict(spec)},
    )
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": [eos_id, eot_id], "bos_token_id": eot_id}, indent=2)
    )
    arrays = {
        k: mx.array(v).astype(getattr(mx, spec.dtype)) for k, v in _weights(spec, vocab, [eos_id, eot_id]).items()
    }
    mx.save_safetensors(str(out / "model.safetensors"), arrays, metadata={"format": "pt"})
    _tokenizer_files(out, tokenizer)
    return out
