"""Disaggregated prefill/decode (sim/des/disagg.py, sim/studies/disagg.py): the KV transfer's time,
every request once, both engine modes equal, the same seed the same run, the direction of the
TTFT/TPOT trade-off against co-located serving on the same GPUs, and the planner's P:D choice."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from sim.apps.python_api import compose, run, run_platform
from sim.config.schema import DisaggConfig
from sim.hardware.kvcache import kv_bytes_per_token, kv_transfer_s

LINK = "{chat: {prefill: p, decode: d, link_gb_s: 25, link_latency_ms: 2}}"
PREFILL_HEAVY = [  # long prompts, short answers (DistServe's summarisation-like case)
    "workload.prompt_tokens={dist: lognormal, mean: 4000, p99: 8000}",
    "workload.output_tokens={dist: lognormal, mean: 40, p99: 100}",
]
DECODE_HEAVY = [  # short prompts, long answers
    "workload.prompt_tokens={dist: lognormal, mean: 300, p99: 1000}",
    "workload.output_tokens={dist: lognormal, mean: 600, p99: 1500}",
]


def _disagg(*extra: str, p: str = "'gpu=h100'", d: str = "'gpu=h100'", link: str = LINK):
    return run_platform(
        [
            "workload.duration_s=60",
            "output.plots=false",
            f"platform.deployments={{p: [{p}], d: [{d}]}}",
            f"platform.disaggregated={link}",
            *extra,
        ]
    )


def test_kv_transfer_time_is_bytes_over_bandwidth_plus_latency():
    m = compose(["model=llama3-8b"]).model
    per_token = kv_bytes_per_token(m, "bf16")
    assert per_token == 2 * 32 * 8 * 128 * 2  # K and V, 32 layers, 8 KV heads of 128, bf16
    # 4,096 tokens of 128 KiB: 512 MiB (536,870,912 bytes) over 25 GB/s is 21.47 ms, plus 2 ms
    assert kv_transfer_s(4096, per_token, 25.0, 2.0) == pytest.approx(0.02347483648, rel=1e-12)
    assert kv_transfer_s(0, per_token, 25.0, 0.0) == 0.0


def test_each_request_waits_its_transfer_between_the_pools():
    """In a run: each decoded request's transfer is its prompt's KV bytes over the link plus the
    latency, exactly, and it reaches the decode pool that long after the prefill pool's answer."""
    r = _disagg("workload.rate=6", "workload.duration_s=30")
    view = r.disaggregated["chat"]
    per_token = kv_bytes_per_token(r.configs["p"].model, "bf16")
    prompt = view["prompt_tokens"].to_numpy()
    assert (view["kv_bytes"].to_numpy() == prompt * per_token).all()
    expected = prompt * per_token / 25e9 + 0.002
    assert np.array_equal(view["transfer_s"].to_numpy(), expected)
    dec = r.parts["d"].requests.set_index("id")
    pre = r.parts["p"].requests.set_index("id")
    ids = dec.index.to_numpy()
    handed = pre.loc[ids, "finish_s"].to_numpy() + view["transfer_s"].to_numpy()[ids]
    np.testing.assert_allclose(dec["arrival_s"].to_numpy(), handed, rtol=0, atol=1e-9)
    # the user's TTFT covers prefill, transfer and the decode side's first token
    assert (view["ttft_s"] > view["prefill_s"] + view["transfer_s"]).all()


def test_conservation_every_request_ends_once():
    """Requests too long for the prefill pool are rejected there, those too long for the decode pool
    before any prefill; every other one is decoded: each user request once, tokens counted once."""
    r = _disagg(
        "workload.rate=8",
        p="'gpu=h100', 'engine.max_model_len=2000'",
        d="'gpu=h100', 'engine.max_model_len=3000'",
    )
    view = r.disaggregated["chat"]
    n = r.summary["disaggregated.chat.n_requests"]
    assert list(view["id"]) == list(range(n)) and n == r.summary["n_requests"] > 300
    where = view["rejected_in"].to_numpy()
    served = view["route"].to_numpy() == "gpu"
    assert set(view["route"]) <= {"gpu", "rejected"} and ((where == "") == served).all()
    assert (where == "prefill").sum() > 0 and (where == "decode").sum() > 0
    total = view["prompt_tokens"] + view["output_tokens"]
    assert (total[where == "decode"] > 3000).all() and (view["prompt_tokens"][where == "prefill"] + 1 > 2000).all()
    pre, dec = r.parts["p"].requests, r.parts["d"].requests
    assert len(pre) + (where == "decode").sum() == n  # every request entered one pool first
    assert (dec["route"] == "gpu").sum() == served.sum() == (pre["route"] == "gpu").sum()
    assert r.summary["disaggregated.chat.n_rejected"] == (~served).sum()
    assert r.summary["tokens"] == r.summary["disaggregated.chat.tokens"] == total[served].sum()


@pytest.mark.parametrize("extra", [(), ("engine.gpu_memory_utilization=0.5",)], ids=["plain", "preempting"])
def test_fast_forward_equals_per_iteration(extra):
    """A request arriving with its prompt's KV (computed = prompt - 1) is timed the same in both
    engine modes, preemptions on the decode side (recomputed there) included."""
    views = [
        _disagg(
            "workload.rate=12", "workload.duration_s=30", f"engine.fast_forward={ff}", *extra, d="'gpu=l40s'"
        ).disaggregated["chat"]
        for ff in ("true", "false")
    ]
    if extra:
        assert views[0]["preemptions"].sum() > 0
    for col in ("ttft_s", "tpot_s", "e2e_s", "finish_s", "transfer_s"):
        a, b = views[0][col].to_numpy(), views[1][col].to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b))
        ok = ~np.isnan(a)
        assert np.max(np.abs(a[ok] - b[ok]) / np.abs(b[ok])) <= 1e-9, col


def test_the_same_seed_gives_the_same_run():
    same = ("workload.rate=6", "workload.duration_s=30")
    a, b = _disagg(*same, "seed=3"), _disagg(*same, "seed=3")
    pd.testing.assert_frame_equal(a.disaggregated["chat"], b.disaggregated["chat"])
    c = _disagg(*same, "seed=4")
    assert not a.disaggregated["chat"]["ttft_s"].equals(c.disaggregated["chat"]["ttft_s"])


def _compare(workload: list[str], rate: float) -> tuple[dict, dict]:
    """Co-located (2 x H100, one deployment) against disaggregated (1 H100 prefills, 1 decodes)
    on the same traffic: (TTFT p50, TPOT p95) of each."""
    base = ["workload.duration_s=120", "output.plots=false", f"workload.rate={rate}", *workload]
    co = run(compose([*base, "gpu=h100", "fleet.replicas=2"])).requests
    dis = run_platform([*base, "platform=disagg"]).disaggregated["chat"]
    a, b = (
        {"ttft_p50": np.nanpercentile(df["ttft_s"], 50), "tpot_p95": np.nanpercentile(df["tpot_s"], 95)}
        for df in (co, dis)
    )
    return a, b


def test_prefill_heavy_disaggregation_lowers_tpot_and_raises_ttft():
    """DistServe (Zhong et al., OSDI 2024), Fig. 2: a prefill added to a decode batch inflates its
    step time, so co-located decodes are slowed by the prompts batched with them (Fig. 1: TPOT of
    colocated serving far above a decode-only system's); Splitwise (Patel et al., ISCA 2024), Fig. 3:
    mixed batching lengthens the token phase. Disaggregated, the decode pool never runs a prompt:
    TPOT p95 falls (here by more than a third); TTFT rises (one GPU prefills instead of two, plus the
    transfer). About 500 requests per run: the gaps are many times their seed-to-seed spread."""
    co, dis = _compare(PREFILL_HEAVY, 4)
    assert dis["tpot_p95"] < 0.67 * co["tpot_p95"]
    assert dis["ttft_p50"] > 1.2 * co["ttft_p50"]


def test_decode_heavy_disaggregation_buys_nothing_on_two_gpus():
    """Short prompts barely interfere with decodes, and disaggregated only one of the two GPUs
    decodes: co-located serving keeps both TTFT and TPOT lower (DistServe §2.3: disaggregation pays
    when prefill interference dominates; the decode-heavy case is where colocation wins)."""
    co, dis = _compare(DECODE_HEAVY, 10)
    assert co["tpot_p95"] < dis["tpot_p95"]
    assert co["ttft_p50"] < dis["ttft_p50"]


def test_the_planner_gives_a_prefill_heavy_workload_more_prefill_gpus():
    """fleetsim-plan's ratio search (plan.disagg_replicas): at 10 long prompts a second one prefill
    H100 cannot keep up, while one decodes them all: the cheapest pair that meets the chat SLO is
    2 prefill : 1 decode."""
    from sim.apps.python_api import platform_configs
    from sim.studies.disagg import plan_ratio

    base = ["workload.duration_s=90", "output.plots=false", "workload.rate=10", *PREFILL_HEAVY, "platform=disagg"]
    cfg = compose(base)
    cfgs = platform_configs(base, cfg.platform)
    dc: DisaggConfig = cfg.platform.disaggregated["chat"]
    df = plan_ratio("chat", dc, (cfgs["prefill"], cfgs["decode"]), [1, 2], workers=2)
    best = df[df["rank"] == 1].iloc[0]
    assert (best["prefill_replicas"], best["decode_replicas"]) == (2, 1)
    one_one = df[(df["prefill_replicas"] == 1) & (df["decode_replicas"] == 1)].iloc[0]
    assert not one_one["slo_met"] and one_one["ttft_slo_percentile"] > best["ttft_slo_percentile"]


def test_pools_of_different_models_are_refused():
    from sim.config.errors import ConfigError

    with pytest.raises(ConfigError, match=r"platform.disaggregated.chat.decode: model='qwen2.5-1.5b'"):
        _disagg("workload.rate=1", d="'model=qwen2.5-1.5b'")


def test_events_do_not_grow_with_generated_tokens():
    """Fast-forward: a few engine events per request in each pool, whether answers are 50 or 500
    tokens long (the decode pool's iterations grow, its events do not)."""
    runs = []
    for out in (50, 500):
        r = _disagg(
            "workload.rate=2",
            "workload.duration_s=30",
            "workload.prompt_tokens={dist: fixed, mean: 500}",
            f"workload.output_tokens={{dist: fixed, mean: {out}}}",
        )
        runs.append((r.parts["p"].summary, r.parts["d"].summary))
    d50, d500 = runs[0][1], runs[1][1]
    assert d500["iterations"] > 1.5 * d50["iterations"]
    for p, d in runs:
        assert p["engine_events"] <= 2 * p["n_requests"] and d["engine_events"] <= 3 * d["n_requests"]


def test_a_decode_pools_capacity_counts_no_prefill():
    """One decode replica of a disaggregated pool computes one prompt token per request: with
    4,000-token prompts it sustains more requests/s under the TPOT SLO than a co-located replica
    that prefills them (the capacity Dynamo's planner sizes each pool with)."""
    from sim.config.schema import batch_limits
    from sim.hardware.kvcache import memory_plan
    from sim.hardware.perf import build_perf, slo_throughput

    c = compose(["model=llama3-8b", "gpu=h100"])
    perf, plan = build_perf(c.model, c.gpu, c.engine), memory_plan(c.model, c.gpu, c.engine)
    seqs, tokens = batch_limits(c.engine, c.gpu)
    whole = slo_throughput(perf, plan.kv_tokens, seqs, tokens, 4000, 40, c.slo.tpot_s)
    decode = slo_throughput(perf, plan.kv_tokens, seqs, tokens, 4000, 40, c.slo.tpot_s, 1.0)
    assert decode > 1.5 * whole


def test_dynamo_sizes_the_prefill_and_decode_pools_apart():
    """Dynamo's throughput mode on both pools of prefill-heavy traffic: the prefill pool grows,
    the decode pool (sized for decoding alone) stays smaller; every request ends once."""
    dyn = "'fleet=autoscaled', 'fleet/autoscaler=dynamo', 'fleet.autoscaler.adjustment_interval_s=30'"
    r = _disagg(
        "workload.rate=12", "workload.duration_s=150", *PREFILL_HEAVY, p=f"'gpu=h100', {dyn}", d=f"'gpu=h100', {dyn}"
    )
    pre, dec = r.parts["p"].summary, r.parts["d"].summary
    assert pre["max_replicas"] > dec["max_replicas"] >= 1
    assert len(r.disaggregated["chat"]) == r.parts["p"].summary["n_requests"]
