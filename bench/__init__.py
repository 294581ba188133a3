"""Throughput benchmark: each hot stage of the pipeline against a naive reference-style version.

``python -m bench --help``; the results go to ``bench/results.md``.
"""
import sys
from pathlib import Path

# bench reads every config through the workflow's config pass (workflow/rules/pipeline/config.py), as a run does
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "workflow" / "rules"))
