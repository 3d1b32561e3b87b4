"""Length buckets: every input lands in exactly one batch, widths are few and tight, and outputs
come back in input order."""
import numpy as np
import pytest

from irjax.data.batching import (
    length_buckets,
    padded_rows,
    padding_stats,
    restore_order,
    round_up,
)


def test_round_up():
    assert [round_up(n, 32) for n in (1, 31, 32, 33, 64, 65)] == [32, 32, 32, 64, 64, 96]
    assert round_up(250, 32, cap=256) == 256
    assert round_up(200, 96, cap=256) == 256  # rounding past the cap is clipped to it
    with pytest.raises(ValueError, match="exceeds the cap"):
        round_up(300, 32, cap=256)
    with pytest.raises(ValueError, match="multiple"):
        round_up(3, 0)


def test_buckets_cover_each_input_once_with_tight_widths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 257, size=1000)
    buckets = length_buckets(lengths, batch_size=64, multiple=32, max_length=256)
    seen = np.concatenate([b.indices for b in buckets])
    assert sorted(seen.tolist()) == list(range(1000))
    assert all(len(b) <= 64 for b in buckets) and sum(len(b) == 64 for b in buckets) == 15
    for b in buckets:
        longest = lengths[b.indices].max()
        assert b.length >= longest and b.length % 32 == 0 and b.length - longest < 32
    widths = [b.length for b in buckets]
    assert widths == sorted(widths, reverse=True)
    assert len({b.length for b in buckets}) <= 8


def test_short_texts_do_not_pay_for_long_ones():
    lengths = np.array([250] + [10] * 127)
    buckets = length_buckets(lengths, batch_size=64, multiple=16, max_length=256)
    assert [b.length for b in buckets] == [256, 16]
    assert 0 in buckets[0].indices
    stats = padding_stats(lengths, buckets)
    assert stats["padded_tokens"] == 64 * 256 + 64 * 16
    assert stats["real_tokens"] == 250 + 127 * 10
    # Padding everything to the longest text would be ~8x the work for this collection.
    assert stats["padded_tokens"] < 0.6 * 128 * 256


def test_equal_lengths_keep_input_order():
    buckets = length_buckets([5, 5, 5, 5, 5], batch_size=2, multiple=8)
    assert [b.indices.tolist() for b in buckets] == [[0, 1], [2, 3], [4]]


def test_restore_order_inverts_bucketing_and_drops_padding_rows():
    rng = np.random.default_rng(1)
    lengths = rng.integers(1, 100, size=37)
    buckets = length_buckets(lengths, batch_size=8, multiple=16)
    values = rng.normal(size=(37, 3)).astype(np.float32)
    # Each bucket's output has its rows padded to 8, as a static-shape forward pass would.
    outputs = [np.concatenate([values[b.indices], np.full((8 - len(b), 3), np.nan)]) for b in buckets]
    restored = restore_order(outputs, buckets)
    np.testing.assert_array_equal(restored, values)
    with pytest.raises(ValueError, match="outputs for"):
        restore_order(outputs[:-1], buckets)


def test_padded_rows_only_grows_the_last_batch_to_a_power_of_two():
    assert [padded_rows(n, 64) for n in (1, 8, 9, 33, 64)] == [8, 8, 16, 64, 64]
    assert padded_rows(5, 4 + 2) == 6
    with pytest.raises(ValueError, match="exceeds batch_size"):
        padded_rows(65, 64)


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        length_buckets([1, 2], batch_size=0)
    with pytest.raises(ValueError, match="1-D"):
        length_buckets(np.ones((2, 2)), batch_size=2)
    assert length_buckets([], batch_size=4) == []
