"""Routers: the fleet's global scheduler, choosing a replica for each arriving request.

A router is a one-method object (`choose`) looked up by name in `ROUTERS`. It sees the replicas
that can take work now and returns one of them; ties break on the lowest index, so runs are
deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sim.engine import Replica, Request


class Router(Protocol):
    def choose(self, replicas: Sequence[Replica], req: Request) -> Replica: ...


class LeastOutstanding:
    """Fewest requests waiting or running (vLLM router / Ray Serve's default spirit)."""

    def choose(self, replicas: Sequence[Replica], req: Request) -> Replica:
        best = replicas[0]
        low = best.outstanding
        for rep in replicas:
            n = len(rep.waiting) + len(rep.running)
            if n < low:
                best, low = rep, n
        return best


class RoundRobin:
    """Each replica in turn, regardless of load."""

    def __init__(self) -> None:
        self._next = 0

    def choose(self, replicas: Sequence[Replica], req: Request) -> Replica:
        rep = replicas[self._next % len(replicas)]
        self._next += 1
        return rep


ROUTERS: dict[str, type] = {
    "least_outstanding": LeastOutstanding,
    "round_robin": RoundRobin,
}


def make_router(name: str) -> Router:
    try:
        return ROUTERS[name]()
    except KeyError:
        raise ValueError(f"unknown router {name!r}; known: {', '.join(ROUTERS)}") from None
