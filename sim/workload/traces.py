"""Trace readers: production request logs as arrival times and token counts.

Formats (`workload.format`):
- `azure`: Azure LLM inference traces, 2023 and 2024 (TIMESTAMP, ContextTokens, GeneratedTokens);
- `burstgpt`: BurstGPT (Timestamp, Model, Request tokens, Response tokens, Total tokens, Log Type);
  rows with 0 response tokens are failed requests, dropped unless `keep_failed`;
- `mooncake`: Mooncake JSONL (timestamp in ms, input_length, output_length, hash_ids of
  512-token prefix blocks, kept for prefix caching);
- `csv`, `parquet`: any table, with a column map (`arrival_s, prompt_tokens, output_tokens` by
  default; optionally a `label` column naming each request's class), arrival times in
  `time_unit` or as date-time strings;
- `sessions`: multi-turn sessions (session_id, turn, timestamp, prompt_tokens, output_tokens,
  optional think_time_s), CSV or Parquet. `read_sessions` gives them as sessions, which
  `sim.workload.sessions` replays in a closed loop (a turn is sent after the previous answer);
  as a flat `Trace` (READERS, for `fleetsim-trace` and `pairs`) each turn arrives at its own
  timestamp, or at the previous turn's time plus its think time when it has none.

Everything is vectorised pandas/NumPy. A malformed file stops with `TraceError` naming the file,
the line (text) or row (Parquet) and the column of the first problem.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config.errors import TraceError
from sim.config.names import TIME_UNITS
from sim.config.schema import not_found

log = logging.getLogger("sim.workload.traces")

MOONCAKE_BLOCK = 512  # tokens per hash_ids block


@dataclass
class Trace:
    path: str
    arrival_s: np.ndarray  # seconds from the first arrival, non-decreasing
    prompt_tokens: np.ndarray  # int64 >= 1
    output_tokens: np.ndarray  # int64 >= 1
    classes: np.ndarray | None = None  # a label per request, if the trace has one
    hash_offsets: np.ndarray | None = None  # request i's prefix blocks: ids[offsets[i]:offsets[i+1]]
    hash_ids: np.ndarray | None = None
    block_tokens: int = 0  # tokens per prefix block (0: no prefix information)
    clock_start_s: float | None = None  # time of day (s after midnight) of the first arrival
    start_weekday: int | None = None  # weekday of the first arrival (0 = Monday)
    dropped_failed: int = 0

    def __len__(self) -> int:
        return len(self.arrival_s)


@dataclass
class Where:
    """How to name a row in messages: text files count lines, Parquet counts rows."""

    path: str
    first_line: int | None  # line of data row 0 (CSV: 2, JSONL: 1); None for Parquet

    def error(self, i: int, problem: str, column: str | None = None) -> TraceError:
        if self.first_line is None:
            return TraceError(self.path, problem, row=i + 1, column=column)
        return TraceError(self.path, problem, line=i + self.first_line, column=column)


# ----------------------------------------------------------------------------- reading files


def _read_table(path: str, kind: str) -> tuple[pd.DataFrame, Where]:
    try:
        if kind == "parquet":
            return pd.read_parquet(path), Where(path, None)
        return pd.read_csv(path, skipinitialspace=True), Where(path, 2)
    except FileNotFoundError:
        raise TraceError(path, not_found(path)) from None
    except Exception as exc:  # parser errors: pandas names the line in its message
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TraceError(path, f"cannot read as {kind}: {first}") from None


def _require(df: pd.DataFrame, columns: list[str], where: Where) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TraceError(where.path, f"missing column(s) {missing}; found {list(df.columns)}", column=missing[0])
    if df.empty:
        raise TraceError(where.path, "the file holds no requests")


def _numbers(df: pd.DataFrame, column: str, where: Where) -> np.ndarray:
    """A numeric column; the first empty or non-numeric cell is an error."""
    raw = df[column]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        cell = raw.iloc[i]
        what = "empty value" if pd.isna(cell) else f"not a number: {str(cell)[:40]!r}"
        raise where.error(i, what, column)
    return values


MAX_TOKENS = 1_000_000_000  # no model has a context of a billion tokens: a larger count is a bad cell
MAX_SPAN_S = 1e9  # 31 years: a longer trace is a unit error (milliseconds read as seconds, ...)


def _tokens(df: pd.DataFrame, column: str, where: Where, *, minimum: int, what: str = "token count") -> np.ndarray:
    values = _numbers(df, column, where)
    bad = (values < minimum) | (values != np.floor(values)) | (values > MAX_TOKENS)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        need = "a whole number >= 1" if minimum == 1 else "a whole number >= 0"
        raise where.error(i, f"{what} {values[i]:g}: need {need}, at most {MAX_TOKENS:,}", column)
    return values.astype(np.int64)


def _datetimes(df: pd.DataFrame, column: str, where: Where) -> pd.Series:
    ts = pd.to_datetime(df[column], format="ISO8601", errors="coerce", utc=True)
    bad = ts.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise where.error(i, f"not a date-time: {str(df[column].iloc[i])[:40]!r}", column)
    return ts


def _ns(ts: pd.Series) -> np.ndarray:
    """Nanoseconds since the epoch, whatever resolution pandas parsed at."""
    return ts.dt.as_unit("ns").astype("int64").to_numpy()


def _seconds(ts: pd.Series) -> np.ndarray:
    ns = _ns(ts)
    return (ns - ns[0]) / 1e9


def _clock(ts: pd.Series) -> tuple[float, int]:
    first = ts.iloc[0]
    return first.hour * 3600 + first.minute * 60 + first.second + first.microsecond / 1e6, int(first.weekday())


# ----------------------------------------------------------------------------- formats


def read_azure(path: str, opts: dict) -> Trace:
    df, where = _read_table(path, "csv")
    _require(df, ["TIMESTAMP", "ContextTokens", "GeneratedTokens"], where)
    ts = _datetimes(df, "TIMESTAMP", where)
    order = _check_order(_ns(ts), where, "TIMESTAMP", opts)
    prompt = _tokens(df, "ContextTokens", where, minimum=1)
    output = _tokens(df, "GeneratedTokens", where, minimum=1)
    if order is not None:
        ts, prompt, output = ts.iloc[order].reset_index(drop=True), prompt[order], output[order]
    clock, weekday = _clock(ts)
    return Trace(path, _seconds(ts), prompt, output, clock_start_s=clock, start_weekday=weekday)


def read_burstgpt(path: str, opts: dict) -> Trace:
    df, where = _read_table(path, "csv")
    _require(df, ["Timestamp", "Request tokens", "Response tokens"], where)
    t = _numbers(df, "Timestamp", where)
    prompt = _tokens(df, "Request tokens", where, minimum=0)
    output = _tokens(df, "Response tokens", where, minimum=0)
    classes = _classes(df, opts, where)
    failed = output == 0
    dropped = 0
    if opts.get("keep_failed"):
        output = np.where(failed, 1, output)  # a failed request still had its prompt prefilled
    elif failed.any():
        keep = ~failed
        dropped = int(failed.sum())
        t, prompt, output = t[keep], prompt[keep], output[keep]
        classes = classes[keep] if classes is not None else None
        df = df.loc[keep]
    empty = prompt < 1
    if empty.any():
        i = int(np.flatnonzero(empty)[0])
        raise where.error(int(df.index[i]), "token count 0: need a whole number >= 1", "Request tokens")
    if not len(t):
        raise TraceError(path, "every request failed (0 response tokens); set workload.keep_failed=true to keep them")
    order = _check_order(t, Where(path, 2), "Timestamp", opts, index=df.index.to_numpy())
    if order is not None:
        t, prompt, output = t[order], prompt[order], output[order]
        classes = classes[order] if classes is not None else None
    return Trace(path, t - t[0], prompt, output, classes=classes, dropped_failed=dropped)


def read_mooncake(path: str, opts: dict) -> Trace:
    import pyarrow as pa
    import pyarrow.json as pj

    try:
        if Path(path).suffix in COMPRESSED:
            with _open_text(path) as fh:
                table = pj.read_json(pa.BufferReader(fh.read().encode()))
        else:
            table = pj.read_json(path)
    except FileNotFoundError:
        raise TraceError(path, not_found(path)) from None
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError):
        raise _bad_json_line(path) from None
    where = Where(path, 1)
    names = table.column_names
    df = table.select([c for c in ("timestamp", "input_length", "output_length") if c in names]).to_pandas()
    _require(df, ["timestamp", "input_length", "output_length"], where)
    t = _numbers(df, "timestamp", where) / 1000.0
    prompt = _tokens(df, "input_length", where, minimum=1)
    output = _tokens(df, "output_length", where, minimum=1)
    offsets = ids = None
    if "hash_ids" in names:
        col = table.column("hash_ids").combine_chunks()
        if not pa.types.is_list(col.type) or not pa.types.is_integer(col.type.value_type):
            raise TraceError(path, f"hash_ids must be lists of integer block ids (found {col.type})", column="hash_ids")
        if col.null_count:
            raise where.error(
                int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0]), "missing hash_ids", "hash_ids"
            )
        offsets = col.offsets.to_numpy().astype(np.int64)
        ids = col.values.to_numpy().astype(np.int64)
        offsets = offsets - offsets[0]
    order = _check_order(t, where, "timestamp", opts)
    if order is not None:
        t, prompt, output = t[order], prompt[order], output[order]
        if offsets is not None:
            offsets, ids = _reorder_csr(offsets, ids, order)
    return Trace(
        path,
        t - t[0],
        prompt,
        output,
        hash_offsets=offsets,
        hash_ids=ids,
        block_tokens=MOONCAKE_BLOCK if ids is not None else 0,
    )


def read_table(path: str, opts: dict) -> Trace:
    kind = "parquet" if opts.get("format") == "parquet" or str(path).endswith(".parquet") else "csv"
    df, where = _read_table(path, kind)
    cols = {"arrival_s": "arrival_s", "prompt_tokens": "prompt_tokens", "output_tokens": "output_tokens"}
    cols.update({k: v for k, v in (opts.get("columns") or {}).items() if k in cols and v})
    _require(df, list(cols.values()), where)
    tcol = cols["arrival_s"]
    raw = df[tcol]
    clock = weekday = None
    if pd.api.types.is_numeric_dtype(raw):
        t = _numbers(df, tcol, where) * TIME_UNITS[opts.get("time_unit", "s")]
    else:
        as_num = pd.to_numeric(raw, errors="coerce")
        if as_num.notna().all():
            t = as_num.to_numpy(float) * TIME_UNITS[opts.get("time_unit", "s")]
        else:  # date-time strings
            ts = _datetimes(df, tcol, where)
            t = _ns(ts) / 1e9
            clock, weekday = _clock(ts)
    prompt = _tokens(df, cols["prompt_tokens"], where, minimum=1)
    output = _tokens(df, cols["output_tokens"], where, minimum=1)
    classes = _classes(df, opts, where)
    order = _check_order(t, where, tcol, opts)
    if order is not None:
        t, prompt, output = t[order], prompt[order], output[order]
        classes = classes[order] if classes is not None else None
    return Trace(path, t - t[0], prompt, output, classes=classes, clock_start_s=clock, start_weekday=weekday)


# ----------------------------------------------------------------------------- sessions

SESSION_COLUMNS = ["session_id", "turn", "timestamp", "prompt_tokens", "output_tokens"]  # + think_time_s
SESSION_THINK = "think_time_s"  # optional column: the user's pause before the turn


@dataclass
class SessionTrace:
    """Multi-turn sessions. Session u's turns are rows offsets[u]:offsets[u+1] of the per-turn
    columns, in file order; sessions are in the order they start (their first turn's timestamp),
    ties in file order."""

    path: str
    session_id: np.ndarray  # per session: its id in the file, as text
    start_s: np.ndarray  # per session: when it starts, seconds from the earliest start
    offsets: np.ndarray
    turn: np.ndarray  # per turn: its number in the file
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray
    think_s: np.ndarray  # per turn: the think time before it (NaN: not given)
    at_s: np.ndarray  # per turn: its own timestamp (NaN: not given), on the start_s clock

    def __len__(self) -> int:
        return len(self.turn)

    def flat(self) -> Trace:
        """The turns as open-loop requests (`fleetsim-trace`, `pairs`): each at its own timestamp,
        or, without one, at the previous turn's time plus its think time (0 when not given)."""
        n = len(self.turn)
        last = np.where(~np.isnan(self.at_s), np.arange(n), 0)
        np.maximum.accumulate(last, out=last)  # the latest timestamped turn: each session's first has one
        pause = np.cumsum(np.nan_to_num(self.think_s))
        t = self.at_s[last] + pause - pause[last]
        order = np.argsort(t, kind="stable")
        t = t[order]
        return Trace(self.path, t - t[0], self.prompt_tokens[order], self.output_tokens[order])


def read_sessions(path: str | Path, **opts) -> SessionTrace:
    """Read a session trace (`workload.format=sessions`); `opts`: time_unit of numeric timestamps."""
    trace = _guarded(_read_sessions, path, opts)
    _check_span(str(path), float(trace.start_s.max()))
    return trace


def _read_sessions(path: str, opts: dict) -> SessionTrace:
    df, where = _read_table(path, "parquet" if str(path).endswith(".parquet") else "csv")
    _require(df, SESSION_COLUMNS, where)
    ids = _session_ids(df, where)
    turn = _tokens(df, "turn", where, minimum=0, what="turn number")
    prompt = _tokens(df, "prompt_tokens", where, minimum=1)
    output = _tokens(df, "output_tokens", where, minimum=1)
    at = _optional_times(df, "timestamp", where, TIME_UNITS[opts.get("time_unit", "s")])
    think = _think_times(df, where)
    codes, names = pd.factorize(ids)
    first = _check_turns(codes, turn, names, where)
    start = at[first]
    if np.isnan(start).any():
        i = int(first[np.isnan(start)].min())
        raise where.error(
            i, f"the first turn of session {names[codes[i]]!r} has no timestamp (when the session starts)", "timestamp"
        )
    by_start = np.argsort(start, kind="stable")
    rank = np.empty_like(by_start)
    rank[by_start] = np.arange(len(by_start))
    rows = np.argsort(rank[codes], kind="stable")  # grouped by session in start order, file order within
    counts = np.bincount(rank[codes], minlength=len(names))
    zero = float(start.min())
    return SessionTrace(
        path,
        np.asarray(names, dtype=object)[by_start],
        start[by_start] - zero,
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        turn[rows],
        prompt[rows],
        output[rows],
        think[rows],
        at[rows] - zero,
    )


def _session_ids(df: pd.DataFrame, where: Where) -> np.ndarray:
    raw = df["session_id"]
    empty = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
    if empty.any():
        raise where.error(int(np.flatnonzero(empty)[0]), "empty session id", "session_id")
    return raw.astype(str).to_numpy()


def _check_turns(codes: np.ndarray, turn: np.ndarray, names, where: Where) -> np.ndarray:
    """Within each session, turn numbers increase in file order (gaps allowed: a sample may miss
    turns). Returns each session's first row, by session code."""
    rows = np.argsort(codes, kind="stable")
    g, t = codes[rows], turn[rows]
    same = g[1:] == g[:-1]
    bad = np.flatnonzero(same & (t[1:] <= t[:-1]))
    if len(bad):
        j = int(bad[np.argmin(rows[bad + 1])])  # the first offending row in file order
        i, prev = int(rows[j + 1]), int(rows[j])
        at = f"row {prev + 1}" if where.first_line is None else f"line {prev + where.first_line}"
        name = names[codes[i]]
        what = "again" if t[j + 1] == t[j] else f"after its turn {t[j]}"
        raise where.error(
            i,
            f"turn {turn[i]} of session {name!r} {what} ({at}): a session's turns must increase in file order",
            "turn",
        )
    return rows[np.concatenate([[0], np.flatnonzero(~same) + 1])]


def _optional_times(df: pd.DataFrame, column: str, where: Where, unit: float) -> np.ndarray:
    """Times in seconds (numbers in `unit`, or date-time strings); NaN where a cell is empty."""
    raw = df[column]
    given = raw.notna().to_numpy()
    num = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    if np.isfinite(num[given]).all():
        return np.where(given, num * unit, np.nan)
    ts = pd.to_datetime(raw, format="ISO8601", errors="coerce", utc=True)
    bad = given & ts.isna().to_numpy()
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise where.error(i, f"not a number or a date-time: {str(raw.iloc[i])[:40]!r}", column)
    return (ts - ts[given].min()).dt.total_seconds().to_numpy(dtype=float)


def _think_times(df: pd.DataFrame, where: Where) -> np.ndarray:
    """The optional think-time column in seconds; NaN where it is absent or empty."""
    if SESSION_THINK not in df.columns:
        return np.full(len(df), np.nan)
    raw = df[SESSION_THINK]
    given = raw.notna().to_numpy()
    v = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    for bad, problem in (
        (given & ~np.isfinite(v), lambda i: f"not a number: {str(raw.iloc[i])[:40]!r}"),
        (given & (v < 0), lambda i: f"negative think time {v[i]:g} s: need >= 0"),
        (given & (v > MAX_SPAN_S), lambda i: f"think time {v[i]:g} s: at most {MAX_SPAN_S:g} s"),
    ):
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise where.error(i, problem(i), SESSION_THINK)
    return np.where(given, v, np.nan)


READERS: dict[str, Callable[[str, dict], Trace]] = {
    "azure": read_azure,
    "burstgpt": read_burstgpt,
    "mooncake": read_mooncake,
    "csv": read_table,
    "parquet": read_table,
    "sessions": lambda path, opts: _read_sessions(path, opts).flat(),
}


def read_trace(path: str | Path, fmt: str, **opts) -> Trace:
    """Read a trace; `opts`: columns, time_unit, keep_failed, sort (see SourceConfig)."""
    if fmt not in READERS:
        raise TraceError(str(path), f"unknown format {fmt!r}; known: {', '.join(READERS)}")
    trace = _guarded(READERS[fmt], path, {**opts, "format": fmt})
    _check_span(str(path), float(trace.arrival_s[-1]) if len(trace.arrival_s) else 0.0)
    return trace


def _guarded(reader: Callable[[str, dict], object], path: str | Path, opts: dict):
    """`reader(path, opts)`, with what the file system and decoding raise as TraceErrors."""
    if Path(path).is_dir():
        raise TraceError(str(path), "is a directory, not a trace file")
    try:
        return reader(str(path), opts)
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start]
        raise TraceError(str(path), f"not UTF-8 text (byte {byte:#04x} at offset {exc.start})") from None
    except (PermissionError, IsADirectoryError, OSError) as exc:
        if isinstance(exc, TraceError):
            raise
        raise TraceError(str(path), f"cannot read: {exc.strerror or exc}") from None


def _check_span(path: str, span: float) -> None:
    if span > MAX_SPAN_S:
        raise TraceError(
            path,
            f"arrival times span {span:.3g} s ({span / 3.156e7:,.0f} years): check the time unit "
            "(workload.time_unit, --time-unit) and the timestamps",
        )


# ----------------------------------------------------------------------------- helpers


def _classes(df: pd.DataFrame, opts: dict, where: Where) -> np.ndarray | None:
    column = (opts.get("columns") or {}).get("label")
    if column is None:
        return None
    _require(df, [column], where)
    labels = df[column]
    if labels.isna().any():
        raise where.error(int(np.flatnonzero(labels.isna().to_numpy())[0]), "empty class label", column)
    return labels.astype(str).to_numpy()


def _check_order(
    t: np.ndarray, where: Where, column: str, opts: dict, index: np.ndarray | None = None
) -> np.ndarray | None:
    """None if t is non-decreasing; a stable sorting order if `sort` allows it; else an error."""
    back = np.diff(t) < 0
    if not back.any():
        return None
    i = int(np.flatnonzero(back)[0]) + 1
    row = int(index[i]) if index is not None else i
    if not opts.get("sort"):
        raise where.error(row, "timestamp earlier than the previous row's; set workload.sort=true to sort", column)
    log.warning("%s: %d timestamps out of order (first at data row %d); sorted", where.path, int(back.sum()), row + 1)
    return np.argsort(t, kind="stable")


def _reorder_csr(offsets: np.ndarray, ids: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.diff(offsets)[order]
    starts = offsets[:-1][order]
    new_offsets = np.concatenate([[0], np.cumsum(lengths)])
    take = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    return new_offsets, ids[take]


def _bad_json_line(path: str) -> TraceError:
    with _open_text(path) as fh:
        for n, text in enumerate(fh, start=1):
            if not text.strip():
                return TraceError(path, "empty line", line=n)
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                return TraceError(path, f"not valid JSON ({exc.msg})", line=n)
            if not isinstance(obj, dict):
                return TraceError(path, "each line must be a JSON object", line=n)
            for key in ("timestamp", "input_length", "output_length"):
                if key in obj and not isinstance(obj[key], (int, float)):
                    return TraceError(path, f"not a number: {str(obj[key])[:40]!r}", line=n, column=key)
            ids = obj.get("hash_ids")
            if "hash_ids" in obj and not (isinstance(ids, list) and all(isinstance(x, int) for x in ids)):
                return TraceError(path, "hash_ids must be a list of integer block ids", line=n, column="hash_ids")
    return TraceError(path, "cannot read as JSON lines")


COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".xz": "lzma"}


def _open_text(path: str):
    """A text file, decompressed when its suffix says so."""
    kind = COMPRESSED.get(Path(path).suffix)
    if kind is None:
        return open(path, encoding="utf-8")
    import importlib

    return importlib.import_module(kind).open(path, "rt", encoding="utf-8")
