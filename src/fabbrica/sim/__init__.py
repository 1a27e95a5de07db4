"""Discrete-event replay of GPU-cluster traces through the production placement core.

`trace` reads a trace, `federation` sizes or loads the factories it runs on, `engine`
replays it under one policy, `metrics` sums a run up, `plan` searches for the smallest
federation that meets a wait-time target.
"""
