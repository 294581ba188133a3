"""Throughput benchmark: each hot stage of the pipeline against a naive reference-style version.

``python -m bench --help``; the results go to ``bench/results.md``.
"""
