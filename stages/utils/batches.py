"""Items grouped for batched inference."""
from __future__ import annotations

from collections import defaultdict


def same_size_batches(items, batch_size: int):
    """Group (key, image) pairs into lists of up to ``batch_size`` images of one shape, in the order the groups
    fill up; the partly filled groups come last, in the order they were started."""
    groups = defaultdict(list)
    for key, img in items:
        group = groups[img.shape]
        group.append((key, img))
        if len(group) == batch_size:
            yield groups.pop(img.shape)
    yield from groups.values()
