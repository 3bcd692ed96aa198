"""Benchmark suite comparing backends and precisions on speed, memory and accuracy.

Built in the bench issue; this package is empty until then.
"""
