"""Token-length models: how many prompt and output tokens each request has.

Independent models per side (`fixed`, `uniform`, `lognormal` from mean and p99, `empirical`
from a table column or an inline sample) or joint (prompt, output) pairs resampled together
from a table or trace, so their correlation survives. Lengths are rounded to whole tokens and
at least 1; nothing is clipped from above (over-long requests are rejected by the engine with a
reason).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sim.config.errors import ConfigError, TraceError
from sim.config.schema import LengthConfig, PairsConfig, not_found, resolve_path

Z99 = 2.3263478740408408  # standard normal 99th percentile


def lognormal_sigma(mean: float, p99: float) -> float:
    """Sigma of the lognormal with this mean and 99th percentile (the narrower solution), NaN if
    none exists (p99 more than exp(Z99^2 / 2) = 15x the mean)."""
    disc = Z99 * Z99 - 2 * np.log(p99 / mean)
    return float(Z99 - np.sqrt(disc)) if disc >= 0 else float("nan")


def sample_lengths(lc: LengthConfig, n: int, rng: np.random.Generator, key: str) -> np.ndarray:
    """n token counts (int64 >= 1) from a length model."""
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
        table = np.asarray(lc.values, dtype=float) if lc.values else _column(lc.path, lc.column, f"{key}.path")  # type: ignore[arg-type]
        raw = table[rng.integers(0, len(table), size=n)]
    else:
        raise ConfigError(f"{key}.dist", lc.dist, "unknown length distribution")
    return np.maximum(1, np.rint(raw)).astype(np.int64)


def sample_pairs(pc: PairsConfig, n: int, rng: np.random.Generator, key: str) -> tuple[np.ndarray, np.ndarray]:
    """n (prompt, output) pairs drawn together from the table, trace or inline values."""
    if pc.values:
        table = np.asarray(pc.values, dtype=np.int64)
        prompts, outputs = table[:, 0], table[:, 1]
    else:
        prompts, outputs = load_pairs(pc, key)
    idx = rng.integers(0, len(prompts), size=n)
    return np.maximum(1, prompts[idx]), np.maximum(1, outputs[idx])


def load_pairs(pc: PairsConfig, key: str) -> tuple[np.ndarray, np.ndarray]:
    from sim.workload.traces import READERS, read_trace

    path = str(resolve_path(str(pc.path)))
    if pc.format in READERS and pc.format not in ("csv", "parquet"):
        trace = read_trace(path, pc.format)
        return trace.prompt_tokens, trace.output_tokens
    df = _frame(path, f"{key}.path")
    cols = list(df.columns)
    p_col = pc.prompt_column or next((c for c in ("num_prefill_tokens", "prompt_tokens") if c in cols), None)
    o_col = pc.output_column or next((c for c in ("num_decode_tokens", "output_tokens") if c in cols), None)
    for k, c in (("prompt_column", p_col), ("output_column", o_col)):
        if c is None or c not in cols:
            raise ConfigError(f"{key}.{k}", c, f"not a column of {path}; columns: {cols}")
    return _validated(df, p_col, path), _validated(df, o_col, path)  # type: ignore[arg-type]


def _frame(path: str, key: str) -> pd.DataFrame:
    real = str(resolve_path(path))
    try:
        return pd.read_parquet(real) if real.endswith(".parquet") else pd.read_csv(real)
    except FileNotFoundError:
        raise ConfigError(key, path, not_found(path)) from None
    except Exception as exc:
        raise ConfigError(key, path, f"cannot read lengths table: {str(exc).splitlines()[0]}") from None


def _column(path: str, column: str | None, key: str) -> np.ndarray:
    df = _frame(path, key)
    column = column or df.columns[0]
    if column not in df.columns:
        raise ConfigError(
            key.replace(".path", ".column"), column, f"not a column of {path}; columns: {list(df.columns)}"
        )
    return _validated(df, column, path).astype(float)


def _validated(df: pd.DataFrame, column: str, path: str) -> np.ndarray:
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(values) | (values < 1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise TraceError(path, f"need a token count >= 1, found {df[column].iloc[i]!r}", line=i + 2, column=column)
    if not len(values):
        raise TraceError(path, "the lengths table is empty")
    return np.rint(values).astype(np.int64)
