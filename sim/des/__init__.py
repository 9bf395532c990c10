"""The discrete-event simulation, the only SimPy user: engine replicas, prefix cache, fleet
lifecycle, routers, overflow policies, autoscalers, the API backend; the checks a scenario passes
before it runs (preflight), the one entry the layers above call (simulate) and the plain data it
returns (records).
"""
