"""The discrete-event simulation, the only SimPy user: engine replicas, prefix cache, fleet
lifecycle, routers, autoscalers, the API backend, records.
"""
