"""The shipped roofline factors are the calibration's fit, and the fit stays close to the data."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from sim.config.schema import EngineConfig, load_option
from sim.studies.calibrate import KERNEL_OWNED, PARAMS, Fit, load_points


@pytest.fixture(scope="module")
def fit():
    f = Fit(load_points())
    return f, f.solve()


def test_shipped_defaults_are_the_fit(fit):
    """The kernel fit owns eta_kv and eta_flops; the others are refitted end to end to measured
    vLLM runs (scripts/fit_engine.py; tests/test_validate.py checks their errors)."""
    _, theta = fit
    shipped = load_option("engine", "vllm")
    defaults = {f.name for f in dataclasses.fields(EngineConfig) if f.default is not dataclasses.MISSING}
    for name, value in zip(PARAMS, theta, strict=True):
        assert name not in defaults, f"EngineConfig must not hold a default for {name}: the YAML is its only source"
        if name not in KERNEL_OWNED:
            continue
        assert getattr(shipped, name) == pytest.approx(value, abs=1e-3), f"rerun scripts/calibrate.py --write ({name})"


def test_factors_are_physical(fit):
    _, (step, eta_w, eta_kv, eta_f) = fit
    assert 0.2 <= step <= 2.5  # ms, the catalog's evidence range
    for eta in (eta_w, eta_kv, eta_f):
        assert 0.4 <= eta < 1.0, "an efficiency at its bound means the fit is degenerate"


def _errors(rows, **where):
    return np.array([abs(r.error) for r in rows if all(getattr(r, k) == v for k, v in where.items())])


def test_fit_errors_stay_bounded(fit):
    f, _ = fit
    assert _errors(f.slopes).max() < 0.10
    itl = _errors(f.rows, group="itl")
    assert itl.mean() < 0.12 and itl.max() < 0.20
    assert _errors(f.rows, stage="flops").max() < 0.10
    assert _errors(f.rows, stage="step", group="linear").max() < 0.20
