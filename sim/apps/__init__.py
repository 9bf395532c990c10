"""The command lines, the only Hydra users: fleetsim, fleetsim-plan, fleetsim-trace, the sweep
callback, config composition.
"""
