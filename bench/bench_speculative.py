"""Speculative decoding under the window, on the demo pair (micro-Z1 and its draft), against
mlx-lm's own speculative generation on the same pair, prompts and token counts.

For fresh HARD programs (the demo thinks step by step, so there is something to speed up):
- z1, no draft: `Engine.generate` under a window that covers the trace;
- z1, draft: the same with `--draft-model demo-draft` (checked: the same tokens);
- mlx-lm, no draft / draft: `mlx_lm.stream_generate` on the same prompt, as many tokens as z1
  generated, with and without `draft_model`.
Prints decode tokens/s as each reports it (z1: tokens after the first over the decode time;
mlx-lm: its own `generation_tps`), the draft's acceptance rate, and the ratio that decides:
the wall time of whole replies for the same tokens, z1 and mlx-lm alternating (goal >= 0.97x).
A second z1 row applies a budget that cuts the traces (the shift
with speculation on). On this CPU a model this small is bound by per-step overhead, so the
draft's own steps cost nearly what the model's do: the speedup itself shows on Apple silicon
with a 7B model and a 0.5B draft.

    python bench/bench_speculative.py [--count 40] [--num-draft-tokens 3] [--model demo --draft demo-draft]
"""

import argparse
import json
import sys
import time


def z1_run(engine, prompts, window):
    from z1mlx.events import Done

    results, tokens, decode_s = [], 0, 0.0
    for prompt in prompts:
        for event in engine.generate(prompt, window):
            if isinstance(event, Done):
                r = event.result
                results.append(r)
                n = r.thinking_tokens + r.answer_tokens
                if r.generation_tps > 0 and n > 1:
                    tokens += n - 1
                    decode_s += (n - 1) / r.generation_tps
    return results, tokens / decode_s if decode_s else 0.0


def mlx_lm_run(model, tokenizer, prompts, counts, draft=None, k=3):
    from mlx_lm import stream_generate

    tokens, decode_s, accepted = 0, 0.0, 0
    for prompt, n in zip(prompts, counts):
        kwargs = {"draft_model": draft, "num_draft_tokens": k} if draft is not None else {}
        last = None
        for last in stream_generate(model, tokenizer, prompt, max_tokens=n, **kwargs):
            accepted += bool(getattr(last, "from_draft", False))
        if last is not None and last.generation_tps > 0 and last.generation_tokens > 1:
            tokens += last.generation_tokens - 1
            decode_s += (last.generation_tokens - 1) / last.generation_tps
    return (tokens / decode_s if decode_s else 0.0), accepted


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=40, help="fresh HARD programs")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--draft", default="demo-draft")
    parser.add_argument("--num-draft-tokens", type=int, default=3)
    parser.add_argument("--budget", type=int, default=512, help="a window that covers the traces")
    parser.add_argument("--cut-budget", type=int, default=24, help="a window that cuts them")
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds for the ratio")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from z1mlx.engine import Engine
    from z1mlx.microz1.evaluate import messages_for
    from z1mlx.microz1.tasks import fresh_programs
    from z1mlx.window import ShiftedWindow

    plain = Engine.load(args.model)
    spec = Engine.load(args.model, draft_model=args.draft, num_draft_tokens=args.num_draft_tokens)
    programs = fresh_programs("hard", args.count, seed=11)
    prompts = [plain.chat_prompt(messages_for(p)) for p in programs]  # as `z1 solve` renders a .py file
    window = ShiftedWindow(budget=args.budget, answer_tokens=32)
    z1_run(plain, prompts[:2], window)  # warm up
    z1_run(spec, prompts[:2], window)

    started = time.perf_counter()
    base, base_tps = z1_run(plain, prompts, window)
    spec.draft_counts.update(generated=0, accepted=0)
    drafted, spec_tps = z1_run(spec, prompts, window)
    z1_accept = spec.draft_counts["accepted"] / max(1, spec.draft_counts["generated"])
    same = sum(
        (a.thinking_token_ids, a.answer_token_ids) == (b.thinking_token_ids, b.answer_token_ids)
        for a, b in zip(base, drafted)
    )
    cut_window = ShiftedWindow(budget=args.cut_budget, answer_tokens=8)
    cut_base, cut_base_tps = z1_run(plain, prompts, cut_window)
    cut, cut_tps = z1_run(spec, prompts, cut_window)
    cut_same = sum(
        (a.thinking_token_ids, a.answer_token_ids) == (b.thinking_token_ids, b.answer_token_ids)
        for a, b in zip(cut_base, cut)
    )
    assert all(r.window_hit and r.thinking_tokens == args.cut_budget for r in cut if r.window_hit)

    # mlx-lm on the same pair: the same prompts, as many tokens as z1 generated (to the end token)
    counts = [r.thinking_tokens + r.answer_tokens + (r.finish_reason == "stop") for r in base]
    mlx_tps, _ = mlx_lm_run(plain.model, plain.tokenizer, prompts, counts)
    mlx_spec_tps, mlx_accepted = mlx_lm_run(
        plain.model, plain.tokenizer, prompts, counts, spec.draft, args.num_draft_tokens
    )
    mlx_accept = mlx_accepted / max(1, sum(counts))

    # The ratio that decides: whole replies (prefill, decode, the window's bookkeeping) for the
    # same tokens, z1 and mlx-lm alternating so drifts in the machine's speed hit both.
    ratios = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        z1_run(spec, prompts, window)
        z1_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        mlx_lm_run(plain.model, plain.tokenizer, prompts, counts, spec.draft, args.num_draft_tokens)
        ratios.append((time.perf_counter() - t0) / z1_s)
    wall_ratio = sorted(ratios)[len(ratios) // 2]
    elapsed = time.perf_counter() - started

    report = {
        "programs": args.count,
        "num_draft_tokens": args.num_draft_tokens,
        "z1": {"plain_tps": base_tps, "draft_tps": spec_tps, "acceptance": z1_accept, "same_tokens": same},
        "z1_cut": {"plain_tps": cut_base_tps, "draft_tps": cut_tps, "same_tokens": cut_same},
        "mlx_lm": {"plain_tps": mlx_tps, "draft_tps": mlx_spec_tps, "acceptance": mlx_accept},
        "decode_ratio_vs_mlx_lm_speculative": spec_tps / mlx_spec_tps if mlx_spec_tps else 0.0,
        "wall_ratio_vs_mlx_lm_speculative": wall_ratio,
        "wall_ratios": ratios,
        "elapsed_s": elapsed,
    }
    print(
        f"{args.model} with draft {args.draft}, {args.count} fresh HARD programs, "
        f"k={args.num_draft_tokens}, {elapsed:.0f}s"
    )
    print(f"  z1 no draft       {base_tps:8.1f} tokens/s")
    print(
        f"  z1 draft          {spec_tps:8.1f} tokens/s · {spec_tps / base_tps:.2f}x · acceptance {z1_accept:.0%}"
        f" · same tokens {same}/{args.count}"
    )
    print(
        f"  z1 draft, cut at {args.cut_budget} {cut_tps:8.1f} tokens/s (no draft {cut_base_tps:.1f})"
        f" · same tokens {cut_same}/{args.count}"
    )
    print(f"  mlx-lm no draft   {mlx_tps:8.1f} tokens/s")
    print(
        f"  mlx-lm draft      {mlx_spec_tps:8.1f} tokens/s · {mlx_spec_tps / mlx_tps:.2f}x"
        f" · acceptance {mlx_accept:.0%}"
    )
    print(
        "  z1 draft / mlx-lm draft, decode tokens/s as each reports it: "
        f"{report['decode_ratio_vs_mlx_lm_speculative']:.2f}x"
    )
    print(
        f"  z1 draft / mlx-lm draft, whole replies, same tokens (median of {args.rounds} alternating rounds):"
        f" {wall_ratio:.3f}x (goal >= 0.97x)"
    )
    if args.json:
        print(json.dumps(report))
    return 0 if same == args.count and cut_same == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
