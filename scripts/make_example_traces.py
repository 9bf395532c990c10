#!/usr/bin/env python
"""Generate the small synthetic example traces in traces/, one per supported format.

They are made here from fleetsim's own arrival and length models with fixed seeds (rerunning the
script rewrites them byte for byte); none is a copy of a public trace. See traces/README.md.

    python scripts/make_example_traces.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sim.config.schema import SourceConfig
from sim.workload.arrivals import diurnal, gamma, mmpp

OUT = Path(__file__).resolve().parent.parent / "traces"


def lengths(rng: np.random.Generator, n: int, prompt_mean: float, output_mean: float, corr: float = 0.3):
    """Correlated lognormal prompt/output lengths (sigma 0.9 and 0.7)."""
    z1 = rng.standard_normal(n)
    z2 = corr * z1 + np.sqrt(1 - corr * corr) * rng.standard_normal(n)
    prompt = np.exp(np.log(prompt_mean) - 0.9**2 / 2 + 0.9 * z1)
    output = np.exp(np.log(output_mean) - 0.7**2 / 2 + 0.7 * z2)
    return np.maximum(1, np.rint(prompt)).astype(int), np.maximum(1, np.rint(output)).astype(int)


def azure(rng: np.random.Generator) -> None:
    """One weekday of diurnal chat traffic (peak mid-afternoon), Azure 2023 columns."""
    src = SourceConfig(arrival="diurnal", rate=0.25, peak_to_trough=4.0, peak_hour=15.0, cv=1.3)
    t = diurnal(src, 86_400.0, rng)
    prompt, output = lengths(rng, len(t), 1100, 220)
    start = pd.Timestamp("2024-03-12 00:00:00")  # a Tuesday
    stamps = (start + pd.to_timedelta(np.round(t * 1e7) * 100, unit="ns")).strftime("%Y-%m-%d %H:%M:%S.%f")
    stamps = [s + "0" for s in stamps]  # Azure 2023 prints 7 fractional digits
    pd.DataFrame({"TIMESTAMP": stamps, "ContextTokens": prompt, "GeneratedTokens": output}).to_csv(
        OUT / "synthetic_azure.csv", index=False
    )


def burstgpt(rng: np.random.Generator) -> None:
    """One hour of bursty API traffic for two models, 3% failed requests (0 response tokens)."""
    src = SourceConfig(arrival="mmpp", rate=1.5, burst_multiplier=6.0, burst_mean_s=20.0, calm_mean_s=160.0)
    t = mmpp(src, 3600.0, rng)
    n = len(t)
    prompt, output = lengths(rng, n, 600, 300)
    output[rng.uniform(size=n) < 0.03] = 0
    model = np.where(rng.uniform(size=n) < 0.7, "ChatGPT", "GPT-4")
    log_type = np.where(rng.uniform(size=n) < 0.8, "Conversation log", "API log")
    pd.DataFrame(
        {
            "Timestamp": np.round(t, 3),
            "Model": model,
            "Request tokens": prompt,
            "Response tokens": output,
            "Total tokens": prompt + output,
            "Log Type": log_type,
        }
    ).to_csv(OUT / "synthetic_burstgpt.csv", index=False)


def mooncake(rng: np.random.Generator) -> None:
    """Thirty minutes of multi-turn conversations sharing a system prompt: every request's blocks
    start with the 4-block system prompt, and each turn extends its conversation's context."""
    block = 512
    src = SourceConfig(arrival="gamma", rate=2.0, cv=1.5)
    t = gamma(src, 1800.0, rng)
    next_id = 4  # ids 0-3: the shared system prompt
    conversations: list[list[int]] = []
    rows = []
    for ts in t:
        if conversations and rng.uniform() < 0.6:  # a follow-up turn
            k = int(rng.integers(len(conversations)))
            context = conversations[k]
        else:
            context = [0, 1, 2, 3]
            conversations.append(context)
            k = len(conversations) - 1
        new_blocks = int(rng.integers(1, 4))
        context = context + list(range(next_id, next_id + new_blocks))
        next_id += new_blocks
        conversations[k] = context
        input_length = len(context) * block - int(rng.integers(0, block))
        rows.append(
            {
                "timestamp": round(ts * 1000),
                "input_length": input_length,
                "output_length": int(max(1, rng.lognormal(np.log(250), 0.6))),
                "hash_ids": context,
            }
        )
    with open(OUT / "synthetic_mooncake.jsonl", "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row) + "\n")


def generic(rng: np.random.Generator) -> None:
    """Two tenants in one table with fleetsim's own column names and a class column."""
    chat = gamma(SourceConfig(arrival="gamma", rate=3.0, cv=1.2), 1200.0, rng)
    batch = gamma(SourceConfig(arrival="gamma", rate=0.5, cv=3.0), 1200.0, rng)
    cp, co = lengths(rng, len(chat), 800, 200)
    bp, bo = lengths(rng, len(batch), 6000, 600)
    df = pd.DataFrame(
        {
            "arrival_s": np.round(np.concatenate([chat, batch]), 4),
            "prompt_tokens": np.concatenate([cp, bp]),
            "output_tokens": np.concatenate([co, bo]),
            "class": ["chat"] * len(chat) + ["batch"] * len(batch),
        }
    ).sort_values("arrival_s", kind="stable")
    df.to_csv(OUT / "synthetic_tenants.csv", index=False)


def sessions(rng: np.random.Generator) -> None:
    """20 minutes of multi-turn chats: sessions start as a Poisson process, 1-8 turns each, a
    turn's prompt is the previous prompt, its answer and a new message, with the user's think
    time before it. Only a session's first turn carries a timestamp (the replay sends later
    turns when the previous answer is back)."""
    starts = np.cumsum(rng.exponential(1 / 0.2, 400))
    starts = starts[starts < 1200.0]
    rows = []
    for k, t0 in enumerate(starts):
        turns = min(8, int(rng.geometric(0.3)))
        first, outputs = lengths(rng, 1, 600, 180)[0][0], lengths(rng, turns, 600, 180)[1]
        messages = lengths(rng, turns, 150, 1)[0]
        think = np.round(rng.exponential(20.0, turns), 1)
        prompt = int(first)
        for t in range(turns):
            if t:
                prompt += int(outputs[t - 1]) + int(messages[t])
            rows.append(
                (f"s{k:04d}", t + 1, f"{t0:.3f}" if t == 0 else "", prompt, int(outputs[t]), think[t] if t else "")
            )
    cols = ["session_id", "turn", "timestamp", "prompt_tokens", "output_tokens", "think_time_s"]
    pd.DataFrame(rows, columns=cols).to_csv(OUT / "synthetic_sessions.csv", index=False)


def main() -> None:
    OUT.mkdir(exist_ok=True)
    for seed, make in enumerate((azure, burstgpt, mooncake, generic, sessions)):
        make(np.random.default_rng(1000 + seed))
    for path in sorted(OUT.glob("synthetic_*")):
        print(f"{path.relative_to(OUT.parent)}  {path.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
