"""Joining shard folders: every id of the split exactly once, or one clear error."""
import pytest
from conftest import stage_job

from stages import StageError
from stages.core.job import shard_ids, shard_of
from stages.gather_shards import gather

IDS = ["a", "b", "c", "street/d", "e"]


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7])
def test_shards_are_contiguous_and_cover_the_split_once(n):
    parts = [shard_ids(IDS, (k, n)) for k in range(1, n + 1)]
    assert sum(parts, []) == IDS and max(map(len, parts)) - min(map(len, parts)) <= 1


@pytest.mark.parametrize("text", ["0-of-3", "4-of-3", "1of3", "a-of-b"])
def test_a_bad_shard_name_is_refused(text):
    with pytest.raises(StageError, match="K-of-N"):
        shard_of(stage_job("make_cams", wildcards={"shard": text}))


def write_shards(root, parts):
    shards = []
    for k, ids in enumerate(parts, 1):
        shard = root / f"{k}-of-{len(parts)}"
        for image_id in ids:
            (shard / f"{image_id}.png").parent.mkdir(parents=True, exist_ok=True)
            (shard / f"{image_id}.png").write_bytes(image_id.encode())
        (shard / ".snakemake_timestamp").parent.mkdir(parents=True, exist_ok=True)
        (shard / ".snakemake_timestamp").touch()
        shards.append(shard)
    return shards


def test_gathered_folder_holds_each_file_of_every_shard(tmp_path):
    shards = write_shards(tmp_path / "shards", [IDS[:2], IDS[2:4], IDS[4:]])
    gather(IDS, shards, tmp_path / "out")
    files = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == sorted(f"{i}.png" for i in IDS)
    assert (tmp_path / "out/street/d.png").read_bytes() == b"street/d"
    assert not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize("parts, message", [
    ([IDS[:3], IDS[2:]], r"^c: written by two shards"),
    ([IDS[:2], IDS[3:]], r"^1 ids of the split are in no shard of .* \(first: c\)"),
    ([IDS[:3], [*IDS[3:], "stray"]], r"^stray: in .*2-of-2, but not in the split \(1 such files\)"),
])
def test_a_missing_doubled_or_stray_id_stops_the_gathering(tmp_path, parts, message):
    shards = write_shards(tmp_path / "shards", parts)
    with pytest.raises(StageError, match=message):
        gather(IDS, shards, tmp_path / "out")
    assert not (tmp_path / "out").exists()
