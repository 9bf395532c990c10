"""The console summary of one run (`format_summary`): what `fleetsim` prints and what
report.md quotes. The SLO's percentile, what missed, one line per class of operational event
(cold starts, wake-ups, preemptions, API refusals), the API's tier and cap, seeds' intervals and
a note on the likely cause of a miss."""

from __future__ import annotations

import math

from sim.config.schema import Config


def _fmt(value: float, unit: str = "", digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if unit == " s" and value >= 120:
        return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"
    return f"{value:.{digits}g}{unit}" if abs(value) < 10**digits else f"{value:,.0f}{unit}"


def _count(value: float) -> str:
    """A count, or a mean count over seeds."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _other_costs(s: dict) -> str:
    """The cost lines beyond GPU and API, where the run had them."""
    return "".join(
        f", {name} ${s[key]:.2f}" for name, key in (("ops", "ops_cost"), ("egress", "egress_cost")) if s.get(key)
    )


def format_summary(summary: dict, cfg: Config) -> str:
    s = summary
    slo = cfg.slo
    verdict = "MET" if s["slo_met"] else "MISSED"
    lines = [
        f"fleetsim: {cfg.model.name} ({cfg.model.weight_dtype}), {_fleet_text(s, cfg)}, "
        f"workload {cfg.workload.name}: {s['sim_duration_s']:,.0f} s simulated in {s['wall_time_s']:.2f} s",
        f"  requests   {_count(s['n_requests'])} (gpu {_count(s['n_gpu'])}, api {_count(s['n_api'])}, "
        f"rejected {_count(s['n_rejected'])})",
        f"  TTFT       {_quantiles(s, 'ttft', slo.percentile, _s)}   (SLO {slo.ttft_s:g} s at p{slo.percentile:g})",
        f"  TPOT       {_quantiles(s, 'tpot', slo.percentile, _ms)}   "
        f"(SLO {slo.tpot_s * 1e3:g} ms at p{slo.percentile:g})",
        f"  SLO        {verdict}: attainment {s['slo_attainment']:.1%} (target {slo.attainment:.0%}){_missed(s, cfg)}",
        f"  cost       ${s['total_cost']:.2f} (gpu ${s['gpu_cost']:.2f}, api ${s['api_cost']:.2f}{_other_costs(s)}), "
        f"${_fmt(s['cost_per_mtok'], '', 4)}/M tokens, ${_fmt(s['cost_per_hour'], '', 4)}/hour "
        f"(${s['cost_per_month']:,.0f}/month)",
        f"  GPUs       load {s['gpu_utilization']:.1%} of capacity ({_fmt(s['replica_capacity_rps'])} req/s per "
        f"replica saturated, this token mix); engine occupancy {s['engine_occupancy']:.1%}, "
        f"busy {s['gpu_busy']:.1%} of the time",
    ]
    if not s["n_gpu"] and not s.get("mean_replicas"):
        lines.pop()  # no GPUs in this run: no GPU line
    if s.get("users"):
        lines.insert(2, _users_line(s, cfg))
    lines += _serving_lines(s, cfg)
    lines += _event_lines(s, cfg)
    lines += _failure_lines(s)
    lines += _api_lines(s, cfg)
    if s.get("n_seeds"):
        lines += _seed_lines(s, cfg, verdict)
    lines += _notes(s, cfg)
    classes = sorted({k.split(".", 1)[1] for k in s if k.startswith("slo_attainment.")})
    lines.extend(
        f"  class {name:<10s} {_count(s[f'n_requests.{name}'])} requests, "
        f"attainment {s[f'slo_attainment.{name}']:.1%}, TTFT p99 {_fmt(s[f'ttft_p99.{name}'], ' s')}"
        for name in classes
    )
    return "\n".join(lines)


def _s(value: float | None) -> str:
    return _fmt(value, " s")


def _ms(value: float | None) -> str:
    return _fmt(value if value is None else value * 1e3, " ms")


def _quantiles(s: dict, metric: str, percentile: float, show) -> str:
    """p50, the SLO's percentile (what the verdict is judged on) and p99."""
    parts = [f"p50 {show(s[f'{metric}_p50'])}"]
    if percentile not in (50, 99):
        parts.append(f"p{percentile:g} {show(s.get(f'{metric}_slo_percentile'))}")
    parts.append(f"p99 {show(s[f'{metric}_p99'])}")
    return "   ".join(parts)


def _missed(s: dict, cfg: Config) -> str:
    """What missed the SLO: TTFT or TPOT at its percentile over the threshold, attainment under
    its target, or nothing served."""
    slo = cfg.slo
    if s["slo_met"]:
        return ""
    why = []
    ttft, tpot = s.get("ttft_slo_percentile"), s.get("tpot_slo_percentile")
    if ttft is not None and not math.isnan(ttft) and ttft > slo.ttft_s:
        why.append(f"TTFT p{slo.percentile:g} {_s(ttft)} > {slo.ttft_s:g} s")
    if tpot is not None and not math.isnan(tpot) and tpot > slo.tpot_s:
        why.append(f"TPOT p{slo.percentile:g} {_ms(tpot)} > {slo.tpot_s * 1e3:g} ms")
    if s["slo_attainment"] < slo.attainment:
        why.append(f"attainment under {slo.attainment:.0%}")
    if not s["n_gpu"] and not s["n_api"]:
        why.append("nothing was served")
    return f"; missed: {', '.join(why)}" if why else ""


def _event_lines(s: dict, cfg: Config) -> list[str]:
    """Events that move latency or cost: cold starts, wake-ups, spot and KV preemptions, API
    refusals by limit, requests that waited at the router with no replica to take them."""
    events = [
        (s.get("cold_starts"), f"cold starts ({_s(s.get('cold_start_s'))} each)"),
        (s.get("wakes"), "wake-ups from sleep"),
        (s.get("spot_preemptions"), "spot preemptions"),
        (s.get("preemptions"), "KV-cache preemptions (requests recomputed)"),
    ]
    refusals = {k.split(".", 1)[1]: v for k, v in s.items() if k.startswith("api_refusals.") and v}
    events += [(n, f"API refusals ({reason})") for reason, n in sorted(refusals.items())]
    shown = [f"{_count(n)} {what}" for n, what in events if n]
    if s.get("router_queue_max"):
        shown.append(f"up to {_count(s['router_queue_max'])} requests waiting at the router for a replica")
    return [f"  events     {'; '.join(shown)}"] if shown else []


def _serving_lines(s: dict, cfg: Config) -> list[str]:
    """Speculative decoding and the host KV tier, when the engine uses them."""
    out = []
    spec = cfg.engine.speculative
    if "spec_tokens_per_step" in s:
        drafter = f"draft model {spec.draft_model}" if spec.method == "draft" else f"{spec.mtp_layers} MTP layer(s)"
        out.append(
            f"  speculate  {drafter}, k={spec.k}, acceptance {spec.acceptance:g}: "
            f"{s['spec_tokens_per_step']:.2f} tokens per target step"
        )
    if "kv_offload_reloaded_blocks" in s:
        out.append(
            f"  host KV    {cfg.engine.kv_offload.cpu_gib:g} GiB per replica: "
            f"{_count(s['kv_offload_reloaded_blocks'])} prefix blocks reloaded instead of recomputed "
            f"({_s(s['kv_offload_reload_s'])} of copying)"
        )
    return out


def _failure_lines(s: dict) -> list[str]:
    """The autoscaler's failure modes (output.failure_modes; docs/metrics.md), and what they cost."""
    if "autoscale_reversals" not in s:
        return []
    line = (
        f"{_count(s['autoscale_reversals'])} reversals ({_count(s['reversal_cold_starts'])} cold starts, "
        f"${s['reversal_cold_start_cost']:,.2f}); {_count(s['scaleups_during_warmup'])} scale-ups during warm-up; "
        f"{_count(s['dropped_on_scale_down'])} requests dropped on scale-down; "
        f"{_count(s['pending_gpu_waits'])} waits for a GPU (mean {_s(s['pending_gpu_wait_s_mean'])}, "
        f"p95 {_s(s['pending_gpu_wait_s_p95'])}); {s['idle_zero_traffic_gpu_s'] / 3600:,.2f} GPU-hours idle at zero "
        f"traffic (${s['idle_zero_traffic_cost']:,.2f}); priced: ${s['failure_cost_per_month']:,.0f}/month"
    )
    if "itl_correction_max" in s:
        line += f"; ITL correction up to {s['itl_correction_max']:.2f} (mean {s['itl_correction_mean']:.2f})"
    return [f"  failures   {line}"]


def _fleet_text(s: dict, cfg: Config) -> str:
    tp = round(s["gpus_per_replica"])
    gpus = "1 GPU" if tp == 1 else f"{tp} GPUs"
    f = cfg.fleet
    if f.autoscaler.name == "fixed":
        fleet = f"{f.replicas} replica{'' if f.replicas == 1 else 's'} x {gpus} {cfg.gpu.name}"
    else:
        fleet = (
            f"{f.autoscaler.name}-autoscaled {f.min_replicas}-{f.max_replicas} replicas x {gpus} {cfg.gpu.name} "
            f"(mean {s['mean_replicas']:.2f}, peak {_count(s['max_replicas'])})"
        )
    if cfg.api.enabled:
        fleet += f" + API ({cfg.api.name}, overflow {cfg.api.overflow})"
    return fleet


def _users_line(s: dict, cfg: Config) -> str:
    w = cfg.workload
    rate = s["n_requests"] / s["arrival_span_s"] if s["arrival_span_s"] else math.nan
    if "turns_unsent" in s:  # sessions replayed from a trace
        think = f"think times from the trace, else {w.think_time_s:g} s"
        unsent = f", {_count(s['turns_unsent'])} turns unsent" if s["turns_unsent"] else ""
        return f"  sessions   {_count(s['sessions'])} replayed ({think}){unsent}, {_fmt(rate)} req/s sent"
    think = f"think {w.think_time_s:g} s {w.think_dist}" if w.think_time_s else "no think time"
    sessions = f", {_count(s['sessions'])} sessions" if s["sessions"] != s["n_requests"] else ""
    return f"  users      {_count(s['users'])} closed-loop ({think}){sessions}, {_fmt(rate)} req/s sent"


def _api_lines(s: dict, cfg: Config) -> list[str]:
    lines = []
    if cfg.api.enabled and s.get("n_api"):
        notes = []
        if s.get("api_tier"):
            notes.append(f"tier {s['api_tier']} at the end of the run")
        if s.get("api_tier_settled"):
            months = s.get("api_months_to_settle") or 0
            notes.append(
                f"a month of this traffic settles on {s['api_tier_settled']}"
                + (f" after {months:.0f} month{'s' if months != 1 else ''}" if months else "")
            )
        if s.get("api_warmups"):
            notes.append(f"{_count(s['api_warmups'])} warm-ups of the cold endpoint")
        if s.get("api_truncated"):
            notes.append(f"{_count(s['api_truncated'])} outputs cut at the output cap")
        if cfg.api.billing == "per_second":
            notes.append(f"{_fmt(s.get('api_billed_s', 0.0), ' s')} of execution billed")
        if notes:
            lines.append(f"  API        {'; '.join(notes)}")
    if s.get("api_cap_exceeded"):
        lines.append(
            f"  API cap    EXCEEDED: this traffic spends ${s['api_cost_per_month']:,.0f}/month on the API, over the "
            f"tier's ${s['api_monthly_cap']:,.0f}/month cap (api.monthly_cap_usd): the API would refuse requests "
            "once the month's cap is spent"
        )
    return lines


def _seed_lines(s: dict, cfg: Config, verdict: str) -> list[str]:
    def ci(key: str, fmt) -> str:
        low, high = s.get(f"{key}_ci_low"), s.get(f"{key}_ci_high")
        ok = all(v is not None and math.isfinite(v) for v in (low, high))
        return f"[{fmt(low)}, {fmt(high)}]" if ok else "n/a"

    ttft = ci("ttft_p99", lambda v: _fmt(v, " s"))
    att = ci("slo_attainment", lambda v: f"{v:.1%}")
    cost = ci("total_cost", lambda v: f"${v:.2f}")
    lines = [
        f"  seeds      {s['n_seeds']}: means above; 95% intervals: TTFT p99 {ttft}, attainment {att}, cost {cost}",
        f"             SLO {verdict} at the intervals' pessimistic end; "
        f"met by {s['slo_met_seeds']:.0%} of the seeds alone",
    ]
    how = s.get("replication", "seeds")
    if how == "block bootstrap":
        lines.append(
            f"             replications resample the trace in blocks of {cfg.workload.bootstrap_block_s:g} s "
            "(block bootstrap): the intervals show how much the answer depends on which stretches of traffic come"
        )
    elif how.startswith("fixed trace"):
        lines.append(
            "             the trace is replayed as it is in every replication: the intervals show only the "
            "simulator's own randomness, not the traffic's (set workload.bootstrap_block_s to resample it)"
        )
    return lines


def _notes(s: dict, cfg: Config) -> list[str]:
    refused = sum(v for k, v in s.items() if k.startswith("api_refusals.") and v)
    if not s["slo_met"] and refused > s.get("n_api", 0):
        return [
            f"  note       the API's limits refused requests {_count(refused)} times ({cfg.api.name}): they "
            f"{'waited to retry' if cfg.api.on_limit == 'backoff' else 'went back to the GPU queue'}; "
            "a higher tier (api=tier2 ... tier4, api=tiered) or GPUs for the overflow (fleet.replicas) lift that"
        ]
    queue = s.get("queue_mean")
    waited = not s["slo_met"] and s["n_gpu"] > 0 and queue is not None and queue > cfg.slo.ttft_s
    if waited and s.get("cold_starts") and s.get("gpu_utilization", 1.0) < 0.7:
        return [
            f"  note       requests waited for replicas to start ({_count(s['cold_starts'])} cold starts of "
            f"{_fmt(s.get('cold_start_s'), ' s')}) while the load stayed low: keep a replica warm "
            "(fleet.min_replicas) or let an API take the first requests (api=default)"
        ]
    if waited:
        return [
            "  note       requests queue longer than the TTFT SLO on average: the fleet is overloaded; add replicas "
            "(fleet.replicas), lower the load or let an API take the overflow (api=default)"
        ]
    return []


def format_platform(s: dict, pc) -> str:
    """A platform's run: the totals, one line per deployment, the cascade as its users saw it."""
    verdict = "MET" if s["slo_met"] else "MISSED"
    lines = [
        f"fleetsim: platform {pc.name}: {len(pc.deployments)} deployments, SLOs {verdict}; "
        f"${s['cost_per_hour']:,.2f}/hour (${s['cost_per_month']:,.0f}/month), ${_fmt(s['cost_per_mtok'], '', 4)}/M "
        f"tokens, {_fmt(s['gpus'])} GPUs on average",
    ]
    for name in pc.deployments:
        d = {k.split(".", 2)[2]: v for k, v in s.items() if k.startswith(f"deployment.{name}.")}
        tier = f" (tier {pc.cascade.index(name) + 1})" if name in pc.cascade else ""
        api_only = d["n_requests"] and d.get("n_api") == d["n_requests"]
        where = "an API" if api_only else f"{_fmt(d['mean_replicas'])} x {d['gpus_per_replica']:g} {d['gpu']}"
        group = next((g for g, members in pc.pools.items() if name in members), None)
        tier += f" (a pool of {group})" if group else ""
        tier += "".join(
            f" (the {role} pool of {g})"
            for g, dc in pc.disaggregated.items()
            for role in ("prefill", "decode")
            if getattr(dc, role) == name
        )
        verdict = (
            f"attainment {d['slo_attainment']:.1%} ({'met' if d['slo_met'] else 'missed'})"
            if d["n_requests"]
            else "no request reached it"
        )
        lines.append(
            f"  {name:<12s} {d['model']} on {where}{tier}: {_count(d['n_requests'])} requests, {verdict}, "
            f"${d['cost_per_hour']:,.2f}/hour"
        )
    for group, members in pc.pools.items():
        g = {k.split(".", 2)[2]: v for k, v in s.items() if k.startswith(f"pools.{group}.")}
        shares = ", ".join(f"{m} {g[f'share.{m}']:.1%} (capacity {g[f'capacity_share.{m}']:.1%})" for m in members)
        lines.append(
            f"  {group:<12s} pools {' + '.join(members)}: {_count(g['n_requests'])} requests routed {shares}; "
            f"attainment {g['slo_attainment']:.1%} ({'met' if g['slo_met'] else 'missed'}), "
            f"${g['cost_per_hour']:,.2f}/hour"
        )
    for group, dc in pc.disaggregated.items():
        g = {k.split(".", 2)[2]: v for k, v in s.items() if k.startswith(f"disaggregated.{group}.")}
        lines.append(
            f"  {group:<12s} disaggregated {dc.prefill} -> {dc.decode}: {_count(g['n_requests'])} requests; TTFT p50 "
            f"{_s(g['ttft_p50'])}, p95 {_s(g['ttft_p95'])} (KV transfer {_s(g['transfer_s_mean'])} on average); TPOT "
            f"p50 {_s(g['tpot_p50'])}, p95 {_s(g['tpot_p95'])}; attainment {g['slo_attainment']:.1%} "
            f"({'met' if g['slo_met'] else 'missed'}), ${g['cost_per_hour']:,.2f}/hour"
        )
    if pc.cascade:
        shares = ", ".join(f"{t} {s[f'cascade.answered_by.{t}']:.1%}" for t in pc.cascade)
        lines.append(
            f"  cascade      {_count(s['cascade.n_requests'])} requests answered by {shares}; as its users saw it "
            f"(the first tier's SLO): TTFT p50 {_s(s['cascade.ttft_p50'])}, p99 {_s(s['cascade.ttft_p99'])}, "
            f"attainment {s['cascade.slo_attainment']:.1%} ({'met' if s['cascade.slo_met'] else 'missed'})"
        )
    if "within_budget" in s:
        lines.append(
            f"  budget       ${s['budget_usd_per_hour']:,.2f}/hour: {'within' if s['within_budget'] else 'OVER'}"
        )
    return "\n".join(lines)
