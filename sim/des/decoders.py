"""A replica's running decode set, kept as aggregates so that a run of decode iterations has a
closed form (the replica scheduler, `sim.des.engine`, uses it; nothing here knows SimPy or requests).

Iterations are counted by a global counter g. A decoder that joins at boundary g with c tokens of
KV gets the offset o = c - g: at boundary g' it holds o + g' tokens, one more per iteration. The
set is kept as four aggregates over its members' offsets,

    n         how many decode
    s_off     sum_i o_i                       so their context at boundary g is s_off + n g
    q_sum     sum_i o_i // block_size
    cnt[r]    how many have o_i % block_size == r

from which the KV blocks they hold after x tokens,

    blocks(x) = sum_i ceil((o_i + x) / block_size),

takes O(block_size) whatever n is (`blocks_after`), and so does the number of iterations whose
blocks fit a capacity (`steps_fitting`). A heap keyed by the boundary at which each member emits
its last token gives the next finish (`next_finish`, `pop_due`); `first_due`, a lower bound on
it, lets the engine skip the call at a segment's end where nobody finishes.

The engine is the hot path: it reads the aggregates directly where a method call per segment
would show (the context s_off + n g), and `plus` reuses one scratch set rather than build one.

A member is whatever object the caller passes to `join` (the engine passes its request); `join`
returns a handle (an int: the member's place in the order of joining), and `leave` takes the
handle and the offset back. A member that leaves keeps its heap entry until the entry reaches the
top (the heapq documentation's lazy deletion); only the handles of such members are remembered, so
a member that finishes costs no look-up.
"""

from __future__ import annotations

import heapq

NEVER = 1 << 62  # `first_due` of an empty heap


class Decoders:
    """The decode set of one replica: aggregates over the members' KV offsets, and their finishes."""

    __slots__ = ("_heap", "_left", "_scratch", "_seq", "bs", "cnt", "first_due", "n", "q_sum", "s_off")

    def __init__(self, block_size: int):
        self.bs = block_size
        self.n = 0  # members
        self.s_off = 0  # sum of o_i
        self.q_sum = 0  # sum of o_i // block_size
        self.cnt = [0] * block_size  # histogram of o_i % block_size
        self._heap: list[tuple[int, int, int, object]] = []  # (finish, handle, offset, member)
        self._left: set[int] = set()  # handles of members that left while their entry is in the heap
        # no member is due before it (the heap's earliest entry, of a member that left or not):
        # the engine looks here before it calls `pop_due`
        self.first_due = NEVER
        self._seq = 0  # members that ever joined (their order breaks ties between equal finishes)
        self._scratch: Decoders | None = None  # what `plus` returns

    def join(self, o: int, finish: int, member: object) -> int:
        """Add a member with KV offset `o` whose last token is out at boundary `finish`; return
        its handle."""
        q, r = divmod(o, self.bs)
        self.q_sum += q
        self.cnt[r] += 1
        self.s_off += o
        self.n += 1
        self._seq += 1
        handle = self._seq
        heap = self._heap
        heapq.heappush(heap, (finish, handle, o, member))
        self.first_due = heap[0][0]
        return handle

    def leave(self, o: int, handle: int) -> None:
        """Remove the member that joined with offset `o` and got `handle` (preempted: a member
        that finishes leaves through `pop_due`)."""
        self._left.add(handle)
        q, r = divmod(o, self.bs)
        self.q_sum -= q
        self.cnt[r] -= 1
        self.s_off -= o
        self.n -= 1

    def pop_due(self, g: int) -> object | None:
        """A member whose last token is out by boundary g, removed from the set; None when there
        is none. Members due at the same boundary come in the order they joined."""
        heap = self._heap
        left = self._left
        while heap and heap[0][0] <= g:
            _, handle, o, member = heapq.heappop(heap)
            if left and handle in left:
                left.remove(handle)
            else:  # it leaves
                q, r = divmod(o, self.bs)
                self.q_sum -= q
                self.cnt[r] -= 1
                self.s_off -= o
                self.n -= 1
                self.first_due = heap[0][0] if heap else NEVER
                return member
        self.first_due = heap[0][0] if heap else NEVER
        return None

    def next_finish(self) -> int:
        """The earliest boundary at which a member emits its last token (the set must not be
        empty)."""
        heap = self._heap
        left = self._left
        while left and heap[0][1] in left:  # drop entries of members that left
            left.remove(heapq.heappop(heap)[1])
        self.first_due = due = heap[0][0]
        return due

    def members(self) -> list[tuple[int, object]]:
        """(finish, member) for every member, in no particular order."""
        left = self._left
        return [(e[0], e[3]) for e in self._heap if e[1] not in left]

    def context(self, g: int) -> int:
        """The members' KV tokens at boundary g."""
        return self.s_off + self.n * g

    def blocks_after(self, x: int) -> int:
        """KV blocks the members hold after x more tokens each: sum_i ceil((o_i + x) / block_size)."""
        bs = self.bs
        n = self.n
        cycles, h = divmod(x, bs)
        total = self.q_sum + n * cycles + n
        if h == 0:
            total -= self.cnt[0]
        elif h >= 2:
            total += sum(self.cnt[bs + 1 - h :])
        return total

    def steps_fitting(self, g: int, capacity: int, limit: int) -> int:
        """How many decode iterations from boundary g on (at most `limit`) get their KV blocks
        within `capacity`: iteration g + j needs blocks_after(g + 1 + j). The set must not be
        empty."""
        return self.fit(g, capacity - self.blocks_after(g + 1), limit)

    def fit(self, g: int, slack: int, limit: int) -> int:
        """`steps_fitting` given the slack at boundary g: the capacity less blocks_after(g + 1)
        (the engine has it at hand)."""
        if slack < 0:
            return 0
        n, bs, cnt = self.n, self.bs, self.cnt
        cycles = slack // n  # every block_size iterations the members need exactly n new blocks
        if cycles * bs >= limit:
            return limit
        x = g + 1 + cycles * bs
        slack -= cycles * n
        while True:
            x += 1
            slack -= cnt[(1 - x) % bs]  # members whose KV fills a block at boundary x - 1
            if slack < 0:
                return min(x - 1 - g, limit)

    def plus(self, offsets: list[int]) -> Decoders:
        """The aggregates with more members of these offsets, for a what-if: a scratch set with
        no finishes (its `next_finish` and `pop_due` know nothing), overwritten by the next call."""
        other = self._scratch
        if other is None:
            other = self._scratch = Decoders(self.bs)
        bs = self.bs
        cnt = other.cnt = self.cnt.copy()
        q_sum = self.q_sum
        s_off = self.s_off
        for o in offsets:
            q, r = divmod(o, bs)
            q_sum += q
            cnt[r] += 1
            s_off += o
        other.n = self.n + len(offsets)
        other.s_off = s_off
        other.q_sum = q_sum
        return other

    def clear(self) -> None:
        """Remove every member."""
        self.n = self.s_off = self.q_sum = 0
        self.cnt = [0] * self.bs
        self._heap.clear()
        self._left.clear()
        self.first_due = NEVER
