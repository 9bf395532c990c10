"""The closed sets of names a config may use, as Enums (`sim.config.bounds.Choice`: each member
compares, hashes and writes as its text, so code and YAML use the plain names). The packages that
implement them register one class or function per name under the same keys
(tests/test_architecture.py keeps the two in step), so a config can be checked without importing
the simulator."""

from sim.config.bounds import Choice


class Arrival(Choice):
    """How a source's requests arrive: a process (sim.workload.arrivals.ARRIVALS), a replayed
    trace (sim.workload.traces) or closed-loop users (sim.workload.closedloop)."""

    poisson = "poisson"
    uniform = "uniform"
    gamma = "gamma"
    mmpp = "mmpp"
    diurnal = "diurnal"
    trace = "trace"
    closed = "closed"


class PendingDist(Choice):  # sim.des.lifecycle: waiting for GPU capacity before a cold start (fleet.pending_gpu)
    none = "none"  # capacity on hand: the cold start begins at once
    exponential = "exponential"
    lognormal = "lognormal"


class TimeUnit(Choice):
    s = "s"
    ms = "ms"
    us = "us"


class LengthDist(Choice):
    fixed = "fixed"
    uniform = "uniform"
    lognormal = "lognormal"
    empirical = "empirical"


class ThinkDist(Choice):
    exponential = "exponential"
    fixed = "fixed"
    lognormal = "lognormal"


class WeightDtype(Choice):
    bf16 = "bf16"
    fp8 = "fp8"
    int4 = "int4"


class KvDtype(Choice):
    auto = "auto"
    bf16 = "bf16"
    fp8 = "fp8"


class Usage(Choice):
    api_server = "api_server"  # vllm serve
    offline = "offline"  # the LLM class


class Admission(Choice):
    first_chunk = "first_chunk"
    full_prompt = "full_prompt"


class SpecMethod(Choice):  # engine.speculative.method (sim.hardware.speculative)
    none = "none"
    draft = "draft"
    mtp = "mtp"


class Router(Choice):  # sim.des.router.ROUTERS
    least_outstanding = "least_outstanding"
    round_robin = "round_robin"
    power_of_two = "power_of_two"
    prefix_aware = "prefix_aware"


class Metric(Choice):
    concurrency = "concurrency"
    running = "running"
    kv = "kv"
    tokens_per_s = "tokens_per_s"


class DynamoMode(Choice):  # sim.des.autoscale.Dynamo
    throughput = "throughput"  # forecast the request rate, divide by one replica's capacity under the SLO
    load = "load"  # one replica up or down from KV-cache use and waiting requests


class LoadPredictor(Choice):  # the dynamo planner's forecast of the next interval
    constant = "constant"
    moving_average = "moving_average"
    linear = "linear"


class KedaSignal(Choice):  # sim.des.autoscale.Keda: the router signal KEDA scales on (llm-d)
    queue = "queue"  # requests waiting (router queue + engines' waiting queues)
    backlog_s = "backlog_s"  # prefill tokens queued / prefill tokens per second: seconds of work
    ttft = "ttft"  # predicted TTFT / slo.ttft_s


class PricingKind(Choice):
    on_demand = "on_demand"
    reserved = "reserved"
    spot = "spot"
    owned = "owned"


class Burst(Choice):
    on_demand = "on_demand"
    spot = "spot"


class GpuBilling(Choice):
    per_second = "per_second"
    per_hour = "per_hour"


class Overflow(Choice):  # sim.des.overflow.OVERFLOW
    never = "never"
    always = "always"
    ttft = "ttft"
    slo = "slo"
    queue = "queue"
    share = "share"


class ApiBilling(Choice):
    per_token = "per_token"
    per_second = "per_second"


class LongOutput(Choice):
    truncate = "truncate"
    refuse = "refuse"


class OnLimit(Choice):
    gpu = "gpu"
    backoff = "backoff"


TRACE = Arrival.trace.value  # arrivals replayed from a file (sim.workload.traces)
CLOSED = Arrival.closed.value  # users that wait for each answer before sending again
ARRIVAL_PROCESSES = ("poisson", "uniform", "gamma", "mmpp", "diurnal")  # sim.workload.arrivals.ARRIVALS
TRACE_FORMATS = ("azure", "burstgpt", "mooncake", "csv", "parquet", "sessions")  # sim.workload.traces.READERS
SESSIONS = "sessions"  # the trace format of multi-turn sessions (sim.workload.sessions)
TIME_UNITS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}  # a trace's time column, in seconds per unit
ROUTERS = Router.names()
AUTOSCALERS = ("fixed", "target", "ray", "schedule", "dynamo", "keda")  # sim.des.autoscale.AUTOSCALERS
AUTOSCALER_METRICS = Metric.names()
MEMORY_PROFILERS = ("v0.15", "v0.21", "v0.8", "v0.7", "v0.6")  # sim.hardware.kvcache.PROFILERS
OVERFLOW = Overflow.names()


class Escalation(Choice):  # how a cascade tier passes requests on (sim.studies.platform)
    share = "share"  # a fixed share of each tier's answers, drawn per request
    class_share = "class_share"  # a share per request class
    confidence = "confidence"  # a confidence drawn per request from a Beta distribution, under a threshold
