"""Progress bars on stderr (tqdm) for work that runs longer than a few seconds: a long single run
(simulated time), a sweep (jobs), a plan or a break-even study (simulations).

A bar appears only on a terminal and only once the work has run `DELAY_S` seconds, so short
runs, logs, CI and a SLURM job's output stay as they were. `FLEETSIM_PROGRESS=1` shows bars
whatever stderr is, `FLEETSIM_PROGRESS=0` never. A bar only reads the work's state: the
outputs are the same with or without it.
"""

from __future__ import annotations

import os
import sys

from tqdm import tqdm

DELAY_S = 3.0  # seconds of work before a bar appears


def wanted() -> bool:
    """Bars on: FLEETSIM_PROGRESS=1, or unset and stderr a terminal."""
    flag = os.environ.get("FLEETSIM_PROGRESS", "").strip()
    if flag in ("0", "1"):
        return flag == "1"
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def bar(total: float | None, desc: str, unit: str) -> tqdm:
    """A bar over `total` units (None: a count with a rate), disabled when not `wanted()`."""
    on = wanted()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not on,
        delay=0.0 if os.environ.get("FLEETSIM_PROGRESS") == "1" else DELAY_S,
        mininterval=0.5,
        leave=False,
        dynamic_ncols=True,
    )
