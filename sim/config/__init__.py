"""Configuration as data: the scenario schema (dataclasses), the closed sets of names, errors.
Imports nothing of the domain.
"""
