"""The workflow's half of the seam between a rule and its stage (stages/core/job.py is the other).

Every rule that runs a stage has the same shell line, :data:`LAUNCH`, and declares its stage and settings with
``params: **stage("<rule>", cfg=..., runtime=...)``. That gives the rule two params:

- ``settings``: the stage's settings as JSON (a value, or a function of the wildcards): Snakemake records it and
  reruns the rule, and what depends on it, when it changes;
- ``job``: the JSON the stage reads, rendered from the rule at run time: the rule's name, its named inputs and
  outputs, the settings, threads, resources and wildcards. It is derived from the paths, so Snakemake never reruns on it.
"""
from __future__ import annotations

import json
from collections.abc import Callable

# The shell line of every stage rule: launch takes the job's GPUs (resources.gpu) and runs stages.<rule> on them.
# The rule's name travels in the job (Snakemake's {rule} is not among the names its linter allows).
LAUNCH = "python -m stages.core.launch {params.job:q} > {log:q} 2>&1"

# Snakemake's own resources, which say nothing a stage uses
INTERNAL_RESOURCES = ("_cores", "_nodes", "tmpdir")


def _value(v, wildcards):
    return v(wildcards) if callable(v) else v


def settings_of(settings: dict, wildcards) -> dict:
    return {k: _value(v, wildcards) for k, v in settings.items()}


def stage(rule: str, **settings) -> dict[str, Callable]:
    """The params of the rule ``rule``, which runs ``stages.<rule>`` (see the module's docstring); each setting is a
    value or ``f(wildcards)``."""

    def recorded(wildcards):
        return json.dumps(settings_of(settings, wildcards), sort_keys=True)

    def job(wildcards, input, output, threads, resources):
        return json.dumps({
            "rule": rule,
            "input": {k: v for k, v in input.items()},
            "output": {k: v for k, v in output.items()},
            "params": settings_of(settings, wildcards),
            "wildcards": dict(wildcards.items()),
            "threads": threads,
            "resources": {k: v for k, v in resources.items() if k not in INTERNAL_RESOURCES and not callable(v)},
        }, sort_keys=True)

    return {"settings": recorded, "job": job}
