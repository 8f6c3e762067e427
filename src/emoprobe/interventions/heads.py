"""Attention-head knockout (Tak et al.): one head's output zeroed (its slice of the attention output
projection's input) at one layer, at the last prompt position, for every head of every layer."""

from __future__ import annotations

from collections.abc import Sequence

from .edits import HEADS, Edit


def head_edits(layers: Sequence[int], n_heads: int, head_width: int) -> list[tuple[int, int, Edit]]:
    """(layer, head, edit) for every layer x head: the edit zeroes channels
    head * head_width ... (head + 1) * head_width of the heads' outputs at that layer."""
    return [(layer, head, Edit(HEADS, (layer,), channels=slice(head * head_width, (head + 1) * head_width)))
            for layer in layers for head in range(n_heads)]
