"""The DAG picture of docs/dag.md, drawn from the workflow itself (``make dag``): Snakemake's rule graph of three
runs that together hold every rule, joined into one mermaid flowchart.

- the embedded default with the four ablation variants (make_dataset, ablation), and its rules on request
  (segment, export_model);
- PASCAL VOC 2012 with SBD and its test split, in two shards (convert_sbd, pack_test, gather_shards);
- COCO 2014 (convert_coco).

No dataset is needed: Snakemake plans the rule graph from the paths alone, so empty stand-ins of the data folders
(made in a temporary folder) are enough. Rule ``all`` is left out (it asks for every artifact of the run), and so
are the edges from image_labels and fingerprint to every rule that reads the index or the dataset: the text says
them once.

    python -m pipeline.dag docs/dag.md      (workflow/rules on the import path; ``make dag`` runs it)
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

# (what the run shows, config files, --config pairs, data stand-ins to create under data_root: folders, files,
# the targets)
RUNS = [
    ("the embedded default with four ablation variants", ["config/config.yaml"],
     ["classifier={variants: [baseline, pcls, re, puzzle]}"], [], [], ["all"]),
    ("its thresholds chosen without masks (thresholds: auto)", ["config/config.yaml"], ["thresholds=auto"], [], [],
     ["all"]),
    ("its rules on request, segment (with the classifier's CAMs) and export_model", ["config/config.yaml"],
     ["segment_images={data}/photos", "segment_cams=true"], [], [], ["segment", "export_model"]),
    ("PASCAL VOC 2012 with SBD in two shards", ["config/voc2012.yaml"], ["shards=2"],
     ["VOCdevkit/VOC2012", "benchmark_RELEASE/dataset"], [], ["all"]),
    ("COCO 2014", ["config/coco2014.yaml"], [], ["train2014"],
     ["annotations/instances_train2014.json", "annotations/instances_val2014.json"], ["all"]),
]
NODE = re.compile(r"^\s*(id\d+)\[(\w+)\]$")
EDGE = re.compile(r"^\s*(id\d+) --> (id\d+)$")


def rule_graph(configs: list[str], pairs: list[str], folders: list[str], files: list[str],
               targets: list[str]) -> set[tuple[str, str]]:
    """The edges (from, to) of Snakemake's rule graph of one run, between rule names."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        (data / "photos").mkdir(parents=True)
        for folder in folders:
            (data / folder).mkdir(parents=True)
        for file in files:
            (data / file).parent.mkdir(parents=True, exist_ok=True)
            (data / file).write_text("{}")
        (Path(tmp) / "config").symlink_to(ROOT / "config")
        command = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", tmp,
                   "--rulegraph", "mermaid-js", *targets, "--configfile", *configs, "--config",
                   *([f"data_root={data}"] if folders or files else []), *(p.replace("{data}", str(data)) for p in pairs)]
        out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=tmp).stdout
    names = dict(m.groups() for m in map(NODE.match, out.splitlines()) if m)
    return {(names[a], names[b]) for a, b in (m.groups() for m in map(EDGE.match, out.splitlines()) if m)}


# what every later rule reads (their edges would hide the others): drawn only into the rule that comes next
EVERYWHERE = {"image_labels": "train_classifier", "fingerprint": "image_labels"}


def mermaid(edges: set[tuple[str, str]]) -> str:
    shown = sorted((a, b) for a, b in edges if "all" not in (a, b) and EVERYWHERE.get(a, b) == b)
    return "\n".join(["flowchart TB", *(f"    {a} --> {b}" for a, b in shown)])


def dag_md() -> str:
    edges: set[tuple[str, str]] = set()
    for _, *run in RUNS:
        edges |= rule_graph(*run)
    runs = "; ".join(what for what, *_ in RUNS)
    return f"""# The DAG

Every rule of the workflow and whose outputs it reads, as Snakemake plans them for {runs}: drawn by `make dag`
from the workflow itself (`workflow/rules/pipeline/dag.py`); `tests/test_workflow.py` fails when the workflow no
longer draws this picture. Every rule after `image_labels` also reads its image index, and every rule that reads
images or masks itself also takes the file `fingerprint` names after them, so that an edit of the dataset reruns
exactly the rules that read what changed (`workflow/rules/pipeline/dataset.py`); those edges are left out. With
`shards` > 1 each per-image stage's jobs are joined by `gather_shards` before the next rule reads them.

Each rule but `fingerprint` (which only names a file) runs one module, `stages/<rule>.py`, tested in
`tests/test_<rule>.py` or in the test file of the stage whose work it shares (`eval_segmentation` in
`tests/test_eval_cams.py`). Rules `segment` and `export_model` run on request on a finished run (docs/use.md).

```mermaid
{mermaid(edges)}
```
"""


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    Path(argv[0]).write_text(dag_md())


if __name__ == "__main__":
    main()
