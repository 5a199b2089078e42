"""Benchmarks of idis, each measured beside its baseline in the same run (see README.md here).

They are programs (``python -m loadtests.<name>``), not tests: machines are shared and absolute
times drift, so every figure is reported as a ratio to a baseline measured minutes apart on the
same cores.
"""
