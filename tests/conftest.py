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
