"""Every launcher preset runs a real sweep and gives the basic launcher's results: Ray against a
head this module starts and stops (as a user's cluster would be, in another working directory),
and submitit's local executor (the SLURM path without SLURM). Joblib: tests/test_sweep.py."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import ROOT
from tests.test_sweep import _comparable

# one worker of a parallel run (pytest -n) runs every test that starts or looks for a Ray
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ray")]

GRID = ("fleet.replicas=1,2", "workload.duration_s=60", "output.plots=false", "output.requests=false")
HAS_RAY = importlib.util.find_spec("ray") is not None and importlib.util.find_spec("hydra_plugins.hydra_ray_launcher")
HAS_SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None


def _env(**extra: str) -> dict[str, str]:
    """This checkout first on the path: Ray's workers and submitit's jobs import `sim` from it."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "RAY_AUTH_MODE": "disabled", **extra}


def fleetsim(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sim", "-m", *args],
        check=False,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=env or _env(),
    )


def sweep_csv(cwd: Path) -> pd.DataFrame:
    """The sweep.csv of the one sweep run from `cwd` into the default (absolute) sweep directory."""
    (found,) = cwd.glob("outputs/multirun/*/*/sweep.csv")
    return pd.read_csv(found)


def test_ray_cluster_with_no_cluster_running_says_so_in_one_line(tmp_path):
    """Run before this module starts its head: `ray_cluster` with no Ray to connect to exits 2
    with one line, no traceback."""
    if not HAS_RAY:
        pytest.skip("ray or its Hydra launcher is not installed (pip install 'fleetsim[ray]')")
    from ray._private.services import find_gcs_addresses

    if find_gcs_addresses():
        pytest.skip("a Ray cluster is running on this machine")
    env = {k: v for k, v in _env().items() if k != "RAY_ADDRESS"}
    p = fleetsim("hydra/launcher=ray_cluster", *GRID, cwd=tmp_path, env=env)
    assert p.returncode == 2, p.stderr
    assert (
        p.stderr.startswith("fleetsim: error: hydra/launcher: cannot reach the cluster (")
        and "Traceback" not in p.stderr
    )


@pytest.fixture(scope="module")
def basic(tmp_path_factory) -> pd.DataFrame:
    cwd = tmp_path_factory.mktemp("basic")
    p = fleetsim(*GRID, cwd=cwd)
    assert p.returncode == 0, p.stderr
    return _comparable(sweep_csv(cwd))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head --block` on free ports in its own directory; stopped (SIGINT: it ends
    the processes it started, and only those) when the module's tests are done. Yields the
    address. Not `ray stop`, which would end every Ray on the machine."""
    if not HAS_RAY:
        pytest.skip("ray or its Hydra launcher is not installed (pip install 'fleetsim[ray]')")
    # Ray >= 2.5x turns on token authentication for `ray start` and looks for the token in
    # ~/.ray: a local test head goes without, and so do its clients (RAY_AUTH_MODE in _env)
    head_dir = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    port = _free_port()
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block", f"--port={port}"]
    cmd += ["--num-cpus=2", "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"]
    cmd += [f"--ray-client-server-port={_free_port()}", f"--temp-dir={head_dir / 'tmp'}"]
    log = (head_dir / "head.log").open("w")
    head = subprocess.Popen(cmd, cwd=head_dir, env=_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        _wait_for_head(head, address, head_dir / "head.log")
        yield address
    finally:
        os.killpg(head.pid, signal.SIGINT)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait()
        log.close()


def _wait_for_head(head: subprocess.Popen, address: str, log: Path, timeout_s: float = 120) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        assert head.poll() is None, f"ray start failed:\n{log.read_text()[-3000:]}"
        p = subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "status", f"--address={address}"],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
            env=_env(),
        )
        if p.returncode == 0 and "CPU" in p.stdout:
            return
        time.sleep(1)
    raise AssertionError(f"the Ray head did not come up in {timeout_s} s:\n{log.read_text()[-3000:]}")


def test_ray_cluster_preset_against_a_running_head(ray_head, basic, tmp_path):
    """Connecting to a running cluster (no object store size, which Ray refuses there), from a
    working directory other than the head's: the default sweep directory is absolute, so the
    workers write where the callback reads."""
    p = fleetsim("hydra/launcher=ray_cluster", *GRID, cwd=tmp_path, env=_env(RAY_ADDRESS=ray_head))
    assert p.returncode == 0, p.stderr
    assert "Connecting to existing Ray cluster" in p.stderr
    df = sweep_csv(tmp_path)
    assert len(df) == 2 and (df["status"] == "ok").all()
    pd.testing.assert_frame_equal(_comparable(df), basic, check_exact=True)


@pytest.mark.skipif(not HAS_SUBMITIT, reason="the submitit launcher is not installed (pip install 'fleetsim[slurm]')")
def test_submitit_local_executor_runs_the_slurm_path(basic, tmp_path):
    """The SLURM launcher's code path (submitit: pickled jobs, a folder of job files, the
    submitting process waiting on them) with the local executor instead of sbatch."""
    p = fleetsim("hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *GRID, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    df = sweep_csv(tmp_path)
    assert len(df) == 2 and (df["status"] == "ok").all()
    pd.testing.assert_frame_equal(_comparable(df), basic, check_exact=True)
    assert list(tmp_path.glob("outputs/multirun/*/*/.submitit/*"))  # submitit's job files, in the sweep dir


# ----------------------------------------------------------------------------- fleetsim-plan's back ends

PLAN = (
    "plan.gpus=[h100,l40s]",
    "plan.strategies=[fixed,autoscaled,api]",
    "plan.targets=[16]",
    "plan.max_replicas=4",
    "workload.duration_s=60",
    "workload.rate=10",
    "output.plots=false",
)


def fleetsim_plan(out: Path, *args: str) -> pd.DataFrame:
    p = subprocess.run(
        [sys.executable, "-c", "from sim.apps.cli import plan_main; plan_main()", *PLAN, *args, f"hydra.run.dir={out}"],
        check=False,
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=600,
        env=_env(),
    )
    assert p.returncode == 0, p.stderr
    # every cell as written, but the wall time of each run
    return pd.read_csv(out / "plan.csv", dtype=str, keep_default_na=False).drop(columns=["run_s"])


@pytest.fixture(scope="module")
def local_plan(tmp_path_factory) -> pd.DataFrame:
    return fleetsim_plan(tmp_path_factory.mktemp("plan") / "local", "plan.backend=local")


@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'fleetsim[ray]')")
def test_plan_on_a_ray_started_for_it_equals_local_processes(local_plan, tmp_path):
    got = fleetsim_plan(tmp_path / "ray", "plan.backend=ray", "plan.workers=2")
    assert len(got) > 4
    pd.testing.assert_frame_equal(got, local_plan, check_exact=True)


@pytest.mark.skipif(not HAS_SUBMITIT, reason="submitit is not installed (pip install 'fleetsim[slurm]')")
def test_plan_through_submitit_equals_local_processes(local_plan, tmp_path):
    got = fleetsim_plan(tmp_path / "submitit", "plan.backend=submitit", "plan.submitit.executor=local")
    pd.testing.assert_frame_equal(got, local_plan, check_exact=True)
    assert list((tmp_path / "submitit" / ".submitit").iterdir())  # the job files, with the plan's outputs
