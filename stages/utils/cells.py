"""How a table writes a value: the one formatter of the cells of miou.md, ablation.md and the report's overviews."""
from __future__ import annotations

# a cell without a value: one seed's spread, the baseline's difference from itself, a row's missing threshold
EMPTY = "-"


def cell(value, digits: int = 2, sign: bool = False) -> str:
    """A float to ``digits`` decimals (with its sign where ``sign``), :data:`EMPTY` for None, anything else as text."""
    if value is None:
        return EMPTY
    if isinstance(value, float):
        return format(value, f"{'+' if sign else ''}.{digits}f")
    return str(value)


def plus_minus(mean: float | None, std: float | None) -> str:
    """``mean ± std``; the mean alone where there is no spread (one seed)."""
    return cell(mean) if std is None else f"{cell(mean)} ± {cell(std)}"


def min_max(row: dict, key: str = "miou") -> str:
    """``min-max`` of ``row``'s ``key`` over the seeds; :data:`EMPTY` with one seed (no spread)."""
    return EMPTY if row[f"{key}_std"] is None else f"{cell(row[f'{key}_min'])}-{cell(row[f'{key}_max'])}"
