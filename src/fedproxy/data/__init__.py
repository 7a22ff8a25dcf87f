"""Benchmarks: client partitions, test sets, server-side validation and calibration text."""

from .benchmark import BENCHMARKS, Benchmark, Example, load_benchmark

__all__ = ["BENCHMARKS", "Benchmark", "Example", "load_benchmark"]
