"""Routers: the fleet's global scheduler, choosing a replica for each arriving request.

A router is a one-method object looked up by name in `ROUTERS`. It sees the fleet's load vector
(requests waiting or running per replica; `NOT_ROUTABLE` for a replica that cannot take work)
and returns the index of the replica to use. Ties break on the lowest index, so runs are
deterministic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sim.engine import Request

NOT_ROUTABLE = 1 << 62  # load of a replica that is not active (provisioning, stopped, ...)


class Router(Protocol):
    def choose(self, loads: list[int], req: Request) -> int: ...


class LeastOutstanding:
    """Fewest requests waiting or running; the first such replica on ties."""

    def choose(self, loads: list[int], req: Request) -> int:
        return loads.index(min(loads))  # two C-level passes: cheap even for large fleets


class RoundRobin:
    """Each routable replica in turn, regardless of load."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, loads: list[int], req: Request) -> int:
        n = len(loads)
        for k in range(n):
            i = (self._next + k) % n
            if loads[i] < NOT_ROUTABLE:
                self._next = i + 1
                return i
        return self._next % n


ROUTERS: dict[str, type] = {
    "least_outstanding": LeastOutstanding,
    "round_robin": RoundRobin,
}


def make_router(name: str) -> Router:
    try:
        return ROUTERS[name]()
    except KeyError:
        raise ValueError(f"unknown router {name!r}; known: {', '.join(ROUTERS)}") from None
