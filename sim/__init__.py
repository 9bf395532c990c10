"""fleetsim: a discrete-event capacity simulator for LLM inference fleets.

import sim
result = sim.run(sim.compose(["fleet.replicas=2"]))
result.summary["slo_attainment"]
"""

from sim.config.errors import ConfigError, TraceError, UserError
from sim.config.schema import Config

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "Result", "TraceError", "UserError", "closed_workload", "compose", "run"]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def __getattr__(name: str):  # keep `import sim` light: SimPy, pandas and Hydra load on use
    if name == "run":
        from sim.apps.python_api import run

        return run
    if name == "Result":
        from sim.studies.run import Result

        return Result
    if name == "closed_workload":
        from sim.workload.closedloop import closed_workload

        return closed_workload
    if name == "compose":
        from sim.apps.python_api import compose

        return compose
    raise AttributeError(f"module 'sim' has no attribute {name!r}")
