"""python -m bench.gpu_check (``make gpu-check``): the GPU paths of this project on the one GPU of this machine.

Prints the machine, then runs each check: the micro config end to end with ``device: cuda`` (through Snakemake where
it is installed, else stage by stage through the stages' command lines), ``python -m bench --device cuda``, a
two-process DDP training on the one GPU (NCCL where it allows two processes on one device, else gloo on CUDA
tensors) and a training killed and resumed against an uninterrupted one under ``deterministic: true``. One markdown
table of pass/fail and figures goes to ``--out`` and stdout. A check that fails is recorded with its one-line reason
and the others still run; the exit status is 1 if any failed, and 2, with one line, where there is no GPU. Sized to
take under ten minutes on one GPU (not yet timed on one).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import run_config

ROOT = Path(__file__).resolve().parents[1]
MICRO = run_config(["--configfile", ROOT / "config" / "micro.yaml"])  # the micro config as a run sees it
# the rules whose stages compute on the GPU: each log must say so
GPU_RULES = ("train_classifier", "make_cams", "train_affinity", "random_walk", "train_segmentation",
             "predict_segmentation")
# a stage that takes longer than this has hung (the whole check is meant to take minutes)
TIMEOUT = 600


class Failed(Exception):
    """A check's one-line reason for failing."""


@dataclass(frozen=True)
class Result:
    name: str
    passed: bool
    seconds: float
    figures: str  # what it measured, or why it failed


CHECKS: dict[str, Callable[[Path, Path], str]] = {}


def check(name: str):
    """Register ``fn(folder, out) -> figures`` as a check, ``folder`` its own, ``out`` the report's path (a check may
    write a fuller table beside it); it fails by raising (its message's first line is the reason)."""
    def register(fn):
        CHECKS[name] = fn
        return fn

    return register


def run(command: list, cwd: Path | None = None, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``command`` with this checkout's stages importable; a failure raises with the command's error line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    words = [str(c) for c in command]
    proc = subprocess.run(words, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode:
        # named by the stage (or module) it runs
        name = ([w for w in words if w.startswith(("stages.", "bench."))] or words[2:3])[-1]
        raise Failed(f"{name} exited {proc.returncode}: {error_line(proc.stderr)}")
    return proc


def error_line(text: str) -> str:
    """The line of a failed command's output that says why: its last error line, else its last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    return (errors or lines or ["no output"])[-1][:300]


def stage(job) -> list:
    """A job's command line as the rules run it: through stages.core.launch, which pins its ``resources.gpu``."""
    return [sys.executable, "-m", "stages.core.launch", job.rule, job.to_json()]


def micro_dataset(folder: Path) -> tuple[Path, Path]:
    """The micro config's generated dataset and its image labels under ``folder``: (labels, train split file)."""
    from stages.data.layout import DatasetLayout
    from stages.image_labels import build_index
    from stages.make_dataset import make_dataset
    from stages.utils.io import write_json

    data = {**MICRO["data"], "root": str(folder / "VOC2012")}
    make_dataset(Path(data["root"]), data["classes"], data["generate"], MICRO["seed"])
    index, _ = build_index(DatasetLayout.from_config(data, None, MICRO["run"]))
    write_json(folder / "image_labels.json", index.to_json())
    return folder / "image_labels.json", index.layout.split_file(data["train_split"])


def section(name: str, **overrides) -> dict:
    """A micro config section as its rule passes it (without the keys that choose the jobs)."""
    return {**{k: v for k, v in MICRO[name].items() if k not in ("variants", "variant", "upper_bound")}, **overrides}


def runtime(training: bool = True, **overrides) -> dict:
    """The runtime of a GPU stage as the rules pass it (a training stage's with the seed), on the GPU."""
    seed = {"seed": MICRO["seed"]} if training else {}
    return {"device": "cuda", "precision": MICRO["precision"], "deterministic": MICRO["deterministic"], **seed,
            **overrides}


def classifier_job(labels: Path, split: Path, out: Path, checkpoint: Path, threads: int = 4, **run):
    """The micro classifier's training job (train_classifier's inputs, outputs and params), on the GPU."""
    from stages.core.job import Job

    return Job.make("train_classifier", {"labels": labels, "split": split},
                    {"model": out / "model.pt", "meta": out / "model.json", "history": out / "history.csv",
                     "tensorboard": out / "tensorboard"},
                    {"cfg": section("classifier", epochs=EPOCHS), "runtime": runtime(**run), "checkpoint": checkpoint},
                    {"seed": MICRO["seed"], "variant": "puzzle"}, threads, {"gpu": 1, "workers": 0})


def micro_jobs(threads: int) -> list:
    """The jobs of the micro DAG's chain from the dataset to DeepLabv3+'s val scores, with the inputs, outputs and
    params of workflow/rules (without the CAM sweep, the upper bound and the report), for a machine without
    Snakemake."""
    from stages.core.job import Job

    data, r = MICRO["data"], "results/micro"
    s, labels = f"{r}/seed_0", f"{r}/labels/image_labels.json"
    split = {name: f"{r}/labels/splits/{name}.txt" for name in data["splits"]}
    train = {"labels": labels, "split": split[data["train_split"]]}
    gpu, cpu = {"gpu": 1, "workers": 0}, {}
    classifier, affinity = f"{s}/classifier/puzzle", f"{s}/affinity"
    segmentation, val = f"{s}/segmentation/pseudo_labels", f"{s}/predictions/pseudo_labels/{data['eval_split']}"

    def model(folder):
        return {"model": f"{folder}/model.pt", "meta": f"{folder}/model.json", "history": f"{folder}/history.csv",
                "tensorboard": f"{folder}/tensorboard"}

    def job(rule, inputs, outputs, params, resources=cpu, **wildcards):
        return Job.make(rule, inputs, outputs, params, {"seed": 0, **wildcards}, threads, resources)

    return [
        job("make_dataset", {}, {"root": data["root"]}, {"generate": data["generate"], "classes": data["classes"]}),
        job("image_labels", {}, {"labels": labels, "splits": list(split.values())},
            {"data": data, "data_root": None, "run": "micro"}),
        job("train_classifier", train, model(classifier),
            {"cfg": section("classifier"), "runtime": runtime(), "checkpoint": f"{s}/checkpoints/classifier.pt"}, gpu,
            variant="puzzle"),
        job("make_cams", {**train, "model": f"{classifier}/model.pt"}, {"cams": f"{s}/cams/puzzle"},
            {"cfg": section("cams"), "runtime": runtime(training=False)}, gpu, variant="puzzle"),
        job("affinity_labels", {**train, "cams": f"{s}/cams/puzzle"}, {"labels": f"{s}/affinity_labels"},
            {"cfg": section("affinity_labels")}),
        job("train_affinity", {**train, "affinity_labels": f"{s}/affinity_labels", "classifier": f"{classifier}/model.pt"},
            model(affinity), {"cfg": section("affinity"), "runtime": runtime(), "checkpoint": f"{s}/checkpoints/affinity.pt"},
            gpu),
        job("random_walk", {**train, "cams": f"{s}/cams/puzzle", "model": f"{affinity}/model.pt"}, {"rw": f"{s}/rw"},
            {"cfg": section("random_walk"), "runtime": runtime(training=False)}, gpu),
        job("pseudo_labels", {**train, "rw": f"{s}/rw"}, {"labels": f"{s}/pseudo_labels"}, {"cfg": section("pseudo_labels")}),
        job("train_segmentation", {**train, "masks": f"{s}/pseudo_labels", "classifier": f"{classifier}/model.pt"},
            model(segmentation), {"cfg": section("segmentation"), "runtime": runtime(),
                                  "checkpoint": f"{s}/checkpoints/segmentation.pt"}, gpu, masks="pseudo_labels"),
        job("predict_segmentation", {"labels": labels, "split": split[data["eval_split"]],
                                     "model": f"{segmentation}/model.pt"}, {"predictions": val},
            {"cfg": section("predict_segmentation"), "runtime": runtime(training=False)}, gpu,
            masks="pseudo_labels", split=data["eval_split"]),
        job("eval_segmentation", {"labels": labels, "split": split[data["eval_split"]], "pred": val},
            {"table": f"{s}/tables/segmentation_pseudo_labels_{data['eval_split']}.json"}, {"stage": "segmentation"},
            masks="pseudo_labels", split=data["eval_split"]),
    ]


@check("micro config end to end (device: cuda)")
def micro_dag(folder: Path, out: Path) -> str:
    work = folder / "micro"
    work.mkdir()
    (work / "config").symlink_to(ROOT / "config")
    logs = work / "results/micro/seed_0/logs"
    if importlib.util.find_spec("snakemake"):
        how = "through Snakemake"
        run([sys.executable, "-m", "snakemake", "--snakefile", ROOT / "Snakefile", "--directory", work,
             "--cores", "all", "--resources", "gpu=1", "--configfile", "config/micro.yaml", "--config", "device=cuda"],
            cwd=work)
    else:
        how = "stage by stage (no Snakemake here)"
        for job in micro_jobs(min(os.cpu_count() or 1, 8)):
            proc = run(stage(job), cwd=work)
            (logs / job.rule).mkdir(parents=True, exist_ok=True)
            (logs / job.rule / f"{job.rule}.log").write_text(proc.stderr)
    for rule in GPU_RULES:
        text = "".join(p.read_text() for p in (logs / rule).glob("*.log"))
        if "runtime: device cuda" not in text:
            raise Failed(f"{rule}'s log does not say it computed on the GPU")
    table = json.loads((work / "results/micro/seed_0/tables/segmentation_pseudo_labels_val.json").read_text())
    return f"{how}; every GPU stage logged device cuda; DeepLabv3+ val mIoU {table['miou']:.1f}"


@check("python -m bench --device cuda")
def bench_cuda(folder: Path, out: Path) -> str:
    from bench.__main__ import device_name
    from bench.measure import measure_cases
    from bench.report import results_md
    from bench.stages import CASES, Settings, precision
    from stages.utils.io import write_text

    s = Settings(device="cuda", threads=min(os.cpu_count() or 1, 8))  # VOC-sized images, ResNet-50
    start = time.perf_counter()
    rows = measure_cases(s, list(CASES))
    table = out.with_name(f"{out.stem}_bench.md")
    write_text(table, results_md(rows, s, device_name("cuda", s.threads), time.perf_counter() - start))
    off = [f"{r.name} ({r.deviation:.2g} > {r.tolerance:.2g})" for r in rows if r.equal is False]
    if off:
        raise Failed(f"beyond tolerance: {'; '.join(off)} (table: {table})")
    cams = next(r for r in rows if r.name.startswith("CAM generation"))
    return (f"{sum(r.equal is True for r in rows)} comparisons within tolerance ({precision(s)}); CAMs "
            f"{cams.rate:.1f} img/s, {cams.speedup:.1f}x the naive loop; table: {table}")


# the classifier of the DDP and resume checks: the micro config's, long enough to be killed between two epochs
EPOCHS = 6


def ddp_worker(folder: Path, backend: str) -> None:
    """One of the two processes (under torchrun) of the DDP check: the micro classifier, both processes on the one
    GPU, with ``backend``."""
    from stages.core.trainer import train
    from stages.data.index import load_index
    from stages.train_classifier import classifier_training

    os.environ["LOCAL_RANK"] = "0"  # both on cuda:0
    split = load_index(folder / "image_labels.json").layout.split_file(MICRO["data"]["train_split"])
    job = classifier_job(folder / "image_labels.json", split, folder / backend, folder / f"{backend}.ckpt", threads=2,
                         precision="fp32")
    train(job, classifier_training, backend=backend)


def history(path: Path) -> list[float]:
    """The total loss of each epoch in a history.csv."""
    rows = [line.split(",") for line in path.read_text().splitlines()]
    column = rows[0].index("total")
    return [float(row[column]) for row in rows[1:]]


@check("two-process DDP training on the one GPU")
def ddp(folder: Path, out: Path) -> str:
    labels, split = micro_dataset(folder)
    alone = folder / "alone" / "model.pt"
    run(stage(classifier_job(labels, split, alone.parent, folder / "alone.ckpt", threads=1, precision="fp32")))
    refused = ""
    for backend, timeout in (("nccl", 120), ("gloo", 300)):
        try:
            run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m",
                 "bench.gpu_check", "--ddp-worker", folder, backend], timeout=timeout)
        except (Failed, subprocess.TimeoutExpired) as e:
            refused = f"nccl refused two processes on one GPU ({str(e).splitlines()[0][:120]}); "
            continue
        two, one = history(folder / backend / "history.csv"), history(alone.parent / "history.csv")
        worst = max(abs(a - b) / abs(b) for a, b in zip(two, one))
        # SyncBatchNorm normalises over both halves of each batch: the processes compute what one process does
        if worst > 1e-3:
            raise Failed(f"{backend}: the loss curve is {worst:.2g} (relative) from one process's, expected < 1e-3")
        return f"{refused}{backend}: {EPOCHS} epochs, losses within {worst:.1g} (relative) of one process's"
    raise Failed(refused.rstrip("; "))


@check("killed and resumed = uninterrupted training (deterministic: true)")
def resume(folder: Path, out: Path) -> str:
    import torch

    from stages.utils.io import load_model

    labels, split = micro_dataset(folder)

    def command(name):
        return stage(classifier_job(labels, split, folder / name, folder / f"{name}.ckpt", deterministic=True))

    run(command("straight"))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([str(c) for c in command("killed")], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + TIMEOUT
    while not (folder / "killed.ckpt").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    if proc.poll() is not None:
        raise Failed(f"the training ended (exit {proc.returncode}) before it could be killed after an epoch")
    proc.send_signal(signal.SIGKILL)  # launch replaces itself with the stage: the stage itself is killed
    proc.wait()
    epoch = torch.load(folder / "killed.ckpt", weights_only=True)["epoch"]
    if "resumed from" not in run(command("killed")).stderr:
        raise Failed("the rerun did not resume from the checkpoint")
    straight, meta = load_model(folder / "straight" / "model.pt")
    resumed, _ = load_model(folder / "killed" / "model.pt")
    differ = [k for k in straight if not torch.equal(straight[k], resumed[k])]
    if differ:
        worst = max(float((straight[k].float() - resumed[k].float()).abs().max()) for k in differ)
        raise Failed(f"{len(differ)} of {len(straight)} tensors differ (max |difference| {worst:.2g}), "
                     f"e.g. {differ[0]}")
    return (f"killed after epoch {epoch} of {EPOCHS}, resumed: all {len(straight)} tensors bit-identical "
            f"({meta['precision']})")


def driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        out = []
    return out[0] if out else "unknown (no nvidia-smi)"


def machine() -> dict[str, str]:
    import torch

    p = torch.cuda.get_device_properties(0)
    return {"GPU": f"{p.name} ({p.total_memory / 2**30:.0f} GiB, compute capability {p.major}.{p.minor})",
            "driver": driver_version(),
            "torch": f"{torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}"}


def report(about: dict[str, str], results: list[Result]) -> str:
    lines = ["# GPU check (`make gpu-check`)", "", "| machine | |", "|---|---|",
             *(f"| {k} | {v} |" for k, v in about.items()), "", "| check | result | seconds | figures |",
             "|---|---|---|---|"]
    lines += [f"| {r.name} | {'pass' if r.passed else '**fail**'} | {r.seconds:.0f} | {r.figures.replace('|', '/')} |"
              for r in results]
    return "\n".join(lines) + "\n"


def run_check(name: str, fn: Callable[[Path, Path], str], out: Path) -> Result:
    print(f"{name} ...", flush=True)
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    start = time.perf_counter()
    try:
        figures, passed = fn(folder, out), True
    except Exception as e:  # a failed check is a row of the table, not the end of the others
        figures, passed = (str(e).strip().splitlines() or [type(e).__name__])[0], False
    if passed:
        shutil.rmtree(folder, ignore_errors=True)
    else:
        figures += f" (files: {folder})"
    return Result(name, passed, time.perf_counter() - start, figures)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "gpu_check.md", help="the markdown table")
    p.add_argument("--ddp-worker", nargs=2, metavar=("FOLDER", "BACKEND"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ddp_worker:
        ddp_worker(Path(args.ddp_worker[0]), args.ddp_worker[1])
        return
    import torch

    from stages.core.runtime import no_cuda_reason

    if not torch.cuda.is_available():
        print(f"gpu-check: no GPU: {no_cuda_reason()}", file=sys.stderr)
        sys.exit(2)
    about = machine()
    print("\n".join(f"{k}: {v}" for k, v in about.items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = [run_check(name, fn, args.out) for name, fn in CHECKS.items()]
    text = report(about, results)
    args.out.write_text(text)
    print(f"\n{text}\nwritten: {args.out}")
    sys.exit(0 if all(r.passed for r in results) else 1)


if __name__ == "__main__":
    main()
