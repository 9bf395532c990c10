"""Overflow policies (`api.overflow`): for each new request the API could serve, whether it
goes to the API instead of a GPU replica.

One class per policy, registered in `OVERFLOW` under the names of `config/names.py`.
`decide(fleet, req)` returns (to the API?, slot): the slot is the router's choice when the policy
had to look at a replica to decide, so a request kept on the GPUs is not routed twice. A policy
that looks brings the replica up to date first (`Replica.sync`), then reads its state once.
`serves_too_long`: whether a request longer than any replica's context goes to the API (every
policy but `never`) or is rejected.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from sim.config.schema import ApiConfig
from sim.des.router import NOT_ROUTABLE

if TYPE_CHECKING:
    import numpy as np

    from sim.des.engine import Request
    from sim.des.predict import Predictor
    from sim.des.router import Router

Node = Any  # a replica slot of the fleet (`sim.des.lifecycle.Node`): .engine, .state


class Fleet(Protocol):
    """What an overflow policy reads of the fleet (`sim.des.fleet.Fleet`)."""

    loads: list[int]
    nodes: list[Node]
    router: Router
    router_queue: Any  # requests waiting at the router for a replica
    rng: np.random.Generator

    predict: Predictor


class Never:
    """Nothing goes to the API: a request longer than the context is rejected as without one."""

    serves_too_long = False

    def __init__(self, cfg: ApiConfig):
        pass

    def decide(self, fleet: Fleet, req: Request) -> tuple[bool, int | None]:
        return False, None


class Always:
    """Everything the API accepts goes there (a pure-API deployment)."""

    serves_too_long = True

    def __init__(self, cfg: ApiConfig):
        pass

    def decide(self, fleet: Fleet, req: Request) -> tuple[bool, int | None]:
        return True, None


class Share:
    """A fixed share of the requests, drawn one by one from the fleet's generator."""

    serves_too_long = True

    def __init__(self, cfg: ApiConfig):
        self.share = cfg.share

    def decide(self, fleet: Fleet, req: Request) -> tuple[bool, int | None]:
        return bool(fleet.rng.uniform() < self.share), None


def _replica(fleet: Fleet, req: Request) -> tuple[int | None, Node | None]:
    """The router's choice for `req`, and its replica if it can take requests now (synced)."""
    loads = fleet.loads
    k = fleet.router.choose(loads, req) if loads else None
    node = fleet.nodes[k] if k is not None and loads[k] < NOT_ROUTABLE else None
    if node is not None:
        node.engine.sync()  # type: ignore[union-attr]
    return k, node


class Queue:
    """When `queue_threshold` requests already wait at the chosen replica (or at the router,
    with no replica up)."""

    serves_too_long = True

    def __init__(self, cfg: ApiConfig):
        self.threshold = cfg.queue_threshold

    def decide(self, fleet: Fleet, req: Request) -> tuple[bool, int | None]:
        k, node = _replica(fleet, req)
        ahead = len(fleet.router_queue) if node is None else len(node.engine.waiting)  # type: ignore[union-attr]
        return ahead >= self.threshold, k


class Ttft:
    """When the predicted TTFT on the chosen replica exceeds `ttft_margin` x the request's TTFT
    threshold (`Predictor.ttft`)."""

    serves_too_long = True

    def __init__(self, cfg: ApiConfig):
        self.margin = cfg.ttft_margin

    def decide(self, fleet: Fleet, req: Request) -> tuple[bool, int | None]:
        k, node = _replica(fleet, req)
        view = node.engine.view() if node is not None else None  # type: ignore[union-attr]
        return self.over(fleet, node, req, view), k

    def over(self, fleet: Fleet, node: Node | None, req: Request, view) -> bool:
        ttft_slo, _ = fleet.predict.slo_of(req)
        return fleet.predict.ttft(node, req, view) > self.margin * ttft_slo


class Slo(Ttft):
    """When the predicted TTFT or the predicted TPOT exceeds the margin x its threshold."""

    def over(self, fleet: Fleet, node: Node | None, req: Request, view) -> bool:
        if super().over(fleet, node, req, view):
            return True
        _, tpot_slo = fleet.predict.slo_of(req)
        return fleet.predict.tpot(node, req, view) > self.margin * tpot_slo


OVERFLOW: dict[str, type] = {"never": Never, "always": Always, "ttft": Ttft, "slo": Slo, "queue": Queue, "share": Share}
