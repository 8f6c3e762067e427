"""Edits of a site's activation at each text's last prompt position, applied by hooks on the stock
modules that extraction reads (extract.site_module; the block itself for the residual stream; the
attention's output projection, for its input, at the `heads` site): one hook object per
(layer, site), which sets or shifts that site's activation, or some of its channels, at given rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import ExtractionError
from ..extract import site_module, sub_block, text_config
from ..shards import RESIDUAL

HEADS = "heads"  # the attention heads' outputs side by side: the input of the attention's output projection
_OUTPUT_PROJECTIONS = ("o_proj", "c_proj", "dense", "out_proj")

# values(layer, texts) -> [len(texts), H]: what an edit writes (or adds) at `layer` for those texts
# (indices into the texts a runner was given).
Values = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Edit:
    """Set the site's activation at each text's last position, at every layer of `span`, to
    `values` (zero when None), or with `add`, add `values` to it; with `channels`, only those
    channels of it (e.g. one head's slice of the `heads` site)."""

    site: str
    span: tuple[int, ...]
    values: Values | None = None
    add: bool = False
    channels: slice | None = None


def residual_shift(layers: tuple[int, ...], vectors, scale: float, norms) -> Edit:
    """Add scale * norms[layer] * vectors[layer] (a direction [H]) to the residual stream at each
    of `layers`, the same for every text: promotion's and steering's edit."""
    def values(layer, texts):
        return torch.as_tensor(scale * norms[layer] * vectors[layer], dtype=torch.float32).expand(len(texts), -1)

    return Edit(RESIDUAL, layers, values, add=True)


CLEAN = None  # an edit list entry that changes nothing: the clean run
Edits = Edit | tuple[Edit, ...] | None  # what one run applies: one edit, several at once, or none


@dataclass(frozen=True)
class Write:
    """One edit's part of one (layer, site) hook in one forward pass: rows, the token each edits,
    the values written (None: zero) or added, the channels."""

    rows: torch.Tensor
    tokens: torch.Tensor
    values: torch.Tensor | None
    add: bool
    channels: slice


def attention_heads(model: torch.nn.Module, block: torch.nn.Module) -> tuple[torch.nn.Module, int, int]:
    """(the attention's output projection, number of heads, head width) of a block: the projection's
    input is the heads' outputs side by side, head h in channels h * width ... (h + 1) * width."""
    attention = sub_block(block, "attn_out")
    projection = next((getattr(attention, name) for name in _OUTPUT_PROJECTIONS
                       if isinstance(getattr(attention, name, None), torch.nn.Module)), None)
    n_heads = getattr(text_config(model.config), "num_attention_heads", None)
    if projection is None or not n_heads:
        raise ExtractionError(f"{type(block).__name__} has no attention output projection named "
                              f"{' or '.join(_OUTPUT_PROJECTIONS)} in its attention "
                              "(or its config no num_attention_heads): head knockout cannot find the heads; drop "
                              "`heads` from `causal.experiments` for this model.")
    width = projection.in_features if hasattr(projection, "in_features") else projection.weight.shape[0]  # Conv1D
    return projection, n_heads, width // n_heads


def site_output_module(model: torch.nn.Module, blocks: torch.nn.ModuleList, layer: int, site: str) -> torch.nn.Module:
    """The module whose output is `site` at `layer` (>= 1): block layer - 1 for the residual stream;
    for `heads`, the module whose input it is (the attention's output projection)."""
    if not 1 <= layer <= len(blocks):
        raise ExtractionError(f"an edit at layer {layer}: edits apply to layers 1..{len(blocks)} (the blocks' outputs).")
    block = blocks[layer - 1]
    if site == HEADS:
        return attention_heads(model, block)[0]
    return block if site == RESIDUAL else site_module(block, site)


class EditingHooks:
    """Hooks that apply, per forward pass, each row's edits at token `where[row]`.

    plan(rows_edits, texts, where) arranges a pass of R rows, row r editing text texts[r] with
    rows_edits[r] (Edits) at token where[r]; the hooks then write into the module outputs (the
    projection's input, for `heads`) in place."""

    def __init__(self, model: torch.nn.Module, blocks: torch.nn.ModuleList, device: torch.device):
        self.model, self.blocks, self.device = model, blocks, device
        self.writes: dict[tuple[int, str], list[Write]] = {}
        self._handles: list = []

    def plan(self, rows_edits: Sequence[Edits], texts: torch.Tensor, where: torch.Tensor) -> None:
        """Arrange one pass: row r applies rows_edits[r] to text texts[r] at token where[r]."""
        by_edit: dict[int, list[int]] = {}
        edits: dict[int, Edit] = {}
        for row, entry in enumerate(rows_edits):
            for edit in (() if entry is None else (entry,) if isinstance(entry, Edit) else entry):
                by_edit.setdefault(id(edit), []).append(row)
                edits[id(edit)] = edit
        writes: dict[tuple[int, str], list[Write]] = {}
        for key, rows in by_edit.items():
            edit = edits[key]
            rows = torch.as_tensor(rows, dtype=torch.long)
            on_device = rows.to(self.device)
            for layer in edit.span:
                values = None if edit.values is None else edit.values(layer, texts[rows]).to(self.device)
                writes.setdefault((layer, edit.site), []).append(
                    Write(on_device, where[rows].to(self.device), values, edit.add, edit.channels or slice(None)))
        self.writes = writes
        self._attach(set(writes))

    def _attach(self, keys: set[tuple[int, str]]) -> None:
        self.remove()
        for key in sorted(keys):
            module = site_output_module(self.model, self.blocks, *key)
            if key[1] == HEADS:
                hook = module.register_forward_pre_hook(lambda m, args, key=key: self._write(key, args[0]))
            else:
                hook = module.register_forward_hook(lambda m, a, output, key=key: self._write(key, output))
            self._handles.append(hook)

    def _write(self, key: tuple[int, str], output) -> None:
        hidden = output if torch.is_tensor(output) else output[0]
        for write in self.writes[key]:
            if write.values is None:
                hidden[write.rows, write.tokens, write.channels] = 0
            elif write.add:
                hidden[write.rows, write.tokens, write.channels] += write.values.to(hidden.dtype)
            else:
                hidden[write.rows, write.tokens, write.channels] = write.values.to(hidden.dtype)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()
