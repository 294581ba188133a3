"""The one seam between a rule and its stage: the job.

Every rule runs ``python -m stages.core.launch JOB``, which runs ``python -m stages.<rule> JOB``; JOB is
the JSON that workflow/rules/pipeline/binding.py renders from the rule: its ``rule``, named ``input`` and ``output``
paths, its ``params`` (the stage's settings), ``threads``, ``resources`` and ``wildcards``. A stage reads them by
name, as a Snakemake rule does (``job.input.labels``, ``job.params.cfg``, ``job.threads``), so adding an input
touches the rule and the stage only.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from stages import StageError

# a job's log lines; the WARNING ones are read back for the run's summary (warnings_in)
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"
WARNING_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ WARNING (.+)$")


def warnings_in(logs) -> list[str]:
    """The warnings of job logs, each once, in the order first seen; a log not (yet) written has none."""
    found = []
    for path in logs:
        try:
            lines = Path(path).read_text(errors="replace").splitlines()
        except OSError:
            continue
        found += [m[1].strip() for m in map(WARNING_LINE.match, lines) if m]
    return list(dict.fromkeys(found))


class Names(Mapping):
    """A rule's named items, by attribute or key; a name the rule does not give is one clear error."""

    def __init__(self, items: Mapping | None = None, what: str = "item"):
        self._items = dict(items or {})
        self._what = what

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._items[name]
        except KeyError:
            raise StageError(f"the rule gives no {self._what} named {name!r} (it has: {', '.join(self._items) or 'none'})") from None

    def __getitem__(self, name: str):
        return self._items[name]

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Names({self._items!r})"


def _paths(items: Mapping) -> dict:
    return {k: [Path(p) for p in v] if isinstance(v, list) else Path(v) for k, v in items.items()}


@dataclass(frozen=True)
class Job:
    rule: str
    input: Names = field(default_factory=lambda: Names(what="input"))
    output: Names = field(default_factory=lambda: Names(what="output"))
    params: Names = field(default_factory=lambda: Names(what="param"))
    wildcards: Names = field(default_factory=lambda: Names(what="wildcard"))
    threads: int = 1
    resources: Names = field(default_factory=lambda: Names(what="resource"))

    @classmethod
    def make(cls, rule: str, input: Mapping = (), output: Mapping = (), params: Mapping = (), wildcards: Mapping = (),
             threads: int = 1, resources: Mapping = ()) -> Job:
        """A job from plain mappings: paths become :class:`Path` (lists of them where a name holds several)."""
        return cls(rule, Names(_paths(dict(input)), "input"), Names(_paths(dict(output)), "output"),
                   Names(dict(params), "param"), Names({k: str(v) for k, v in dict(wildcards).items()}, "wildcard"),
                   int(threads), Names(dict(resources), "resource"))

    @classmethod
    def from_json(cls, text: str) -> Job:
        d = json.loads(text)
        return cls.make(d.get("rule", ""), d.get("input", {}), d.get("output", {}), d.get("params", {}), d.get("wildcards", {}),
                        d.get("threads", 1), d.get("resources", {}))

    def to_json(self) -> str:
        plain = lambda v: [str(p) for p in v] if isinstance(v, list) else str(v)  # noqa: E731
        return json.dumps({"rule": self.rule, "input": {k: plain(v) for k, v in self.input.items()},
                           "output": {k: plain(v) for k, v in self.output.items()}, "params": dict(self.params),
                           "wildcards": dict(self.wildcards), "threads": self.threads, "resources": dict(self.resources)},
                          default=str)

    def with_threads(self, threads: int, **resources) -> Job:
        """The same job with other threads (and resources): what one of several processes of a job gets."""
        return Job(self.rule, self.input, self.output, self.params, self.wildcards, threads,
                   Names({**self.resources, **resources}, "resource"))


def is_job(argv: list[str]) -> bool:
    """Whether a stage's arguments are a job: one JSON object, as the workflow renders it."""
    return len(argv) == 1 and argv[0].lstrip().startswith("{")


def main(run: Callable[[Job], None], argv: list[str] | None = None,
         standalone: Callable[[list[str]], None] | None = None) -> None:
    """``python -m stages.<rule> JOB``: set up logging, read the job, call ``run(job)``; a StageError exits 2 with one
    line. The stages' warnings are log lines ``<time> WARNING <message>``: the workflow gathers them from the logs.
    ``standalone``: the stage's own command line, for arguments that are not a job (``python -m stages.segment
    --model ...``), with the same logging and errors."""
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT, stream=sys.stderr)
    argv = sys.argv[1:] if argv is None else argv
    if standalone is not None and not is_job(argv):
        _stop_on_error(standalone, argv)
        return
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        module = sys.modules[run.__module__]
        name = module.__spec__.name if module.__spec__ else run.__module__
        print(f"{(module.__doc__ or '').strip()}\n\nusage: python -m {name} JOB\n  JOB: the job as JSON (stages/core/job.py), "
              "as the workflow renders it from the rule", file=sys.stderr)
        sys.exit(0 if argv and argv[0] in ("-h", "--help") else 2)
    try:
        job = Job.from_json(argv[0])
    except (ValueError, KeyError, TypeError) as e:
        print(f"error: the job is not the JSON a rule renders ({e})", file=sys.stderr)
        sys.exit(2)
    _stop_on_error(run, job)


def _stop_on_error(fn, arg) -> None:
    try:
        fn(arg)
    except StageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def shard_of(job: Job) -> tuple[int, int]:
    """(K, N) of a job of a per-image stage split into N shards (wildcard ``shard``, K-of-N); (1, 1) unsharded."""
    text = job.wildcards.get("shard", "1-of-1")
    k, sep, n = text.partition("-of-")
    if not (sep and k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        raise StageError(f"shard: expected K-of-N with 1 <= K <= N, got {text!r}")
    return int(k), int(n)


def shard_ids(ids: list[str], shard: tuple[int, int]) -> list[str]:
    """The ``k``-th of ``n`` contiguous, near-equal parts of ``ids`` (1-based); together they are ``ids``, in order."""
    k, n = shard
    return ids[(k - 1) * len(ids) // n:k * len(ids) // n]


def thresholds_file(job: Job) -> dict | None:
    """The thresholds a choose_*_thresholds rule chose for this stage (input ``thresholds``), None where the rule
    gives none (``thresholds: given``: the config's values)."""
    from stages.utils.io import read_json

    path = job.input.get("thresholds")
    return read_json(path[0] if isinstance(path, list) else path) if path else None


def split_index(job: Job):
    """The image index (input ``labels``) and the ids of the job's split (input ``split``, its shard), in order."""
    from stages.data.index import load_index  # numpy and PIL: launch, which imports this module, needs neither

    index = load_index(job.input.labels)
    return index, shard_ids(index.ids(job.input.split), shard_of(job))

