"""Routers: the fleet's global scheduler, choosing a replica for each arriving request.

A router is a one-method object (`choose(loads, req) -> slot`) looked up by name in `ROUTERS`.
`loads` holds, per replica slot, the requests waiting or running there plus a penalty for its
state: 0 active, `WAKE_PENALTY` waking, `SLEEP_PENALTY` asleep (chosen only when nothing is
awake: routing to it wakes it), `NOT_ROUTABLE` otherwise (starting up, draining, stopped). Ties
break on the lowest slot, so runs are deterministic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np

    from sim.config.schema import Config
    from sim.des.engine import Request

WAKE_PENALTY = 1 << 30
SLEEP_PENALTY = 1 << 40
NOT_ROUTABLE = 1 << 62


class Router(Protocol):
    def choose(self, loads: list[int], req: Request) -> int: ...


class Fleet(Protocol):
    """What a router may read of the fleet it routes for (`sim.des.fleet.Fleet`)."""

    cfg: Config
    rng: np.random.Generator
    nodes: list[Any]  # per slot: a replica with its prefix cache (`.cache`, or None)

    def blocks_of(self, req: Request) -> Any: ...  # the request's prefix block hashes, or None


def _tier(loads: list[int]) -> tuple[int, list[int]]:
    """The best state class present (active, waking, sleeping) and the slots in it."""
    low = min(loads)
    tier = low >> 30
    return tier, [k for k, v in enumerate(loads) if v >> 30 == tier]


class LeastOutstanding:
    """Fewest requests waiting or running; the first such replica on ties."""

    def __init__(self, fleet: Fleet | None = None):
        pass

    def choose(self, loads: list[int], req: Request) -> int:
        return loads.index(min(loads))  # two C-level passes: cheap even for large fleets


class RoundRobin:
    """Each replica of the best available state in turn, regardless of load."""

    def __init__(self, fleet: Fleet | None = None):
        self._next = 0

    def choose(self, loads: list[int], req: Request) -> int:
        _, slots = _tier(loads)
        after = [k for k in slots if k >= self._next]
        k = after[0] if after else slots[0]
        self._next = k + 1
        return k


class PowerOfTwo:
    """Two replicas at random (of the best available state), the less loaded of the two.

    The pair is drawn by rejection: slots uniform over the fleet until two distinct ones of the
    best state are found, which is uniform over that state's pairs without listing its slots;
    after `TRIES` draws (few replicas in that state) the slots are listed and the pair drawn
    from them: i = floor(u1 m), j = floor(u2 (m - 1)) moved past i. The uniforms come from the
    fleet's generator in blocks of `BLOCK` (one numpy call per block, not one per arrival), each
    kept both as drawn and as a slot, floor(u n) for the fleet's n slots (one numpy product per
    block: an arrival's two draws are two list pops). A first draw that lands on an active replica
    tells that the best state is active without a pass over the loads: the usual arrival reads
    two loads, whatever the fleet's size."""

    BLOCK = 4096
    TRIES = 8
    RESERVE = 2 * TRIES + 2  # more than a choice can use: the block is refilled below this

    def __init__(self, fleet: Fleet):
        self.rng = fleet.rng
        self._u: list[float] = []  # the uniforms, consumed with pop() from the end
        self._k: list[int] = []  # the same as slots, floor(u n): _k[i] is _u[i]'s while i < len(_k)
        self._n = 0  # the n of _k

    def _slots(self, n: int) -> list[int]:
        """The block as slots of a fleet of n, refilled (with new uniforms placed before the
        remaining ones) when fewer than a choice can use remain."""
        u, k = self._u, self._k
        del u[len(k) :]  # uniforms already consumed
        if n != self._n:  # the fleet has grown: the remaining uniforms as its slots
            k[:] = [int(x * n) for x in u]
            self._n = n
        if len(k) < self.RESERVE:
            block = self.rng.random(self.BLOCK)[::-1]
            u[:0] = block.tolist()
            k[:0] = (block * n).astype("int64").tolist()  # the same products and floors as Python's
        return k

    def _uniform(self) -> float:
        """The next uniform as drawn (to scale by a count other than the fleet's)."""
        k = self._k
        x = self._u[len(k) - 1]
        k.pop()
        return x

    def choose(self, loads: list[int], req: Request) -> int:
        k = self._k
        if len(k) < _RESERVE or len(loads) != self._n:  # (a class attribute read through self is slower)
            k = self._slots(len(loads))
        a = k.pop()
        la = loads[a]
        if la < WAKE_PENALTY:  # active, so the best state is: the usual case
            b = k.pop()
            lb = loads[b]
            if lb < WAKE_PENALTY and b != a:
                return a if la < lb or (la == lb and a < b) else b
            a, b = self._search(loads, 0, a, self.TRIES)
        else:
            a, b = self._after_first(loads, a)
        return a if (loads[a], a) <= (loads[b], b) else b

    def pair(self, loads: list[int]) -> tuple[int, int]:
        """Two distinct slots of the best state, uniform over its pairs (the same slot twice when
        it is alone in that state)."""
        k = self._k
        if len(k) < self.RESERVE or len(loads) != self._n:
            k = self._slots(len(loads))
        return self._after_first(loads, k.pop())

    def _after_first(self, loads: list[int], a: int) -> tuple[int, int]:
        """The pair whose first draw was slot a: kept if of the best state, then up to `TRIES`
        draws more (one more when a is kept: its partner's)."""
        tier = min(loads) >> 30
        if loads[a] >> 30 == tier:
            return self._search(loads, tier, a, self.TRIES + 1)
        return self._search(loads, tier, -1, self.TRIES)

    def _search(self, loads: list[int], tier: int, a: int, tries: int) -> tuple[int, int]:
        """Draw until two distinct slots of state `tier` are found (`a`: the first, or -1), at
        most `tries` times; then from the state's listed slots."""
        k = self._k
        for _ in range(tries):
            s = k.pop()
            if loads[s] >> 30 == tier and s != a:
                if a < 0:
                    a = s
                else:
                    return a, s
        slots = [s for s, v in enumerate(loads) if v >> 30 == tier]  # the best state is rare
        m = len(slots)
        if m == 1:
            return slots[0], slots[0]
        i = int(self._uniform() * m)
        j = int(self._uniform() * (m - 1))
        return slots[i], slots[j + (j >= i)]


_RESERVE = PowerOfTwo.RESERVE


class PrefixAware:
    """The replica whose prefix cache holds the longest leading part of the request's prompt,
    among those within `fleet.prefix_slack` requests of the least loaded; least loaded when no
    cache helps (or the workload has no prefix hashes)."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.slack = fleet.cfg.fleet.prefix_slack

    def choose(self, loads: list[int], req: Request) -> int:
        best = loads.index(min(loads))
        blocks = self.fleet.blocks_of(req)
        if blocks is None or not len(blocks) or loads[best] >= NOT_ROUTABLE:
            return best
        nodes = self.fleet.nodes
        limit = loads[best] + self.slack
        best_hit = -1
        choice = best
        for k, load in enumerate(loads):
            if load > limit:
                continue
            cache = nodes[k].cache
            hit = cache.peek(blocks) if cache is not None else 0
            if hit > best_hit or (hit == best_hit and load < loads[choice]):
                choice, best_hit = k, hit
        return choice


ROUTERS: dict[str, type] = {
    "least_outstanding": LeastOutstanding,
    "round_robin": RoundRobin,
    "power_of_two": PowerOfTwo,
    "prefix_aware": PrefixAware,
}


def make_router(name: str, fleet: Fleet) -> Router:
    try:
        return ROUTERS[name](fleet)
    except KeyError:
        raise ValueError(f"unknown router {name!r}; known: {', '.join(ROUTERS)}") from None
