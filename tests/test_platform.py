"""Several deployments in one scenario (sim/studies/platform.py): nothing shared, each is its own
run; a cascade equals the hand computation from its tiers' runs; bad declarations exit 2."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import sim
from sim.apps.python_api import run_platform
from tests.conftest import ROOT

SHORT = ("workload.duration_s=300", "output.plots=false", "output.requests=false")


def _same(a: dict, b: dict) -> None:
    for key in set(a) | set(b):
        if key == "wall_time_s":
            continue
        x, y = a.get(key), b.get(key)
        if isinstance(x, float) and isinstance(y, float) and np.isnan(x) and np.isnan(y):
            continue
        assert x == y, key


def test_deployments_that_share_nothing_are_their_separate_runs():
    r = run_platform(["platform=two_models", *SHORT])
    chat = sim.run(sim.compose([*SHORT, "model=llama3-8b", "gpu=l40s", "fleet.replicas=2", "workload.rate=8"]))
    big = sim.run(
        sim.compose(
            [
                *SHORT,
                "model=llama3-70b",
                "gpu=h100",
                "engine.tensor_parallel_size=4",
                "fleet.replicas=1",
                "workload.rate=2",
            ]
        )
    )
    _same(r.parts["chat"].summary, chat.summary)
    _same(r.parts["reasoning"].summary, big.summary)
    s = r.summary
    assert s["cost_per_hour"] == pytest.approx(chat.summary["cost_per_hour"] + big.summary["cost_per_hour"])
    assert s["slo_met"] == (chat.summary["slo_met"] and big.summary["slo_met"])
    tokens = sum(x.summary["input_tokens"] + x.summary["output_tokens"] for x in (chat, big))
    assert s["cost_per_mtok"] == pytest.approx(s["total_cost"] / tokens * 1e6)


FIXED = (
    "workload.duration_s=900",
    "workload.rate=4",
    "workload.prompt_tokens.dist=fixed",
    "workload.prompt_tokens.mean=200",
    "workload.output_tokens.dist=fixed",
    "workload.output_tokens.mean=60",
    "output.plots=false",
)
TIERS = {  # light load, fixed lengths: every tier's latency hardly depends on which requests reach it
    "small": ["model=qwen2.5-1.5b", "gpu=l40s", "fleet.replicas=1"],
    "medium": ["model=llama3-8b", "gpu=l40s", "fleet.replicas=1"],
    "large": ["model=llama3-70b", "gpu=h100", "engine.tensor_parallel_size=4", "fleet.replicas=1"],
}
SHARES = (0.5, 0.4)


def test_a_three_tier_cascade_equals_the_hand_computation_from_its_tiers_runs():
    """Tier k alone at the rate that reaches it (4, 2, 0.8 req/s): cost rates add; the user's mean
    TTFT is (1-s1) T1 + s1 (1-s2) (E1 + T2) + s1 s2 (E1 + E2 + T3), T the tiers' mean TTFT and E
    their mean end-to-end latency; the run's within 2% of it."""
    deployments = "{" + ", ".join(f"{k}: [{', '.join(repr(o) for o in v)}]" for k, v in TIERS.items()) + "}"
    r = run_platform(
        [
            *FIXED,
            f"platform.deployments={deployments}",
            "platform.cascade=[small,medium,large]",
            f"platform.escalation.share=[{SHARES[0]},{SHARES[1]}]",
        ]
    )
    s1, s2 = SHARES
    alone = {}
    for (name, over), rate in zip(TIERS.items(), (4, 4 * s1, 4 * s1 * s2), strict=True):
        res = sim.run(sim.compose([*FIXED, *over, f"workload.rate={rate}"]))
        req = res.requests
        alone[name] = (res.summary, req["ttft_s"].mean(), req["e2e_s"].mean())
    (a, t1, e1), (b, t2, e2), (c, t3, _) = alone.values()
    hand_ttft = (1 - s1) * t1 + s1 * (1 - s2) * (e1 + t2) + s1 * s2 * (e1 + e2 + t3)
    hand_cost = a["cost_per_hour"] + b["cost_per_hour"] + c["cost_per_hour"]
    got = r.summary
    assert got["cost_per_hour"] == pytest.approx(hand_cost, rel=0.02)
    assert got["total_cost"] == pytest.approx(a["total_cost"] + b["total_cost"] + c["total_cost"], rel=0.02)
    assert got["cascade.ttft_mean"] == pytest.approx(hand_ttft, rel=0.02)
    # the shares that ended at each tier: binomial draws around 50%, 30%, 20% (3,600 requests: 4 sigma)
    n = got["cascade.n_requests"]
    for tier, share in zip(TIERS, ((1 - s1), s1 * (1 - s2), s1 * s2), strict=True):
        assert abs(got[f"cascade.answered_by.{tier}"] - share) < 4 * np.sqrt(share * (1 - share) / n)
    view = r.cascade
    assert len(view) == r.parts["small"].summary["n_requests"] == view["id"].nunique()  # every request once
    assert (view["ttft_s"] >= 0).all() and (view["route"] != "rejected").all()
    assert r.parts["medium"].summary["n_requests"] == (view["tier"] >= 2).sum()  # what tier 1 passed on, all of it


def _fleetsim(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sim", *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "platform.cascade=[small,medium,huge]",
            "platform.cascade[2]='huge': not a deployment; deployments: small, medium, large",
        ),
        ("platform.escalation.share=[0.4,1.5]", "platform.escalation.share[1]=1.5: must be a share in [0, 1]"),
        ("platform.escalation.share=[0.4]", "platform.escalation.share=[0.4]: needs one entry per boundary"),
        (
            "platform.deployments.small=['model=nosuch','gpu=l40s']",
            "platform.deployments.small: model='nosuch': unknown option; known: glm-4.5",
        ),
        ("platform.deployments.small=['fleet.replicas=0']", "platform.deployments.small: fleet.replicas=0: no GPUs"),
    ],
)
def test_bad_declarations_exit_2_with_one_line(tmp_path, override, message):
    p = _fleetsim("platform=cascade3", override, "workload.duration_s=30", f"hydra.run.dir={tmp_path / 'run'}")
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith(f"fleetsim: error: {message}"), p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr


def _plan(tmp_path, *extra: str) -> dict:
    import json

    out = tmp_path / "plan"
    args = [
        "platform=two_models",
        "workload.duration_s=120",
        "plan.gpus=[h100,l40s]",
        "plan.tp=[1,4]",
        "plan.strategies=[fixed]",
        "output.plots=false",
        "platform.deployments.chat=['model=llama3-8b','workload.rate=24']",
        *extra,
        f"hydra.run.dir={out}",
    ]
    p = subprocess.run(
        [sys.executable, "-c", "from sim.apps.cli import plan_main; plan_main()", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert (out / "deployments" / "chat" / "plan.csv").is_file() and (out / "joint_plan.md").is_file()
    return json.loads((out / "joint_plan.json").read_text())


def test_a_shared_gpu_pool_changes_the_joint_plan(tmp_path):
    """Alone, the chat model's cheapest is one H100 and the 70B model's one 4 x H100 replica; a
    pool of 4 H100s cannot hold both, so the chat model moves to its cheapest L40S fleet."""
    free = _plan(tmp_path / "free")
    assert free["feasible"] and free["changed_by_budget"] == []
    assert free["choice"]["chat"]["gpu"] == "h100" and free["peak_gpus"]["h100"] == 5
    pooled = _plan(tmp_path / "pool", "platform.budget_gpus={h100: 4}")
    assert pooled["feasible"] and pooled["changed_by_budget"] == ["chat"]
    assert pooled["choice"]["chat"]["gpu"] == "l40s" and pooled["peak_gpus"]["h100"] <= 4
    assert pooled["cost_per_hour"] > free["cost_per_hour"]


def test_the_joint_choice_is_the_cheapest_within_both_budgets():
    import pandas as pd

    from sim.config.schema import PlatformConfig
    from sim.studies.joint import joint_plan

    def table(rows):
        df = pd.DataFrame(rows, columns=["gpu", "tp", "strategy", "replicas", "cost_per_hour"])
        return df.assign(rank=df["cost_per_hour"].rank(method="first"))

    a = table([("h100", 1, "fixed", 2, 5.0), ("l40s", 1, "fixed", 6, 6.0), ("h200", 1, "fixed", 1, 9.0)])
    b = table([("h100", 1, "fixed", 3, 7.0), ("l40s", 1, "fixed", 8, 8.5)])
    tables = {"a": a, "b": b}
    assert joint_plan(tables, PlatformConfig())["cost_per_hour"] == 12.0
    pool = joint_plan(tables, PlatformConfig(budget_gpus={"h100": 3}))  # a's 2 + b's 3 do not fit
    assert pool["cost_per_hour"] == 13.0 and pool["choice"]["a"]["gpu"] == "l40s"
    both = joint_plan(tables, PlatformConfig(budget_gpus={"h100": 3, "l40s": 5}))  # no L40S fleet fits either
    assert both["cost_per_hour"] == 16.0 and both["choice"]["a"]["gpu"] == "h200"
    assert not joint_plan(tables, PlatformConfig(budget_usd_per_hour=11.0))["feasible"]


def test_escalation_by_class_and_by_confidence():
    """class_share: each class's own share; confidence: Beta(a, b) under the threshold, a share
    of Beta's CDF. 20,000 draws: 4-sigma tolerances."""
    import pandas as pd
    from scipy import stats

    from sim.config.schema import EscalationConfig, PlatformConfig
    from sim.studies.platform import escalated

    n = 20_000
    tier = pd.DataFrame({"route": ["gpu"] * (n - 100) + ["rejected"] * 100, "class": ["easy", "hard"] * (n // 2)})
    pc = PlatformConfig(
        deployments={"a": [], "b": []},
        cascade=["a", "b"],
        escalation=EscalationConfig(kind="class_share", class_share={"easy": [0.1], "hard": [0.7]}),
    )
    go = escalated(pc, 0, tier, seed=3)
    assert not go[tier["route"].to_numpy() == "rejected"].any()  # a rejected request is not passed on
    for cls, share in (("easy", 0.1), ("hard", 0.7)):
        mine = (tier["class"] == cls).to_numpy() & (tier["route"] == "gpu").to_numpy()
        assert abs(go[mine].mean() - share) < 4 * np.sqrt(share * (1 - share) / mine.sum())
    pc.escalation = EscalationConfig(kind="confidence", confidence_a=2.0, confidence_b=5.0, threshold=[0.3])
    share = stats.beta.cdf(0.3, 2.0, 5.0)
    go = escalated(pc, 0, tier, seed=3)
    answered = (tier["route"] == "gpu").to_numpy()
    assert abs(go[answered].mean() - share) < 4 * np.sqrt(share * (1 - share) / answered.sum())
    assert (go == escalated(pc, 0, tier, seed=3)).all()  # the same seed, the same requests


def test_a_platform_run_writes_the_same_bytes_for_the_same_seed(tmp_path):
    args = ("platform=cascade3", "workload.duration_s=60", "output.plots=false")
    for name in ("a", "b"):
        p = _fleetsim(*args, f"hydra.run.dir={tmp_path / name}")
        assert p.returncode == 0, p.stderr
        assert "cascade      " in p.stdout and "platform cascade3" in p.stdout
    for f in ("summary.json", "cascade.parquet", "deployments/medium/requests.parquet"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f


def test_a_cascade_with_seeds_is_refused_in_one_line(tmp_path):
    p = _fleetsim("platform=cascade3", "seeds=[1,2]", "workload.duration_s=30", f"hydra.run.dir={tmp_path / 'r'}")
    assert p.returncode == 2 and p.stderr.startswith("fleetsim: error: seeds=[1, 2]: a cascade runs one seed")
    q = _plan_cli(
        tmp_path / "q",
        "platform=cascade3",
        "platform.escalation.kind=class_share",
        "platform.escalation.class_share={steady: [0.4, 0.25]}",
    )
    assert q.returncode == 2 and q.stderr.startswith("fleetsim-plan: error: platform.escalation.kind=class_share")


def _plan_cli(out, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "from sim.apps.cli import plan_main; plan_main()", *args, f"hydra.run.dir={out}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_cascades_tiers_are_planned_for_the_traffic_that_reaches_them(tmp_path):
    """Shares 0.4 and 0.25 of 20 req/s: the tiers are planned at 20, 8 and 2 req/s (a 300 s
    horizon: 6,000 and 2,400 requests; the last tier's horizon grows to plan.min_requests)."""
    import json

    import pandas as pd

    out = tmp_path / "plan"
    p = _plan_cli(
        out,
        "platform=cascade3",
        "workload.rate=20",
        "workload.duration_s=300",
        "plan.gpus=[h100,l40s]",
        "plan.tp=[1,4]",
        "plan.strategies=[fixed]",
        "output.plots=false",
    )
    assert p.returncode == 0, p.stderr
    j = json.loads((out / "joint_plan.json").read_text())
    assert j["cascade_reach"] == pytest.approx({"small": 1.0, "medium": 0.4, "large": 0.1})
    for tier, expected in (("small", 6000), ("medium", 2400)):
        n = pd.read_csv(out / "deployments" / tier / "plan.csv")["n_requests"].dropna()
        assert (abs(n - expected) < 5 * np.sqrt(expected)).all(), (tier, n.tolist())
    assert j["feasible"] and set(j["choice"]) == {"small", "medium", "large"}
