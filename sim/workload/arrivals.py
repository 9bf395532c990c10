"""Arrival processes: sorted arrival times on [0, duration), generated vectorised with NumPy.

Each process is a function (source config, duration, generator) -> times, registered by name in
`ARRIVALS`. `rate` is always the mean number of arrivals per second (for `diurnal`, the mean over
a weekday).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from sim.config.names import CLOSED, TRACE  # noqa: F401  (the kinds that are not processes)
from sim.config.schema import SourceConfig

DAY = 86_400.0


def poisson(src: SourceConfig, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Homogeneous Poisson process: N ~ Poisson(rate T), times iid uniform."""
    n = rng.poisson(src.rate * duration)
    return np.sort(rng.uniform(0.0, duration, size=n))


def uniform(src: SourceConfig, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Evenly spaced arrivals, 1/rate apart, starting at 0."""
    return np.arange(math.floor(src.rate * duration)) / src.rate


def renewal(rate: float, cv: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Gamma renewal process with mean gap 1/rate and gap CV `cv` (cv = 1: Poisson), started
    at a uniformly random point of its first gap."""
    shape = 1.0 / (cv * cv)
    scale = 1.0 / (rate * shape)
    expected = rate * duration
    chunks = []
    total = 0.0
    first = True
    while total < duration:
        k = int(expected * 1.1 + 10 * math.sqrt(expected + 1) + 16)
        gaps = rng.gamma(shape, scale, size=k)
        if first:
            gaps[0] *= rng.uniform()
            first = False
        times = total + np.cumsum(gaps)
        chunks.append(times)
        total = float(times[-1])
        expected = max(expected - k, 1.0)
    times = np.concatenate(chunks)
    return times[times < duration]


def gamma(src: SourceConfig, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Renewal process with gamma inter-arrival times of the configured CV."""
    return renewal(src.rate, src.cv, duration, rng)


def mmpp(src: SourceConfig, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Two-state Markov-modulated Poisson process: calm and burst periods with exponential
    lengths (means `calm_mean_s`, `burst_mean_s`); the burst rate is `burst_multiplier` x the
    calm rate, and the calm rate is set so the long-run mean is `rate`."""
    calm, burst, mult = src.calm_mean_s, src.burst_mean_s, src.burst_multiplier
    calm_rate = src.rate * (calm + burst) / (calm + mult * burst)
    first_burst = bool(rng.uniform() < burst / (calm + burst))  # stationary initial state
    batch = int(2 * duration / (calm + burst)) + 8
    parts, covered, drawn = [], 0.0, 0
    while covered < duration:
        is_burst = ((np.arange(drawn, drawn + batch) % 2) == 0) == first_burst
        lengths = rng.exponential(np.where(is_burst, burst, calm))
        parts.append(lengths)
        covered += float(lengths.sum())
        drawn += batch
    lengths = np.concatenate(parts)
    end = np.cumsum(lengths)
    start = end - lengths
    keep = start < duration
    start, end = start[keep], np.minimum(end[keep], duration)
    is_burst = ((np.arange(len(start)) % 2) == 0) == first_burst
    counts = rng.poisson(np.where(is_burst, calm_rate * mult, calm_rate) * (end - start))
    span = np.repeat(end - start, counts)
    return np.sort(np.repeat(start, counts) + rng.uniform(size=int(counts.sum())) * span)


def mmpp_theory(src: SourceConfig) -> tuple[float, float, float]:
    """(mean rate, inter-arrival CV, asymptotic Fano factor of counts) of the configured MMPP.

    The process is a Markovian arrival process with D0 = Q - L and D1 = L (Q: state switching,
    L: rates). Stationary inter-arrival times are phase-type from pi_a = pi L / (pi L 1):
    E[T^k] = k! pi_a (-D0)^-k 1.
    """
    calm, burst, mult = src.calm_mean_s, src.burst_mean_s, src.burst_multiplier
    calm_rate = src.rate * (calm + burst) / (calm + mult * burst)
    rates = np.array([calm_rate, calm_rate * mult])
    q = np.array([[-1 / calm, 1 / calm], [1 / burst, -1 / burst]])
    pi = np.array([calm, burst]) / (calm + burst)
    lam = np.diag(rates)
    pa = pi @ lam / (pi @ rates)
    inv = np.linalg.inv(-(q - lam))
    m1 = pa @ inv @ np.ones(2)
    m2 = 2 * pa @ inv @ inv @ np.ones(2)
    cv = float(np.sqrt(m2 / m1**2 - 1))
    # counts: Var N(T) / E N(T) -> 1 + 2 (l1 - l2)^2 p1 p2 / ((a + b) mean)
    fano = 1 + 2 * (rates[1] - rates[0]) ** 2 * pi[0] * pi[1] / ((1 / calm + 1 / burst) * float(pi @ rates))
    return float(pi @ rates), cv, float(fano)


def hourly_profile(src: SourceConfig) -> np.ndarray | None:
    """The 24 hourly weights normalised to mean 1, or None for the sinusoidal profile."""
    if src.hourly_weights is None:
        return None
    w = np.asarray(src.hourly_weights, dtype=float)
    return w / w.mean()


def diurnal_rate(src: SourceConfig, t: np.ndarray) -> np.ndarray:
    """Arrival rate at times t (seconds from a midnight that starts weekday `start_weekday`)."""
    hour = (t / 3600.0) % 24.0
    weights = hourly_profile(src)
    if weights is None:
        a = (src.peak_to_trough - 1) / (src.peak_to_trough + 1)  # max/min = peak_to_trough
        shape = 1.0 + a * np.cos(2 * np.pi * (hour - src.peak_hour) / 24.0)
    else:
        shape = weights[np.minimum(hour.astype(int), 23)]
    weekday = (src.start_weekday + np.floor(t / DAY).astype(int)) % 7
    return src.rate * shape * np.where(weekday >= 5, src.weekend_factor, 1.0)


def diurnal(src: SourceConfig, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Non-homogeneous Poisson process over a 24-hour profile, by thinning a Poisson process at
    the peak rate. With cv != 1, a gamma renewal process in the time-rescaled clock instead:
    bursty at short scales, following the profile at long ones."""
    weights = hourly_profile(src)
    peak_shape = float(weights.max()) if weights is not None else 2 * src.peak_to_trough / (src.peak_to_trough + 1)
    peak = src.rate * peak_shape * max(1.0, src.weekend_factor)
    if src.cv == 1.0:
        n = rng.poisson(peak * duration)
        cand = np.sort(rng.uniform(0.0, duration, size=n))
        return cand[rng.uniform(size=n) * peak < diurnal_rate(src, cand)]
    step = 60.0  # cumulative intensity on a one-minute grid, linear in between
    grid = np.arange(0.0, duration + step, step)
    cum = np.concatenate([[0.0], np.cumsum(diurnal_rate(src, grid[:-1] + step / 2) * step)])
    unit = renewal(1.0, src.cv, float(cum[-1]), rng)
    times = np.interp(unit, cum, grid)
    return times[times < duration]


ARRIVALS: dict[str, Callable[[SourceConfig, float, np.random.Generator], np.ndarray]] = {
    "poisson": poisson,
    "uniform": uniform,
    "gamma": gamma,
    "mmpp": mmpp,
    "diurnal": diurnal,
}
