"""The end of a run, success or failure: one line per warning of the jobs it ran, so that none stays in a log
nobody opens (a class without a training image, a checkpoint set aside, a photo past PIL's size warning, tags
that disagree with the masks). The tables carry the warnings of every job of the run (rule summary)."""
from __future__ import annotations

import sys
from pathlib import Path

from stages.core.job import warnings_in


def logs_since(folder, start: float) -> list[Path]:
    """The job logs under ``folder`` written since ``start`` (a time.time()): the jobs of this run."""
    logs = []
    for path in sorted(Path(folder).glob("**/logs/**/*.log")):
        try:
            if path.stat().st_mtime >= start:
                logs.append(path)
        except OSError:
            continue
    return logs


def show_warnings(folder, start: float, stream=sys.stderr) -> list[str]:
    found = warnings_in(logs_since(folder, start))
    if found:
        print(f"Warnings of this run ({len(found)}; each job's log under {folder} has them in context):", file=stream)
        for w in found:
            print(f"  warning: {w}", file=stream)
    return found
