"""Workloads: arrival times and token counts for every request, generated before simulating.

Plain NumPy: a workload is a set of equal-length arrays sorted by arrival time. Every random
stream comes from `stream(seed, name)`, so adding a new component never shifts another's draws.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from sim.config import LengthConfig, WorkloadConfig
from sim.errors import ConfigError

Z99 = 2.3263478740408408  # standard normal 99th percentile


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator for one named component of a run."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))


@dataclass(frozen=True)
class Workload:
    arrival_s: np.ndarray  # float64, non-decreasing, first arrival >= 0
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1

    def __len__(self) -> int:
        return len(self.arrival_s)


# ----------------------------------------------------------------------------- lengths


def lognormal_sigma(mean: float, p99: float) -> float:
    """Sigma of the lognormal with this mean and 99th percentile (the narrower solution)."""
    # ln(p99 / mean) = Z99 s - s^2 / 2
    disc = Z99 * Z99 - 2 * np.log(p99 / mean)
    if disc < 0:
        return float("nan")
    return float(Z99 - np.sqrt(disc))


def sample_lengths(lc: LengthConfig, n: int, rng: np.random.Generator, key: str) -> np.ndarray:
    """n token counts (int64 >= 1) drawn from a length model; rounding, never clipping above."""
    if lc.dist == "fixed":
        raw = np.full(n, float(lc.mean))  # type: ignore[arg-type]
    elif lc.dist == "uniform":
        raw = rng.integers(lc.low, lc.high + 1, size=n).astype(float)  # type: ignore[operator]
    elif lc.dist == "lognormal":
        sigma = lognormal_sigma(lc.mean, lc.p99)  # type: ignore[arg-type]
        if not np.isfinite(sigma):
            limit = float(np.exp(Z99 * Z99 / 2))
            raise ConfigError(
                f"{key}.p99", lc.p99, f"a lognormal with mean {lc.mean} has p99 at most {limit:.1f}x its mean"
            )
        mu = np.log(lc.mean) - sigma * sigma / 2  # type: ignore[arg-type]
        raw = rng.lognormal(mu, sigma, size=n)
    elif lc.dist == "empirical":
        table = _empirical_table(lc, key)
        raw = table[rng.integers(0, len(table), size=n)].astype(float)
    else:  # validated earlier
        raise ConfigError(f"{key}.dist", lc.dist, "unknown length distribution")
    return np.maximum(1, np.rint(raw * lc.scale)).astype(np.int64)


def _empirical_table(lc: LengthConfig, key: str) -> np.ndarray:
    import pandas as pd

    path = str(lc.path)
    try:
        df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    except Exception as exc:
        raise ConfigError(f"{key}.path", path, f"cannot read lengths table: {exc}") from None
    column = lc.column or df.columns[0]
    if column not in df.columns:
        raise ConfigError(f"{key}.column", column, f"not a column of {path}; columns: {list(df.columns)}")
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(values) | (values < 1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0]) + 2
        raise ConfigError(f"{key}.path", path, f"row {row}, column {column!r}: need a number >= 1")
    if not len(values):
        raise ConfigError(f"{key}.path", path, "the lengths table is empty")
    return values


# ----------------------------------------------------------------------------- arrivals


def poisson_arrivals(rate: float, duration: float, rng: np.random.Generator) -> np.ndarray:
    """Homogeneous Poisson process on [0, duration): N ~ Poisson(rate T), times iid uniform."""
    n = rng.poisson(rate * duration)
    return np.sort(rng.uniform(0.0, duration, size=n))


def build_workload(wc: WorkloadConfig, seed: int) -> Workload:
    if wc.arrival == "poisson":
        arrivals = poisson_arrivals(wc.rate, wc.duration_s, stream(seed, "arrivals"))
    elif wc.arrival == "uniform":
        arrivals = np.arange(int(np.floor(wc.rate * wc.duration_s))) / wc.rate
    else:
        raise ConfigError("workload.arrival", wc.arrival, "unknown arrival process")
    n = len(arrivals)
    if n == 0:
        raise ConfigError(
            "workload.rate", wc.rate, f"no request arrives within duration_s={wc.duration_s}; raise either"
        )
    prompts = sample_lengths(wc.prompt_tokens, n, stream(seed, "prompt_tokens"), "workload.prompt_tokens")
    outputs = sample_lengths(wc.output_tokens, n, stream(seed, "output_tokens"), "workload.output_tokens")
    return Workload(arrivals, prompts, outputs)
