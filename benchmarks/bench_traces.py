#!/usr/bin/env python
"""Trace loading speed: one-million-row traces in each format, generated into a temporary folder.

python benchmarks/bench_traces.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sim.workload.traces import read_trace


def make(folder: Path, n: int) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    t = np.cumsum(rng.exponential(0.01, n))
    prompt, output = rng.integers(1, 5000, n), rng.integers(1, 800, n)
    paths = {}
    stamps = (pd.Timestamp("2024-05-10") + pd.to_timedelta(t, unit="s")).strftime("%Y-%m-%d %H:%M:%S.%f") + "+00:00"
    paths["azure"] = folder / "azure.csv"
    pd.DataFrame({"TIMESTAMP": stamps, "ContextTokens": prompt, "GeneratedTokens": output}).to_csv(
        paths["azure"], index=False
    )
    paths["burstgpt"] = folder / "burstgpt.csv"
    pd.DataFrame(
        {
            "Timestamp": np.round(t, 3),
            "Model": "ChatGPT",
            "Request tokens": prompt,
            "Response tokens": output,
            "Total tokens": prompt + output,
            "Log Type": "Conversation log",
        }
    ).to_csv(paths["burstgpt"], index=False)
    paths["mooncake"] = folder / "mooncake.jsonl"
    blocks = -(-prompt // 512)
    with open(paths["mooncake"], "w") as fh:
        start = 0
        for i in range(n):
            k = int(blocks[i])
            fh.write(
                json.dumps(
                    {
                        "timestamp": int(t[i] * 1000),
                        "input_length": int(prompt[i]),
                        "output_length": int(output[i]),
                        "hash_ids": list(range(start, start + k)),
                    }
                )
                + "\n"
            )
            start += k
    paths["csv"] = folder / "generic.csv"
    pd.DataFrame({"arrival_s": t, "prompt_tokens": prompt, "output_tokens": output}).to_csv(paths["csv"], index=False)
    paths["parquet"] = folder / "generic.parquet"
    pd.DataFrame({"arrival_s": t, "prompt_tokens": prompt, "output_tokens": output}).to_parquet(paths["parquet"])
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = make(Path(tmp), args.rows)
        print("| format | rows | file size (MB) | load time (s) |\n|---|---:|---:|---:|")
        for fmt, path in paths.items():
            best = min(_time(path, fmt) for _ in range(3))
            print(f"| {fmt} | {args.rows:,} | {path.stat().st_size / 2**20:.0f} | {best:.2f} |")


def _time(path: Path, fmt: str) -> float:
    t0 = time.perf_counter()
    read_trace(path, fmt)
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
