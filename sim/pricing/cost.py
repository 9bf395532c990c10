"""GPU billing from replica lifecycle records, and the cost summary of a run.

A replica is billed from the moment it is requested (provisioning) until it stops, at its GPUs x
the price per GPU-hour, with a rate per state: provisioning, active, waking and draining in full,
sleeping at `fleet.sleep.cost_fraction`. The billing rule then applies to its lifetime: per
second, or rounded up to whole hours, and never less than `min_billed_s`; the rounding is billed
at the full rate. Spot replicas pay `spot_fraction` of the price. A reservation of N GPUs is paid
for the whole horizon at `reserved_fraction` of the price and covers, at every instant, up to N
of the on-demand GPUs in use; only what exceeds it is billed on demand, per second (rounding and
minimums do not apply under a reservation). With `burst=spot`, replicas started while the
reservation is already in use run as spot. Owned hardware (`kind=owned`) pays capital and
hosting for its GPUs over the whole horizon and energy for the GPU-time in use; GPU-time beyond
the owned GPUs is rented on demand. GPUs rented in whole instances (`instance_gpus`) bill the
instance's unused GPUs too. Operations overhead is charged to fleets that run GPUs only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from sim.config.schema import PricingConfig

FULL_RATE = ("provisioning", "active", "waking", "draining")
HOURS_PER_MONTH = 730.0  # 365 x 24 / 12: every "per month" figure (ops cost, projections, API caps)
STATES = ("provisioning", "active", "idle", "sleeping", "waking", "draining")


@dataclass
class Span:
    """A replica in one state over [start, end)."""

    uid: int
    gpus: int
    spot: bool
    state: str
    start: float
    end: float


def state_weight(state: str, sleep_fraction: float) -> float:
    if state in FULL_RATE:
        return 1.0
    return sleep_fraction if state == "sleeping" else 0.0


def billed_lifetime(lifetime: float, pricing: PricingConfig) -> float:
    if pricing.billing == "per_hour":
        lifetime_billed = math.ceil(lifetime / 3600.0 - 1e-12) * 3600.0
    else:
        lifetime_billed = lifetime
    return max(lifetime_billed, pricing.min_billed_s)


def replica_bills(
    spans: list[Span], pricing: PricingConfig, price: float, sleep_fraction: float, idle: dict[int, float] | None = None
) -> pd.DataFrame:
    """One row per replica: its life, seconds by state, billed seconds, rate and cost. `idle`: the
    seconds each replica spent active without work (part of its active time)."""
    rows: dict[int, dict] = {}
    for s in spans:
        r = rows.setdefault(
            s.uid,
            {
                "replica": s.uid,
                "gpus": s.gpus,
                "kind": "spot" if s.spot else "on_demand",
                "start_s": s.start,
                "end_s": s.end,
                "weighted_s": 0.0,
                **{f"{k}_s": 0.0 for k in STATES},
            },
        )
        r["start_s"] = min(r["start_s"], s.start)
        r["end_s"] = max(r["end_s"], s.end)
        r[f"{s.state}_s"] += s.end - s.start
        r["weighted_s"] += (s.end - s.start) * state_weight(s.state, sleep_fraction)
    out = []
    for r in rows.values():
        r["idle_s"] = (idle or {}).get(r["replica"], 0.0)
        life = r["end_s"] - r["start_s"]
        extra = billed_lifetime(life, pricing) - life  # rounding and minimum, at the full rate
        r["billed_s"] = r["weighted_s"] + extra
        r["rate_per_gpu_hour"] = price * (pricing.spot_fraction if r["kind"] == "spot" else 1.0)
        r["cost"] = r["billed_s"] / 3600.0 * r["rate_per_gpu_hour"] * r["gpus"]
        out.append(r)
    df = pd.DataFrame(out)
    if df.empty:
        return pd.DataFrame(
            columns=["replica", "gpus", "kind", "start_s", "end_s", "billed_s", "rate_per_gpu_hour", "cost"]
        )
    return df.sort_values("replica").reset_index(drop=True)


def reserved_cover(spans: list[Span], reserved_gpus: int, sleep_fraction: float) -> float:
    """GPU-seconds of on-demand use that a reservation of `reserved_gpus` covers:
    integral of min(in-use GPUs, reserved) over time."""
    if reserved_gpus <= 0:
        return 0.0
    events = []
    for s in spans:
        w = s.gpus * state_weight(s.state, sleep_fraction)
        if w and not s.spot and s.end > s.start:
            events += [(s.start, w), (s.end, -w)]
    if not events:
        return 0.0
    events.sort()
    t = np.array([e[0] for e in events])
    level = np.cumsum([e[1] for e in events])
    return float(np.sum(np.minimum(level[:-1], reserved_gpus) * np.diff(t)))


def instance_waste(spans: list[Span], instance_gpus: int) -> float:
    """GPU-seconds rented but unused when GPUs come in whole instances of `instance_gpus`:
    integral of (ceil(held / I) x I - held) over time, `held` the GPUs of the on-demand replicas
    in existence (spot and stopped replicas aside)."""
    if instance_gpus <= 1:
        return 0.0
    events = []
    for s in spans:
        if not s.spot and s.end > s.start and s.state != "stopped":
            events += [(s.start, s.gpus), (s.end, -s.gpus)]
    if not events:
        return 0.0
    events.sort()
    t = np.array([e[0] for e in events])
    held = np.cumsum([e[1] for e in events])[:-1]
    waste = np.ceil(held / instance_gpus - 1e-9) * instance_gpus - held
    return float(np.sum(np.maximum(waste, 0.0) * np.diff(t)))


def owned_rate(pricing: PricingConfig) -> tuple[float, float]:
    """Owned hardware as (capital and hosting $ per owned GPU-hour, paid whether used or not;
    energy $ per GPU-hour in use): purchase / (years x 8,760 h) + hosting per month / 730, and
    power x PUE x $/kWh."""
    capital = pricing.purchase_per_gpu / (pricing.amortization_years * 8760.0)
    capital += pricing.hosting_per_gpu_month / HOURS_PER_MONTH
    return capital, pricing.power_kw_per_gpu * pricing.pue * pricing.price_per_kwh


def fleet_costs(
    spans: list[Span],
    pricing: PricingConfig,
    price: float,
    sleep_fraction: float,
    horizon_s: float,
    idle: dict[int, float] | None = None,
    *,
    runs_gpus: bool = True,
    max_gpus: int = 0,
) -> tuple[dict, pd.DataFrame]:
    """GPU bills and the cost lines of a run over `horizon_s` seconds. Operations overhead is
    charged only to a fleet that runs GPUs (`runs_gpus`): an API-only option has no platform to
    operate. `max_gpus`: the most GPUs the fleet can use (what an owned fleet buys by default)."""
    bills = replica_bills(spans, pricing, price, sleep_fraction, idle)
    spot = float(bills.loc[bills.kind == "spot", "cost"].sum()) if len(bills) else 0.0
    on_demand = float(bills.loc[bills.kind == "on_demand", "cost"].sum()) if len(bills) else 0.0
    od = bills[bills.kind == "on_demand"] if len(bills) else bills
    used = float((od["weighted_s"] * od["gpus"]).sum()) if len(od) else 0.0  # GPU-seconds, billing-weighted
    reserved = owned = power = 0.0
    if pricing.kind == "reserved" and pricing.reserved_gpus > 0:
        covered = reserved_cover(spans, pricing.reserved_gpus, sleep_fraction)
        on_demand = max(0.0, used - covered) / 3600.0 * price  # the excess, per second: no rounding
        reserved = pricing.reserved_gpus * price * pricing.reserved_fraction * horizon_s / 3600.0
    elif pricing.kind == "owned":
        n = pricing.owned_gpus if pricing.owned_gpus is not None else max_gpus
        capital, energy = owned_rate(pricing)
        covered = reserved_cover(spans, n, sleep_fraction)
        on_demand = max(0.0, used - covered) / 3600.0 * price  # beyond the owned GPUs: rented, per second
        owned = n * capital * horizon_s / 3600.0
        power = covered / 3600.0 * energy
    waste_s = instance_waste(spans, pricing.instance_gpus) if pricing.kind == "on_demand" else 0.0
    waste = waste_s / 3600.0 * price
    ops = ops_cost(pricing, horizon_s) if runs_gpus else 0.0
    hours = {k: float(bills[f"{k}_s"].mul(bills.gpus).sum()) / 3600.0 if len(bills) else 0.0 for k in STATES}
    hours["active"] -= hours["idle"]  # "active" spans include the idle time; report it apart
    costs = {
        "gpu_cost": on_demand + spot + reserved + owned + power + waste,
        "gpu_cost_on_demand": on_demand,
        "gpu_cost_spot": spot,
        "gpu_cost_reserved": reserved,
        "gpu_cost_owned": owned,
        "gpu_cost_power": power,
        "gpu_cost_instance_waste": waste,
        "gpu_hours_instance_waste": waste_s / 3600.0,
        "ops_cost": ops,
        **{f"gpu_hours.{k}": v for k, v in hours.items()},
    }
    return costs, bills


def ops_cost(pricing: PricingConfig, horizon_s: float) -> float:
    """`ops_cost_per_month` prorated over `horizon_s` (a month is HOURS_PER_MONTH hours)."""
    return pricing.ops_cost_per_month * horizon_s / (HOURS_PER_MONTH * 3600.0)
