"""Rule gather_shards: join the shard folders of a per-image stage into its output folder.

A per-image stage (make_cams, affinity_labels, random_walk, pseudo_labels, predict_segmentation) runs as
``shards`` jobs, each on a contiguous part of the split (wildcard ``shard``, K-of-N). The joined folder holds one file
per id of the split, each from exactly one shard; anything else (a missing id, an id two shards wrote, a file
of no id of the split) stops the run with one line. Files are hard links where the filesystem allows (no copy
of the bytes), and the folder appears in one rename.
"""
from __future__ import annotations

from pathlib import Path

from stages import StageError
from stages.core.job import Job, main, split_index
from stages.utils.io import atomic_dir, link_or_copy


def shard_files(shard: Path) -> dict[str, Path]:
    """id -> file of one shard folder, relative to it (an id with '/' has its file in a subfolder); hidden files
    (Snakemake's .snakemake_timestamp) are no image's."""
    rels = sorted(p.relative_to(shard) for p in shard.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {rel.as_posix().rsplit(".", 1)[0]: rel for rel in rels}


def join_shards(ids: list[str], shards: list[Path]) -> dict[str, tuple[Path, Path]]:
    """id -> (shard, file in it) for every id of ``ids``, checking that each is in exactly one shard and that
    nothing else is."""
    found: dict[str, tuple[Path, Path]] = {}
    for shard in shards:
        for image_id, rel in shard_files(shard).items():
            if image_id in found:
                raise StageError(f"{image_id}: written by two shards ({found[image_id][0]}, {shard})")
            found[image_id] = shard, rel
    if missing := [i for i in ids if i not in found]:
        raise StageError(f"{len(missing)} ids of the split are in no shard of {shards[0].parent} (first: {missing[0]})")
    if extra := sorted(set(found) - set(ids)):
        raise StageError(f"{extra[0]}: in {found[extra[0]][0]}, but not in the split ({len(extra)} such files)")
    return {i: found[i] for i in ids}


def gather(ids: list[str], shards: list[Path], out: Path) -> None:
    files = join_shards(ids, shards)
    with atomic_dir(out) as tmp:
        for shard, rel in files.values():
            link_or_copy(shard / rel, tmp / rel)
    print(f"gather_shards: {len(files)} files from {len(shards)} shards into {out}")


def run(job: Job) -> None:
    _, ids = split_index(job)
    gather(ids, job.input.shards, job.output.folder)


if __name__ == "__main__":
    main(run)
