"""Closed-loop users (workload=closed): concurrency bounded by the users, each request sent at the
previous answer plus the user's think time, Little's law for a closed system, multi-turn
sessions whose growing prefix the prefix cache sees, determinism and bad values.

Statistical tolerances are derived from the sample size (a few standard errors), so a pass is not
luck and a real bias fails."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

import sim
from sim.config.errors import ConfigError
from sim.des.preflight import validate
from sim.workload.build import build_workload, stream
from sim.workload.closedloop import ClosedLoop, closed_workload
from tests.conftest import cfg

FIXED = ("workload.prompt_tokens.dist=fixed", "workload.output_tokens.dist=fixed")


def closed(*overrides: str) -> sim.Config:
    return cfg("workload=closed", "output.requests=true", *overrides)


def in_flight(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(instants, requests in the system just after each instant's arrivals and endings)."""
    t = np.concatenate([df["arrival_s"].to_numpy(), df["finish_s"].to_numpy()])
    step = np.concatenate([np.ones(len(df), int), -np.ones(len(df), int)])
    instants, where = np.unique(t, return_inverse=True)
    return instants, np.cumsum(np.bincount(where, weights=step, minlength=len(instants)).astype(int))


def refused(fn, *args, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as e:
        fn(*args, **kwargs)
    return e.value


def by_user(df: pd.DataFrame):
    """Consecutive requests of each user: (earlier rows, the next rows), aligned."""
    df = df.sort_values(["user", "id"])
    same = df["user"].to_numpy()[1:] == df["user"].to_numpy()[:-1]
    return df.iloc[:-1][same], df.iloc[1:][same]


# ----------------------------------------------------------------------------- the loop


def test_zero_think_keeps_exactly_the_users_in_flight():
    """With N users and no think time, the requests in the system (queued at the router, waiting
    or running on a replica) never exceed N, and are exactly N until the users start stopping.
    A batch limit below N makes requests queue, so the bound is the users', not the engine's."""
    n = 24
    r = sim.run(
        closed(
            f"workload.users={n}",
            "workload.think_time_s=0",
            "workload.requests=1500",
            "workload.duration_s=null",
            "engine.max_num_seqs=8",
            *FIXED,
            "workload.prompt_tokens.mean=300",
            "workload.output_tokens.mean=60",
        )
    )
    df = r.requests
    assert len(df) == 1500 and (df["route"] == "gpu").all()
    assert r.summary["queue_mean"] > 0  # the engine's 8 slots make the other 16 wait
    instants, count = in_flight(df)
    assert count.max() == n
    steady = instants < df["arrival_s"].max()  # until the last request is sent, every user waits on one
    assert (count[steady] == n).all()
    assert count[-1] == 0


def test_each_request_arrives_at_the_previous_answer_plus_the_users_think_time():
    """The k-th request sent takes the k-th draw of the think-time stream: its user's next
    request arrives exactly that long after its answer."""
    n_req, mean = 3000, 2.0
    c = closed(
        "workload.users=10",
        f"workload.think_time_s={mean}",
        "workload.think_dist=exponential",
        f"workload.requests={n_req}",
        "workload.duration_s=null",
        "seed=3",
    )
    df = sim.run(c).requests
    think = stream(3, "closed/think").exponential(mean, n_req)  # the first batch holds 4096
    before, after = by_user(df)
    gap = after["arrival_s"].to_numpy() - before["finish_s"].to_numpy()
    np.testing.assert_allclose(gap, think[before["id"].to_numpy()], rtol=0, atol=1e-9)
    assert (gap >= 0).all()
    # and the gaps are exponential with the configured mean (a few standard errors)
    assert abs(gap.mean() - mean) < 4 * mean / math.sqrt(len(gap))
    # arrivals are numbered in arrival order
    assert (np.diff(df["arrival_s"].to_numpy()) >= 0).all()


@pytest.mark.parametrize("dist", ["fixed", "lognormal"])
def test_think_time_distributions(dist):
    mean, cv = 3.0, 0.5
    c = closed(
        "workload.users=20",
        f"workload.think_time_s={mean}",
        f"workload.think_dist={dist}",
        f"workload.think_cv={cv}",
        "workload.requests=2000",
        "workload.duration_s=null",
    )
    before, after = by_user(sim.run(c).requests)
    gap = after["arrival_s"].to_numpy() - before["finish_s"].to_numpy()
    if dist == "fixed":
        np.testing.assert_allclose(gap, mean, atol=1e-9)
    else:
        se = mean * cv / math.sqrt(len(gap))
        assert abs(gap.mean() - mean) < 4 * se
        assert abs(gap.std() / gap.mean() - cv) < 0.1  # the CV's sampling error at n ~ 1,980 is ~ 0.01-0.02


def test_littles_law_for_the_closed_system():
    """Throughput X = N / (mean E2E + mean think) over a window in steady state. The identity
    N T = sum over requests of (E2E + think) holds up to the requests that straddle the window's
    edges (at most N at each); using the configured mean think instead of the sample's adds its
    sampling error, Z / sqrt(n) for exponential think times."""
    n_users, z, t_end, warm = 16, 1.0, 1500.0, 100.0
    c = closed(
        f"workload.users={n_users}",
        f"workload.think_time_s={z}",
        "workload.think_dist=exponential",
        f"workload.duration_s={t_end}",
        "workload.ramp_s=10",
        "engine.max_num_seqs=4",  # a queue, so E2E depends on the load
    )
    df = sim.run(c).requests
    win = df[(df["arrival_s"] >= warm) & (df["arrival_s"] < t_end)]
    n = len(win)
    x = n / (t_end - warm)
    r = float(win["e2e_s"].mean())
    predicted = n_users / (r + z)
    tol = 4 * z / math.sqrt(n) / (r + z) + 2 * n_users / n
    assert abs(x / predicted - 1) < tol, (x, predicted, tol)
    assert r > 0.5  # the queue made E2E matter: a loop that ignored the answers would miss by far
    # the run stops sending at duration_s
    assert df["arrival_s"].max() < t_end


def test_ramp_and_ends():
    n = 8
    df = sim.run(closed(f"workload.users={n}", "workload.ramp_s=40", "workload.duration_s=120")).requests
    first = df.groupby("user")["arrival_s"].min().sort_index().to_numpy()
    np.testing.assert_allclose(first, 40 * np.arange(n) / n)
    assert df["arrival_s"].max() < 120
    df = sim.run(closed("workload.users=5", "workload.requests=37", "workload.duration_s=null")).requests
    assert len(df) == 37 and df["id"].tolist() == list(range(37))


def test_the_benchmark_helper_concurrency_1():
    """'Concurrency 1, input 8192, output 128': one request at a time, each sent as the last
    one's answer arrives, every one alike."""
    base = cfg()
    c = dataclasses.replace(base, workload=sim.closed_workload(1, 8192, 128, requests=6))
    r = sim.run(c)
    df = r.requests
    assert len(df) == 6 and (df["prompt_tokens"] == 8192).all() and (df["output_tokens"] == 128).all()
    np.testing.assert_allclose(df["arrival_s"].to_numpy()[1:], df["finish_s"].to_numpy()[:-1])
    assert df["queue_s"].max() == 0
    # alone on the replica, every request takes the same time
    np.testing.assert_allclose(df["e2e_s"], df["e2e_s"].iloc[0], rtol=1e-12)
    assert refused(closed_workload, 4, 100, 10).key == "workload.requests"  # no end
    assert refused(closed_workload, 0, 100, 10, requests=5).key == "workload.users"


def test_rejected_and_api_requests_end_and_the_user_goes_on():
    # an API serving everything: users keep sending, every request ends served by it
    r = sim.run(
        closed(
            "api=default",
            "api.overflow=always",
            "fleet.replicas=0",
            "workload.users=4",
            "workload.requests=60",
            "workload.duration_s=null",
            "workload.think_time_s=1",
        )
    )
    df = r.requests
    assert (df["route"] == "api").all() and len(df) == 60
    assert df.groupby("user").size().min() > 5
    # sessions that outgrow the context are rejected; the user thinks and starts a new session
    r = sim.run(
        closed(
            "engine.max_model_len=3000",
            "workload.users=6",
            "workload.duration_s=600",
            "workload.turns.dist=fixed",
            "workload.turns.mean=20",
            *FIXED,
            "workload.prompt_tokens.mean=800",
            "workload.output_tokens.mean=200",
            "workload.turn_tokens.dist=fixed",
            "workload.turn_tokens.mean=300",
        )
    )
    df = r.requests
    s = r.summary
    assert s["n_gpu"] + s["n_api"] + s["n_rejected"] == s["n_requests"] == len(df)
    rejected = df[df["route"] == "rejected"]
    assert len(rejected) > 10 and (rejected["reject_reason"] == "exceeds_max_model_len").all()
    before, after = by_user(df)
    was_rejected = before["route"].to_numpy() == "rejected"
    assert (after["turn"].to_numpy()[was_rejected] == 1).all()  # a new session
    assert (after["session"].to_numpy()[was_rejected] != before["session"].to_numpy()[was_rejected]).all()


# ----------------------------------------------------------------------------- sessions


def multi_turn(*overrides: str) -> sim.Config:
    return closed(
        "workload.users=12",
        "workload.duration_s=900",
        "workload.think_time_s=5",
        "workload.turns.dist=fixed",
        "workload.turns.mean=6",
        *FIXED,
        "workload.prompt_tokens.mean=1000",
        "workload.output_tokens.mean=100",
        "workload.turn_tokens.dist=fixed",
        "workload.turn_tokens.mean=100",
        *overrides,
    )


def test_a_turn_carries_the_conversation_so_far():
    df = sim.run(multi_turn()).requests
    before, after = by_user(df)
    same = after["session"].to_numpy() == before["session"].to_numpy()
    b, a = before[same], after[same]
    assert len(a) > 100
    np.testing.assert_array_equal(a["turn"].to_numpy(), b["turn"].to_numpy() + 1)
    # turn i+1 = turn i's prompt + its answer + the new message
    np.testing.assert_array_equal(a["prompt_tokens"].to_numpy(), b["prompt_tokens"] + b["served_output_tokens"] + 100)
    # never before turn i's answer plus the think time: exactly then (the k-th think-time draw)
    think = stream(0, "closed/think").exponential(5.0, 4096)
    assert len(df) < 4096
    np.testing.assert_allclose(
        a["arrival_s"].to_numpy() - b["finish_s"].to_numpy(), think[b["id"].to_numpy()], rtol=0, atol=1e-9
    )
    assert (a["arrival_s"].to_numpy() > b["finish_s"].to_numpy()).all()
    # a session has 6 turns; the user then starts a new one from a fresh first prompt
    new = ~same
    assert (after["turn"].to_numpy()[new] == 1).all() and (before["turn"].to_numpy()[new] == 6).all()
    assert (after["prompt_tokens"].to_numpy()[new] == 1000).all()
    assert df.groupby("session")["turn"].max().max() == 6


def test_prefix_hits_grow_with_the_turn():
    """With prefix caching, turn t finds turns 1..t-1 in the replica's cache (their prompts and
    answers, in whole 16-token blocks): the share of its prompt served from the cache grows with
    t. A session's first turn shares nothing (fresh ids)."""
    r = sim.run(multi_turn("engine.prefix_caching=true"))
    df = r.requests
    share = (df["cached_tokens"] / df["prompt_tokens"]).groupby(df["turn"]).mean()
    assert share.loc[1] == 0
    assert (np.diff(share.to_numpy()) > 0).all(), share
    # exactly the previous turn's prompt and answer, but the last answer token, in whole blocks
    before, after = by_user(df)
    same = after["session"].to_numpy() == before["session"].to_numpy()
    expect = (before["prompt_tokens"].to_numpy() + before["output_tokens"].to_numpy() - 1) // 16 * 16
    np.testing.assert_array_equal(after["cached_tokens"].to_numpy()[same], expect[same])
    assert r.summary["prefix_block_hit_rate"] > 0.8
    # without prefix caching nothing is cached
    assert sim.run(multi_turn("engine.prefix_caching=false")).requests["cached_tokens"].sum() == 0


def test_the_prefix_aware_router_keeps_a_conversation_on_its_replica():
    hits = {}
    for router in ("prefix_aware", "round_robin"):
        r = sim.run(multi_turn("engine.prefix_caching=true", "fleet.replicas=4", f"fleet.router={router}"))
        hits[router] = r.summary["prefix_block_hit_rate"]
    assert hits["prefix_aware"] > 0.8 > hits["round_robin"] + 0.2, hits


def test_turns_from_a_distribution():
    df = sim.run(
        multi_turn("workload.turns.dist=uniform", "workload.turns.low=1", "workload.turns.high=4", "seed=5")
    ).requests
    last = df.groupby("session")["turn"].max()
    assert set(last.unique()) <= {1, 2, 3, 4} and len(set(last.unique())) >= 3


# ----------------------------------------------------------------------------- properties


def test_same_seed_same_parquet(tmp_path):
    c = multi_turn("engine.prefix_caching=true", "fleet.replicas=2", "fleet.router=prefix_aware", "seed=11")
    paths = []
    for k in range(2):
        r = sim.run(c)
        paths.append(r.save(tmp_path / str(k), plots=False) / "requests.parquet")
    assert paths[0].read_bytes() == paths[1].read_bytes()
    other = sim.run(dataclasses.replace(c, seed=12)).requests
    assert not other["arrival_s"].equals(pd.read_parquet(paths[0])["arrival_s"])
    assert list(pd.read_parquet(paths[0]).columns[-3:]) == ["user", "session", "turn"]


def test_engine_events_grow_with_requests_not_tokens():
    """The closed loop adds one timeout per request; the engine still advances decode runs in
    closed form, so its events per request do not grow with the output length."""
    per = {}
    for out in (100, 1000):
        r = sim.run(
            closed(
                "workload.users=32",
                "workload.think_time_s=0.5",
                "workload.requests=2000",
                "workload.duration_s=null",
                *FIXED,
                "workload.prompt_tokens.mean=500",
                f"workload.output_tokens.mean={out}",
            )
        )
        per[out] = r.summary["engine_events"] / r.summary["n_requests"]
    assert per[1000] < 1.5 * per[100] and per[1000] < 4, per


def test_seeds_replicate_a_closed_loop():
    r = sim.run(closed("workload.users=4", "workload.duration_s=60", "seeds=[0,1]"))
    assert r.summary["n_seeds"] == 2 and set(r.requests["seed"]) == {0, 1}


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("workload.users=0", "workload.users"),
        ("workload.users=-3", "workload.users"),
        ("workload.think_time_s=-1", "workload.think_time_s"),
        ("workload.think_dist=gamma", "workload.think_dist"),
        ("workload.think_cv=0", None),  # only lognormal uses it
        ("workload.requests=0", "workload.requests"),
        ("workload.ramp_s=-5", "workload.ramp_s"),
        ("workload.turns.mean=0", "workload.turns.mean"),
        ("workload.rate_scale=2", "workload.rate_scale"),
        ("workload.loop=true", "workload.loop"),
        ("workload.shared_prefix.groups=4 workload.shared_prefix.tokens=500", "workload.shared_prefix.groups"),
    ],
)
def test_bad_values_name_the_key(override, key):
    try:
        c = closed(*override.split())
    except ConfigError as exc:  # a name outside a closed set is refused when composed
        assert exc.key == key
        return
    if key is None:
        validate(c)
        return
    assert refused(validate, c).key == key


def test_closed_keys_need_closed_arrivals_and_no_mix():
    assert refused(validate, cfg("workload.users=8")).key == "workload.users"
    mix = cfg("workload=mix", "workload.sources.chat.arrival=closed")
    assert refused(validate, mix).key == "workload.sources.chat.arrival"
    assert refused(validate, closed("workload.duration_s=null")).key == "workload.requests"
    assert refused(build_workload, closed().workload, 0).key == "workload.arrival"


def test_the_users_runaway_guard():
    c = closed("workload.think_time_s=0", "workload.duration_s=1e6", "limits.max_requests=5000", "workload.users=4")
    e = refused(sim.run, c)
    assert e.key == "workload.duration_s" and "limits.max_requests" in str(e)


def test_draws_do_not_depend_on_batch_boundaries():
    """Past the first batch of draws, values keep coming from the same streams."""
    wc = closed("workload.users=3", "workload.duration_s=1e6").workload
    loop = ClosedLoop(wc, 0)
    got = [loop.send(k % 3, float(k)) for k in range(9000)]
    assert [g[0] for g in got] == list(range(9000))  # type: ignore[index]
    prompts = np.array([g[1] for g in got])  # type: ignore[index]
    from sim.workload.lengths import sample_lengths

    rng = stream(0, "closed/prompt_tokens")
    expect = np.concatenate([sample_lengths(wc.prompt_tokens, n, rng, "x") for n in (4096, 8192)])[:9000]
    np.testing.assert_array_equal(prompts, expect)
