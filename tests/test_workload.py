"""Workloads: arrival processes against their theory, length models, mixes and what-if transforms.

Statistical checks use fixed seeds; each tolerance is checked to be several standard errors of
the estimate at the sample size used, so a pass is not luck and a real bias would fail.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import sim
from sim.config.errors import ConfigError
from sim.config.schema import SourceConfig, WorkloadConfig
from sim.workload.arrivals import ARRIVALS, diurnal_rate, mmpp_theory
from sim.workload.build import build_workload, stream
from sim.workload.lengths import sample_lengths
from tests.conftest import cfg


def batch_se(x: np.ndarray, batches: int = 50) -> float:
    """Standard error of the mean of a correlated series, from batch means."""
    m = x[: len(x) // batches * batches].reshape(batches, -1).mean(axis=1)
    return float(m.std(ddof=1) / math.sqrt(batches))


def gaps_cv(t: np.ndarray) -> tuple[float, float]:
    """Inter-arrival CV and its standard error (delta method on batch means of g and g^2)."""
    g = np.diff(t)
    cv = g.std() / g.mean()
    rel = math.hypot(batch_se(g) / g.mean(), 0.5 * batch_se(g * g) / (g * g).mean())
    return float(cv), float(cv * 2 * rel)


# ----------------------------------------------------------------------------- rates


@pytest.mark.parametrize(
    ("arrival", "extra", "duration"),
    [
        ("poisson", {}, 40_000.0),
        ("uniform", {}, 1_000.0),
        ("gamma", {"cv": 3.0}, 40_000.0),
        ("mmpp", {"burst_multiplier": 4.0, "burst_mean_s": 2.0, "calm_mean_s": 18.0}, 60_000.0),
        ("diurnal", {"peak_to_trough": 4.0, "weekend_factor": 1.0}, 7 * 86_400.0),
    ],
)
def test_mean_rate_within_2_percent(arrival, extra, duration):
    src = SourceConfig(arrival=arrival, rate=10.0, **extra)
    t = ARRIVALS[arrival](src, duration, stream(1, arrival))
    rate = len(t) / duration
    # standard error of the count: sqrt(Fano x mean); Fano 1 Poisson, cv^2 renewal, MMPP theory
    fano = (
        mmpp_theory(src)[2]
        if arrival == "mmpp"
        else {"poisson": 1.0, "uniform": 0.0, "gamma": 9.0, "diurnal": 1.0}[arrival]
    )
    se = math.sqrt(fano * 10.0 * duration) / duration
    assert 3 * se <= 0.02 * 10.0, "sample too small for a 2 % tolerance"
    assert rate == pytest.approx(10.0, rel=0.02)
    assert np.all(np.diff(t) >= 0) and t[0] >= 0 and t[-1] < duration


def test_gamma_interarrival_cv():
    for target in (0.5, 2.0, 4.0):
        t = ARRIVALS["gamma"](SourceConfig(arrival="gamma", rate=5.0, cv=target), 100_000.0, stream(2, "g"))
        cv, se = gaps_cv(t)
        assert 0.10 * target >= 3 * se
        assert cv == pytest.approx(target, rel=0.10)


def test_mmpp_interarrival_cv_matches_theory():
    src = SourceConfig(arrival="mmpp", rate=5.0, burst_multiplier=8.0, burst_mean_s=20.0, calm_mean_s=180.0)
    mean, target, _ = mmpp_theory(src)
    assert mean == pytest.approx(5.0) and target > 1.3  # a bursty configuration
    t = ARRIVALS["mmpp"](src, 400_000.0, stream(3, "m"))
    cv, se = gaps_cv(t)
    assert 0.10 * target >= 3 * se
    assert cv == pytest.approx(target, rel=0.10)


def test_diurnal_profile_follows_the_configured_one():
    src = SourceConfig(arrival="diurnal", rate=2.0, peak_to_trough=5.0, peak_hour=15.0)
    t = ARRIVALS["diurnal"](src, 7 * 86_400.0, stream(4, "d"))
    observed = np.bincount(((t / 3600) % 24).astype(int), minlength=24) / 7 / 3600
    grid = np.arange(24 * 60) * 60.0 + 30.0
    configured = diurnal_rate(src, grid).reshape(24, 60).mean(axis=1)
    assert np.corrcoef(observed, configured)[0, 1] > 0.98
    assert observed.argmax() in (14, 15)
    assert observed.max() / observed.min() == pytest.approx(5.0, rel=0.2)


def test_diurnal_hourly_weights_and_weekends():
    weights = [1.0] * 8 + [3.0] * 10 + [1.0] * 6
    src = SourceConfig(arrival="diurnal", rate=1.0, hourly_weights=weights, weekend_factor=0.5, start_weekday=0)
    t = ARRIVALS["diurnal"](src, 14 * 86_400.0, stream(5, "w"))
    day = (t // 86_400).astype(int) % 7
    weekday_rate = np.sum(day < 5) / (10 * 86_400)
    weekend_rate = np.sum(day >= 5) / (4 * 86_400)
    assert weekday_rate == pytest.approx(1.0, rel=0.03)  # SE 0.34 %
    assert weekend_rate / weekday_rate == pytest.approx(0.5, rel=0.05)
    hours = ((t / 3600) % 24).astype(int)
    busy = np.isin(hours, range(8, 18)).sum() / 10
    quiet = (~np.isin(hours, range(8, 18))).sum() / 14
    assert busy / quiet == pytest.approx(3.0, rel=0.05)


def test_diurnal_with_burstiness_keeps_the_rate():
    src = SourceConfig(arrival="diurnal", rate=3.0, cv=3.0)
    t = ARRIVALS["diurnal"](src, 3 * 86_400.0, stream(6, "dc"))
    assert len(t) / (3 * 86_400) == pytest.approx(3.0, rel=0.03)  # count SD ~ cv/sqrt(n) = 0.6 %
    assert gaps_cv(t)[0] > 2.5


# ----------------------------------------------------------------------------- lengths


def test_lognormal_lengths_hit_mean_and_p99():
    from sim.config.schema import LengthConfig

    x = sample_lengths(LengthConfig(dist="lognormal", mean=800, p99=6000), 400_000, stream(7, "l"), "k")
    assert x.mean() == pytest.approx(800, rel=0.02)
    assert np.percentile(x, 99) == pytest.approx(6000, rel=0.03)
    assert x.min() >= 1


def test_empirical_lengths_from_a_table_and_inline(tmp_path, shared_dir):
    from sim.config.schema import LengthConfig

    path = shared_dir / "traces" / "lengths_sharegpt8k_llama2.csv"
    lc = LengthConfig(dist="empirical", path=str(path), column="num_decode_tokens")
    x = sample_lengths(lc, 200_000, stream(8, "e"), "k")
    import pandas as pd

    src = pd.read_csv(path)["num_decode_tokens"].to_numpy()
    assert x.mean() == pytest.approx(src.mean(), rel=0.01)
    assert set(np.unique(x)) <= set(np.unique(src))
    inline = sample_lengths(LengthConfig(dist="empirical", values=[10, 20, 30]), 3000, stream(8, "i"), "k")
    assert set(inline) == {10, 20, 30}


def test_joint_pairs_keep_their_correlation(shared_dir):
    import pandas as pd

    path = shared_dir / "traces" / "lengths_arxiv_summarization_llama2.csv"
    wc = WorkloadConfig(arrival="poisson", rate=50.0, duration_s=2000.0)
    wc.pairs.path = str(path)
    wl = build_workload(wc, 0)
    src = pd.read_csv(path)
    want = np.corrcoef(np.log(src.num_prefill_tokens), np.log(src.num_decode_tokens))[0, 1]
    got = np.corrcoef(np.log(wl.prompt_tokens), np.log(wl.output_tokens))[0, 1]
    assert abs(want) > 0.1  # a correlation worth keeping
    assert got == pytest.approx(want, abs=0.03)  # SE ~ 1/sqrt(100k) = 0.003
    # independent sampling would lose it
    wc2 = WorkloadConfig(arrival="poisson", rate=50.0, duration_s=2000.0)
    wc2.prompt_tokens.dist = wc2.output_tokens.dist = "empirical"
    wc2.prompt_tokens.path = wc2.output_tokens.path = str(path)
    wc2.prompt_tokens.column, wc2.output_tokens.column = "num_prefill_tokens", "num_decode_tokens"
    wl2 = build_workload(wc2, 0)
    assert abs(np.corrcoef(np.log(wl2.prompt_tokens), np.log(wl2.output_tokens))[0, 1]) < 0.02


# ----------------------------------------------------------------------------- mixes


def test_mix_labels_classes_and_reports_them():
    r = sim.run(cfg("workload=mix", "workload.duration_s=600", "fleet.replicas=3"))
    df, s = r.requests, r.summary
    assert set(df["class"]) == {"chat", "rag", "batch"}
    for name, rate in (("chat", 8.0), ("rag", 2.0)):
        n = (df["class"] == name).sum()
        assert n == s[f"n_requests.{name}"]
        assert n / 600 == pytest.approx(rate, rel=4 * math.sqrt(4 * rate * 600) / (rate * 600))
    for name in ("chat", "rag", "batch"):
        mine = df[df["class"] == name]
        assert s[f"slo_attainment.{name}"] == pytest.approx(
            (
                (mine.ttft_s <= (120.0 if name == "batch" else 1.0))
                & ((mine.tpot_s <= (0.5 if name == "batch" else 0.05)) | mine.tpot_s.isna())
            ).mean()
        )
    assert sum(s[f"n_requests.{n}"] for n in ("chat", "rag", "batch")) == s["n_requests"]
    # the rag prompts are longer than the chat ones
    assert df[df["class"] == "rag"].prompt_tokens.mean() > 4 * df[df["class"] == "chat"].prompt_tokens.mean()


def test_single_class_has_the_workload_name():
    r = sim.run(cfg("workload.duration_s=30"))
    assert set(r.requests["class"]) == {"steady"}
    assert not any(k.startswith(("slo_attainment.", "n_requests.")) for k in r.summary)


# ----------------------------------------------------------------------------- transforms


def base(**kw) -> WorkloadConfig:
    return WorkloadConfig(**{"arrival": "poisson", "rate": 20.0, "duration_s": 3600.0, **kw})


def test_rate_scale_compresses_time():
    a = build_workload(base(), 0)
    b = build_workload(base(rate_scale=2.0), 0)
    # the first hour of the same arrivals, twice as fast: generated over 2 h, compressed into 1 h
    raw = build_workload(base(duration_s=7200.0), 0)
    assert np.array_equal(b.arrival_s, raw.arrival_s / 2.0)
    assert len(b) / len(a) == pytest.approx(2.0, rel=0.03)


def test_rate_scale_on_a_trace_keeps_burst_shape():
    wc = WorkloadConfig(
        name="t", arrival="trace", path="traces/synthetic_burstgpt.csv", format="burstgpt", duration_s=None
    )
    a = build_workload(wc, 0)
    wc.rate_scale = 3.0
    b = build_workload(wc, 0)
    assert np.allclose(b.arrival_s, a.arrival_s / 3.0, rtol=0, atol=1e-12)
    assert np.array_equal(b.prompt_tokens, a.prompt_tokens)


def test_load_scale_thins_and_replicates_keeping_the_time_shape():
    wc = WorkloadConfig(name="t", arrival="trace", path="traces/synthetic_azure.csv", format="azure", duration_s=None)
    a = build_workload(wc, 0)
    for scale in (0.4, 2.5):
        wc.load_scale = scale
        b = build_workload(wc, 1)
        n = len(a)
        sd = math.sqrt(n * (scale % 1) * (1 - scale % 1))
        assert abs(len(b) - scale * n) <= 4 * sd  # binomial count of the fractional part
        hourly_a = np.bincount((a.arrival_s // 3600).astype(int), minlength=24)
        hourly_b = np.bincount((b.arrival_s // 3600).astype(int), minlength=24)
        assert np.corrcoef(hourly_a, hourly_b)[0, 1] > 0.99
        assert b.arrival_s[-1] <= a.arrival_s[-1] + 60
    wc.load_scale = 0.4
    thin = build_workload(wc, 1)
    assert set(thin.arrival_s) <= set(a.arrival_s)  # thinning keeps original times


def test_window_and_loop():
    wc = WorkloadConfig(name="t", arrival="trace", path="traces/synthetic_azure.csv", format="azure", duration_s=None)
    full = build_workload(wc, 0)
    wc.window_start_s, wc.window_end_s = 3600.0 * 14, 3600.0 * 15
    win = build_workload(wc, 0)
    inside = full.arrival_s[(full.arrival_s >= 50_400) & (full.arrival_s < 54_000)]
    assert np.allclose(win.arrival_s, inside - 50_400, rtol=0, atol=1e-9)
    wc.loop, wc.duration_s = True, 4 * 3600.0
    looped = build_workload(wc, 0)
    assert len(looped) == pytest.approx(4 * len(win), abs=len(win) * 0.01 + 2)
    assert looped.arrival_s[-1] < 4 * 3600 and np.all(np.diff(looped.arrival_s) >= 0)


def test_length_scales():
    a = build_workload(base(), 0)
    b = build_workload(base(prompt_scale=2.0, output_scale=0.5), 0)
    assert np.array_equal(b.prompt_tokens, np.maximum(1, np.rint(a.prompt_tokens * 2.0)))
    assert np.array_equal(b.output_tokens, np.maximum(1, np.rint(a.output_tokens * 0.5)))


def test_empty_window_is_a_config_error():
    wc = WorkloadConfig(
        name="t", arrival="trace", path="traces/synthetic_burstgpt.csv", format="burstgpt", duration_s=None
    )
    wc.window_start_s, wc.window_end_s = 5000.0, 6000.0  # the trace spans one hour
    with pytest.raises(ConfigError, match="holds no request"):
        build_workload(wc, 0)
