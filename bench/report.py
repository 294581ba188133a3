"""bench/results.md: the table of rates, memory and ratios, the targets, and the VOC projection."""
from __future__ import annotations

from dataclasses import dataclass

from bench.stages import CASES, EMBEDDED_MODELS, Settings, embedded_config, precision

# ratio targets on the CPU: case -> (minimum speed-up, maximum memory ratio or None)
TARGETS = {
    "dense CRF (10 iterations)": (1.6, None),
    "random walk": (5.0, 0.1),
    "CAM generation (4 scales x flip)": (1.5, None),
}

# the paper's VOC schedule: (stage, images, case whose project rate it uses, note)
TRAIN_AUG, VAL = 10582, 1449
SCHEDULE = [
    ("classifier (15 epochs, puzzle)", 15 * TRAIN_AUG, "classifier training step (puzzle)", ""),
    ("CAMs (4 scales x flip)", TRAIN_AUG, "CAM generation (4 scales x flip)", ""),
    ("affinity labels (2 CRFs per image)", 2 * TRAIN_AUG, "dense CRF (10 iterations)", ""),
    ("AffinityNet (3 epochs)", 3 * TRAIN_AUG, "AffinityNet training step", ""),
    ("random walk", TRAIN_AUG, "random walk (VOC stride-4 size)", "the walk only; AffinityNet's boundary forward not included"),
    ("pseudo labels (1 CRF per image)", TRAIN_AUG, "dense CRF (10 iterations)", ""),
    ("DeepLabv3+ (50 epochs)", 50 * TRAIN_AUG, "DeepLabv3+ training step", ""),
    ("val inference (3 scales x flip)", VAL, "DeepLabv3+ multi-scale inference (3 scales x flip)", ""),
    ("val CRF", VAL, "dense CRF (10 iterations)", "label CRF rate; the probability CRF over 21 classes costs more"),
]


@dataclass
class Row:
    name: str
    size: str
    images: int
    project: dict
    naive: dict | None
    deviation: float | None
    tolerance: float | None

    @property
    def rate(self) -> float:
        return self.images / self.project["seconds"]

    @property
    def naive_rate(self) -> float | None:
        return self.images / self.naive["seconds"] if self.naive else None

    @property
    def speedup(self) -> float | None:
        return self.naive["seconds"] / self.project["seconds"] if self.naive else None

    @property
    def memory_ratio(self) -> float | None:
        return self.project["peak_mb"] / max(self.naive["peak_mb"], 1e-9) if self.naive else None

    @property
    def equal(self) -> bool | None:
        return None if self.deviation is None else self.deviation <= self.tolerance


def fmt(x, spec=".2f", none="—") -> str:
    return none if x is None else format(x, spec)


def table(rows: list[Row]) -> str:
    lines = ["| stage | input | images | project img/s | naive img/s | speed-up | project peak MiB | naive peak MiB "
             "| memory ratio | deviation (tolerance) | same result |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        check = {None: "—", True: "yes", False: "**no**"}[r.equal]
        dev = f"{r.deviation:.2g} ({r.tolerance:.2g})" if r.deviation is not None else "—"
        lines.append(f"| {r.name} | {r.size} | {r.images} | {r.rate:.3g} | {fmt(r.naive_rate, '.3g')} | "
                     f"{fmt(r.speedup)}{'x' if r.speedup else ''} | {r.project['peak_mb']:.0f} | {fmt(r.naive and r.naive['peak_mb'], '.0f')} | "
                     f"{fmt(r.memory_ratio, '.3f')} | {dev} | {check} |")
    return "\n".join(lines)


def targets(rows: list[Row]) -> list[str]:
    by_name = {r.name: r for r in rows}
    out = []
    for name, (speedup, memory) in TARGETS.items():
        r = by_name.get(name)
        if r is None:
            continue
        ok = r.speedup >= speedup and (memory is None or r.memory_ratio <= memory) and r.equal
        want = f"speed-up >= {speedup}x" + (f", memory <= {memory:g} of the naive" if memory else "")
        got = f"{r.speedup:.2f}x" + (f", memory {r.memory_ratio:.3f}" if memory else "")
        out.append(f"- {name}: {want}, same result: {got}, {'equal' if r.equal else 'NOT equal'} -> **{'met' if ok else 'not met'}**")
    return out


def projection(rows: list[Row], settings: Settings, device: str) -> list[str]:
    by_name = {r.name: r for r in rows}
    lines = ["| stage | images processed | rate used (img/s) | from | hours |", "|---|---|---|---|---|"]
    total = 0.0
    for stage, images, case, note in SCHEDULE:
        r = by_name.get(case)
        if r is None:
            lines.append(f"| {stage} | {images} | — | not measured | — |")
            continue
        hours = images / r.rate / 3600
        total += hours
        lines.append(f"| {stage} | {images} | {r.rate:.3g} | {case}{'; ' + note if note else ''} | {hours:.1f} |")
    lines.append(f"| **total** | | | | **{total:.0f}** ({total / 24:.1f} days) |")
    return [f"Wall time of the paper's VOC schedule on this {device}, {settings.backbone}, from the project rates above "
            f"({'CPU rates' if settings.device == 'cpu' else 'CUDA rates'}; training at {settings.crop}x{settings.crop}, "
            "rates taken at the measured batch size):", "", *lines]


def embedded_projection(rows: list[Row], device: str) -> list[str]:
    """The embedded default's three trainings (``make run``) from its whole-step rates: epochs x full batches."""
    by_name, config = {r.name: r for r in rows}, embedded_config()
    train = config["data"]["generate"]["splits"][config["data"]["train_split"]]
    lines = ["| model | trainings | steps each | images processed | rate used (img/s) | seconds |", "|---|---|---|---|---|---|"]
    total = 0.0
    for model, spec in EMBEDDED_MODELS.items():
        r = by_name.get(f"embedded {model} training step")
        if r is None:
            continue
        cfg = config[spec.section]
        # DeepLabv3+ trains twice where the upper bound is on: on the pseudo labels and on the ground truth
        runs = 2 if spec.section == "segmentation" and cfg["upper_bound"] else 1
        steps = cfg["epochs"] * (train // min(cfg["batch_size"], train))
        images = runs * steps * cfg["batch_size"]
        total += images / r.rate
        lines.append(f"| {model} | {runs} | {steps} | {images} | {r.rate:.3g} | {images / r.rate:.0f} |")
    if total == 0:
        return []
    lines.append(f"| **total** | | | | | **{total:.0f}** |")
    return ["## Projection: the embedded default's training", "",
            f"Training time of config/config.yaml ({train} training images) on this {device}, one job at a time, from the "
            "embedded whole-step rates above (the rest of the pipeline not included):", "", *lines, ""]


def cam_throughput(rows: list[Row]) -> str | None:
    r = next((r for r in rows if r.name.startswith("CAM generation")), None)
    if r is None or not r.project.get("flops"):
        return None
    flops = r.project["flops"]
    return (f"CAM generation: {flops / r.images / 1e12:.2f} TFLOP per image (FlopCounterMode, all scales and flips); "
            f"achieved {flops / r.project['seconds'] / 1e12:.3f} TFLOP/s (project), "
            f"{flops / r.naive['seconds'] / 1e12:.3f} TFLOP/s (naive).")


def results_md(rows: list[Row], settings: Settings, device: str, seconds: float) -> str:
    notes = [f"- {name}: naive = {c.naive_note}; deviation = {c.deviation}" for name, c in CASES.items() if c.naive]
    cam = cam_throughput(rows)
    return "\n".join([
        "# Throughput", "",
        f"`python -m bench --device {settings.device} --backbone {settings.backbone} --size {settings.width}x{settings.height} "
        f"--n {settings.n} --crop {settings.crop} --rw-size {settings.rw_width}x{settings.rw_height} --threads {settings.threads} "
        f"--precision {settings.precision}` on {device}; backbone {settings.backbone} (random weights); the project in "
        f"{precision(settings)}, the naive versions in fp32; {seconds / 60:.1f} min.", "",
        table(rows), "",
        *( [cam, ""] if cam else [] ),
        "## Targets", "", *targets(rows), "",
        "## How it was measured", "",
        "- Each version of each stage runs once in its own fresh worker process on the same generated inputs "
        "(synthetic shape scenes); setup (model construction, inputs) is not timed.",
        "- images/s = images / wall seconds of that run. Peak memory: on the CPU the worker's high-water mark and the "
        "sampled resident sets of the worker and its pool children (their growth after the fork), data pages only "
        "(resident set less file-backed and shared pages), above the worker's before the run; on CUDA "
        "torch.cuda.max_memory_allocated.",
        f"- The project computes in {precision(settings)} (`precision: auto` picks bf16 where the device computes it "
        "natively: GPUs of compute capability 8.0 and up, CPUs with AVX512-BF16 or AMX; fp16 on older GPUs and fp32 on "
        "other CPUs), channels_last for inference (and for training on "
        "CUDA); the naive versions in fp32, contiguous. The other gains are batching and folded BatchNorm (CAMs), the banded walk and the process "
        "pool (CRF).",
        f"- The dense random walk builds the {settings.rw_width * settings.rw_height}^2 matrix of {settings.rw_width}x{settings.rw_height} maps; "
        "at VOC's stride-4 size (125x94, 11750^2 entries, 0.55 GB per fp32 copy and ~26 TFLOP for 8 squarings) it "
        "is not run; the project's banded walk runs at both sizes.",
        *notes, "",
        "## Projection: the full VOC pipeline", "", *projection(rows, settings, device), "",
        *embedded_projection(rows, device),
    ])
