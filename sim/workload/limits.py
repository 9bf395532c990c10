"""What a run will cost before it runs: requests, replicas, time-series rows, autoscaler ticks,
spot preemptions, tokens and memory, checked against `limits` (config) before anything large is
allocated or looped over. A run over a limit stops with one line naming the key that drives it,
so `workload.rate=1e9` is refused in a millisecond instead of asking for terabytes.

Plain Python: `check_config` runs with the config's validation, `check_workload` once the
workload is built (a trace's size and span are known only then).
"""

from __future__ import annotations

import math

import numpy as np

from sim.config.errors import ConfigError
from sim.config.schema import Config, LimitsConfig, WorkloadConfig, has_trace, horizon, is_closed, length_upper_bound

BYTES_PER_REQUEST = 420  # records, requests table and workload arrays (a 10M-request replay: ~4.2 GB)


def _over(key: str, value: object, what: str, amount: float, limit_key: str, limit: float, fix: str) -> ConfigError:
    return ConfigError(
        key, value, f"{what} {amount:,.0f}, over limits.{limit_key}={limit:,.0f}; {fix} or raise limits.{limit_key}"
    )


def autoscale_loop(cfg: Config) -> bool:
    """Whether the fleet runs its periodic autoscaler process (see sim.des.fleet)."""
    f = cfg.fleet
    return f.autoscaler.name != "fixed" or f.pricing.kind == "spot" or f.pricing.burst == "spot" or not f.start_warm


def most_replicas(cfg: Config) -> int:
    f = cfg.fleet
    return f.replicas if f.autoscaler.name == "fixed" else max(f.replicas, f.max_replicas)


def check_config(cfg: Config) -> None:
    """Estimates from the config alone (synthetic workloads; the fleet)."""
    lim, f, w = cfg.limits, cfg.fleet, cfg.workload
    key = "fleet.replicas" if f.autoscaler.name == "fixed" or f.replicas > lim.max_replicas else "fleet.max_replicas"
    n_rep = most_replicas(cfg)
    if n_rep > lim.max_replicas:
        raise _over(key, getattr(f, key.split(".")[1]), "replicas", n_rep, "max_replicas", lim.max_replicas, "lower it")
    sources = w.sources or {"": w}
    synthetic = {k: s for k, s in sources.items() if s.arrival != "trace"}
    if is_closed(w):
        _closed(cfg)
    elif synthetic and w.duration_s is not None:
        _synthetic_requests(cfg, synthetic)
        _horizon(cfg, w.duration_s, None)
    if synthetic and (w.duration_s is not None or is_closed(w)):
        for name, s in synthetic.items():
            prefix = f"workload.sources.{name}" if w.sources else "workload"
            for which, scale in (("prompt", w.prompt_scale), ("output", w.output_scale)):
                lc = getattr(s, f"{which}_tokens")
                top = length_upper_bound(lc) or (lc.p99 if lc.dist == "lognormal" else None) or lc.mean
                if top is not None and top * scale > lim.max_tokens:
                    k, v = (f"workload.{which}_scale", scale) if scale != 1 else (f"{prefix}.{which}_tokens", top)
                    what = f"{which} lengths of up to"
                    raise _over(k, v, what, top * scale, "max_tokens", lim.max_tokens, "lower it")
    n = len(sources)
    if n > lim.max_classes:
        raise _over("workload.sources", f"[{n}]", "classes", n, "max_classes", lim.max_classes, "merge some")


def _synthetic_requests(cfg: Config, synthetic: dict) -> None:
    """About how many requests synthetic sources send over the run, against the limits: their
    rates x duration, scaled; a diurnal weekend at weekend_factor x the rate at most."""
    lim, w = cfg.limits, cfg.workload
    horizon = _generation_horizon(w)
    base = sum(s.rate for s in synthetic.values()) * w.duration_s
    first = next(iter(synthetic))
    rate_key = f"workload.sources.{first}.rate" if w.sources else "workload.rate"
    checks = [
        (base, rate_key, synthetic[first].rate),
        (base * horizon / w.duration_s, "workload.rate_scale", w.rate_scale),
        (base * horizon / w.duration_s * w.load_scale, "workload.load_scale", w.load_scale),
    ]
    for name, s in synthetic.items():
        if s.arrival == "diurnal" and s.weekend_factor > 1:
            prefix = f"workload.sources.{name}" if w.sources else "workload"
            checks.append((base * s.weekend_factor, f"{prefix}.weekend_factor", s.weekend_factor))
    for est, k, v in checks:
        _requests(lim, est, k, v)


def _closed(cfg: Config) -> None:
    """Closed-loop users: each sends at least one request; `requests` bounds them all. How many a
    run of `duration_s` sends depends on the fleet's answers: a runtime guard counts them."""
    lim, w = cfg.limits, cfg.workload
    _requests(lim, w.users, "workload.users", w.users)  # type: ignore[arg-type]
    if w.requests is not None:
        _requests(lim, w.requests, "workload.requests", w.requests)
    if w.duration_s is not None:
        _horizon(cfg, w.duration_s, None)
    elif w.requests is not None:  # at least the think times of each user's requests in turn
        rounds = math.ceil(w.requests / w.users)  # type: ignore[operator]
        _horizon(cfg, w.ramp_s + rounds * w.think_time_s, ("workload.think_time_s", w.think_time_s))


def _generation_horizon(w: WorkloadConfig) -> float:
    h = horizon(w)
    return float(h) if h is not None else float(w.duration_s or 0.0)


def _requests(lim: LimitsConfig, n: float, key: str, value: object) -> None:
    if n > lim.max_requests:
        raise _over(key, value, "about this many requests:", n, "max_requests", lim.max_requests, "lower it")
    gib = n * BYTES_PER_REQUEST / 2**30
    if gib > lim.max_memory_gib:
        raise ConfigError(
            key,
            value,
            f"about {n:,.0f} requests need ~{gib:.1f} GiB, over limits.max_memory_gib={lim.max_memory_gib:g}; "
            "lower it or raise limits.max_memory_gib",
        )


def _horizon(cfg: Config, span_s: float, source: tuple[str, object] | None) -> None:
    """Time-driven work over the arrival span: time-series rows, autoscaler ticks, spot
    preemptions. `source`: the key and value that set the span (a trace, a rate scale), named
    when it is the span itself that is too long."""
    lim, f = cfg.limits, cfg.fleet
    rows = span_s / cfg.output.timeseries_interval_s
    if rows > lim.max_samples:
        key, value = source or ("output.timeseries_interval_s", cfg.output.timeseries_interval_s)
        raise _over(
            key,
            value,
            f"arrivals over {span_s:,.4g} s make time-series rows:",
            rows,
            "max_samples",
            lim.max_samples,
            "shorten the workload, raise output.timeseries_interval_s",
        )
    if autoscale_loop(cfg):
        ticks = span_s / f.autoscaler.interval_s
        if ticks > lim.max_ticks:
            key, value = source or ("fleet.autoscaler.interval_s", f.autoscaler.interval_s)
            raise _over(key, value, "autoscaler decisions:", ticks, "max_ticks", lim.max_ticks, "raise the interval")
    p = f.pricing
    if p.kind == "spot" or p.burst == "spot":
        n = most_replicas(cfg) * p.spot_preemptions_per_hour * span_s / 3600.0
        if n > lim.max_spot_preemptions:
            raise _over(
                "fleet.pricing.spot_preemptions_per_hour",
                p.spot_preemptions_per_hour,
                "expected spot preemptions:",
                n,
                "max_spot_preemptions",
                lim.max_spot_preemptions,
                "lower it",
            )


def trace_key(w: WorkloadConfig) -> tuple[str, object]:
    """The key that names a replayed trace (the first trace source)."""
    if w.sources:
        for name, s in w.sources.items():
            if s.arrival == "trace":
                return f"workload.sources.{name}.path", s.path
    return "workload.path", w.path


def check_loop(w: WorkloadConfig, lim: LimitsConfig, n: int, period_s: float) -> None:
    """Before a trace is looped to fill `duration_s`."""
    copies = math.ceil(float(w.duration_s or 0.0) / period_s) if period_s > 0 else 1
    _requests(lim, n * copies * w.load_scale, "workload.duration_s", w.duration_s)


def check_trace_size(w: WorkloadConfig, lim: LimitsConfig, n: int) -> None:
    """Before a trace is replicated by `load_scale`."""
    _requests(lim, n * w.load_scale, "workload.load_scale", w.load_scale)


def check_workload(cfg: Config, arrival_s: np.ndarray, prompt: np.ndarray, output: np.ndarray, classes: int) -> None:
    """Once the workload is built: its size, span, longest request and number of classes."""
    lim, w = cfg.limits, cfg.workload
    trace = has_trace(w)
    src = trace_key(w) if trace else ("workload.rate", w.rate)
    if w.rate_scale != 1:
        src = ("workload.rate_scale", w.rate_scale)
    _requests(lim, len(arrival_s), *(src if trace else ("workload.rate", w.rate)))
    span = float(arrival_s[-1]) if len(arrival_s) else 0.0
    if math.isfinite(span):
        _horizon(cfg, span, src if trace else None)
    for which, arr, scale in (("prompt", prompt, w.prompt_scale), ("output", output, w.output_scale)):
        top = int(arr.max()) if len(arr) else 0
        if top > lim.max_tokens:
            k, v = (f"workload.{which}_scale", scale) if scale != 1 else trace_key(w)
            raise _over(k, v, f"a request of {which} tokens", top, "max_tokens", lim.max_tokens, "lower it")
    if classes > lim.max_classes:
        k, v = ("workload.columns.label", w.columns.label) if trace and not w.sources else ("workload.sources", "...")
        where = f" in {trace_key(w)[1]}" if trace else ""
        raise ConfigError(
            k,
            v,
            f"{classes:,} distinct request classes{where}, over limits.max_classes={lim.max_classes:,}; "
            "group the labels or raise limits.max_classes",
        )
