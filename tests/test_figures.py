"""The per-class IoU bars: the mean over the seeds, with the seeds' standard deviation as error bars."""
import statistics

import numpy as np
import pytest
from conftest import SEED_TABLES as TABLES
from matplotlib.container import BarContainer

from stages import figures
from stages.summary import summary_rows


@pytest.fixture
def drawn(monkeypatch):
    """The figure per_class_chart would save."""
    saved = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: saved.append(fig))
    return saved


def bars(ax) -> list[BarContainer]:
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def error_bars(ax) -> list[np.ndarray | None]:
    """Each stage's error-bar half-lengths, from the bar containers matplotlib keeps."""
    return [np.diff(c.errorbar.lines[2][0].get_segments(), axis=1)[:, 0, 1] / 2 if c.errorbar else None for c in bars(ax)]


def test_bars_are_the_mean_and_error_bars_the_std_over_seeds(drawn, tmp_path):
    rows = summary_rows(TABLES)
    figures.per_class_chart(rows, tmp_path / "bars.png")
    ax = drawn[0].axes[0]
    assert [b.get_height() for b in bars(ax)[0]] == pytest.approx([80.0, 53.0])  # cam: background, disc
    assert error_bars(ax)[0] == pytest.approx([0.0, statistics.stdev([50.0, 56.0])])
    assert ax.get_title() == "Per-class IoU by stage, mean ± std over seeds 0, 1, 2"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cam puzzle (train): 73.0 ± 3.6",
                                                                  "segmentation (val): 62.0 ± 2.6"]


def test_one_seed_draws_no_error_bars(drawn, tmp_path):
    figures.per_class_chart(summary_rows({0: TABLES[0]}), tmp_path / "bars.png")
    ax = drawn[0].axes[0]
    assert error_bars(ax) == [None, None] and ax.get_title() == "Per-class IoU by stage, seed 0"
