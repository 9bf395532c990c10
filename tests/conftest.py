"""Shared helpers: compose configs the way the CLI does, and locate ../shared when present."""

from __future__ import annotations

from pathlib import Path

import pytest

import sim

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def cfg(*overrides: str) -> sim.Config:
    """A composed, type-checked config; plots off unless asked for."""
    return sim.compose(["output.plots=false", *overrides])


@pytest.fixture
def shared_dir() -> Path:
    if not (SHARED / "calibration" / "catalog.yaml").is_file():
        pytest.skip("../shared is not present")
    return SHARED


def assert_conserved(r) -> None:
    """Every request ends once (served by a GPU or the API, or rejected), some rejected and some
    served, each served one with its times, and the summary's output tokens those of the served."""
    df, s = r.requests, r.summary
    assert s["n_gpu"] + s["n_api"] + s["n_rejected"] == s["n_requests"] == len(df)
    assert s["n_rejected"] > 0 and s["n_gpu"] > 0
    served = df[df.route == "gpu"]
    assert served.finish_s.notna().all() and served.ttft_s.notna().all()
    assert s["output_tokens"] == served.output_tokens.sum()
