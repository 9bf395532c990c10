"""Workloads: arrival times, token counts and class labels of every request, built before simulating.

A workload is one source or a mix of named sources (tenants or request classes), each an
arrival process (`sim.workload.arrivals`) or a replayed trace (`sim.workload.traces`) with token lengths
(`sim.workload.lengths`). The merged stream then goes through the what-if transforms, in this order:
time window, rate scale (time compressed or stretched), loop to the horizon, truncation at
`duration_s`, load scale (thin or replicate, keeping the time shape), prompt/output scale.

Plain NumPy. Every random stream comes from `stream(seed, name)`, so adding a component never
shifts another's draws.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from sim.config.errors import ConfigError
from sim.config.schema import LimitsConfig, SourceConfig, WorkloadConfig, horizon, resolve_path
from sim.workload.arrivals import ARRIVALS, CLOSED, TRACE
from sim.workload.lengths import sample_lengths, sample_pairs
from sim.workload.traces import read_trace


def stream(seed: int, name: str) -> np.random.Generator:
    """An independent generator for one named component of a run."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(zlib.crc32(name.encode()),)))


@dataclass(frozen=True)
class Workload:
    arrival_s: np.ndarray  # float64, non-decreasing, from 0
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    classes: np.ndarray | None = None  # int32 index into class_names (None: one class)
    class_names: tuple[str, ...] = ("default",)
    class_slo: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)  # (ttft_s, tpot_s)
    hash_offsets: np.ndarray | None = None  # request i's prefix blocks: hash_ids[off[i]:off[i+1]]
    hash_ids: np.ndarray | None = None
    block_tokens: int = 0  # tokens per prefix block
    clock_start_s: float | None = None  # time of day at t=0, when known
    start_weekday: int | None = None
    shared_fraction: float | None = None  # shared-prefix model: share of prompt tokens in a group's prefix
    span_s: float | None = None  # the arrival window, when it is not the config's (a bootstrap resample)

    def __len__(self) -> int:
        return len(self.arrival_s)

    def class_of(self) -> np.ndarray:
        """Class name of every request."""
        names = np.asarray(self.class_names, dtype=object)
        return names[self.classes] if self.classes is not None else np.full(len(self), names[0], dtype=object)


@dataclass
class _Part:
    """Arrays under construction (one source, or the merged stream)."""

    t: np.ndarray
    prompt: np.ndarray
    output: np.ndarray
    labels: np.ndarray  # class name per request
    offsets: np.ndarray | None = None
    ids: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> _Part:
        offsets, ids = self.offsets, self.ids
        if offsets is not None:
            offsets, ids = _csr_take(offsets, ids, idx)  # type: ignore[arg-type]
        return _Part(self.t[idx], self.prompt[idx], self.output[idx], self.labels[idx], offsets, ids)


# ----------------------------------------------------------------------------- sources


def _source(src: SourceConfig, name: str, horizon: float | None, seed: int, key: str) -> tuple[_Part, dict]:
    info: dict = {}
    if src.arrival == TRACE:
        trace = read_trace(
            resolve_path(str(src.path)),
            src.format,
            columns=dataclasses.asdict(src.columns),
            time_unit=src.time_unit,
            keep_failed=src.keep_failed,
            sort=src.sort,
        )
        labels = trace.classes if trace.classes is not None else np.full(len(trace), name, dtype=object)
        part = _Part(
            trace.arrival_s,
            trace.prompt_tokens,
            trace.output_tokens,
            labels.astype(object),
            trace.hash_offsets,
            trace.hash_ids,
        )
        info = {
            "block_tokens": trace.block_tokens,
            "clock_start_s": trace.clock_start_s,
            "start_weekday": trace.start_weekday,
        }
        return part, info
    t = ARRIVALS[src.arrival](src, float(horizon), stream(seed, f"{name}/arrivals"))  # type: ignore[arg-type]
    n = len(t)
    if src.pairs.path or src.pairs.values:
        prompt, output = sample_pairs(src.pairs, n, stream(seed, f"{name}/pairs"), f"{key}.pairs")
    else:
        prompt = sample_lengths(src.prompt_tokens, n, stream(seed, f"{name}/prompt_tokens"), f"{key}.prompt_tokens")
        output = sample_lengths(src.output_tokens, n, stream(seed, f"{name}/output_tokens"), f"{key}.output_tokens")
    if src.arrival == "diurnal":
        info = {"clock_start_s": 0.0, "start_weekday": src.start_weekday}
    return _Part(t, prompt, output, np.full(n, name, dtype=object)), info


def _merge(parts: list[_Part]) -> _Part:
    if len(parts) == 1:
        return parts[0]
    t = np.concatenate([p.t for p in parts])
    order = np.argsort(t, kind="stable")  # ties keep source order
    with_hash = [p for p in parts if p.offsets is not None]
    offsets = ids = None
    if with_hash:  # sources without prefix information get empty block lists
        lengths = np.concatenate(
            [np.diff(p.offsets) if p.offsets is not None else np.zeros(len(p.t), np.int64) for p in parts]
        )
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        shift, chunks = 0, []
        for p in parts:  # keep each source's ids apart
            if p.ids is not None and len(p.ids):
                chunks.append(p.ids + shift)
                shift += int(p.ids.max()) + 1
        ids = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    merged = _Part(
        t,
        np.concatenate([p.prompt for p in parts]),
        np.concatenate([p.output for p in parts]),
        np.concatenate([p.labels for p in parts]),
        offsets,
        ids,
    )
    return merged.take(order)


# ----------------------------------------------------------------------------- transforms


def _empty(key: str, value: object, what: str) -> ConfigError:
    return ConfigError(key, value, f"no request is left after {what}")


def _transform(part: _Part, wc: WorkloadConfig, seed: int, limits: LimitsConfig | None = None) -> _Part:
    """The what-if transforms in order: window, rate scale, loop, horizon, load scale, lengths."""
    if wc.window_start_s is not None or wc.window_end_s is not None:
        part = _window(part, wc)
    if wc.rate_scale != 1.0:
        part.t = part.t / wc.rate_scale
    if wc.loop and wc.duration_s is not None and len(part.t):
        if limits is not None:
            from sim.workload.limits import check_loop

            check_loop(wc, limits, len(part.t), _loop_period(part, wc))
        part = _loop(part, wc)
    if wc.duration_s is not None:
        part = _until(part, wc.duration_s)
    if wc.load_scale != 1.0:
        if limits is not None:
            from sim.workload.limits import check_trace_size

            check_trace_size(wc, limits, len(part.t))
        part = _load_scale(part, wc.load_scale, stream(seed, "load_scale"))
        if not len(part.t):
            raise _empty("workload.load_scale", wc.load_scale, "thinning")
    return _scale_lengths(part, wc)


def _until(part: _Part, duration_s: float) -> _Part:
    """The requests that arrive before the horizon."""
    keep = np.flatnonzero(part.t < duration_s)
    if not len(keep):
        raise _empty("workload.duration_s", duration_s, "truncating at duration_s")
    return part.take(keep) if len(keep) < len(part.t) else part


def _scale_lengths(part: _Part, wc: WorkloadConfig) -> _Part:
    if wc.prompt_scale != 1.0:
        part.prompt = np.maximum(1, np.rint(part.prompt * wc.prompt_scale)).astype(np.int64)
    if wc.output_scale != 1.0:
        part.output = np.maximum(1, np.rint(part.output * wc.output_scale)).astype(np.int64)
    return part


def _window(part: _Part, wc: WorkloadConfig) -> _Part:
    """The requests of [window_start_s, window_end_s), their times from the window's start."""
    start = wc.window_start_s or 0.0
    end = wc.window_end_s if wc.window_end_s is not None else math.inf
    span = float(part.t[-1]) if len(part.t) else 0.0
    keep = np.flatnonzero((part.t >= start) & (part.t < end))
    if not len(keep):
        raise ConfigError(
            "workload.window_start_s",
            start,
            f"the window [{start:g}, {end:g}) s holds no request (arrivals span 0 to {span:.0f} s)",
        )
    part = part.take(keep)
    part.t = part.t - start
    return part


KV_BLOCK = 16  # vLLM's default KV block: only whole blocks of a prompt are cached and shared


def _prefix_blocks(tokens: int, block_tokens: int) -> tuple[int, int]:
    """(blocks, tokens per block) covering a `tokens`-token system prompt: whole 16-token KV
    blocks, grouped into ids of the multiple of 16 closest to `block_tokens` that divides the
    prompt's whole blocks (a prompt's last partial KV block is never shared)."""
    units = tokens // KV_BLOCK
    if units == 0:
        return 1, max(1, tokens)
    want = max(1.0, block_tokens / KV_BLOCK)
    divisors = {d for i in range(1, math.isqrt(units) + 1) if units % i == 0 for d in (i, units // i)}
    d = min(sorted(divisors), key=lambda x: abs(math.log(x / want)))
    return units // d, d * KV_BLOCK


def _shared_prefix(part: _Part, wc: WorkloadConfig, rng: np.random.Generator) -> tuple[_Part, int, float]:
    """Prefix ids for groups of requests that share a system prompt (workload.shared_prefix).

    A request joins a group with probability `share`, group k with probability ~ 1 / k^zipf;
    its prompt then begins with the group's `tokens`-token system prompt (the prompt's length is
    unchanged; a prompt no longer than the system prompt is all of it but its last token). Ids
    cover the prompt in blocks of about `block_tokens` (whole 16-token KV blocks,
    `_prefix_blocks`): the group's blocks, then blocks unique to the request, so a replica with
    prefix caching skips a group's prefix once it holds it.
    Returns the part, the block size and the share of prompt tokens in shared blocks."""
    sp = wc.shared_prefix
    n = len(part.t)
    n_blocks, bt = _prefix_blocks(sp.tokens, sp.block_tokens)
    weights = 1.0 / np.arange(1, sp.groups + 1, dtype=float) ** sp.zipf
    joined = rng.uniform(size=n) < sp.share
    group = rng.choice(sp.groups, size=n, p=weights / weights.sum())
    prompt = part.prompt
    shared = np.where(joined, np.minimum(n_blocks, (prompt - 1) // bt), 0)  # whole shared blocks
    unique = -((shared * bt - prompt) // bt)  # ceil((prompt - shared blocks) / bt)
    counts = shared + unique
    offsets = np.concatenate([[0], np.cumsum(counts)])
    req = np.repeat(np.arange(n), counts)
    k = np.arange(offsets[-1]) - offsets[req]
    in_group = k < shared[req]
    first_unique = sp.groups * n_blocks
    ids = np.where(in_group, group[req] * n_blocks + k, first_unique + np.cumsum(~in_group) - 1)
    part.offsets, part.ids = offsets, ids.astype(np.int64)
    return part, bt, float((shared * bt).sum() / prompt.sum())


def _loop_period(part: _Part, wc: WorkloadConfig) -> float:
    n = len(part.t)
    if wc.window_start_s is not None and wc.window_end_s is not None:
        return (wc.window_end_s - wc.window_start_s) / wc.rate_scale
    return float(part.t[-1]) * n / max(n - 1, 1) if n > 1 else 1.0  # the span plus one mean gap


def _loop(part: _Part, wc: WorkloadConfig) -> _Part:
    """Repeat the arrivals back to back until duration_s; each copy's prefix ids are distinct."""
    n = len(part.t)
    period = _loop_period(part, wc)
    copies = max(1, math.ceil(wc.duration_s / period))  # type: ignore[operator]
    idx = np.tile(np.arange(n), copies)
    looped = part.take(idx)
    copy = np.repeat(np.arange(copies), n)
    looped.t = looped.t + copy * period
    if looped.ids is not None and len(looped.ids):
        looped.ids = looped.ids + np.repeat(copy, np.diff(looped.offsets)) * (int(part.ids.max()) + 1)  # type: ignore[union-attr]
    return looped


def _load_scale(part: _Part, scale: float, rng: np.random.Generator) -> _Part:
    """Thin (scale < 1: keep each request with probability scale) or replicate (scale > 1:
    floor(scale) copies plus one more with probability frac). A copy arrives uniformly within the
    original's gap to the next arrival, so the time shape survives; copies get their own prefix
    ids (another population with the same structure)."""
    n = len(part.t)
    whole, frac = math.floor(scale), scale - math.floor(scale)
    counts = np.full(n, whole, dtype=np.int64) + (rng.uniform(size=n) < frac)
    idx = np.repeat(np.arange(n), counts)
    out = part.take(idx)
    if not len(idx):
        return out
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    copy = np.arange(len(idx)) - np.repeat(first, counts)  # 0 for the original
    gaps = np.diff(part.t, append=part.t[-1] + (part.t[-1] - part.t[0]) / max(n - 1, 1))
    jitter = np.where(copy > 0, rng.uniform(size=len(idx)) * gaps[idx], 0.0)
    out.t = out.t + jitter
    if out.ids is not None and len(out.ids):
        out.ids = out.ids + np.repeat(copy, np.diff(out.offsets)) * (int(part.ids.max()) + 1)  # type: ignore[union-attr]
    order = np.argsort(out.t, kind="stable")
    return out.take(order)


def _csr_take(offsets: np.ndarray, ids: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.diff(offsets)[idx]
    new = np.concatenate([[0], np.cumsum(lengths)])
    take = np.repeat(offsets[:-1][idx] - new[:-1], lengths) + np.arange(new[-1])
    return new, ids[take]


# ----------------------------------------------------------------------------- building


def build_workload(wc: WorkloadConfig, seed: int, limits: LimitsConfig | None = None) -> Workload:
    """The workload of `wc` under `seed`; with `limits`, a trace's replication by load_scale is
    checked before it is allocated."""
    if wc.arrival == CLOSED and not wc.sources:
        raise ConfigError(
            "workload.arrival",
            wc.arrival,
            "closed-loop users send as the fleet answers: their workload exists only in a run (sim.run)",
        )
    sources = wc.sources or {wc.name: wc}
    span = horizon(wc)
    parts, infos = [], []
    for name, src in sources.items():
        key = f"workload.sources.{name}" if wc.sources else "workload"
        part, info = _source(src, name, span, seed, key)
        parts.append(part)
        infos.append(info)
    part = _transform(_merge(parts), wc, seed, limits)
    if not len(part.t):
        raise _empty(
            "workload.rate", wc.rate, f"generating {wc.duration_s} s of arrivals; raise the rate or the duration"
        )
    info = infos[0] if len(infos) == 1 else {"block_tokens": max(i.get("block_tokens", 0) for i in infos)}
    shared_fraction = None
    if wc.shared_prefix.groups:
        if part.offsets is not None:
            raise ConfigError(
                "workload.shared_prefix.groups",
                wc.shared_prefix.groups,
                "the trace carries its own prefix ids (hash_ids): a shared-prefix model would replace them",
            )
        part, info["block_tokens"], shared_fraction = _shared_prefix(part, wc, stream(seed, "shared_prefix"))
    names, codes = np.unique(part.labels.astype(str), return_inverse=True)
    present = set(names.tolist())
    order = [n for n in sources if n in present] + [n for n in names.tolist() if n not in sources]
    remap = {n: i for i, n in enumerate(order)}
    classes = np.array([remap[n] for n in names], dtype=np.int32)[codes]
    class_slo = {
        n: (src.slo_ttft_s, src.slo_tpot_s)
        for n, src in sources.items()
        if src.slo_ttft_s is not None or src.slo_tpot_s is not None
    }
    return Workload(
        arrival_s=part.t,
        prompt_tokens=part.prompt,
        output_tokens=part.output,
        classes=classes if len(order) > 1 else None,
        class_names=tuple(order),
        class_slo=class_slo,
        hash_offsets=part.offsets,
        hash_ids=part.ids,
        block_tokens=int(info.get("block_tokens") or 0),
        clock_start_s=info.get("clock_start_s") if not wc.window_start_s and wc.rate_scale == 1 else None,
        start_weekday=info.get("start_weekday") if not wc.window_start_s and wc.rate_scale == 1 else None,
        shared_fraction=shared_fraction,
    )


def block_bootstrap(wl: Workload, span_s: float, block_s: float, rng: np.random.Generator) -> Workload | None:
    """A resample of a replayed trace for one replication: [0, span_s) cut into K equal blocks of
    about `block_s` seconds, K blocks drawn with replacement and laid end to end, each request
    keeping its offset within its block, its lengths and class (a block drawn again gets prefix
    ids of its own, as a loop's copy does). Traffic within a block keeps its burst structure;
    which busy and quiet stretches the run sees varies, which is what a fixed trace cannot show.
    None when the trace spans fewer than two blocks."""
    k = round(span_s / block_s)
    if k < 2 or not len(wl):
        return None
    width = span_s / k
    block = np.minimum((wl.arrival_s // width).astype(np.int64), k - 1)
    starts = np.searchsorted(block, np.arange(k + 1))  # arrivals are sorted, so blocks are runs
    drawn = rng.integers(0, k, size=k)
    idx = np.concatenate([np.arange(starts[b], starts[b + 1]) for b in drawn])
    if not len(idx):
        return None
    slot = np.repeat(np.arange(k), starts[drawn + 1] - starts[drawn])
    t = wl.arrival_s[idx] - block[idx] * width + slot * width
    offsets, ids = (None, None)
    if wl.hash_offsets is not None:
        offsets, ids = _csr_take(wl.hash_offsets, wl.hash_ids, idx)  # type: ignore[arg-type]
        # a block drawn again is another population with the same structure, as a loop's copy is:
        # its prefix ids are shifted, so repeats do not hit a cache the trace never would
        occurrence = np.zeros(k, dtype=np.int64)
        seen: dict[int, int] = {}
        for i, b in enumerate(drawn.tolist()):
            occurrence[i] = seen.get(b, 0)
            seen[b] = occurrence[i] + 1
        per_request = np.repeat(occurrence, starts[drawn + 1] - starts[drawn])
        if len(ids) and per_request.any():
            ids = ids + np.repeat(per_request, np.diff(offsets)) * (int(wl.hash_ids.max()) + 1)  # type: ignore[union-attr]
    return dataclasses.replace(
        wl,
        arrival_s=t,
        prompt_tokens=wl.prompt_tokens[idx],
        output_tokens=wl.output_tokens[idx],
        classes=wl.classes[idx] if wl.classes is not None else None,
        hash_offsets=offsets,
        hash_ids=ids,
        span_s=span_s,
    )
