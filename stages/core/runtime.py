"""Where and how a stage computes: device, precision, threads, seeds, repeatability."""
from __future__ import annotations

import contextlib
import logging
import operator
import os
import random
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from stages import StageError
from stages.core.host import PINNED, cuda_driver, world_from_env
from stages.core.job import Job

log = logging.getLogger("stages")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: a CUDA GPU with bf16 units (compute capability 8.0 and up; torch
    emulates bf16 on older ones such as V100 and T4, slower than fp32), or a CPU with AVX512-BF16 or AMX (oneDNN
    runs bf16 convolutions there about twice as fast as fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    cpu = torch.cpu
    return any(getattr(cpu, f, lambda: False)() for f in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


# config value -> autocast dtype (None: full precision)
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# what ``auto`` computes in on a device type without native bf16: fp16 on a GPU (its tensor cores; training scales
# the loss so that small gradients survive fp16's range), fp32 elsewhere
WITHOUT_BF16 = {"cuda": "fp16"}


def resolve_precision(precision: str, device: torch.device) -> str:
    """The config's ``precision`` as computed on ``device``: ``auto`` becomes bf16 where it is native, else fp16 on a
    GPU and fp32 on a CPU."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else WITHOUT_BF16.get(device.type, "fp32")
    if precision not in PRECISIONS:
        raise StageError(f"precision: unknown value {precision!r} (expected auto, {', '.join(PRECISIONS)})")
    return precision


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    seed: int = 0
    num_workers: int = 0
    precision: str = "fp32"  # a key of PRECISIONS, resolved for the device
    deterministic: bool = False

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; None: full precision."""
        return PRECISIONS[self.precision]

    def autocast(self):
        """Autocast to the runtime's dtype on its device; full precision when it has none."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """The loss scaler of training: fp16 would flush small gradients to zero without it; it passes everything
        through unchanged in the other precisions."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def place(self, model: nn.Module) -> nn.Module:
        """The model on the device for training; channels_last on CUDA, where the convolutions run
        fastest in it (on the CPU it speeds some backbones' training and slows others')."""
        model.to(self.device)
        if self.cuda:
            model.to(memory_format=torch.channels_last)
        return model

    def inference_model(self, model: nn.Module) -> nn.Module:
        """An eval-mode model for inference only: BatchNorm folded into the convolutions, channels_last
        on both devices (oneDNN's CPU convolutions are faster in it too)."""
        model = fold_batchnorm(model.eval()).to(self.device)
        return model.to(memory_format=torch.channels_last)

    def loader_kwargs(self) -> dict:
        kw = {"num_workers": self.num_workers, "pin_memory": self.cuda}
        if self.num_workers > 0:
            kw["persistent_workers"] = False
        return kw


def cuda_backends(precision: str, deterministic: bool, autotune: bool) -> dict[str, bool]:
    """The ``torch.backends`` switches of a stage on CUDA, by dotted name. cuDNN's autotuner times the candidate
    convolutions of every new input shape: it pays where shapes repeat (training crops), and costs more than it saves
    where nearly every image brings a shape of its own (the per-image stages); what it picks may change from run to
    run, so ``deterministic`` turns it off and has cuDNN use deterministic convolutions. TF32 rounds fp32 matmuls and
    convolutions to a 10-bit mantissa on Ampere and later: off where fp32 is asked for, torch's defaults (convolutions
    only) otherwise."""
    return {"cudnn.benchmark": autotune and not deterministic, "cudnn.deterministic": deterministic,
            "cuda.matmul.allow_tf32": False, "cudnn.allow_tf32": precision != "fp32"}


def set_backends(switches: dict[str, bool]) -> None:
    for name, value in switches.items():
        module, attr = name.rsplit(".", 1)
        setattr(operator.attrgetter(module)(torch.backends), attr, value)


def make_deterministic(deterministic: bool) -> None:
    """Deterministic kernels where torch has them (``deterministic``), its defaults otherwise.

    cuBLAS sums in a fixed order only with a fixed workspace, which it reads from the environment when it starts:
    set here, before anything has run on the GPU. The few ops without a deterministic CUDA kernel (the backward of
    bilinear upsampling, the 2-D NLL loss: AffinityNet's and DeepLabv3+'s training) warn, once each, instead of
    stopping the run: their results are then close, not identical."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


def no_cuda_reason() -> str:
    """Why torch finds no CUDA device, as far as it can tell."""
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is built without CUDA"
    if not cuda_driver():
        return "this host has no CUDA driver (libcuda.so.1)"
    return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU: a driver too old for CUDA "
            f"{torch.version.cuda}, or a GPU that is busy, broken or hidden")


def resolve_device(device: str, environ=os.environ) -> torch.device:
    """The config's ``device`` on this machine: ``auto`` is CUDA where torch finds a GPU, the CPU otherwise. A job
    stages.core.launch gave GPUs on a host with the CUDA driver stops where torch finds none (unless ``device: cpu``):
    training it on the CPU instead would take hours where minutes were meant."""
    if device not in ("auto", "cpu", "cuda"):
        raise StageError(f"device: unknown value {device!r} (expected auto, cpu or cuda)")
    if device == "cpu" or torch.cuda.is_available():
        return torch.device("cpu" if device == "cpu" else "cuda")
    if environ.get(PINNED):
        raise StageError(f"device: {device}: this job was given GPU {environ[PINNED]} but {no_cuda_reason()}; "
                         "install a torch build for this host's driver, or set device: cpu")
    if device == "cuda":
        raise StageError("device: cuda was asked for but torch finds no CUDA device; set device: auto or cpu")
    return torch.device("cpu")


def describe(rt: Runtime, environ=os.environ) -> str:
    """The runtime in one line: device (the GPU's index and name), precision, repeatability."""
    gpu = int(environ.get("LOCAL_RANK", 0))  # under torchrun each process computes on its own (stages/core/distributed.py)
    device = f"cuda:{gpu} ({torch.cuda.get_device_name(gpu)})" if rt.cuda else rt.device.type
    return f"runtime: device {device}, precision {rt.precision}{', deterministic' if rt.deterministic else ''}"


def make_runtime(device: str = "auto", seed: int = 0, num_workers: int = 0, threads: int | None = None,
                 precision: str = "auto", deterministic: bool = False, autotune: bool = False) -> Runtime:
    """The runtime of a stage, logged as its first line; ``deterministic``: repeatable on the same GPU (see
    :func:`make_deterministic`); ``autotune``: its input shapes repeat (the training stages' crops), so that cuDNN may
    time its convolutions once per shape."""
    make_deterministic(deterministic)
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    if threads:
        torch.set_num_threads(threads)
    seed_everything(seed)
    if dev.type == "cuda":
        set_backends(cuda_backends(precision, deterministic, autotune))
    rt = Runtime(device=dev, seed=seed, num_workers=num_workers, precision=precision, deterministic=deterministic)
    log.info("%s", describe(rt))
    return rt


def job_runtime(job: Job, autotune: bool = False) -> Runtime:
    """Where and how ``job`` computes: its params' ``runtime`` (device, precision, seed, deterministic), its threads
    and its loader workers (resource ``workers``); ``autotune``: see :func:`make_runtime`. Under torchrun the job's
    processes share its threads (at least one each) and workers."""
    r, processes = job.params.runtime, world_from_env().size
    seed = r.get("seed", 0)  # inference depends on a seed only through its inputs: its runtime names none
    return make_runtime(r["device"], seed, job.resources.get("workers", 0) // processes,
                        max(1, job.threads // processes), r["precision"], r["deterministic"], autotune)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm2d into the Conv2d that alone feeds it, in place.

    The pairs come from an fx trace of the forward. A model fx cannot trace (a forward that
    branches on tensor shapes) is returned unchanged: folding only saves time.
    """
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception:  # fx raises TraceError, TypeError or RuntimeError depending on the construct
        return model
    modules = dict(model.named_modules())
    calls = [n for n in graph.nodes if n.op == "call_module"]
    # a module called more than once shares its weights between uses: folding would change the others
    uses = Counter(n.target for n in calls)
    for n in calls:
        bn, src = modules[n.target], n.args[0]
        # exactly BatchNorm2d: subclasses such as timm's BatchNormAct2d carry an activation
        if type(bn) is not nn.BatchNorm2d or not bn.track_running_stats or uses[n.target] != 1:
            continue
        if not (isinstance(src, torch.fx.Node) and src.op == "call_module" and type(modules[src.target]) is nn.Conv2d
                and len(src.users) == 1 and uses[src.target] == 1):
            continue
        model.set_submodule(src.target, fuse_conv_bn_eval(modules[src.target], bn))
        model.set_submodule(n.target, nn.Identity())
    return model


def rng_state(cuda: bool) -> dict:
    """This process's torch random streams (dropout draws from them): the CPU's and, on CUDA, every device's."""
    state = {"cpu": torch.get_rng_state()}
    if cuda:
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """The streams of :func:`rng_state` restored; the CUDA ones of the devices this process has."""
    torch.set_rng_state(state["cpu"])
    for device, cuda in zip(range(torch.cuda.device_count()), state.get("cuda", [])):
        torch.cuda.set_rng_state(cuda, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
