"""Edits of a site's activation at each text's last prompt position, applied by forward hooks on
the stock modules that extraction reads (extract.site_module; the block itself for the residual
stream): one hook object per (layer, site), which sets or shifts that site's output at given rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import ExtractionError
from ..extract import site_module
from ..shards import RESIDUAL

# values(layer, texts) -> [len(texts), H]: what an edit writes (or adds) at `layer` for those texts
# (indices into the texts a runner was given).
Values = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Edit:
    """Set the site's activation at each text's last position, at every layer of `span`, to
    `values` (zero when None), or with `add`, add `values` to it."""

    site: str
    span: tuple[int, ...]
    values: Values | None = None
    add: bool = False


CLEAN = None  # an edit list entry that changes nothing: the clean run
Edits = Edit | tuple[Edit, ...] | None  # what one run applies: one edit, several at once, or none


@dataclass
class SiteWrites:
    """What one (layer, site) hook does in one forward pass: rows set to values, rows shifted by deltas."""

    set_rows: list[torch.Tensor]
    set_values: list[torch.Tensor | None]
    add_rows: list[torch.Tensor]
    add_values: list[torch.Tensor]


def site_output_module(blocks: torch.nn.ModuleList, layer: int, site: str) -> torch.nn.Module:
    """The module whose output is `site` at `layer` (>= 1): block layer - 1 for the residual stream."""
    if not 1 <= layer <= len(blocks):
        raise ExtractionError(f"an edit at layer {layer}: edits apply to layers 1..{len(blocks)} (the blocks' outputs).")
    block = blocks[layer - 1]
    return block if site == RESIDUAL else site_module(block, site)


class EditingHooks:
    """Forward hooks that apply, per forward pass, each row's edits at token `where[row]`.

    plan(rows_edits, texts, where) arranges a pass of R rows, row r editing text texts[r] with
    rows_edits[r] (Edits) at token where[r]; the hooks then write into the module outputs in place."""

    def __init__(self, blocks: torch.nn.ModuleList):
        self.blocks = blocks
        self.writes: dict[tuple[int, str], SiteWrites] = {}
        self.where: torch.Tensor | None = None
        self._handles: list = []

    def plan(self, rows_edits: Sequence[Edits], texts: torch.Tensor, where: torch.Tensor) -> None:
        """Arrange one pass: row r applies rows_edits[r] to text texts[r] at token where[r]."""
        by_edit: dict[int, list[int]] = {}
        edits: dict[int, Edit] = {}
        for row, entry in enumerate(rows_edits):
            for edit in (() if entry is None else (entry,) if isinstance(entry, Edit) else entry):
                by_edit.setdefault(id(edit), []).append(row)
                edits[id(edit)] = edit
        writes: dict[tuple[int, str], SiteWrites] = {}
        for key, rows in by_edit.items():
            edit = edits[key]
            rows = torch.as_tensor(rows, dtype=torch.long)
            for layer in edit.span:
                entry = writes.setdefault((layer, edit.site), SiteWrites([], [], [], []))
                values = None if edit.values is None else edit.values(layer, texts[rows])
                if edit.add:
                    entry.add_rows.append(rows)
                    entry.add_values.append(values)
                else:
                    entry.set_rows.append(rows)
                    entry.set_values.append(values)
        self.writes, self.where = writes, where
        self._attach(set(writes))

    def _attach(self, keys: set[tuple[int, str]]) -> None:
        self.remove()
        for key in sorted(keys):
            module = site_output_module(self.blocks, *key)
            self._handles.append(module.register_forward_hook(lambda m, a, output, key=key: self._write(key, output)))

    def _write(self, key: tuple[int, str], output) -> None:
        hidden = output if torch.is_tensor(output) else output[0]
        entry = self.writes[key]
        where = self.where.to(hidden.device)
        for rows, values in zip(entry.set_rows, entry.set_values):
            rows = rows.to(hidden.device)
            hidden[rows, where[rows]] = 0 if values is None else values.to(hidden.device, hidden.dtype)
        for rows, values in zip(entry.add_rows, entry.add_values):
            rows = rows.to(hidden.device)
            hidden[rows, where[rows]] += values.to(hidden.device, hidden.dtype)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
