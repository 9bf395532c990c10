"""Requests before any GPU sees them: arrival processes, length models, trace readers, what-if
transforms, closed-loop users, work limits.
"""
