"""Planning several deployments jointly (`fleetsim-plan platform=NAME`): each deployment's plan
(`sim.studies.plan`, every GPU option and strategy that meets its SLO), then the cheapest
combination, one candidate per deployment, within the platform's shared budgets: a node pool
(`platform.budget_gpus`: GPUs of each type, at the candidates' peak) and a cost rate
(`platform.budget_usd_per_hour`). Without budgets it is each deployment's own best; a budget
that binds moves a deployment to its next-cheapest candidate that fits, and the result says so.
"""

from __future__ import annotations

import math

import pandas as pd

from sim.config.schema import PlatformConfig

KEEP = 60  # candidates per deployment considered, cheapest first


def cascade_reach(pc: PlatformConfig) -> dict[str, float]:
    """The share of the traffic that reaches each cascade tier (1 for the first): the product of
    the escalation probabilities before it. A share per class would need the classes' mix: not
    planned (None)."""
    from scipy import stats

    e = pc.escalation
    reach, out = 1.0, {}
    for k, tier in enumerate(pc.cascade):
        out[tier] = reach
        if k < len(pc.cascade) - 1:
            if e.kind == "share":
                reach *= e.share[k]
            elif e.kind == "confidence":
                reach *= float(stats.beta.cdf(e.threshold[k], e.confidence_a, e.confidence_b))
            else:
                raise ValueError("class_share")
    return out


def peak_gpus(row: pd.Series | dict) -> int:
    """GPUs a candidate holds at its peak: replicas (an autoscaler's maximum) x GPUs per replica."""
    tp = int(row.get("tp") or 0)
    if row.get("strategy") == "autoscaled":
        replicas = row.get("max_replicas")
    else:
        replicas = row.get("replicas")
    if replicas is None or (isinstance(replicas, float) and math.isnan(replicas)):
        return 0
    return int(replicas) * tp


def ranked(df: pd.DataFrame, keep: int = KEEP) -> list[dict]:
    """A deployment's candidates that meet its SLO, cheapest first."""
    ok = df[df["rank"].notna()].sort_values("rank", kind="stable").head(keep)
    return [dict(r) for _, r in ok.iterrows()]


def _fits(use: dict[str, int], cost: float, pc: PlatformConfig) -> bool:
    if pc.budget_usd_per_hour is not None and cost > pc.budget_usd_per_hour + 1e-9:
        return False
    return all(use.get(gpu, 0) <= n for gpu, n in pc.budget_gpus.items())


def cheapest(options: dict[str, list[dict]], pc: PlatformConfig) -> tuple[dict[str, dict] | None, float]:
    """The cheapest choice of one candidate per deployment within the budgets (branch and
    bound over candidates sorted by cost); None when no combination fits."""
    names = list(options)
    floor = [min((c["cost_per_hour"] for c in options[n]), default=math.inf) for n in names]
    rest = [sum(floor[i:]) for i in range(len(names) + 1)]
    best: list = [None, math.inf]

    def walk(i: int, chosen: dict, cost: float, use: dict[str, int]) -> None:
        if cost + rest[i] >= best[1]:
            return
        if i == len(names):
            if _fits(use, cost, pc):
                best[0], best[1] = dict(chosen), cost
            return
        for c in options[names[i]]:
            more = dict(use)
            if c.get("gpu") not in (None, "none"):
                more[c["gpu"]] = more.get(c["gpu"], 0) + peak_gpus(c)
            if not all(more.get(g, 0) <= n for g, n in pc.budget_gpus.items()):
                continue
            chosen[names[i]] = c
            walk(i + 1, chosen, cost + c["cost_per_hour"], more)
            del chosen[names[i]]

    walk(0, {}, 0.0, {})
    return best[0], best[1]


def joint_plan(tables: dict[str, pd.DataFrame], pc: PlatformConfig, reach: dict[str, float] | None = None) -> dict:
    """The joint answer: the choice per deployment, its cost rate and GPUs, and what the budgets
    changed against each deployment's own best."""
    options = {name: ranked(df) for name, df in tables.items()}
    empty = [n for n, o in options.items() if not o]
    own = {n: o[0] for n, o in options.items() if o}
    out: dict = {
        "deployments": list(tables),
        "budget_usd_per_hour": pc.budget_usd_per_hour,
        "budget_gpus": dict(pc.budget_gpus),
        "cascade_reach": dict(reach or {}),
        "own_best": {n: _brief(c) for n, c in own.items()},
        "own_best_cost_per_hour": sum(c["cost_per_hour"] for c in own.values()) if not empty else None,
    }
    if empty:
        return {**out, "feasible": False, "reason": f"no candidate of {', '.join(empty)} meets its SLO"}
    choice, cost = cheapest(options, pc)
    if choice is None:
        return {**out, "feasible": False, "reason": "no combination of SLO-meeting candidates fits the budgets"}
    use: dict[str, int] = {}
    for c in choice.values():
        if c.get("gpu") not in (None, "none"):
            use[c["gpu"]] = use.get(c["gpu"], 0) + peak_gpus(c)
    moved = [n for n in choice if _brief(choice[n]) != _brief(own[n])]
    return {
        **out,
        "feasible": True,
        "choice": {n: _brief(c) for n, c in choice.items()},
        "cost_per_hour": cost,
        "cost_per_month": cost * 730.0,
        "peak_gpus": use,
        "changed_by_budget": moved,
    }


def _brief(c: dict) -> dict:
    keys = ("gpu", "tp", "strategy", "replicas", "min_replicas", "max_replicas", "target", "margin", "cost_per_hour")
    out = {}
    for k in keys:
        v = c.get(k)
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out[k] = v.item() if hasattr(v, "item") else v
    out["peak_gpus"] = peak_gpus(c)
    return out


def joint_report(j: dict) -> str:
    """joint_plan.md: the answer per deployment and what the budgets did."""
    lines = ["# fleetsim joint plan", ""]
    budget = []
    if j["budget_usd_per_hour"] is not None:
        budget.append(f"${j['budget_usd_per_hour']:,.2f}/hour")
    budget += [f"{n} x {g}" for g, n in j["budget_gpus"].items()]
    lines.append(
        f"The cheapest plan meeting every deployment's SLO ({', '.join(j['deployments'])})"
        + (f", within a shared budget of {' and '.join(budget)}." if budget else ", with no shared budget.")
    )
    if j.get("cascade_reach"):
        tiers = ", ".join(f"{t} {share:.0%}" for t, share in j["cascade_reach"].items())
        lines.append(
            f"The cascade's tiers are planned for the traffic that reaches them ({tiers} of it), each on its own "
            "SLO; what the cascade's users see (escalated requests wait for the earlier answers) is for a "
            "`fleetsim platform=...` run of the chosen sizes to show."
        )
    lines.append("")
    if not j["feasible"]:
        return "\n".join([*lines, f"**No plan**: {j['reason']}.", ""])
    lines += ["| deployment | choice | peak GPUs | $/hour | its own best |", "|---|---|---|---|---|"]
    for n, c in j["choice"].items():
        own = j["own_best"][n]
        mine = f"{_text(own)} (${own['cost_per_hour']:,.2f})"
        lines.append(f"| {n} | {_text(c)} | {c['peak_gpus']} | ${c['cost_per_hour']:,.2f} | {mine} |")
    lines += [
        "",
        f"**Total: ${j['cost_per_hour']:,.2f}/hour (${j['cost_per_month']:,.0f}/month)**, peak GPUs "
        + ", ".join(f"{n} x {g}" for g, n in j["peak_gpus"].items())
        + ".",
        "",
    ]
    if j["changed_by_budget"]:
        extra = j["cost_per_hour"] - j["own_best_cost_per_hour"]
        lines.append(
            f"The budget moved {', '.join(j['changed_by_budget'])} off its own best: ${extra:,.2f}/hour more than "
            f"the deployments' own bests together (${j['own_best_cost_per_hour']:,.2f}/hour)."
        )
    else:
        lines.append("No budget binds: each deployment keeps its own best.")
    lines += ["", "Each deployment's plan (every candidate) is in deployments/NAME/plan.md.", ""]
    return "\n".join(lines)


def _text(c: dict) -> str:
    gpu = f"{int(c['tp'])}x {c['gpu']}" if c.get("tp", 0) > 1 else c.get("gpu", "none")
    if c["strategy"] == "autoscaled":
        return f"{gpu} autoscaled {c.get('min_replicas')}-{c.get('max_replicas')}"
    if c["strategy"] == "pure API":
        return "the API alone"
    return f"{int(c.get('replicas', 0))} x {gpu} {c['strategy']}"
