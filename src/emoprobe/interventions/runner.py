"""The label-word logits at the last prompt position of texts under edits (edits.Edit), two ways.

cached (default): an edit at the last position of a causal LM changes nothing at earlier
positions, so each text's prompt but its last token is run once, keeping its key/value cache, and
every edit of that text recomputes only the last token, attending to the cache. The last token is
first run clean, keeping each block's output; an edit whose lowest edited layer is l then runs
blocks l..n only (the blocks below hand on the clean output they gave), and the LM head computes
the label words' logits only. Many (text, edit) rows run as one batch. full: every edit re-runs
the whole prompt (left-padded) through every block and the whole LM head, as Tak et al. do; kept
for checking and for models without a cache.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import torch

from ..errors import ExtractionError
from ..extract import accepted_keyword, pad_batch, pad_token_id, transformer_blocks
from ..models import is_decoder_lm
from .edits import Edit, EditingHooks, Edits


def first_edited_block(edits: Edits) -> int:
    """The lowest block (0-based) that must run for `edits` (not None): the block whose output is
    the lowest edited layer, or holds its edited sub-block."""
    parts = (edits,) if isinstance(edits, Edit) else edits
    return min(layer for edit in parts for layer in edit.span) - 1


class EditRunner:
    """Runs texts (token id lists) under lists of edits and returns the logits of `label_tokens`
    at the last prompt position: run(token_lists, edits) -> [N, E, L] float32, E = len(edits),
    edits[e] applied to every text (an Edit, a tuple of them applied together, or None: the clean
    run). `max_rows`: the most (text, edit) rows per forward pass."""

    def __init__(self, model, tokenizer, label_tokens: Sequence[int], max_rows: int = 256):
        if not is_decoder_lm(model.config):
            raise ExtractionError(f"{type(model).__name__} is not a decoder LM: the causal experiments edit the "
                                  "forward pass that gives the model's answer, which an encoder does not give.")
        self.model, self.tokenizer = model, tokenizer
        self.label_tokens = torch.as_tensor(list(label_tokens), dtype=torch.long)
        self.max_rows = max_rows
        self.device = next(model.parameters()).device
        self.blocks = transformer_blocks(model)
        self.hooks = EditingHooks(model, self.blocks, self.device)
        self.cache_keyword = accepted_keyword(model, "cache", "past_key_values")
        self.keep_keyword = accepted_keyword(model, "logits_to_keep")
        self.pad_id = pad_token_id(tokenizer)
        self.narrow_head = _narrowed_head(model, self.label_tokens)

    def run(self, token_lists: Sequence[Sequence[int]], edits: Sequence[Edits], cached: bool = True,
            text_batch: int = 8) -> np.ndarray:
        if cached and self.cache_keyword is None:
            raise ExtractionError(f"{type(self.model).__name__}.forward takes no key/value cache: run the edits "
                                  "with the full re-forward path (cached=False).")
        out = np.empty((len(token_lists), len(edits), len(self.label_tokens)), dtype=np.float32)
        by_length = np.argsort([len(tokens) for tokens in token_lists], kind="stable")  # little padding per batch
        for start in range(0, len(token_lists), text_batch):
            texts = by_length[start:start + text_batch]
            batch = [token_lists[i] for i in texts]
            with torch.inference_mode():
                out[texts] = self._cached(batch, texts, edits) if cached else self._full(batch, texts, edits)
        return out

    def _cached(self, batch, texts: np.ndarray, edits) -> torch.Tensor:
        """[B, E, L]: the batch's prompts but their last tokens once (left-padded, keeping the
        cache), the last tokens clean once, then the (text, edit) rows of the edits with the same
        lowest block together, at most max_rows per pass."""
        prefixes = [tokens[:-1] for tokens in batch]
        if min(map(len, prefixes)) == 0:
            raise ExtractionError("a prompt of one token has no prefix to cache; run it with cached=False.")
        input_ids, mask = pad_batch(prefixes, self.pad_id, "left")
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        keep = {self.keep_keyword: 1} if self.keep_keyword else {}
        self.hooks.remove()
        prefix = self.model(input_ids=input_ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp(min=0),
                            use_cache=True, **keep)
        step = _LastToken(self, getattr(prefix, self.cache_keyword), [tokens[-1] for tokens in batch], mask, texts)
        with _label_head(self.model, self.narrow_head, self.label_tokens) as columns:
            clean = step.clean(columns)
            out = clean[:, None].repeat(1, len(edits), 1)
            groups: dict[int, list[tuple[int, int]]] = {}  # lowest block -> its (text, edit) rows
            for index, edit in enumerate(edits):
                if edit is not None:
                    groups.setdefault(first_edited_block(edit), []).extend((row, index) for row in range(len(batch)))
            for first, rows in sorted(groups.items()):
                for chunk in np.array_split(np.arange(len(rows)), -(-len(rows) // self.max_rows)):
                    text_rows, edit_indices = map(list, zip(*(rows[i] for i in chunk)))
                    out[text_rows, edit_indices] = step.edited(text_rows, [edits[i] for i in edit_indices], first,
                                                               columns)
        return out

    def _full(self, batch, texts: np.ndarray, edits) -> torch.Tensor:
        """[B, E, L]: every edit re-runs the whole prompts (left-padded), one pass per edit."""
        input_ids, mask = pad_batch(batch, self.pad_id, "left")
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        where = torch.full((len(batch),), input_ids.shape[1] - 1, dtype=torch.long)
        keep = {self.keep_keyword: 1} if self.keep_keyword else {}
        columns = self.label_tokens.to(self.device)
        logits = []
        for edit in edits:
            self.hooks.plan([edit] * len(batch), torch.as_tensor(texts), where)
            try:
                output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                    use_cache=False, **keep)
            finally:
                self.hooks.remove()
            logits.append(output.logits[:, -1, columns].float().cpu())
        return torch.stack(logits, 1)


def _narrowed_head(model, label_tokens: torch.Tensor) -> torch.nn.Linear | None:
    """The LM head's label-word rows as a linear layer (logits in `label_tokens`' order), where
    the head is a plain linear layer; else None."""
    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        return None
    rows = label_tokens.to(head.weight.device)
    narrow = torch.nn.Linear(head.in_features, len(label_tokens), bias=head.bias is not None,
                             device=head.weight.device, dtype=head.weight.dtype).requires_grad_(False)
    with torch.no_grad():
        narrow.weight.copy_(head.weight[rows])
        if head.bias is not None:
            narrow.bias.copy_(head.bias[rows])
    return narrow


@contextmanager
def _label_head(model, narrow: torch.nn.Linear | None, label_tokens: torch.Tensor):
    """While open, the LM head swapped for `narrow` (when there is one); yields the logits'
    columns to read."""
    head = model.get_output_embeddings()
    if narrow is None:
        yield label_tokens.to(head.weight.device)
        return
    model.set_output_embeddings(narrow)
    try:
        yield torch.arange(len(label_tokens), device=head.weight.device)
    finally:
        model.set_output_embeddings(head)


class _LastToken:
    """The last prompt token of a batch of texts after their cached prefix: run clean once, keeping
    every block's output, then for rows of (text, edits), from a given block up."""

    def __init__(self, runner: EditRunner, cache, last_tokens: Sequence[int], prefix_mask: torch.Tensor,
                 texts: np.ndarray):
        self.runner, self.cache, self.texts = runner, cache, torch.as_tensor(texts)
        device = prefix_mask.device
        self.tokens = torch.as_tensor(last_tokens, device=device)
        self.mask = torch.cat([prefix_mask, prefix_mask.new_ones((len(prefix_mask), 1))], 1)
        self.positions = prefix_mask.sum(dim=1)
        self.block_outputs: list[torch.Tensor] | None = None  # [B, 1, H] per block; None: blocks not replayable

    def clean(self, columns: torch.Tensor) -> torch.Tensor:
        """[B, L]: the clean logits; keeps each block's output at the token."""
        outputs: dict[int, torch.Tensor] = {}

        def keep(index):
            return lambda module, args, output: outputs.__setitem__(index, output)

        handles = [block.register_forward_hook(keep(index)) for index, block in enumerate(self.runner.blocks)]
        try:
            logits = self._forward(torch.arange(len(self.tokens)), 0, columns)
        finally:
            for handle in handles:
                handle.remove()
        if all(torch.is_tensor(output) for output in outputs.values()):
            self.block_outputs = [outputs[index] for index in range(len(self.runner.blocks))]
        return logits

    def edited(self, rows: list[int], rows_edits: list[Edits], first: int, columns: torch.Tensor) -> torch.Tensor:
        """[R, L]: row r's text (an index into the batch) under rows_edits[r], from block `first` up
        (from block 0 where the blocks' outputs could not be kept)."""
        rows = torch.as_tensor(rows, device=self.tokens.device)
        self.runner.hooks.plan(rows_edits, self.texts[rows.cpu()], torch.zeros(len(rows), dtype=torch.long))
        try:
            return self._forward(rows, first if self.block_outputs is not None else 0, columns)
        finally:
            self.runner.hooks.remove()

    def _forward(self, rows: torch.Tensor, first: int, columns: torch.Tensor) -> torch.Tensor:
        """Blocks below `first` hand on the clean output of block first - 1 for `rows`."""
        runner, blocks = self.runner, self.runner.blocks
        cache = copy.copy(self.cache)  # the prefix cache for `rows`, at the blocks that run
        cache.layers = [layer if index < first else _rows_of(layer, rows) for index, layer in enumerate(cache.layers)]
        if first:
            handed_on = self.block_outputs[first - 1][rows]
            for block in blocks[:first]:
                block.forward = lambda *args, **kwargs: handed_on
        try:
            output = runner.model(input_ids=self.tokens[rows, None], attention_mask=self.mask[rows],
                                  position_ids=self.positions[rows, None], use_cache=False,
                                  **{runner.cache_keyword: cache})
        finally:
            for block in blocks[:first]:
                del block.forward
        return output.logits[:, -1, columns].float().cpu()


def _rows_of(layer, rows: torch.Tensor):
    """A copy of a cache layer holding `rows` of its batch (repeats allowed); the layer is untouched."""
    layer = copy.copy(layer)
    layer.batch_select_indices(rows)
    return layer
