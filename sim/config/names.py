"""The closed sets of names a config may use. The packages that implement them register one
class or function per name under the same keys (tests/test_architecture.py keeps the two in
step), so a config can be checked without importing the simulator."""

ARRIVAL_PROCESSES = ("poisson", "uniform", "gamma", "mmpp", "diurnal")  # sim.workload.arrivals.ARRIVALS
TRACE = "trace"  # arrivals replayed from a file (sim.workload.traces)
CLOSED = "closed"  # users that wait for each answer before sending again (sim.workload.closedloop)
TRACE_FORMATS = ("azure", "burstgpt", "mooncake", "csv", "parquet")  # sim.workload.traces.READERS
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}  # a trace's time column, in seconds per unit
ROUTERS = ("least_outstanding", "round_robin", "power_of_two", "prefix_aware")  # sim.des.router.ROUTERS
AUTOSCALERS = ("fixed", "target", "ray", "schedule")  # sim.des.autoscale.AUTOSCALERS
AUTOSCALER_METRICS = ("concurrency", "running", "kv", "tokens_per_s")
MEMORY_PROFILERS = ("v0.15", "v0.21", "v0.8", "v0.7", "v0.6")  # sim.hardware.kvcache.PROFILERS
OVERFLOW = ("never", "always", "ttft", "slo", "queue", "share")  # sim.des.overflow.OVERFLOW
