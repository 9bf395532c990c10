"""Every case of tests/bad_inputs/cases.yaml: exit code 2, one line naming the key or the file,
no traceback, within 10 s."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.conftest import ROOT

CASES = yaml.safe_load((ROOT / "tests" / "bad_inputs" / "cases.yaml").read_text())
ENTRY = {
    "fleetsim": "from sim.apps.cli import main; main()",
    "fleetsim-plan": "from sim.apps.cli import plan_main; plan_main()",
    "fleetsim-trace": "from sim.apps.trace_tool import entry; entry()",
    "fleetsim-validate": "from sim.studies.validate import entry; entry()",
}


def write_files(where: Path, files: dict) -> None:
    rng = np.random.default_rng(0)
    for name, spec in (files or {}).items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if "text" in spec:
            path.write_text(spec["text"])
        elif "latin1" in spec:
            path.write_bytes(spec["latin1"].encode("latin-1"))
        elif "binary" in spec:
            path.write_bytes(rng.integers(0, 256, spec["binary"], dtype=np.uint8).tobytes())
        elif "labels" in spec:
            n = spec["labels"]
            rows = "".join(f"{i * 0.01:.2f},100,10,tenant{i}\n" for i in range(n))
            path.write_text("arrival_s,prompt_tokens,output_tokens,label\n" + rows)


def run_case(case: dict, where: Path) -> subprocess.CompletedProcess:
    write_files(where, case.get("files"))
    args = [str(a) for a in case["args"]]
    if case["cmd"] in ("fleetsim", "fleetsim-plan") and not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={where / 'run'}")
    # traces/ paths are the checkout's example traces
    args = [str(ROOT / a) if a.startswith("traces/") else a for a in args]
    return subprocess.run(
        [sys.executable, "-c", ENTRY[case["cmd"]], *args],
        cwd=where,
        capture_output=True,
        text=True,
        timeout=180,  # a loaded machine (parallel tests) starts Python slowly
        check=False,
    )


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_bad_input_exits_2_with_one_line(tmp_path, case):
    import time

    t0 = time.perf_counter()
    p = run_case(case, tmp_path)
    took = time.perf_counter() - t0
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    assert p.returncode == 2, (p.returncode, p.stdout[-1000:], p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    for word in case["words"]:
        assert word in lines[0], (word, lines[0])
    assert took < 10, f"{case['id']} took {took:.1f} s"
