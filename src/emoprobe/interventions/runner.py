"""The label-word logits at the last prompt position of texts under edits (edits.Edit), two ways.

cached (default): an edit at the last position of a causal LM changes nothing at earlier
positions, so each text's prompt but its last token is run once, and every edit of that text
recomputes only the last token, attending to the prefix's key/value cache; many edits of the same
texts run as one batch (the cache repeated per edit). full: every edit re-runs the whole prompt
(left-padded), as Tak et al. do; kept for checking and for models without a cache.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..errors import ExtractionError
from ..extract import accepted_keyword, pad_batch, pad_token_id, transformer_blocks
from ..models import is_decoder_lm
from .edits import EditingHooks, Edits


class EditRunner:
    """Runs texts (token id lists) under lists of edits and returns the logits of `label_tokens`
    at the last prompt position: run(token_lists, edits) -> [N, E, L] float32, E = len(edits),
    edits[e] applied to every text (an Edit, a tuple of them applied together, or None: the clean run). `max_rows`: the most (text, edit) rows
    per forward pass."""

    def __init__(self, model, tokenizer, label_tokens: Sequence[int], max_rows: int = 256):
        if not is_decoder_lm(model.config):
            raise ExtractionError(f"{type(model).__name__} is not a decoder LM: the causal experiments edit the "
                                  "forward pass that gives the model's answer, which an encoder does not give.")
        self.model, self.tokenizer = model, tokenizer
        self.label_tokens = torch.as_tensor(list(label_tokens), dtype=torch.long)
        self.max_rows = max_rows
        self.device = next(model.parameters()).device
        self.hooks = EditingHooks(model, transformer_blocks(model), self.device)
        self.cache_keyword = accepted_keyword(model, "cache", "past_key_values")
        self.keep_keyword = accepted_keyword(model, "logits_to_keep")
        self.pad_id = pad_token_id(tokenizer)

    def run(self, token_lists: Sequence[Sequence[int]], edits: Sequence[Edits], cached: bool = True,
            text_batch: int = 16) -> np.ndarray:
        if cached and self.cache_keyword is None:
            raise ExtractionError(f"{type(self.model).__name__}.forward takes no key/value cache: run the edits "
                                  "with the full re-forward path (cached=False).")
        out = np.empty((len(token_lists), len(edits), len(self.label_tokens)), dtype=np.float32)
        # cached: texts per pass with all their edits, at most max_rows rows
        step = min(text_batch, max(1, self.max_rows // max(1, len(edits)))) if cached else text_batch
        for start in range(0, len(token_lists), step):
            texts = np.arange(start, min(start + step, len(token_lists)))
            batch = [token_lists[i] for i in texts]
            with torch.inference_mode():
                if cached:
                    out[texts] = self._cached(batch, texts, edits)
                else:
                    out[texts] = self._full(batch, texts, edits)
        return out

    def _logits(self, output) -> torch.Tensor:
        return output.logits[:, -1].float()[:, self.label_tokens.to(self.device)].cpu()

    def _cached(self, batch, texts: np.ndarray, edits) -> torch.Tensor:
        """[B, E, L]: the batch's prompts but their last tokens once (right-padded, keeping the
        cache), then each text's last token once per edit."""
        prefixes = [tokens[:-1] for tokens in batch]
        if min(map(len, prefixes)) == 0:
            raise ExtractionError("a prompt of one token has no prefix to cache; run it with cached=False.")
        input_ids, mask = pad_batch(prefixes, self.pad_id, "right")
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        self.hooks.remove()
        prefix = self.model(input_ids=input_ids, attention_mask=mask, use_cache=True)
        cache = getattr(prefix, self.cache_keyword)
        n_edits = len(edits)
        cache.batch_repeat_interleave(n_edits)  # this batch's own cache: no copy needed
        last = torch.as_tensor([tokens[-1] for tokens in batch], device=self.device)
        lengths = mask.sum(dim=1)
        rows_edits = [edit for _ in batch for edit in edits]
        rows_texts = torch.as_tensor(texts).repeat_interleave(n_edits)
        self.hooks.plan(rows_edits, rows_texts, torch.zeros(len(rows_edits), dtype=torch.long))
        try:
            output = self.model(
                input_ids=last.repeat_interleave(n_edits)[:, None],
                attention_mask=torch.cat([mask, mask.new_ones((len(mask), 1))], 1).repeat_interleave(n_edits, 0),
                position_ids=lengths.repeat_interleave(n_edits)[:, None],
                use_cache=False, **{self.cache_keyword: cache})
        finally:
            self.hooks.remove()
        return self._logits(output).reshape(len(batch), n_edits, -1)

    def _full(self, batch, texts: np.ndarray, edits) -> torch.Tensor:
        """[B, E, L]: every edit re-runs the whole prompts (left-padded), one pass per edit."""
        input_ids, mask = pad_batch(batch, self.pad_id, "left")
        input_ids, mask = input_ids.to(self.device), mask.to(self.device)
        position_ids = (mask.cumsum(dim=1) - 1).clamp(min=0)
        where = torch.full((len(batch),), input_ids.shape[1] - 1, dtype=torch.long)
        keep = {self.keep_keyword: 1} if self.keep_keyword else {}
        logits = []
        for edit in edits:
            self.hooks.plan([edit] * len(batch), torch.as_tensor(texts), where)
            try:
                output = self.model(input_ids=input_ids, attention_mask=mask, position_ids=position_ids,
                                    use_cache=False, **keep)
            finally:
                self.hooks.remove()
            logits.append(self._logits(output))
        return torch.stack(logits, 1)
