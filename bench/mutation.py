"""python -m bench.mutation: the mutation score of the pure numerical code; writes bench/mutation.md.

mutmut (pinned below; `make mutation` installs it into the venv on demand) copies ``stages/`` into ``mutants/``,
rewrites each function of the modules in TARGETS as a trampoline over its mutants, runs the tests of TESTS once to
learn which tests call which function, then runs each mutant in a process forked from one that imported torch and the
test modules, with only the tests that call its function, fastest first, stopping at the first failure.

Two adjustments, both to how mutmut 3.8.1 is driven and neither to what it counts:

- mutmut leaves every decorated function unmutated. Four of the functions that matter most carry a decorator that a
  trampoline can keep: ``torch.no_grad()`` (the multi-scale CAM and logit inference) and ``functools.cache`` (the
  affinity displacements and IRN's path cells). Those are mutated. ``functools.cache`` is kept on each mutant and on
  the unmutated copy but not on the trampoline, whose cache, filled while the tests are mapped, would otherwise
  answer every forked mutant with the unmutated result.
- Each forked run records the test that failed first, so that the report names what kills each mutant.

A survivor is either killed by a test or explained in EQUIVALENT, matched by its function and its changed lines.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTMUT = "mutmut==3.8.1"
REPORT = ROOT / "bench" / "mutation.md"
# what the suite let survive before the tests written against it: (file, function, removed, added), with the test
# that kills each now read from this run
LEDGER = ROOT / "bench" / "mutation_survivors.json"

# module -> the mutant names mutated there (fnmatch patterns over mutmut's "<module>.x_<function>__mutmut_<n>")
TARGETS = {
    "stages/ops/puzzle.py": ["stages.ops.puzzle.*"],
    "stages/ops/affinity.py": ["stages.ops.affinity.*"],
    "stages/ops/random_walk.py": ["stages.ops.random_walk.*"],
    "stages/ops/cam.py": ["stages.ops.cam.*"],
    "stages/ops/crf.py": ["stages.ops.crf.*"],
    "stages/core/metrics.py": ["stages.core.metrics.*"],
    # the inference only: the rest of the module builds the network, which the model tests cover
    "stages/models/segmentation.py": ["stages.models.segmentation.x_multiscale_logits__mutmut_*"],
    "stages/data/fingerprint.py": ["stages.data.fingerprint.*"],
}

# the unit tests of those modules (the whole-DAG tests, marked slow, are left out: minutes per mutant)
TESTS = [
    "tests/test_puzzle.py",
    "tests/test_affinity_labels.py",
    "tests/test_train_affinity.py",
    "tests/test_ops_affinity.py",
    "tests/test_transforms.py",
    "tests/test_random_walk.py",
    "tests/test_make_cams.py",
    "tests/test_eval_cams.py",
    "tests/test_pseudo_labels.py",
    "tests/test_metrics.py",
    "tests/test_train_segmentation.py",
    "tests/test_ops_segmentation.py",
    "tests/test_fingerprint.py",
]

# Survivors no test can kill: the mutant computes what the original computes. Each: file, function, the removed and
# the added line (stripped, as the mutant's diff has them), and why.
CRF_RETURN = 'return np.array(d.inference(cfg["iterations"]), dtype=np.float32).reshape(n_labels, h, w)'
CONCAT = "scores = np.concatenate([np.full((1, *cam.shape[1:]), threshold, cam.dtype), cam], axis=0)"
NORMALISED = "return (aff / aff.sum(0, keepdim=True)).reshape(k * k, h * w)"
BETA_NOTICE = 'warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")'
UNARY = "d.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))"
FLOAT32_UNARY = ("both unaries are float32 already: pydensecrf's unary_from_labels and unary_from_softmax return "
                 "float32 whatever their input")
TRACK = 'for image_id in track(ids, "scoring"):'
EQUIVALENTS = [
    ("stages/ops/crf.py", "_crf", UNARY, UNARY.replace("dtype=np.float32", "dtype=None"), FLOAT32_UNARY),
    ("stages/ops/crf.py", "_crf", UNARY, UNARY.replace("dtype=np.float32", ""), FLOAT32_UNARY),
    ("stages/ops/crf.py", "_crf", CRF_RETURN, CRF_RETURN.replace("dtype=np.float32", "dtype=None"),
     "pydensecrf's inference returns a float32 Eigen matrix: the array is float32 either way"),
    ("stages/ops/crf.py", "_crf", CRF_RETURN, CRF_RETURN.replace("dtype=np.float32", ""),
     "pydensecrf's inference returns a float32 Eigen matrix: the array is float32 either way"),
    ("stages/ops/crf.py", "crf_labels",
     'unary = unary_from_labels(labels.astype(np.int64).ravel(), n_labels, gt_prob=cfg["gt_prob"], zero_unsure=False)',
     'unary = unary_from_labels(labels.astype(np.int64).ravel(), n_labels, gt_prob=cfg["gt_prob"], zero_unsure=None)',
     "pydensecrf only tests zero_unsure for truth: None and False take the same branch"),
    ("stages/ops/cam.py", "threshold_argmax", CONCAT, CONCAT.replace(", axis=0)", ", )"),
     "axis=0 is np.concatenate's default"),
    ("stages/ops/random_walk.py", "transition_weights", NORMALISED, NORMALISED.replace(", keepdim=True", ", "),
     "dividing (K, H, W) by the (H, W) sum broadcasts exactly as by the (1, H, W) one"),
    ("stages/ops/random_walk.py", "transition_weights", NORMALISED, NORMALISED.replace("keepdim=True", "keepdim=False"),
     "dividing (K, H, W) by the (H, W) sum broadcasts exactly as by the (1, H, W) one"),
    ("stages/ops/random_walk.py", "transition_matrix", BETA_NOTICE, 'warnings.filterwarnings("ignore", )',
     "the block builds one tensor, whose only warning is torch's beta notice: ignoring every warning there changes "
     "no value and hides nothing else"),
    ("stages/ops/random_walk.py", "transition_matrix", BETA_NOTICE, BETA_NOTICE.replace('"Sparse', '"XXSparse')
     .replace('state")', 'stateXX")'),
     "no value changes: the beta notice is printed instead of hidden, and torch prints it once per process, so no "
     "test can tell whether an earlier test printed it"),
    ("stages/core/metrics.py", "score_label_maps", "conf = np.zeros((n, n), np.int64)", "conf = np.zeros((n, n), None)",
     "the counts add up exactly in float64 (below 2^53), and IoU divides them in float64 either way"),
    ("stages/core/metrics.py", "score_label_maps", "conf = np.zeros((n, n), np.int64)", "conf = np.zeros((n, n), )",
     "the counts add up exactly in float64 (below 2^53), and IoU divides them in float64 either way"),
    *[("stages/core/metrics.py", "score_label_maps", TRACK, TRACK.replace('"scoring"', label),
       "the progress bar's label: no value depends on it") for label in ("None", '"XXscoringXX"', '"SCORING"')],
]
FULL = 'full += F.interpolate(a, size=up, mode="bilinear", align_corners=False)'
LOW = 'low += F.interpolate(a, size=s4, mode="bilinear", align_corners=False)'
SAMPLE = "sample = torch.cat([torch.full((len(c),), i) for i, c in enumerate(classes)]).long().to(images.device)"
CHANNEL = "channel = torch.as_tensor([k - 1 for c in classes for k in c], dtype=torch.long, device=images.device)"
ON_CPU = ("indices on the CPU index a tensor on any device (torch copies them over), so the values are the same; "
          "the cost is a copy")
EQUIVALENTS += [
    *[("stages/ops/cam.py", "multiscale_cams", line, line.replace("align_corners=False", new), f"align_corners "
       f"{'None' if new else 'left out'} is False for bilinear resizing") for line in (FULL, LOW)
      for new in ("align_corners=None", "")],
    *[("stages/ops/cam.py", "multiscale_cams", f"{m} = torch.zeros(1, len(channel), *{size}, device=images.device)",
       f"{m} = torch.zeros(2, len(channel), *{size}, device=images.device)", "the sums broadcast over a second, "
       "identical row that nothing reads: only row 0 is split into the maps") for m, size in (("full", "up"),
                                                                                               ("low", "s4"))],
    ("stages/ops/cam.py", "multiscale_cams", SAMPLE, SAMPLE.replace(".to(images.device)", ".to(None)"), ON_CPU),
    ("stages/ops/cam.py", "multiscale_cams", CHANNEL, CHANNEL.replace("device=images.device", "device=None"), ON_CPU),
    ("stages/ops/cam.py", "multiscale_cams", CHANNEL, CHANNEL.replace("device=images.device", ""), ON_CPU),
    ("stages/ops/cam.py", "multiscale_cams", CHANNEL, CHANNEL.replace("dtype=torch.long", "dtype=None"),
     "a list of ints makes an int64 tensor anyway; an empty list (a float tensor) returns before any indexing"),
    ("stages/ops/cam.py", "multiscale_cams", CHANNEL, CHANNEL.replace("dtype=torch.long, ", ""),
     "a list of ints makes an int64 tensor anyway; an empty list (a float tensor) returns before any indexing"),
]
ROWS = "rows = ((torch.arange(size[0], device=label.device) + 0.5) * (h / size[0])).long().clamp_(max=h - 1)"
COLS = "cols = ((torch.arange(size[1], device=label.device) + 0.5) * (w / size[1])).long().clamp_(max=w - 1)"
NEVER_BINDS = ("the bound never binds: the last cell's centre (n - 1/2) / n of the way down stays below the last pixel "
               "when the labels are shrunk")
EQUIVALENTS += [
    *[("stages/ops/affinity.py", "downsample_labels", line, line.replace("device=label.device", new), ON_CPU)
      for line in (ROWS, COLS) for new in ("device=None", "")],
    *[("stages/ops/affinity.py", "downsample_labels", line, line.replace(f"max={n} - 1", f"max={n} + 1"), NEVER_BINDS)
      for line, n in ((ROWS, "h"), (COLS, "w"))],
]
ERRSTATE = 'with np.errstate(invalid="ignore", divide="ignore"):'
EQUIVALENTS += [
    ("stages/core/metrics.py", "iou", "tp = np.diag(conf).astype(np.float64)", "tp = np.diag(conf).astype(None)",
     "astype(None) is astype(float64)"),
    *[("stages/core/metrics.py", "iou", ERRSTATE, new, "the only division is TP / (TP + FP + FN) with TP <= the "
       "denominator: 0 / 0 (invalid) can happen, x / 0 for x > 0 (divide) cannot")
      for new in ('with np.errstate(invalid="ignore", divide=None):', 'with np.errstate(invalid="ignore", ):')],
]
SHIFT_Y = "ys, yd = (slice(dy, h), slice(0, h - dy)) if dy >= 0 else (slice(0, h + dy), slice(-dy, h))"
SHIFT_X = SHIFT_Y.replace("y", "x").replace("h", "w")
SLICE = "a slice of a dimension of length n: a start of None is 0, a stop of None is n, and slice(k) is slice(0, k)"
ZERO = "with d = 0 either branch takes the whole dimension: (slice(0, n), slice(0, n))"
EQUIVALENTS += [
    (
        "stages/ops/affinity.py", "shift", line, line.replace(old, new, 1), why
    )
    for line, d, n in ((SHIFT_Y, "dy", "h"), (SHIFT_X, "dx", "w"))
    for old, new, why in (
        (f"slice({d}, {n})", f"slice({d}, None)", SLICE), (f"slice(0, {n} - {d})", f"slice(None, {n} - {d})", SLICE),
        (f"slice(0, {n} - {d})", f"slice({n} - {d})", SLICE), (f"if {d} >= 0", f"if {d} > 0", ZERO),
        (f"if {d} >= 0", f"if {d} >= 1", ZERO), (f"slice(0, {n} + {d})", f"slice(None, {n} + {d})", SLICE),
        (f"slice(0, {n} + {d})", f"slice({n} + {d})", SLICE), (f"slice(-{d}, {n})", f"slice(-{d}, None)", SLICE),
    )
]
EQUIVALENTS += [
    ("stages/ops/affinity.py", "displacements", "for dy in range(0, radius):", "for dy in range(radius):",
     "range(0, r) is range(r)"),
    ("stages/ops/affinity.py", "displacements", "for dx in range(-radius + 1, radius):",
     "for dx in range(-radius - 1, radius):", "the two added columns, |dx| >= r, fail dy^2 + dx^2 < r^2"),
]
LOGITS = 'total = total + F.interpolate(y, size=(h, w), mode="bilinear", align_corners=False)'
EQUIVALENTS += [
    *[("stages/ops/random_walk.py", "transition_matrix", BETA_NOTICE, BETA_NOTICE.replace(
        "Sparse CSR tensor support is in beta state", new), "a warning filter's message matches case-insensitively")
      for new in ("sparse csr tensor support is in beta state", "SPARSE CSR TENSOR SUPPORT IS IN BETA STATE")],
    *[("stages/ops/random_walk.py", "transition_matrix", "check_invariants=False)", new, "None takes torch's global "
       "setting, off unless a program turns it on; the tensor is valid either way (checked against the dense "
       "transpose in tests/test_random_walk.py)") for new in ("check_invariants=None)", ")")],
    ("stages/core/metrics.py", "iou", "return np.where(denom > 0, tp / denom, np.nan)",
     "return np.where(denom >= 0, tp / denom, np.nan)", "where the denominator is 0 so is TP, and 0 / 0 is NaN"),
    *[("stages/models/segmentation.py", "multiscale_logits", LOGITS, LOGITS.replace("align_corners=False", new),
       f"align_corners {'None' if new else 'left out'} is False for bilinear resizing")
      for new in ("align_corners=None", "")],
]
FP = "stages/data/fingerprint.py"
TURNED = "turned = img.getexif().get(0x0112, 1) in QUARTER_TURNS"
GEN_FILES = 'return digest(["generated", layout.generated, layout.to_json(), split, aspect])'
GEN_INDEX = 'return digest(["generated", layout.generated, layout.to_json()])'
UNREADABLE_FILES = 'return digest([split, aspect, "unreadable list", [[str(p), stat(p)] for p in layout.list_files()]])'
UNREADABLE_INDEX = 'parts.append([split, "unreadable list", [[str(p), stat(p)] for p in layout.list_files()]])'
COMPARED = 'compared = split in layout.mask_splits and layout.label_source != "masks"'
CONSTANT = ("a constant of the digested data: every fingerprint of this kind changes once, and still changes exactly "
            "when its inputs change (a fingerprint is only compared with the one an earlier run of the same code made)")
IMAGES_FILES = "images = find_images(layout.images) if images is None else images"
EQUIVALENTS += [
    *[(FP, "header_size", TURNED, TURNED.replace(", 1)", new), "without an orientation tag the default is not a "
       "quarter turn either way: 1, None and 2 are all outside (5, 6, 7, 8)") for new in (", None)", ", )", ", 2)")],
    (FP, "sha256", 'return hashlib.file_digest(f, "sha256").hexdigest()',
     'return hashlib.file_digest(f, "SHA256").hexdigest()', "hashlib's algorithm names are case-insensitive"),
    *[(FP, fn, line, line.replace(old, new), CONSTANT)
      for fn, line, old in (("files_fingerprint", GEN_FILES, '"generated"'), ("index_fingerprint", GEN_INDEX, '"generated"'),
                            ("files_fingerprint", UNREADABLE_FILES, '"unreadable list"'),
                            ("index_fingerprint", UNREADABLE_INDEX, '"unreadable list"'))
      for new in (old.replace('"', '"XX', 1)[:-1] + 'XX"', old.upper())],
    (FP, "index_fingerprint", UNREADABLE_INDEX, UNREADABLE_INDEX.replace("[[str(p), stat(p)]", "[[str(None), stat(p)]"),
     "the lists' names follow from the layout (its root, lists and SBD folder), whose JSON the digest holds first; "
     "their facts (stat) stay"),
    *[(FP, "index_fingerprint", COMPARED, COMPARED.replace('"masks"', new), "with labels from the masks the "
       "compared masks are those same classes again: the digest holds them twice and changes exactly when they do; "
       + CONSTANT.split(": ", 1)[1]) for new in ('"XXmasksXX"', '"MASKS"')],
    *[(FP, fn, line, line.replace("if images is None", "if (images is None) or True"), "the images given are "
       "find_images of the same folder, as the callers pass them: listing it again gives the same dict")
      for fn, line in (("files_fingerprint", IMAGES_FILES), ("index_fingerprint", IMAGES_FILES))],
]
EQUIVALENT: dict[tuple[str, str, str, str], str] = {(f, fn, rm, add): why for f, fn, rm, add, why in EQUIVALENTS}

STATUS_ORDER = ("killed", "survived", "timeout", "suspicious", "segfault", "no tests", "not checked")


def ensure_mutmut() -> None:
    """Install the pinned mutmut into this environment unless it is there: CI's install does not need it."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("mutmut")
    except PackageNotFoundError:
        installed = None
    if installed != MUTMUT.split("==")[1]:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", MUTMUT], check=True)


def configure(targets: dict[str, list[str]], tests: list[str]) -> None:
    """mutmut's settings, as its [tool.mutmut] section would give them, and the two adjustments of the docstring."""
    import libcst as cst
    from mutmut import configuration
    from mutmut.mutation import file_mutation
    from mutmut.runners.harness import PytestRunner
    from mutmut.utils.file_utils import change_cwd

    settings = {
        "source_paths": ["stages"],
        # every module of TARGETS, whichever a run tests: mutmut overwrites a module it does not mutate with a plain copy
        "only_mutate": list(TARGETS),
        "also_copy": ["workflow"],  # tests/conftest.py reads the config schema and imports the workflow's helpers
        "pytest_add_cli_args": ["-m", "not slow", "-p", "no:cacheprovider", "-p", "no:xdist", "-W", "ignore"],
        "pytest_add_cli_args_test_selection": [t for t in tests if (ROOT / t).exists()],
        "use_git_change_detection": False,
        "debug": bool(os.environ.get("MUTATION_DEBUG")),
        # mutants fork from a server that has imported the tests but run none: a process forked after torch has
        # computed inherits its thread pools without their threads, and its next kernel waits for ever
        "process_isolation": "forkserver",
    }
    configuration._config_reader = lambda: (lambda key, default: settings.get(key, default))
    configuration.reset_config()

    def decorator_name(d: cst.Decorator) -> str:
        node = d.decorator.func if isinstance(d.decorator, cst.Call) else d.decorator
        parts = []
        while isinstance(node, cst.Attribute):
            parts.append(node.attr.value)
            node = node.value
        parts.append(node.value if isinstance(node, cst.Name) else "?")
        return ".".join(reversed(parts))

    kept = {"torch.no_grad", "functools.cache"}
    skip = file_mutation.MutationVisitor._skip_node_and_children

    def skip_node_and_children(self, node):
        if isinstance(node, cst.FunctionDef) and node.decorators and all(decorator_name(d) in kept for d in node.decorators):
            node = node.with_changes(decorators=[])
        return skip(self, node)

    file_mutation.MutationVisitor._skip_node_and_children = skip_node_and_children
    arrange = file_mutation.function_trampoline_arrangement

    def trampoline_arrangement(function, mutants, class_name):
        declarations, methods, assignments, names = arrange(function, mutants, class_name)
        trampoline = methods[0]
        methods = [trampoline.with_changes(decorators=[d for d in trampoline.decorators
                                                       if decorator_name(d) != "functools.cache"]), *methods[1:]]
        return declarations, methods, assignments, names

    file_mutation.function_trampoline_arrangement = trampoline_arrangement

    class FirstFailure:
        def __init__(self, mutant: str):
            self.mutant, self.done = mutant, False

        def pytest_runtest_logreport(self, report):
            if report.failed and not self.done:
                self.done = True
                Path("killers").mkdir(exist_ok=True)
                Path("killers", self.mutant).write_text(report.nodeid)

    def run_tests(self, *, mutant_name, tests):
        if mutant_name:
            # one thread per mutant, one mutant per core
            import torch

            torch.set_num_threads(1)
        with change_cwd("mutants"):
            plugins = [FirstFailure(mutant_name)] if mutant_name else []
            return int(self.execute_pytest(self._pytest_args_regular_run(tests), plugins=plugins))

    PytestRunner.run_tests = run_tests


def run_mutmut(targets: dict[str, list[str]], tests: list[str], children: int, names: list[str] | None = None,
               fresh: bool = True) -> float:
    """mutmut run over the mutants of ``targets`` (or only ``names``); returns the wall time in seconds.

    ``fresh``: the modules' copies in mutants/ are made anew (mutmut never refreshes a copied file), and with them the
    map of which test calls which function; the other modules' results stay."""
    mutants = ROOT / "mutants"
    if fresh:
        for path in targets:
            for old in (mutants / path, mutants / f"{path}.meta"):
                old.unlink(missing_ok=True)
        (mutants / "mutmut-stats.json").unlink(missing_ok=True)
        for path in targets:
            for old in (mutants / "killers").glob(f"{path[:-3].replace('/', '.')}.*"):
                old.unlink()
    for path in TARGETS:  # a plain copy (left by a run that did not mutate it) is mutated anew; its results stay
        copy = mutants / path
        if copy.exists() and "_mutmut_mutated" not in copy.read_text():
            copy.unlink()
    os.chdir(ROOT)
    configure(targets, tests)
    from mutmut.__main__ import cli

    patterns = names or [p for ps in targets.values() for p in ps]
    start = time.monotonic()
    try:
        cli(["run", "--max-children", str(children), *patterns], standalone_mode=False)
    except SystemExit as e:
        if e.code:
            raise
    return time.monotonic() - start


def changed_lines(diff: str) -> tuple[str, str]:
    body = diff.splitlines()[2:]
    removed = " ".join(line[1:].strip() for line in body if line.startswith("-"))
    added = " ".join(line[1:].strip() for line in body if line.startswith("+"))
    return removed, added


def collect(targets: dict[str, list[str]]) -> dict[str, list[dict]]:
    """Per module: each mutant's name, function, status, diff and the test that failed first."""
    from mutmut.mutation.data import SourceFileMutationData
    from mutmut.mutation.diff_apply import get_diff_for_mutant
    from mutmut.stats import status_by_exit_code

    out = {}
    for path, patterns in targets.items():
        if not (ROOT / "mutants" / f"{path}.meta").exists():
            out[path] = []
            continue
        data = SourceFileMutationData(path=Path(path))
        data.load()
        rows = []
        for name, code in sorted(data.exit_code_by_key.items(), key=lambda kv: natural(kv[0])):
            if not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            diff = get_diff_for_mutant(name, path=path)
            removed, added = changed_lines(diff)
            killer = ROOT / "mutants" / "killers" / name
            rows.append({"name": name, "function": name.rpartition(".")[2].split("__mutmut_")[0][2:],
                         "status": status_by_exit_code[code], "diff": diff, "removed": removed, "added": added,
                         "killer": killer.read_text() if killer.exists() else None})
        out[path] = rows
    return out


def natural(name: str) -> tuple[str, int]:
    head, _, n = name.rpartition("_")
    return head, int(n) if n.isdigit() else 0


def key(path: str, row: dict) -> tuple[str, str, str, str]:
    return path, row["function"], row["removed"], row["added"]


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
        flags = next((line for line in out.splitlines() if line.startswith("Flags")), "")
    except (OSError, subprocess.CalledProcessError, StopIteration):
        model, flags = platform.processor(), ""
    return f"{model}{' (AVX512-BF16)' if 'avx512_bf16' in flags else ''}, {os.cpu_count()} cores"


def report(results: dict[str, list[dict]], runs: list[dict], ledger: list[list[str]]) -> str:
    totals = dict.fromkeys(["made", "killed", "survived", "equivalent", "timeout/suspicious", "no tests"], 0)
    lines = [
        "# Mutation score",
        "",
        f"`make mutation` (`python -m bench.mutation`): {MUTMUT} over the pure numerical code, with the unit tests",
        "of the modules (bench/mutation.py's TESTS; the whole-DAG tests, marked slow, are left out, and so are the",
        "training tests that start a stage in a subprocess, which cannot see a mutant). Of",
        "`stages/models/segmentation.py` only the inference, `multiscale_logits`, is mutated. A mutant is killed when",
        "a test fails with it; an equivalent one computes what the original computes, and the score leaves it out:",
        "(killed + timeout) / (made - equivalent), a timeout being a mutant that made a test hang, as mutmut counts it.",
        "",
        "A fault the survivors showed: `multiscale_cams` failed on a batch in which no image has a class (a mask of",
        "background alone gives an image none, and image_labels keeps such images in a training split); it now",
        "returns empty maps for it, as it did for such an image in a batch with others",
        "(tests/test_make_cams.py::test_a_batch_without_any_class_gets_empty_maps).",
        "",
        "mutmut leaves decorated functions alone; bench/mutation.py lets it mutate the four whose decorators a",
        "trampoline can keep (`torch.no_grad()`: `multiscale_cams`, `multiscale_logits`; `functools.cache`:",
        "`displacements`, `path`).",
        "",
        f"Run time on {cpu_model()}, two mutants at a time (`make mutation` runs them all in one go):",
        "",
        *[f"- {r['what']}: {r['seconds'] / 60:.1f} min" for r in runs],
        "",
        "| module | mutants | killed | survived | equivalent | timeout/suspicious | no tests | score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for path, rows in results.items():
        counts = {s: sum(r["status"] == s for r in rows) for s in STATUS_ORDER}
        equivalent = sum(r["status"] == "survived" and key(path, r) in EQUIVALENT for r in rows)
        hung = counts["timeout"] + counts["suspicious"] + counts["segfault"]
        row = {"made": len(rows), "killed": counts["killed"], "survived": counts["survived"] - equivalent,
               "equivalent": equivalent, "timeout/suspicious": hung, "no tests": counts["no tests"]}
        for k, v in row.items():
            totals[k] += v
        lines.append(f"| `{path}` | {' | '.join(str(v) for v in row.values())} | {score(row)} |")
    lines.append(f"| all | {' | '.join(str(v) for v in totals.values())} | {score(totals)} |")
    strict = totals["killed"] / max(1, totals["made"] - totals["equivalent"])
    lines += ["", f"Counting every timeout as a survivor instead (a mutant killed by mutmut's clock on a loaded machine "
              f"may have hung or only been slow): {100 * strict:.1f}%."]

    unexplained = [(p, r) for p, rows in results.items() for r in rows
                   if r["status"] in ("survived", "no tests") and key(p, r) not in EQUIVALENT]
    lines += ["", "## Survivors", ""]
    if unexplained:
        lines.append("Neither killed nor explained:")
        for _path, r in unexplained:
            lines += ["", f"`{r['name']}` ({r['status']}):", "", "```diff", r["diff"], "```"]
    else:
        lines.append("None: every mutant is killed or equivalent.")

    by_key = {key(p, r): r for p, rows in results.items() for r in rows}
    lines += ["", "## Equivalent mutants", ""]
    for path, rows in results.items():
        for r in rows:
            if r["status"] == "survived" and key(path, r) in EQUIVALENT:
                lines += [f"`{r['name']}`: {EQUIVALENT[key(path, r)]}", "", "```diff", r["diff"], "```", ""]

    if ledger:
        lines += ["## Mutants the earlier suite missed, and the test that kills each now", "",
                  "| module | function | mutation | status | killed by |", "|---|---|---|---|---|"]
        for entry in [e for e in ledger if tuple(e) not in EQUIVALENT]:
            r = by_key.get(tuple(entry))
            status, killer = (r["status"], r["killer"] or "-") if r else ("not made", "-")
            mutation = f"`{entry[2]}` → `{entry[3]}`".replace("|", "\\|")
            lines.append(f"| `{entry[0]}` | `{entry[1]}` | {mutation} | {status} | `{killer}` |")
    return "\n".join(lines) + "\n"


def score(row: dict) -> str:
    scored = row["made"] - row["equivalent"]
    return f"{100 * (row['killed'] + row['timeout/suspicious']) / scored:.1f}%" if scored else "-"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--module", action="append", help="mutate only these TARGETS anew (repeatable), keeping the "
                        "other modules' results from mutants/")
    parser.add_argument("--survivors", action="store_true", help="rerun only the mutants that no test killed (or that timed out) in the "
                        "last run (after tests were added), keeping every other result")
    parser.add_argument("--report-only", action="store_true", help="write the report from mutants/ as the last runs "
                        "left it")
    parser.add_argument("--children", type=int, default=os.cpu_count() or 2, help="mutants run at once")
    parser.add_argument("--ledger", action="store_true", help="add this run's unexplained survivors to the ledger")
    args = parser.parse_args(argv)
    ensure_mutmut()
    runs_file = ROOT / "mutants" / "runs.json"
    if args.module or args.survivors or args.report_only:
        runs = json.loads(runs_file.read_text()) if runs_file.exists() else []
    else:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        runs = []
    targets = {m: TARGETS[m] for m in args.module} if args.module else TARGETS
    if args.report_only:
        configure(targets, TESTS)
    elif args.survivors:
        configure(targets, TESTS)
        names = [r["name"] for rows in collect(targets).values() for r in rows
                 if r["status"] != "killed"]  # a timeout on a loaded machine is tried again too
        seconds = run_mutmut(targets, TESTS, args.children, names, fresh=False) if names else 0.0
        runs.append({"what": f"{len(names)} mutants no test killed, rerun", "seconds": seconds})
    else:
        seconds = run_mutmut(targets, TESTS, args.children)
        runs.append({"what": ", ".join(f"`{m}`" for m in targets) if args.module else "every module", "seconds": seconds})
    runs_file.write_text(json.dumps(runs, indent=1))
    results = collect(TARGETS)
    ledger = json.loads(LEDGER.read_text()) if LEDGER.exists() else []
    if args.ledger:
        found = [list(key(p, r)) for p, rows in results.items() for r in rows
                 if r["status"] in ("survived", "no tests") and key(p, r) not in EQUIVALENT]
        LEDGER.write_text(json.dumps(ledger + [e for e in found if e not in ledger], indent=1) + "\n")
    text = report(results, runs, ledger)
    print(text)
    if all(results.values()):
        REPORT.write_text(text)


if __name__ == "__main__":
    main()
