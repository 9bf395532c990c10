"""The replica's decoder aggregates (sim/des/engine.py) against brute force: the KV blocks n
decoders hold after x more tokens each, from three aggregates (how many decode, the sum of their
offsets' whole blocks, and a histogram of the offsets' remainders), and how many decode iterations
fit a KV capacity. Property tests: hypothesis draws the decoders (derandomized, so CI is stable)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.des.engine import _blocks, _kv_steps

BLOCK_SIZES = st.sampled_from([1, 2, 8, 16, 32])
OFFSETS = st.lists(st.integers(0, 300), min_size=1, max_size=40)


def _aggregates(offsets: list[int], bs: int) -> tuple[int, int, list[int]]:
    cnt = [0] * bs
    for o in offsets:
        cnt[o % bs] += 1
    return len(offsets), sum(o // bs for o in offsets), cnt


def _brute(offsets: list[int], x: int, bs: int) -> int:
    return sum(math.ceil((o + x) / bs) for o in offsets)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(OFFSETS, BLOCK_SIZES, st.integers(0, 600))
def test_blocks_held_equal_the_sum_over_decoders(offsets, bs, x):
    n, q_sum, cnt = _aggregates(offsets, bs)
    assert _blocks(x, n, q_sum, cnt, bs) == _brute(offsets, x, bs)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(OFFSETS, BLOCK_SIZES, st.integers(0, 200), st.integers(0, 3000), st.integers(1, 400))
def test_kv_steps_are_the_iterations_that_fit(offsets, bs, g, spare, limit):
    """Iteration g + j needs every decoder's KV up to g + 1 + j tokens past its offset; it fits
    when those blocks are within capacity. `_kv_steps` counts the consecutive iterations from g
    that fit, at most `limit`."""
    n, q_sum, cnt = _aggregates(offsets, bs)
    capacity = _brute(offsets, g + 1, bs) + spare - 50  # sometimes short from the start
    steps = 0
    while steps < limit and _brute(offsets, g + 1 + steps, bs) <= capacity:
        steps += 1
    assert _kv_steps(g, n, q_sum, cnt, bs, capacity, limit) == steps
