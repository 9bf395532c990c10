"""What the seed articles price, each bill checked against a hand computation (issue 9, part 2):
time-based API billing with a warm/cold endpoint, API prefill time and output caps, tiers that
rise with lifetime spend, shared prefixes that prefix caching skips, owned hardware, whole
instances, egress, and a reserved baseline with spot burst."""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.config.schema import ApiConfig, ApiTier
from sim.pricing.cost import HOURS_PER_MONTH
from sim.results.metrics import api_projection
from sim.workload.build import Workload
from tests.conftest import cfg
from tests.test_cli import fleetsim

API_ONLY = ("api=default", "api.overflow=always", "fleet.replicas=0", "api.on_limit=backoff")


def _workload(arrivals, prompts, outputs) -> Workload:
    return Workload(
        arrival_s=np.asarray(arrivals, dtype=float),
        prompt_tokens=np.asarray(prompts, dtype=np.int64),
        output_tokens=np.asarray(outputs, dtype=np.int64),
    )


# ----------------------------------------------------------------------------- time-based API billing


def test_per_second_billing_charges_execution_only_and_cold_endpoints_warm_up():
    c = cfg(
        *API_ONLY,
        "api.billing=per_second",
        "api.price_per_second=0.004",
        "api.cold_after_s=60",
        "api.warmup_s=20",
        "workload.duration_s=300",
    )
    # warm at t=0; idle past 60 s after the first ends, so t=100 finds it cold and warms until
    # t=120; the request at t=105 queues behind the same warm-up
    wl = _workload([0.0, 100.0, 105.0, 250.0], [500] * 4, [200] * 4)
    r = sim.run(c, workload=wl)
    df, s = r.requests, r.summary
    assert df["queue_s"].tolist()[:3] == pytest.approx([0.0, 20.0, 15.0])
    assert s["api_warmups"] == 2  # t=100, and t=250 (idle since about t=123)
    execution = (df["e2e_s"] - df["queue_s"]).to_numpy()  # TTFT + decode, warm-up excluded
    assert s["api_billed_s"] == pytest.approx(execution.sum())
    assert s["api_cost"] == pytest.approx(0.004 * execution.sum())


def test_token_and_time_billing_differ_only_in_the_bill():
    base = (*API_ONLY, "workload.duration_s=120", "workload.rate=2")
    tok = sim.run(cfg(*base)).requests
    sec = sim.run(cfg(*base, "api.billing=per_second", "api.price_per_second=0.002"))
    assert np.array_equal(tok["e2e_s"].to_numpy(), sec.requests["e2e_s"].to_numpy())  # same draws, same latency
    assert sec.summary["api_cost"] == pytest.approx(0.002 * sec.requests["e2e_s"].sum())


# ----------------------------------------------------------------------------- API latency and output cap


def test_api_ttft_grows_with_the_prompt_at_the_prefill_rate():
    base = (*API_ONLY, "workload.duration_s=120", "workload.rate=2")
    plain = sim.run(cfg(*base)).requests
    slow = sim.run(cfg(*base, "api.prefill_tokens_per_s=4000")).requests
    extra = slow["ttft_s"] - plain["ttft_s"]
    assert extra.to_numpy() == pytest.approx((plain["prompt_tokens"] / 4000).to_numpy(), rel=1e-9, abs=1e-9)


def test_an_output_cap_truncates_the_output_and_its_bill():
    c = cfg(*API_ONLY, "api.max_output_tokens=300", "api.cache_hit_rate=0", "workload.duration_s=300")
    wl = _workload([0.0, 1.0, 2.0], [1000, 1000, 1000], [100, 300, 5000])
    r = sim.run(c, workload=wl)
    df, s = r.requests, r.summary
    assert df["route"].tolist() == ["api"] * 3  # not refused
    assert df["served_output_tokens"].tolist() == [100, 300, 300]
    assert s["api_truncated"] == 1 and s["output_tokens"] == 700
    # $0.10 per M input and output alike
    assert s["api_cost"] == pytest.approx((3000 + 700) * 0.10 / 1e6)
    tpot = (df["e2e_s"] - df["ttft_s"]) / (df["served_output_tokens"] - 1)
    assert df["tpot_s"].to_numpy() == pytest.approx(tpot.to_numpy())


def test_an_output_cap_can_still_refuse():
    c = cfg("api=default", "api.overflow=always", "api.max_output_tokens=300", "api.long_output=refuse")
    wl = _workload([0.0, 1.0], [1000, 1000], [100, 5000])
    df = sim.run(c, workload=wl).requests
    assert df["route"].tolist() == ["api", "gpu"]  # refused by the API, served by the GPU fleet


# ----------------------------------------------------------------------------- tiers


def test_the_settled_tier_is_reached_month_by_month():
    tiers = [
        ApiTier("tier1", 0, 100, None, 16384, 50),
        ApiTier("tier2", 50, 1000, None, 16384, 500),
        ApiTier("tier3", 500, 5000, None, 32768, 5000),
        ApiTier("tier4", 5000, 10000, None, 65536, 50000),
    ]
    api = ApiConfig(name="tiered", enabled=True, tiers=tiers)
    hour = 3600.0
    # $2,666/month: month 1 on tier 1 spends $50 (the cap), lifetime $50 -> tier 2, month 2
    # spends $500, lifetime $550 -> tier 3, whose $5,000 cap holds
    got = api_projection(api, 2666.0 / HOURS_PER_MONTH, hour)
    assert (got["api_tier_settled"], got["api_months_to_settle"], got["api_cap_exceeded"]) == ("tier3", 2, False)
    assert got["api_monthly_cap"] == 5000
    # $80,000/month breaks even tier 4's $50,000 cap
    assert api_projection(api, 80_000 / HOURS_PER_MONTH, hour)["api_cap_exceeded"]
    # an account that has spent $6,000 starts, and stays, on tier 4
    rich = api_projection(ApiConfig(enabled=True, tiers=tiers, lifetime_spend_usd=6000), 10.0, hour)
    assert (rich["api_tier_settled"], rich["api_months_to_settle"]) == ("tier4", 0)


def test_tiers_rise_during_a_run_as_lifetime_spend_crosses_a_threshold():
    s = sim.run(cfg(*API_ONLY, "api=tiered", "api.lifetime_spend_usd=49.999", "workload.duration_s=60")).summary
    assert s["api_tier"] == "tier2"
    s = sim.run(cfg(*API_ONLY, "api=tiered", "workload.duration_s=60", "workload.rate=1")).summary
    assert s["api_tier"] == "tier1"


# ----------------------------------------------------------------------------- shared prefixes


def test_shared_prefixes_give_the_gpus_the_cache_hits_the_api_bills_for():
    lengths = (
        "workload.prompt_tokens.dist=fixed",
        "workload.prompt_tokens.mean=4000",
        "workload.output_tokens.dist=fixed",
        "workload.output_tokens.mean=200",
    )
    prefix = ("workload.shared_prefix.groups=4", "workload.shared_prefix.tokens=2000")
    base = ("workload.duration_s=300", "workload.rate=2", *lengths, *prefix)
    cold = sim.run(cfg(*base, "engine.prefix_caching=false")).summary
    warm = sim.run(cfg(*base, "engine.prefix_caching=true"))
    assert cold["prefix_shared_fraction"] == warm.summary["prefix_shared_fraction"] == 0.5
    df = warm.requests
    # every request after its group's first finds the 2,000-token system prompt cached
    assert (df["cached_tokens"] == 2000).sum() >= len(df) - 4
    assert warm.summary["ttft_p50"] < cold["ttft_p50"]
    # seed 000: the API bills half the input at the cached price
    api = sim.run(cfg(*API_ONLY, *base[:-2]), workload=None).summary
    want = (api["input_tokens"] * (0.5 * 0.10 + 0.5 * 0.05) + api["output_tokens"] * 0.10) / 1e6
    assert api["api_cost"] == pytest.approx(want)


def test_group_popularity_follows_zipf():
    from sim.workload.build import build_workload

    c = cfg(
        "workload.duration_s=2000",
        "workload.rate=5",
        "workload.shared_prefix.groups=3",
        "workload.shared_prefix.tokens=512",
        "workload.shared_prefix.zipf=1",
        "workload.prompt_tokens.dist=fixed",
        "workload.prompt_tokens.mean=1024",
    )
    wl = build_workload(c.workload, 0)
    first = wl.hash_ids[wl.hash_offsets[:-1]]
    n = len(wl)
    counts = np.bincount(first // 2, minlength=3)[:3] / n  # 2 blocks of 256 per system prompt
    expected = np.array([1, 1 / 2, 1 / 3]) / (1 + 1 / 2 + 1 / 3)
    # multinomial proportions: 4 standard errors with n ~ 10,000 requests
    assert counts == pytest.approx(expected, abs=4 * math.sqrt(0.25 / n))


# ----------------------------------------------------------------------------- hardware and billing shapes


BILL = ("workload.duration_s=600", "workload.rate=5", "fleet.pricing.min_billed_s=0")


def test_owned_hardware_pays_capital_hosting_and_energy():
    s = sim.run(
        cfg(
            *BILL,
            "fleet.pricing.kind=owned",
            "fleet.replicas=2",
            "fleet.pricing.purchase_per_gpu=30000",
            "fleet.pricing.amortization_years=3",
            "fleet.pricing.power_kw_per_gpu=0.7",
            "fleet.pricing.price_per_kwh=0.10",
            "fleet.pricing.pue=1.3",
            "fleet.pricing.hosting_per_gpu_month=100",
        )
    ).summary
    hours = s["sim_duration_s"] / 3600
    capital = 30000 / (3 * 8760) + 100 / HOURS_PER_MONTH  # per GPU-hour, used or not
    energy = 0.7 * 1.3 * 0.10  # per GPU-hour in use
    assert s["gpu_cost_owned"] == pytest.approx(2 * capital * hours)
    assert s["gpu_cost_power"] == pytest.approx(2 * energy * hours)
    assert s["gpu_cost_on_demand"] == 0
    assert s["gpu_cost"] == pytest.approx(2 * (capital + energy) * hours)


def test_an_eight_gpu_instance_bills_all_eight():
    # seed 003: a p5.48xlarge at $98.32/hour is $12.29 per GPU; using 2 GPUs costs $49.16 per GPU used
    s = sim.run(
        cfg(*BILL, "engine.tensor_parallel_size=2", "gpu.price_per_hour=12.29", "fleet.pricing.instance_gpus=8")
    ).summary
    per_hour = s["gpu_cost"] / s["sim_duration_s"] * 3600
    assert per_hour == pytest.approx(98.32)
    assert per_hour / 2 == pytest.approx(49.16)
    assert s["gpu_hours_instance_waste"] == pytest.approx(6 * s["sim_duration_s"] / 3600)


def test_egress_is_billed_on_generated_output():
    s = sim.run(cfg(*BILL, "fleet.pricing.egress_per_gb=0.09", "fleet.pricing.bytes_per_token=4")).summary
    assert s["egress_cost"] == pytest.approx(s["output_tokens"] * 4 / 1e9 * 0.09)
    assert s["total_cost"] == pytest.approx(s["gpu_cost"] + s["api_cost"] + s["ops_cost"] + s["egress_cost"])


def test_a_reserved_baseline_with_spot_burst():
    r = sim.run(
        cfg(
            *BILL,
            "fleet.replicas=3",
            "fleet.pricing.kind=reserved",
            "fleet.pricing.reserved_gpus=1",
            "fleet.pricing.burst=spot",
            "fleet.pricing.spot_preemptions_per_hour=0",
        )
    )
    s, bills = r.summary, r.bills
    assert bills["kind"].tolist() == ["on_demand", "spot", "spot"]
    hours = s["sim_duration_s"] / 3600
    assert s["gpu_cost_reserved"] == pytest.approx(1 * 2.69 * 0.6 * hours)
    assert s["gpu_cost_on_demand"] == pytest.approx(0.0, abs=1e-12)  # the reservation covers the first
    assert s["gpu_cost_spot"] == pytest.approx(2 * 2.69 * 0.4 * hours)


# ----------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "arg",
    [
        "fleet.pricing.pue=0.9",
        "fleet.pricing.amortization_years=0",
        "fleet.pricing.purchase_per_gpu=-1",
        "fleet.pricing.price_per_kwh=-0.1",
        "fleet.pricing.egress_per_gb=-1",
        "fleet.pricing.instance_gpus=0",
        "fleet.pricing.burst=reserved",
        "fleet.pricing.owned_gpus=-2",
        "api.billing=per_hour",
        "api.price_per_second=-1",
        "api.warmup_s=-1",
        "api.prefill_tokens_per_s=0",
        "api.long_output=drop",
        "api.lifetime_spend_usd=-5",
        "workload.shared_prefix.groups=-1",
        "workload.shared_prefix.share=0",
    ],
)
def test_bad_values_of_new_keys_exit_2_naming_the_key(tmp_path, arg):
    extra = ("api=default",) if arg.startswith("api.") else ()
    if arg.startswith("workload.shared_prefix.share"):
        extra = ("workload.shared_prefix.groups=2", "workload.shared_prefix.tokens=100")
    p = fleetsim(*extra, arg, f"hydra.run.dir={tmp_path / 'x'}", cwd=tmp_path)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and arg.split("=")[0] in lines[0], p.stderr


def test_an_endpoint_stays_warm_while_a_request_runs_whatever_the_billing():
    # the first request runs until ~42 s; the second comes 28 s after it ended: no warm-up
    wl = _workload([0.0, 70.0], [500, 500], [4000, 10])
    for billing in ("per_token", "per_second"):
        c = cfg(
            *API_ONLY, f"api.billing={billing}", "api.cold_after_s=60", "api.warmup_s=20", "workload.duration_s=300"
        )
        r = sim.run(c, workload=wl)
        assert r.requests["finish_s"].iloc[0] > 40
        assert r.summary["api_warmups"] == 0, billing
