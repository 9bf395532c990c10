#!/usr/bin/env python
"""Compare the profiled KV-cache plan with every KV capacity vLLM logged at start-up.

python scripts/kv_profile.py [CALIBRATION_DIR]   # default: ../shared/calibration

Prints the markdown table docs/model.md quotes (logged and computed blocks, error, leave-one-out
error, the plan's terms per GPU) and the least-squares value of kvcache.NON_TORCH_GIB next to
the shipped one.
"""

from __future__ import annotations

import sys
from pathlib import Path

from sim.hardware import kvcache
from sim.studies import kvprofile

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    calibration = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "calibration"
    if not (calibration / "vllm_runs.yaml").is_file():
        sys.exit(f"kv_profile: {calibration}/vllm_runs.yaml not found")
    points = kvprofile.logged_points(calibration)
    print(kvprofile.table(points))
    errors = [abs(p.error()) for p in points]
    loo = [abs(e) for e in kvprofile.leave_one_out(points)]
    print(f"\nlargest error {max(errors):.1%}, largest leave-one-out error {max(loo):.1%}")
    print(f"NON_TORCH_GIB: fitted {kvprofile.fit(points):.3f}, shipped {kvcache.NON_TORCH_GIB}")
    print(f"DEVICE_NON_TORCH_GIB (from a vLLM 0.6.4 log, not fitted): {kvcache.DEVICE_NON_TORCH_GIB}")
    vision = kvprofile.run_points(calibration, scout_vision=True)[0]
    print(f"Llama 4 Scout with its vision tower loaded: {vision.plan().kv_blocks} blocks, {vision.error():+.1%}")


if __name__ == "__main__":
    main()
