"""`--batching shuffled`: every row once an epoch, batches of mixed lengths, mlx-lm's own layout."""

import numpy as np
import pytest

from z1mlx.finetune.worker import shuffled_batches


def rows(count: int) -> list[tuple[np.ndarray, int]]:
    # Row i is i + 3 tokens long, each token its row's number: a batch says which rows it holds.
    return [(np.full(i + 3, i, dtype=np.int32), 1) for i in range(count)]


def held(batch) -> list[int]:
    tokens, lengths = (np.array(part) for part in batch)
    return [int(tokens[j, 0]) for j in range(tokens.shape[0])], lengths


def test_an_epoch_holds_every_row_once_in_batches_of_mixed_lengths():
    dataset = rows(40)
    seen, spreads = [], []
    for batch in shuffled_batches(dataset, 4, 2048, seed=7):
        ids, lengths = held(batch)
        seen += ids
        for j, i in enumerate(ids):
            assert lengths[j].tolist() == [1, i + 3]  # each row's (prompt length, length), as mlx-lm gives them
        spreads.append(max(ids) - min(ids))
    assert sorted(seen) == list(range(40))
    # mlx-lm's own batches are neighbours in length (rows i..i+3); drawn at random they are not.
    assert np.mean(spreads) > 10


def test_the_order_is_the_seeds_and_the_layout_is_mlx_lms():
    from mlx_lm.tuner.trainer import iterate_batches

    dataset = rows(24)
    first = [held(b)[0] for b in shuffled_batches(dataset, 6, 2048, seed=3)]
    assert first == [held(b)[0] for b in shuffled_batches(dataset, 6, 2048, seed=3)]
    assert first != [held(b)[0] for b in shuffled_batches(dataset, 6, 2048, seed=4)]
    for batch, ids in zip(shuffled_batches(dataset, 6, 2048, seed=3), first):
        expected = next(iterate_batches([dataset[i] for i in ids], 6, 2048))
        for got, want in zip(batch, expected):
            assert np.array_equal(np.array(got), np.array(want))  # the padding mlx-lm gives these rows


@pytest.mark.parametrize("count, size, batches", [(10, 4, 2), (8, 4, 2), (3, 4, 0)])
def test_a_partial_batch_is_left_out(count, size, batches):
    assert len(list(shuffled_batches(rows(count), size, 2048, seed=0))) == batches
