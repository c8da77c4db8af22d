"""The micro-Z1 recipe end to end, for a few steps: data, a fresh model, full fine-tuning, conversion."""

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from z1mlx.microz1 import micro_label
from z1mlx.window import HINT


@pytest.mark.slow
def test_the_recipe_trains_both_models_through_z1_finetune_and_converts_them(tmp_path):
    work = tmp_path / "work"
    proc = subprocess.run(
        [sys.executable, "-m", "z1mlx.microz1.recipe", "--work", str(work)]
        + ["--rows", "96", "--iters", "3", "--twin-rows", "96", "--twin-iters", "3", "--batch-size", "4"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mlx.core as mx

    base = mx.load(str(work / "base" / "model.safetensors"))
    for style, name in (("mixed", "demo"), ("long-only", "demo-long")):
        manifest = json.loads((work / f"run-{style}" / "finetune.json").read_text())
        assert manifest["settings"]["type"] == "full" and manifest["settings"]["iters"] == 3
        rows = [json.loads(line) for line in (work / f"run-{style}" / "metrics.jsonl").read_text().splitlines()]
        assert rows[-1]["iteration"] == 3 and rows[-1]["val_loss"] is not None
        fused = mx.load(str(work / "home" / "models" / f"{name}-float32" / "model.safetensors"))
        # Every layer trained, the embeddings included (a fresh model needs them).
        for key in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"):
            assert not np.allclose(np.array(fused[key]), np.array(base[key])), key
        out = work / "out" / name
        config = json.loads((out / "config.json").read_text())
        assert config["quantization"]["bits"] == 8 and config["micro_z1"]["style"] == style
        assert "micro-Z1" in micro_label(out)
    assert (work / "data-mixed" / "train.jsonl").read_text().count("\n") == 96


@pytest.mark.slow
def test_a_later_stage_and_the_draft_train_through_the_recipe(tmp_path):
    first = tmp_path / "first"
    run = [sys.executable, "-m", "z1mlx.microz1.recipe", "--batch-size", "4", "--q-bits", "0"]
    common = {"capture_output": True, "text": True, "timeout": 900}
    proc = subprocess.run(run + ["--work", str(first), "--style", "mixed", "--rows", "48", "--iters", "2"], **common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    later = tmp_path / "later"
    stage = ["--work", str(later), "--style", "mixed", "--continue-from", str(first), "--rows", "48", "--iters", "2"]
    proc = subprocess.run(run + stage, **common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    import mlx.core as mx

    before = mx.load(str(first / "home" / "models" / "demo-float32" / "model.safetensors"))
    start = mx.load(str(later / "init-demo" / "model.safetensors"))
    after = mx.load(str(later / "home" / "models" / "demo-float32" / "model.safetensors"))
    key = "model.layers.0.mlp.up_proj.weight"
    assert np.array_equal(np.array(before[key]), np.array(start[key]))  # it went on from the earlier weights
    assert not np.allclose(np.array(after[key]), np.array(start[key]))
    first_rows = (first / "data-mixed" / "train.jsonl").read_text()
    assert first_rows != (later / "data-mixed" / "train.jsonl").read_text()  # other seeds
    assert "continues from" in proc.stderr
    third = tmp_path / "third"
    stage = ["--work", str(third), "--style", "mixed", "--continue-from", str(later), "--stage", "3"]
    proc = subprocess.run(run + stage + ["--rows", "48", "--iters", "2", "--grow-layers", "5"], **common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "grown from 4 to 5 layers" in proc.stderr
    grown = json.loads((third / "home" / "models" / "demo-float32" / "config.json").read_text())
    assert grown["num_hidden_layers"] == 5
    fused = mx.load(str(third / "home" / "models" / "demo-float32" / "model.safetensors"))
    assert np.any(np.array(fused["model.layers.4.mlp.down_proj.weight"]))  # the new layer trained
    shallower = subprocess.run(run + stage + ["--grow-layers", "3"], **common)
    assert shallower.returncode == 2 and "already has 4 layers" in shallower.stderr
    alone = subprocess.run(run + ["--work", str(tmp_path / "y"), "--grow-layers", "6"], **common)
    assert alone.returncode == 2 and "--grow-layers: grows a trained model, so it needs --continue-from" in alone.stderr
    third_rows = (third / "data-mixed" / "train.jsonl").read_text()
    assert third_rows not in (first_rows, (later / "data-mixed" / "train.jsonl").read_text())  # its own seeds
    wrong = subprocess.run(run + ["--work", str(third), "--continue-from", str(later), "--stage", "1"], **common)
    assert wrong.returncode == 2 and "--stage 1: a later stage is 2 or more" in wrong.stderr
    share = subprocess.run(run + ["--work", str(tmp_path / "z"), "--spread-share", "1.5"], **common)
    assert share.returncode == 2 and "--spread-share 1.5: a share is between 0 and 1" in share.stderr
    assert not (tmp_path / "z").exists()

    draft = tmp_path / "draft"
    proc = subprocess.run(
        run + ["--work", str(draft), "--style", "draft", "--draft-rows", "48", "--draft-iters", "2", "--trace", "goal"],
        **common,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = json.loads((draft / "out" / "demo-draft" / "config.json").read_text())
    assert config["micro_z1"]["style"] == "draft" and config["hidden_size"] == 64
    assert config["micro_z1"]["trace"] == "goal"  # the evaluation diagnoses its replies against goal traces
    rows = [json.loads(line) for line in (draft / "data-draft" / "train.jsonl").read_text().splitlines()]
    traced = [r for r in rows if "\n" in r["response"] and HINT not in r["response"]]
    assert traced and all(r["response"].startswith(r["question"].rsplit("print(", 1)[1][0] + " = ") for r in traced)
    missing = subprocess.run(run + ["--work", str(tmp_path / "x"), "--continue-from", str(tmp_path / "none")], **common)
    assert missing.returncode == 2 and "holds no trained model" in missing.stderr

    shipped = tmp_path / "shipped"
    stage = ["--work", str(shipped), "--style", "draft", "--from-shipped", "--stage", "2"]
    proc = subprocess.run(run + stage + ["--draft-rows", "48", "--draft-iters", "2"], **common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from mlx_lm import load

    from z1mlx.microz1 import MODELS

    # It went on from the package's model: its float32 copy computes what the shipped 8-bit one does.
    start_model, _ = load(str(shipped / "init-demo-draft"))
    packaged, tokenizer = load(str(MODELS / "demo-draft"))
    ids = mx.array([tokenizer.encode("a = 4\nb = a + 3\nprint(b)")])
    assert np.allclose(np.array(start_model(ids)), np.array(packaged(ids)), atol=1e-4)
    both_flags = ["--work", str(tmp_path / "w"), "--from-shipped", "--continue-from", str(later)]
    both = subprocess.run(run + both_flags, **common)
    assert both.returncode == 2 and "--from-shipped and --continue-from: a later stage goes on from one" in both.stderr


@pytest.mark.slow
def test_a_fresh_model_can_copy_first_and_the_task_goes_on_from_that(tmp_path):
    work = tmp_path / "work"
    run = [sys.executable, "-m", "z1mlx.microz1.recipe", "--batch-size", "4", "--q-bits", "0", "--style", "draft"]
    common = {"capture_output": True, "text": True, "timeout": 900}
    sizes = ["--draft-rows", "48", "--draft-iters", "2", "--copy-steps", "3"]
    proc = subprocess.run(run + ["--work", str(work)] + sizes, **common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (work / "data-copy" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and all(6 <= len(r["question"]) <= 24 for r in rows)
    assert all(r["question"].endswith(r["response"]) and len(r["response"]) >= 4 for r in rows)
    assert len({r["question"].index(r["response"]) for r in rows}) > 1  # the reply starts at a random place
    assert len({r["question"] for r in rows}) == 12
    copied = json.loads((work / "run-copy" / "finetune.json").read_text())
    assert copied["settings"]["type"] == "full" and copied["settings"]["iters"] == 3
    copy_model = work / "home" / "models" / "base-draft-copy-float32"
    task = json.loads((work / "run-draft" / "finetune.json").read_text())
    assert task["settings"]["model"] == str(copy_model)  # the task goes on from the copying phase's weights
    import mlx.core as mx

    fresh = mx.load(str(work / "base-draft" / "model.safetensors"))
    after_copy = mx.load(str(copy_model / "model.safetensors"))
    key = "model.layers.0.self_attn.q_proj.weight"
    assert not np.allclose(np.array(fresh[key]), np.array(after_copy[key]))
    for flags, message in (
        (["--copy-steps", "-1"], "--copy-steps -1: a number of steps is 0 or more"),
        (["--copy-steps", "2", "--from-shipped"], "--copy-steps: the first phase of a fresh model, not of a later"),
    ):
        bad = subprocess.run(run + ["--work", str(tmp_path / "bad")] + flags, **common)
        assert bad.returncode == 2 and message in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_the_openblas_kernel_set_follows_the_cpu_flags(tmp_path):
    from z1mlx.microz1.recipe import cpu_flags, openblas_core

    avx512 = {"avx512f", "avx512bw", "avx512dq", "avx512vl"}
    assert openblas_core(frozenset(avx512 | {"avx2", "fma"})) == "SkylakeX"
    assert openblas_core(frozenset({"avx512f", "avx2", "fma"})) == "Haswell"  # AVX-512 without BW/DQ/VL
    assert openblas_core(frozenset({"sse3", "avx"})) is None
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse3 avx2 fma\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "sse3", "avx2", "fma"}
    assert cpu_flags(tmp_path / "missing") == frozenset()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Debian's OpenBLAS preload is Linux-only")
def test_the_training_children_get_the_kernel_set_the_cpu_runs(tmp_path, monkeypatch):
    from z1mlx.microz1.recipe import OPENBLAS, child_env, cpu_flags, openblas_core

    core = openblas_core(cpu_flags())
    if core is None or not OPENBLAS.is_file():
        pytest.skip("no Debian OpenBLAS, or a CPU with neither AVX2 nor AVX-512")
    monkeypatch.delenv("OPENBLAS_CORETYPE", raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    env = child_env(tmp_path, 1)
    assert env["OPENBLAS_CORETYPE"] == core and env["LD_PRELOAD"] == str(OPENBLAS)
    # OpenBLAS itself says which kernels it loaded: the ones named, in the child mlx trains in.
    proc = subprocess.run(
        [sys.executable, "-c", "import mlx.core as mx; mx.eval(mx.ones((64, 64)) @ mx.ones((64, 64)))"],
        env={**env, "OPENBLAS_VERBOSE": "2"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and f"Core: {core}" in proc.stderr.splitlines(), proc.stderr
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")  # a choice made outside is kept
    assert child_env(tmp_path, 1)["OPENBLAS_CORETYPE"] == "Haswell"


@pytest.mark.slow
def test_a_fresh_model_can_copy_then_look_up_bare_then_framed_first_with_the_words_tokenizer(tmp_path):
    from tokenizers import Tokenizer

    work = tmp_path / "work"
    run = [sys.executable, "-m", "z1mlx.microz1.recipe", "--batch-size", "4", "--q-bits", "0", "--style", "draft"]
    common = {"capture_output": True, "text": True, "timeout": 900}
    sizes = ["--draft-rows", "48", "--draft-iters", "2", "--echo-steps", "3", "--bare-steps", "2"]
    sizes += ["--lookup-steps", "2", "--lookup-lines", "5", "--trace", "named"]
    sizes += ["--lr", "2e-3", "--tokenizer", "words", "--layers", "1", "--grow-layers", "2"]
    proc = subprocess.run(run + ["--work", str(work)] + sizes, **common)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for phase, count in (("echo", 12), ("bare", 8)):
        rows = [json.loads(line) for line in (work / f"data-{phase}" / "train.jsonl").read_text().splitlines()]
        assert len(rows) == count and all(set(row) == {"prefix", "completion"} for row in rows)  # plain rows
    lookup_rows = [json.loads(line) for line in (work / "data-lookup" / "train.jsonl").read_text().splitlines()]
    assert len(lookup_rows) == 8 and all(set(row) == {"question", "response"} for row in lookup_rows)  # framed
    for row in lookup_rows:  # 2 to 5 constant lines, the printed one's value in one sentence
        lines = re.findall(r"^([a-z]) = (\d+)$", row["question"], re.M)
        printed = re.search(r"print\(([a-z])\)", row["question"]).group(1)
        assert 2 <= len(lines) <= 5 and row["response"] == f"It prints {printed} = {dict(lines)[printed]}."
    draft_rows = [json.loads(line) for line in (work / "data-draft" / "train.jsonl").read_text().splitlines()]
    assert any(re.search(r"^[a-z] = [a-z] [+-] \d, [a-z] = \d+, ", row["response"], re.M) for row in draft_rows)
    echo = json.loads((work / "run-echo" / "finetune.json").read_text())
    assert echo["settings"]["type"] == "full" and echo["settings"]["iters"] == 3
    assert echo["settings"]["model"] == str(work / "base-draft")
    assert echo["data"]["train"]["format"] == "prefix/completion"
    bare = json.loads((work / "run-bare" / "finetune.json").read_text())
    assert bare["settings"]["iters"] == 2 and bare["settings"]["lr"] == 2e-3
    lookup = json.loads((work / "run-lookup" / "finetune.json").read_text())
    assert lookup["data"]["train"]["format"] == "question/response" and lookup["settings"]["iters"] == 2
    batchings = {run["settings"]["batching"] for run in (echo, bare, lookup)}
    assert batchings == {"shuffled"}  # the first phases: shuffled
    assert bare["settings"]["model"] == str(work / "home" / "models" / "base-draft-echo-float32")  # after copying
    assert lookup["settings"]["model"] == str(work / "home" / "models" / "base-draft-echo-bare-float32")
    assert json.loads((work / "base-draft" / "config.json").read_text())["num_hidden_layers"] == 1
    task = json.loads((work / "run-draft" / "finetune.json").read_text())
    assert task["settings"]["batching"] == "length"  # the task's rows as the shipped models had them
    assert task["settings"]["model"] == str(work / "base-lookup-grown")  # grown from the last phase's weights
    grown = json.loads((work / "base-lookup-grown" / "config.json").read_text())
    assert grown["num_hidden_layers"] == 2 and grown["micro_z1"]["grown_from"] == 1
    vocab = Tokenizer.from_file(str(work / "out" / "demo-draft" / "tokenizer.json")).get_vocab()
    assert "system" in vocab and "assistant" in vocab  # the words tokenizer, through to the converted model
    config = json.loads((work / "out" / "demo-draft" / "config.json").read_text())
    assert config["micro_z1"]["tokenizer"] == "words" and config["micro_z1"]["trace"] == "named"
    for flags, message in (
        (["--plain-steps", "-2"], "--plain-steps -2: a number of steps is 0 or more"),
        (["--bare-steps", "-1"], "--bare-steps -1: a number of steps is 0 or more"),
        (["--plain-steps", "2", "--copy-steps", "2"], "--copy-steps and --plain-steps: a fresh model has one first"),
        (["--echo-steps", "2", "--plain-steps", "2"], "--plain-steps and --echo-steps: a fresh model has one first"),
        (["--plain-steps", "2", "--from-shipped"], "--plain-steps: the first phase of a fresh model, not of a later"),
        (["--bare-steps", "2", "--from-shipped"], "--bare-steps: the first phase of a fresh model, not of a later"),
        (["--lookup-steps", "-3"], "--lookup-steps -3: a number of steps is 0 or more"),
        (["--lookup-steps", "2", "--from-shipped"], "--lookup-steps: the first phase of a fresh model, not of a"),
        (["--lookup-lines", "9"], "--lookup-lines 9: programs of 2 to 8 lines"),
        (["--tokenizer", "bytes"], "argument --tokenizer: invalid choice: 'bytes'"),
        (["--layers", "0"], "--layers 0: a depth is 1 or more"),
        (["--layers", "2", "--from-shipped"], "--layers: a fresh model's depth; a later stage deepens a model with"),
    ):
        bad = subprocess.run(run + ["--work", str(tmp_path / "bad")] + flags, **common)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    assert not (tmp_path / "bad").exists()
