"""python -m bench: every hot stage, project vs naive, in one run; writes bench/results.md."""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import torch

from bench.measure import measure_cases
from bench.report import results_md, table
from bench.stages import CASES, Settings
from stages.core.runtime import PRECISIONS
from stages.utils.io import write_text


def size(text: str) -> tuple[int, int]:
    """'500x375' -> (width, height)."""
    w, h = text.lower().split("x")
    return int(w), int(h)


def device_name(device: str, threads: int) -> str:
    if device == "cuda":
        return f"CUDA {torch.cuda.get_device_name()}"
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return f"CPU {model} ({os.cpu_count()} cores, {threads} threads)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--backbone", default="resnet50", help="timm model (random weights)")
    p.add_argument("--size", type=size, default=(500, 375), help="image width x height")
    p.add_argument("--n", type=int, default=2, help="images per stage (the CRF runs 4x as many, CAM generation at least one batch)")
    p.add_argument("--crop", type=int, default=512, help="training crop size")
    p.add_argument("--rw-size", type=size, default=(64, 48), help="map width x height of the dense-vs-banded random walk")
    p.add_argument("--threads", type=int, default=2, help="torch threads and CRF processes")
    p.add_argument("--precision", default="auto", choices=["auto", *PRECISIONS],
                   help="the project's autocast dtype, as the config key (auto: bf16 where the device computes it natively, "
                        "else fp16 on a GPU and fp32 on a CPU)")
    p.add_argument("--cases", nargs="*", default=list(CASES), help="a subset of: " + "; ".join(CASES))
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results.md")
    args = p.parse_args()
    s = Settings(args.device, args.backbone, args.size[1], args.size[0], args.n, args.crop, args.rw_size[1], args.rw_size[0],
                 args.threads, precision=args.precision)
    start = time.perf_counter()
    rows = measure_cases(s, args.cases)
    device = device_name(args.device, args.threads)
    write_text(args.out, results_md(rows, s, device, time.perf_counter() - start))
    print(table(rows))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
