"""Token positions: where in each prompt activations are read.

A fixed position is a negative integer counted from the end of the prompt (-1 is its last
token). A pooled position reads the text itself, the part of the prompt the template's
`{text}` placeholder became: `text_last` is the last token holding any of the text's characters,
`text_mean` the mean over every token from the first to the last such token (extract.text_spans).

The metrics tables write a position as a string ("-1", "text_mean": position_label), the shards'
metadata and part names as written in the config.
"""

from __future__ import annotations

from collections.abc import Iterable

import polars as pl

TEXT_LAST, TEXT_MEAN = "text_last", "text_mean"
POOLED = (TEXT_LAST, TEXT_MEAN)

Position = int | str


def is_pooled(position: Position) -> bool:
    return position in POOLED


def ordered(positions: Iterable[Position]) -> tuple[Position, ...]:
    """Fixed positions ascending (-5 ... -1), then the pooled ones (text_last, text_mean)."""
    positions = set(positions)
    return (tuple(sorted(p for p in positions if not is_pooled(p)))
            + tuple(p for p in POOLED if p in positions))


def furthest(positions: Iterable[Position]) -> int:
    """How many tokens a prompt needs for the fixed positions (0 with pooled positions only)."""
    return max((-p for p in positions if not is_pooled(p)), default=0)


def position_label(position: Position | None) -> str | None:
    """A position as the tables write it: "-1", "text_mean" (None stays None)."""
    return None if position is None else str(position)


def nearest_end(positions: Iterable[Position]) -> Position:
    """The fixed position nearest the end of the prompt, else text_last, else text_mean (as given:
    positions or their labels): the position a chart of one position shows by default."""
    return max(positions, key=lambda position: _rank(str(position)))


def _rank(label: str) -> int:
    return -(1 << 20) - POOLED.index(label) if label in POOLED else int(label)


def rank(column: str = "position") -> pl.Expr:
    """An integer that orders a table's position labels like nearest_end: higher is preferred."""
    label = pl.col(column)
    return (pl.when(label == TEXT_LAST).then(_rank(TEXT_LAST))
            .when(label == TEXT_MEAN).then(_rank(TEXT_MEAN))
            .otherwise(label.cast(pl.Int64, strict=False)))


def sort_order(labels: Iterable[str]) -> list[str]:
    """Position labels nearest the end first (-1, -2, ..., text_last, text_mean): a chart's legend order."""
    return sorted(set(labels), key=_rank, reverse=True)
