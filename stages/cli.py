"""The command line shared by every stage: ``--cfg`` (the stage's config section as JSON),
``--runtime`` (device, precision, deterministic, seed as JSON), ``--threads`` and ``--workers``; and, for the
stages that work on one split, ``--labels`` and ``--split-file``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from stages import StageError
from stages.data.index import DatasetIndex, load_index

if TYPE_CHECKING:
    from stages.runtime import Runtime


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--cfg", type=json.loads, default={}, help="this stage's config section, as JSON")
    p.add_argument("--runtime", type=json.loads, default={},
                   help='{"device": "auto|cpu|cuda", "precision": "auto|bf16|fp16|fp32", "deterministic": false, "seed": 0}')
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes of a training stage")
    return p


def add_split_arguments(p: argparse.ArgumentParser, split_help: str = "the ids this stage works on") -> None:
    p.add_argument("--labels", required=True, type=Path, help="image_labels.json")
    p.add_argument("--split-file", required=True, type=Path, help=split_help)
    p.add_argument("--shard", type=parse_shard, default=(1, 1),
                   help="K-of-N: only the K-th of N contiguous parts of the split (rule gather_shards joins them)")


def parse_shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("-of-")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise argparse.ArgumentTypeError(f"expected K-of-N with 1 <= K <= N, got {text!r}")
    return int(k), int(n)


def shard_ids(ids: list[str], shard: tuple[int, int]) -> list[str]:
    """The ``k``-th of ``n`` contiguous, near-equal parts of ``ids`` (1-based); together they are ``ids``, in order."""
    k, n = shard
    return ids[(k - 1) * len(ids) // n:k * len(ids) // n]


def split_index(args) -> tuple[DatasetIndex, list[str]]:
    """The image index of ``--labels`` and the ids of ``--split-file`` (of its ``--shard``), in the file's order."""
    index = load_index(args.labels)
    return index, shard_ids(index.ids(args.split_file), getattr(args, "shard", (1, 1)))


def named_path(text: str) -> tuple[str, Path]:
    """``NAME=PATH`` arguments (a split and its file)."""
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise ValueError(f"expected SPLIT=PATH, got {text!r}")
    return name, Path(path)


def seed_path(text: str) -> tuple[int, Path]:
    """``SEED=PATH`` arguments: a table of one seed."""
    seed, path = named_path(text)
    return int(seed), path


def runtime(args, autotune: bool = False) -> Runtime:
    """The stage's runtime; ``autotune``: its input shapes repeat (training crops), see
    :func:`stages.runtime.make_runtime`.

    ``--threads`` and ``--workers`` are the job's: under torchrun its processes share them (at least a thread each)."""
    # imported here: torch takes seconds to import, and the stages that count, convert or report never need it
    from stages.distributed import world_from_env
    from stages.runtime import make_runtime

    r, processes = args.runtime, world_from_env().size
    threads = args.threads and max(1, args.threads // processes)
    return make_runtime(r.get("device", "auto"), r.get("seed", 0), args.workers // processes, threads,
                        r.get("precision", "auto"), r.get("deterministic", False), autotune)


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
