"""The command line shared by every stage: ``--cfg`` (the stage's config section as JSON),
``--runtime`` (device, precision, seed as JSON), ``--threads`` and ``--workers``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from stages import StageError
from stages.runtime import Runtime, make_runtime


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cfg", type=json.loads, default={}, help="this stage's config section, as JSON")
    p.add_argument("--runtime", type=json.loads, default={},
                   help='{"device": "auto|cpu|cuda", "precision": "auto|bf16|fp32", "seed": 0}')
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes of a training stage")
    return p


def named_path(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` arguments (a split and its file)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"expected SPLIT=PATH, got {text!r}")
    return name, Path(path)


def runtime(args) -> Runtime:
    r = args.runtime
    return make_runtime(r.get("device", "auto"), r.get("seed", 0), args.workers, args.threads,
                        r.get("precision", "auto"))


def main(run, description: str, add_arguments) -> None:
    """Parse arguments, set up logging, call ``run(args)``; a StageError exits 2 with one clear line."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    p = parser(description)
    add_arguments(p)
    args = p.parse_args()
    try:
        run(args)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
