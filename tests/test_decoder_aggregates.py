"""The replica's decode set (sim/des/decoders.py) against brute force over its member list: the
KV blocks its decoders hold after x more tokens each, from three aggregates (how many decode, the
sum of their offsets' whole blocks, and a histogram of the offsets' remainders), how many decode
iterations fit a KV capacity, and the aggregates and finishes after any sequence of joins, leaves
and advances. Property tests: hypothesis draws the decoders and the sequences (derandomized, so CI
is stable)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from sim.des.decoders import Decoders

BLOCK_SIZES = st.sampled_from([1, 2, 8, 16, 32])
OFFSETS = st.lists(st.integers(0, 300), min_size=1, max_size=40)


def _decoders(offsets: list[int], bs: int) -> Decoders:
    d = Decoders(bs)
    for i, o in enumerate(offsets):
        d.join(o, 10**6, i)
    return d


def _brute(offsets: list[int], x: int, bs: int) -> int:
    return sum(math.ceil((o + x) / bs) for o in offsets)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(OFFSETS, BLOCK_SIZES, st.integers(0, 600))
def test_blocks_held_equal_the_sum_over_decoders(offsets, bs, x):
    assert _decoders(offsets, bs).blocks_after(x) == _brute(offsets, x, bs)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(OFFSETS, BLOCK_SIZES, st.integers(0, 200), st.integers(0, 3000), st.integers(1, 400))
def test_kv_steps_are_the_iterations_that_fit(offsets, bs, g, spare, limit):
    """Iteration g + j needs every decoder's KV up to g + 1 + j tokens past its offset; it fits
    when those blocks are within capacity. `steps_fitting` counts the consecutive iterations from
    g that fit, at most `limit`."""
    capacity = _brute(offsets, g + 1, bs) + spare - 50  # sometimes short from the start
    steps = 0
    while steps < limit and _brute(offsets, g + 1 + steps, bs) <= capacity:
        steps += 1
    assert _decoders(offsets, bs).steps_fitting(g, capacity, limit) == steps


@settings(max_examples=200, deadline=None, derandomize=True)
@given(OFFSETS, st.lists(st.integers(0, 300), max_size=8), BLOCK_SIZES, st.integers(0, 400))
def test_plus_is_joining_more_decoders(offsets, more, bs, x):
    """The what-if copy with more offsets has the aggregates of a set they joined, and leaves
    the original as it was."""
    d = _decoders(offsets, bs)
    before = (d.n, d.s_off, d.q_sum, list(d.cnt))
    after = d.plus(more)
    joined = _decoders(offsets + more, bs)
    assert (after.n, after.s_off, after.q_sum, after.cnt) == (joined.n, joined.s_off, joined.q_sum, joined.cnt)
    assert after.blocks_after(x) == _brute(offsets + more, x, bs)
    assert (d.n, d.s_off, d.q_sum, d.cnt) == before


# one step: join (offset, iterations to its last token), leave (which member, by index), or
# advance the iteration counter (by how many)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("join"), st.integers(0, 300), st.integers(1, 60)),
        st.tuples(st.just("leave"), st.integers(0, 10**6)),
        st.tuples(st.just("advance"), st.integers(0, 40)),
    ),
    max_size=60,
)


def _check(d: Decoders, members: dict[int, tuple[int, int, str]], g: int, bs: int) -> None:
    """Every aggregate and answer of `d` against a recomputation over `members` (join order ->
    offset, finish, name)."""
    offsets = [o for o, _, _ in members.values()]
    assert d.n == len(offsets)
    assert d.s_off == sum(offsets)
    assert d.q_sum == sum(o // bs for o in offsets)
    assert d.cnt == [sum(1 for o in offsets if o % bs == r) for r in range(bs)]
    assert d.context(g) == sum(o + g for o in offsets)
    for x in (g, g + 1, g + 2, g + bs - 1, g + 3 * bs + 1):
        assert d.blocks_after(x) == _brute(offsets, x, bs)
    assert sorted(d.members()) == sorted((f, name) for _, f, name in members.values())
    if members:
        assert d.first_due <= d.next_finish() == min(f for _, f, _ in members.values())
        capacity = _brute(offsets, g + 1, bs) + 2 * len(offsets) + 1
        steps = 0
        while steps < 100 and _brute(offsets, g + 1 + steps, bs) <= capacity:
            steps += 1
        assert d.steps_fitting(g, capacity, 100) == steps


@settings(max_examples=300, deadline=None, derandomize=True)
@given(STEPS, BLOCK_SIZES)
def test_the_aggregates_follow_joins_leaves_and_advances(steps, bs):
    """After any sequence of joins, leaves (preemptions) and advances, the decode set equals a
    recomputation over its members; an advance to boundary g gives back exactly the members whose
    last token is out by g, earliest finish first, then in the order they joined."""
    d = Decoders(bs)
    members: dict[int, tuple[int, int, str]] = {}
    handles = {}
    g = 0
    for k, step in enumerate(steps):
        if step[0] == "join":
            _, o, left = step
            name = f"m{k}"
            handles[k] = d.join(o, g + left, name)
            members[k] = (o, g + left, name)
        elif step[0] == "leave" and members:
            k = sorted(members)[step[1] % len(members)]
            d.leave(members[k][0], handles[k])
            del members[k]
        elif step[0] == "advance":
            g += step[1]
            due = sorted((f, h) for h, (_, f, _) in members.items() if f <= g)
            popped = []
            while d.first_due <= g:  # as the engine pops them
                m = d.pop_due(g)
                if m is None:
                    break
                popped.append(m)
            assert d.first_due > g and d.pop_due(g) is None
            assert popped == [members[h][2] for _, h in due]
            for _, h in due:
                del members[h]
        _check(d, members, g, bs)
    d.clear()
    _check(d, {}, g, bs)
