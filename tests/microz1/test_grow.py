"""Growing a trained micro-Z1 model deeper keeps what it computes, token for token."""

import json

import numpy as np
import pytest

from z1mlx.microz1.build import MicroSpec, build_fresh_model, grow_model, grown_layers

SMALL = MicroSpec(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                  intermediate_size=64)  # fmt: skip


def test_new_layers_are_spread_among_the_old_ones():
    assert grown_layers(4, 6) == [0, 1, None, 2, 3, None]
    assert grown_layers(4, 8) == [0, None, 1, None, 2, None, 3, None]
    assert grown_layers(4, 5) == [0, 1, 2, 3, None]
    assert grown_layers(3, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="cannot grow 4 layers into 3"):
        grown_layers(4, 3)


def test_a_grown_model_gives_the_same_logits_as_the_model_it_grew_from(tmp_path):
    import mlx.core as mx
    from mlx_lm import load

    source = build_fresh_model(tmp_path / "small", SMALL)
    weights = mx.load(str(source / "model.safetensors"))
    # A trained model's layers are not an initialisation: make every layer differ from mlx's.
    rng = np.random.default_rng(0)
    trained = {k: mx.array(np.array(v) + rng.normal(0, 0.05, v.shape).astype(np.float32)) for k, v in weights.items()}
    mx.save_safetensors(str(source / "model.safetensors"), trained, metadata={"format": "mlx"})
    grown = grow_model(source, tmp_path / "grown", 5, seed=3)

    config = json.loads((grown / "config.json").read_text())
    assert config["num_hidden_layers"] == 5 and config["micro_z1"]["grown_from"] == 2
    after = mx.load(str(grown / "model.safetensors"))
    # Old layer 1 is now layer 2 (the plan: 0, new, 1, new, new), byte for byte.
    assert grown_layers(2, 5) == [0, None, 1, None, None]
    assert np.array_equal(np.array(after["model.layers.2.mlp.up_proj.weight"]),
                          np.array(trained["model.layers.1.mlp.up_proj.weight"]))  # fmt: skip
    for index in (1, 3, 4):
        assert not np.any(np.array(after[f"model.layers.{index}.self_attn.o_proj.weight"]))
        assert not np.any(np.array(after[f"model.layers.{index}.mlp.down_proj.weight"]))
        assert np.any(np.array(after[f"model.layers.{index}.self_attn.q_proj.weight"]))  # it can learn
    old_model, tokenizer = load(str(source))
    new_model, new_tokenizer = load(str(grown))
    text = "c = 9\na = c - 2\nprint(a)\n"
    ids = tokenizer.encode(text)
    assert new_tokenizer.encode(text) == ids
    assert np.array_equal(np.array(old_model(mx.array([ids]))), np.array(new_model(mx.array([ids]))))
