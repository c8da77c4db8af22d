"""Does a converted model predict like its source? Top-1 agreement on a fixed probe."""

import gc

PROBE_TEXT = (
    "def fibonacci(n):\n"
    '    """Return the n-th Fibonacci number."""\n'
    "    a, b = 0, 1\n"
    "    for _ in range(n):\n"
    "        a, b = b, a + b\n"
    "    return a\n\n"
    "Let me think step by step about the edge cases first."
)
PROBE_TOKENS = 48


def probe_ids(tokenizer) -> list[int]:
    return tokenizer.encode(PROBE_TEXT, add_special_tokens=False)[:PROBE_TOKENS]


def next_token_predictions(path, ids: list[int]):
    """Greedy next-token ids (and float32 log-probs) at every probe position."""
    import mlx.core as mx
    from mlx_lm.utils import load_model

    model, _ = load_model(path, lazy=True)
    logits = model(mx.array(ids)[None]).astype(mx.float32)[0]
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    top1 = mx.argmax(logprobs, axis=-1)
    mx.eval(top1, logprobs)
    del model
    gc.collect()
    mx.clear_cache()
    return top1.tolist(), logprobs


def top1_agreement(source_path, converted_path, tokenizer) -> float:
    """Fraction of probe positions where both models pick the same next token.

    The source runs first and is freed before the conversion loads, so peak memory is
    one model, not two.
    """
    ids = probe_ids(tokenizer)
    source_top1, _ = next_token_predictions(source_path, ids)
    converted_top1, _ = next_token_predictions(converted_path, ids)
    same = sum(a == b for a, b in zip(source_top1, converted_top1))
    return same / len(ids)
