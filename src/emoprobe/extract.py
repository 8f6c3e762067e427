"""Hidden-state extraction: one forward pass per batch, read by forward hooks on stock modules.

Layer 0 is the input to the first transformer block (the embedding output, including any
position embeddings or scaling the architecture applies); layer i is the output of block i,
i.e. the residual stream before any final norm. Only the configured token positions are
gathered, on the device, before anything is copied to the host, and the forward pass stops
after the deepest requested layer, unless the model's answer is read too (`answer_tokens`):
then it runs to the LM head, which a pre-hook feeds the last prompt position only.

Positions (positions.py): fixed ones count from the end of the prompt; `text_last` is the last
token of the text the template's {text} became and `text_mean` the mean over the text's tokens,
the span found from the fast tokenizer's character offsets (text_spans).

Sites (shards.SITES): `residual` is the residual stream above; `attn_out` at layer i >= 1 is what block
i's self-attention sub-block adds to the residual stream and `mlp_out` what its MLP sub-block adds,
so that residual[i] = residual[i - 1] + attn_out[i] + mlp_out[i] (site_module gives the module per
layout). All are read in the same forward pass. The answer's logits are the model's own (for
Gemma 3 after its final soft-capping): the pre-hook only narrows the LM head's input.
"""

from __future__ import annotations

import copy
import inspect
import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

from .errors import ExtractionError
from .positions import TEXT_MEAN, Position, furthest, is_pooled
from .shards import FORMAT_VERSION, RESIDUAL, ShardWriter, read_pairs

log = logging.getLogger(__name__)


class _StopForward(Exception):
    """Raised by a hook once every requested layer has been read."""


# A prompt prefix shared by every text (the template's opening words) is run once when it is at
# least this long: its keys and values then serve every batch.
MIN_SHARED_PREFIX = 4


@dataclass(frozen=True)
class SharedPrefix:
    """The tokens every prompt starts with, run once: each batch runs only what follows them,
    attending to `cache` (the model's key/value cache of the prefix, batch 1, never modified),
    passed as forward()'s keyword `keyword` (transformers >= 5.25 `cache`, before `past_key_values`)."""

    length: int
    cache: object
    keyword: str


def shared_prefix_length(token_lists: Sequence[Sequence[int]], keep: int, limit: int | None = None) -> int:
    """How many leading tokens all prompts share, leaving at least `keep` tokens of each after them
    (and at most `limit`)."""
    first = token_lists[0]
    shared = min(len(tokens) for tokens in token_lists) - keep
    if limit is not None:
        shared = min(shared, limit)
    for tokens in token_lists[1:]:
        shared = next((i for i in range(max(shared, 0)) if tokens[i] != first[i]), shared)
        if shared <= 0:
            return 0
    return max(shared, 0)


def run_shared_prefix(model, token_lists: Sequence[Sequence[int]], keep: int,
                      limit: int | None = None) -> SharedPrefix | None:
    """The prompts' shared prefix, of at most `limit` tokens, run once (None for an encoder, whose
    tokens attend to later ones too, a model whose forward() takes no cache, or a prefix shorter
    than MIN_SHARED_PREFIX): what follows the prefix in a causal LM changes nothing in it, so its
    keys and values are the same for every text."""
    from .models import is_decoder_lm

    length = shared_prefix_length(token_lists, keep, limit)
    keyword = accepted_keyword(model, "cache", "past_key_values")
    if length < MIN_SHARED_PREFIX or not is_decoder_lm(model.config) or keyword is None:
        return None
    device = next(model.parameters()).device
    with torch.inference_mode():
        output = model(input_ids=torch.as_tensor([token_lists[0][:length]], device=device), use_cache=True)
    return SharedPrefix(length, getattr(output, keyword), keyword)


BLOCK_LIST_NAMES = ("layers", "h", "layer", "block", "blocks")

# Sub-block modules by layout, first match wins. Gemma 2/3 normalise each sub-block's output
# before adding it (post_attention_layernorm, post_feedforward_layernorm): that norm's output is
# the site. Elsewhere (Llama, Qwen2, Mistral, GPT-2, ...) the sub-block's own output is added as it
# is (Llama's `post_attention_layernorm` is the norm *before* its MLP, hence the Gemma test on
# pre_feedforward_layernorm).
_GEMMA_POST_NORMS = {"attn_out": "post_attention_layernorm", "mlp_out": "post_feedforward_layernorm"}
_SUB_BLOCKS = {"attn_out": ("self_attn", "attn", "attention"), "mlp_out": ("mlp", "feed_forward")}


def site_module(block: torch.nn.Module, site: str) -> torch.nn.Module:
    """The module of a transformer block whose output (its first element, for a tuple) is `site`
    ("attn_out" or "mlp_out"): what that sub-block adds to the residual stream."""
    if hasattr(block, "pre_feedforward_layernorm") and hasattr(block, "post_feedforward_layernorm"):
        return getattr(block, _GEMMA_POST_NORMS[site])
    # Post-norm blocks (BERT and its descendants: output.LayerNorm; DistilBERT: sa_layer_norm)
    # add each sub-block's output to the residual stream inside a LayerNorm.
    if hasattr(getattr(block, "output", None), "LayerNorm") or hasattr(block, "sa_layer_norm"):
        raise ExtractionError(
            f"site '{site}' is not defined for {type(block).__name__}: a post-norm block normalises each sub-block's "
            "output together with the residual stream, so nothing is added to it that the site could be. Probe "
            "`sites: [residual]` for this model.")
    if (module := sub_block(block, site)) is not None:
        return module
    raise ExtractionError(f"site '{site}': {type(block).__name__} has no sub-block named "
                          f"{' or '.join(_SUB_BLOCKS[site])}, so its output cannot be read. Probe `sites: [residual]`.")


def sub_block(block: torch.nn.Module, site: str) -> torch.nn.Module | None:
    """The block's attention ("attn_out") or MLP ("mlp_out") module by its usual names, else None."""
    return next((getattr(block, name) for name in _SUB_BLOCKS[site]
                 if isinstance(getattr(block, name, None), torch.nn.Module)), None)


def text_config(config):
    """The language model's config (multimodal configs nest it as `text_config`)."""
    return getattr(config, "text_config", None) or config


def transformer_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The ModuleList of repeated transformer blocks (Llama `layers`, GPT-2 `h`, BERT `layer`)."""
    n_layers = text_config(model.config).num_hidden_layers
    candidates = [(name, module) for name, module in model.named_modules()
                  if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers]
    named = [c for c in candidates if c[0].rsplit(".", 1)[-1] in BLOCK_LIST_NAMES]
    if len(named) == 1 or (len(candidates) == 1 and not named):
        return (named or candidates)[0][1]
    raise ExtractionError(
        f"cannot tell which of {[n for n, _ in candidates] or 'no module lists'} holds the "
        f"{n_layers} transformer blocks of {type(model).__name__}."
    )


def text_spans(offsets: Sequence[Sequence[tuple[int, int]]], text_chars: Sequence[tuple[int, int]],
               ids: Sequence[str]) -> np.ndarray:
    """[N, 2] (first, end) token index of each prompt's text, end exclusive: from the first to the
    last token holding any of the text's characters (`text_chars`, [start, end) in the prompt),
    by the tokenizer's character `offsets` per token; tokens of no characters (BOS, EOS) hold none."""
    spans = np.empty((len(offsets), 2), dtype=np.int64)
    for row, (token_offsets, (start, end)) in enumerate(zip(offsets, text_chars)):
        inside = [k for k, (first, last) in enumerate(token_offsets) if first < end and last > start and last > first]
        if not inside:
            raise ExtractionError(f"text {ids[row]} tokenises to nothing (characters {start}..{end} of its prompt "
                                  "fall in no token), so text_last and text_mean have no token to read. Remove "
                                  "the text, or drop the pooled positions.")
        spans[row] = inside[0], inside[-1] + 1
    return spans


def token_positions(attention_mask: torch.Tensor, positions: Sequence[int]) -> torch.Tensor:
    """[B, P] indices of the tokens at `positions` (-1 = last real token) of each row.

    Works for left and right padding: real tokens are contiguous, so position -k is k-1
    tokens before each row's last attended token.
    """
    seq_len = attention_mask.shape[1]
    last_real = seq_len - 1 - attention_mask.flip(1).int().argmax(dim=1)
    offsets = torch.tensor([-p - 1 for p in positions], device=attention_mask.device)
    return last_real[:, None] - offsets[None, :]


def gather_plan(attention_mask: torch.Tensor, positions: Sequence[Position],
                spans: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """([B, P] index of the token read at each position, [B, T] bool mask of the text's tokens or
    None without text_mean), for a batch whose rows hold their texts at `spans` ([B, 2] (first, end)
    in each row's unpadded tokens; needed for the pooled positions). text_mean's column of the
    index holds the text's last token: HookedRun replaces what it reads there by the mean."""
    index = token_positions(attention_mask, [-1 if is_pooled(p) else p for p in positions])
    if not any(is_pooled(p) for p in positions):
        return index, None
    first_real = attention_mask.int().argmax(dim=1)  # 0 with right padding
    spans = spans.to(attention_mask.device)
    start, end = first_real + spans[:, 0], first_real + spans[:, 1]
    for column, position in enumerate(positions):
        if is_pooled(position):
            index[:, column] = end - 1
    if TEXT_MEAN not in positions:
        return index, None
    tokens = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return index, (tokens >= start[:, None]) & (tokens < end[:, None])


class HookedRun(threading.local):
    """Captures, per requested (layer, site), the [B, P, H] activations at the gathered
    positions (captured[(layer, site)]; the sites other than the residual stream exist from
    layer 1), and with `answer_tokens` the logits of those token ids at the last prompt position
    (captured["answers"]: ([B, L] float32, the unrestricted top-1 token ids [B])).

    A thread-local object: each thread that uses it gets its own `gather_index` and `captured`
    (Python runs `__init__` again for it), so several threads can run forward passes through
    the same hooks at once (see `extract`'s `streams`).
    """

    def __init__(self, blocks: torch.nn.ModuleList, layers: Sequence[int], width: int,
                 answer_head: torch.nn.Module | None = None, answer_tokens: Sequence[int] | None = None,
                 sites: Sequence[str] = (RESIDUAL,)):
        self.blocks, self.width = blocks, width  # width: the hidden size
        self.wanted = read_pairs(layers, sites)
        # the module whose output is each (layer >= 1, site): the block itself for the residual stream
        self.outputs = {(layer, site): blocks[layer - 1] if site == RESIDUAL else site_module(blocks[layer - 1], site)
                        for layer, site in self.wanted if layer > 0}
        self.answer_head, self.answer_tokens = answer_head, answer_tokens
        self.gather_index: torch.Tensor | None = None  # [B, P] the positions read
        self.buffer: torch.Tensor | None = None        # [pairs, B, P, H] float32 on the host: what is read
        self.text_tokens: torch.Tensor | None = None   # [B, T] the text's tokens, for text_mean
        self.mean_column: int | None = None            # text_mean's column of the gathered positions
        self.last_index: torch.Tensor | None = None    # [B] the last prompt token, where the answer is read
        self.captured: dict = {}

    @property
    def answering(self) -> bool:
        return self.answer_tokens is not None

    def _keep(self, key: tuple[int, str], hidden: torch.Tensor) -> None:
        rows = torch.arange(hidden.shape[0], device=hidden.device)[:, None]
        values = hidden[rows, self.gather_index].float()
        if self.text_tokens is not None:  # the sum over the text's tokens (in the model's dtype), / their count
            summed = torch.bmm(self.text_tokens[:, None].to(hidden.dtype), hidden)[:, 0].float()
            values[:, self.mean_column] = summed / self.text_tokens.sum(dim=1, keepdim=True)
        self.captured[key] = self.buffer[len(self.captured)].copy_(values)
        if len(self.captured) == len(self.wanted) and not self.answering:
            raise _StopForward

    def keep_answers(self, logits: torch.Tensor) -> None:
        """From the LM head's logits [B, 1, V] at the last prompt position."""
        if logits.shape[1] != 1:  # the LM head ran without the pre-hook: the last column may be a pad
            raise ExtractionError(f"the model computed logits at {logits.shape[1]} positions, not through its output "
                                  "embeddings module alone, so its answer cannot be read; set `answers: false`.")
        logits = logits[:, -1].float()
        tokens = torch.as_tensor(self.answer_tokens, device=logits.device)
        self.captured["answers"] = (logits[:, tokens].cpu(), logits.argmax(-1).cpu())

    def __enter__(self):
        handles = []
        if (0, RESIDUAL) in self.wanted:
            def read_input(module, args, kwargs):
                hidden = args[0] if args else kwargs["hidden_states"]
                self._keep((0, RESIDUAL), hidden)
            handles.append(self.blocks[0].register_forward_pre_hook(read_input, with_kwargs=True))
        for key, module in self.outputs.items():
            def read_output(module, args, output, key=key):
                self._keep(key, output if torch.is_tensor(output) else output[0])
            handles.append(module.register_forward_hook(read_output))
        if self.answering:
            def last_position_only(module, args):
                hidden = args[0]
                rows = torch.arange(hidden.shape[0], device=hidden.device)
                return (hidden[rows, self.last_index][:, None],)
            handles.append(self.answer_head.register_forward_pre_hook(last_position_only))
        self._handles = handles
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()


def tokenize(tokenizer, prompts: Sequence[str], ids: Sequence[str], min_tokens: int,
             max_tokens: int | None = None,
             text_chars: Sequence[tuple[int, int]] | None = None) -> tuple[list[list[int]], np.ndarray | None]:
    """Tokenise every prompt once; stop naming texts shorter than `min_tokens` or too long.
    Returns the token ids and, with `text_chars` (each text's characters in its prompt), the
    text's token span per prompt (text_spans)."""
    if text_chars is not None and not getattr(tokenizer, "is_fast", False):
        raise ExtractionError(f"the pooled positions (text_last, text_mean) find the text's tokens from the "
                              f"tokenizer's character offsets, which {type(tokenizer).__name__} (a slow tokenizer) "
                              "does not give; use the model's fast tokenizer (tokenizer.json), or drop the pooled "
                              "positions.")
    encoding = tokenizer(list(prompts), add_special_tokens=True, return_offsets_mapping=text_chars is not None)
    encoded = encoding["input_ids"]
    if max_tokens:
        long = [(ids[i], len(tokens)) for i, tokens in enumerate(encoded) if len(tokens) > max_tokens]
        if long:
            shown = ", ".join(f"{text_id} ({n} tokens)" for text_id, n in long[:10])
            raise ExtractionError(f"{len(long)} prompts exceed the model's {max_tokens}-token context: "
                                  f"{shown}. Shorten or remove these texts.")
    short = [(ids[i], len(tokens)) for i, tokens in enumerate(encoded) if len(tokens) < min_tokens]
    if short:
        shown = ", ".join(f"{text_id} ({n} tokens)" for text_id, n in short[:10])
        raise ExtractionError(
            f"{len(short)} prompts have fewer tokens than the furthest position needs "
            f"({min_tokens}): {shown}. Drop positions beyond -{min(n for _, n in short)} or "
            "remove these texts."
        )
    return encoded, None if text_chars is None else text_spans(encoding["offset_mapping"], text_chars, ids)


def length_sorted_batches(lengths: Sequence[int], batch_size: int, batch_tokens: int | None = None,
                          rows: Sequence[int] | None = None) -> list[np.ndarray]:
    """Row indices (all, or `rows`) in batches of similar length, longest first.

    A batch holds at most `batch_size` rows and, with `batch_tokens`, at most that many tokens
    once padded (a longer text goes alone): the long tail of a dataset then costs no padding.
    """
    lengths = np.asarray(lengths)
    rows = np.arange(len(lengths)) if rows is None else np.asarray(rows, dtype=int)
    order = rows[np.argsort(-lengths[rows], kind="stable")]
    batches, start = [], 0
    while start < len(order):
        size = batch_size if not batch_tokens else max(1, min(batch_size, batch_tokens // lengths[order[start]]))
        batches.append(order[start:start + size])
        start += size
    return batches


def pad_batch(token_lists: Sequence[Sequence[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists to one length on `side` ("left" or "right")."""
    width = max(len(t) for t in token_lists)
    input_ids = torch.full((len(token_lists), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(token_lists), width), dtype=torch.long)
    for row, tokens in enumerate(token_lists):
        span = slice(width - len(tokens), width) if side == "left" else slice(0, len(tokens))
        input_ids[row, span] = torch.as_tensor(tokens, dtype=torch.long)
        mask[row, span] = 1
    return input_ids, mask


def pad_token_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0):
        if candidate is not None:
            return int(candidate)
    return 0


def forward_batch(model, run: HookedRun, input_ids, mask, positions: Sequence[Position],
                  accepted: frozenset[str], prefix: SharedPrefix | None = None,
                  spans: torch.Tensor | None = None) -> dict:
    """One forward pass -> {(layer, site): [B, P, H] float32 on CPU} (and "answers" when `run`
    reads them); `accepted`: the optional forward() keywords the model takes, looked up once per
    run rather than per batch. With `prefix`, input_ids (right-padded) are what follows it.
    `spans`: each row's text, as (first, end) in its unpadded input_ids (for pooled positions)."""
    # Padding is checked on the host mask, before the copy: no device sync per batch.
    unpadded, left_padded = bool(mask.all()), not bool(mask[:, 0].all())
    device = next(model.parameters()).device
    input_ids, mask = input_ids.to(device), mask.to(device)
    run.gather_index, run.text_tokens = gather_plan(mask, positions, spans)
    # Everything the hooks read goes into one host buffer allocated before the pass: a small tensor
    # per (layer, site) allocated between each layer's large transient ones would keep the heap
    # from reusing their space, and the process would grow with the number of layers read.
    run.buffer = torch.empty((len(run.wanted), len(input_ids), len(positions), run.width), dtype=torch.float32)
    run.mean_column = positions.index(TEXT_MEAN) if run.text_tokens is not None else None
    run.last_index = token_positions(mask, [-1])[:, 0]
    run.captured = {}
    # A batch without padding needs no mask: attention then takes its plain causal path.
    kwargs = {"input_ids": input_ids} if unpadded else {"input_ids": input_ids, "attention_mask": mask}
    if "use_cache" in accepted:
        kwargs["use_cache"] = False
    if "position_ids" in accepted and left_padded:
        # Left padding: positions must not count the pad tokens (right padding needs nothing).
        kwargs["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
    try:
        with torch.inference_mode():
            if prefix is not None:  # a copy per batch: the forward pass appends to the cache
                cache = copy.deepcopy(prefix.cache)
                cache.batch_repeat_interleave(len(input_ids))
                kwargs[prefix.keyword] = cache
                if not unpadded:
                    kwargs["attention_mask"] = torch.cat([mask.new_ones((len(mask), prefix.length)), mask], 1)
            output = model(**kwargs)
            if run.answering:
                run.keep_answers(output.logits)
    except _StopForward:
        pass
    missing = sorted(set(run.wanted) - set(run.captured))
    if missing:
        raise ExtractionError(f"(layer, site) pairs {missing} were never reached in the forward pass of "
                              f"{type(model).__name__}; its blocks were not found correctly.")
    return run.captured


def keep_freed_memory_mapped() -> None:
    """Stop glibc from handing freed activation buffers back to the OS after every forward
    pass (its defaults mmap and unmap each buffer above 128 KiB-32 MiB, so every new tensor
    page-faults in again): about 10% of CPU extraction time. Extraction streams share one
    arena, so that these settings hold for their threads too and freed memory is reused
    across them. A no-op off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    if libc is None or not hasattr(libc, "mallopt"):
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
    libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    libc.mallopt(M_ARENA_MAX, 1)


def _answer_head(model, answer_tokens: Sequence[int] | None) -> torch.nn.Module | None:
    """The LM head that HookedRun feeds the last prompt position, or None when no answer is read."""
    if answer_tokens is None:
        return None
    head = model.get_output_embeddings()
    if head is None:
        raise ExtractionError(f"{type(model).__name__} has no LM head, so it gives no answer: answers need a "
                              "decoder LM (set `answers: false`, or probe a decoder).")
    return head


def accepted_keyword(model, *names: str) -> str | None:
    """The first of `names` that model.forward takes as a keyword, else None."""
    parameters = inspect.signature(model.forward).parameters
    return next((name for name in names if name in parameters), None)


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def extract(model, tokenizer, prompts: Sequence[str], ids: Sequence[str], layers: Sequence[int],
            positions: Sequence[Position], batch_size: int,
            sink: Callable[[np.ndarray, dict[int, torch.Tensor]], None],
            forward: Callable = forward_batch, progress: bool = True, batch_tokens: int | None = None,
            streams: int = 1, answer_tokens: Sequence[int] | None = None, sites: Sequence[str] = (RESIDUAL,),
            text_chars: Sequence[tuple[int, int]] | None = None) -> None:
    """Run the model over all prompts; hand each batch's rows and activations, {(layer, site):
    [B, P, H]}, to `sink` (with `answer_tokens`, also the logits of those token ids at the last
    prompt position, see HookedRun). The pooled positions need `text_chars`, each text's
    characters [start, end) in its prompt.

    Batches are length-sorted, of at most `batch_size` texts and `batch_tokens` padded tokens.
    A decoder runs the tokens all prompts start with once (run_shared_prefix), and each batch
    only what follows them.
    A batch that runs out of (GPU) memory is split in half and retried; the limits stay
    halved for the rest of the run. With `streams` > 1, that many threads each run their own
    batches at once (on a CPU, with one torch thread each: every core then stays busy through
    the attention, elementwise ops and Python between the matmuls); `sink` is called by one
    thread at a time.
    """
    max_tokens = getattr(text_config(model.config), "max_position_embeddings", None)
    pooled = any(is_pooled(p) for p in positions)
    if pooled and text_chars is None:
        raise ExtractionError("the pooled positions (text_last, text_mean) need each text's characters in its "
                              "prompt (text_chars).")
    token_lists, spans = tokenize(tokenizer, prompts, ids, furthest(positions), max_tokens,
                                  text_chars if pooled else None)
    side = getattr(tokenizer, "padding_side", "right")
    pad_id = pad_token_id(tokenizer)
    run = HookedRun(transformer_blocks(model), layers, text_config(model.config).hidden_size,
                    _answer_head(model, answer_tokens), answer_tokens, sites)
    accepted = frozenset(name for name in ("position_ids", "use_cache") if accepted_keyword(model, name))
    if side == "left" and "position_ids" not in accepted:
        # Positions would count the pads; token positions come from the mask, so right padding is exact.
        log.info("%s.forward takes no position_ids: padding batches on the right, not the tokenizer's left",
                 type(model).__name__)
        side = "right"
    # The prefix ends before any text's first token: the hooks must see every token of the text.
    prefix = run_shared_prefix(model, token_lists, max(furthest(positions), 1),
                               None if spans is None else int(spans[:, 0].min()))
    if prefix is not None:  # batches run what follows the prefix, padded on the right
        log.info("the prompts' first %d tokens are shared: run once, their keys and values serve every batch",
                 prefix.length)
        token_lists, side = [tokens[prefix.length:] for tokens in token_lists], "right"
        if spans is not None:
            spans = spans - prefix.length
    lengths = [len(t) for t in token_lists]
    queue = length_sorted_batches(lengths, batch_size, batch_tokens)
    lock = threading.Lock()
    bar = tqdm(total=len(token_lists), unit="text", disable=not progress, mininterval=5)
    failures: list[BaseException] = []

    def work() -> None:
        nonlocal queue, batch_size, batch_tokens
        while True:
            with lock:
                if failures or not queue:
                    return
                rows = queue.pop(0)
            input_ids, mask = pad_batch([token_lists[i] for i in rows], pad_id, side)
            try:
                captured = forward(model, run, input_ids, mask, positions, accepted, prefix,
                                   None if spans is None else torch.as_tensor(spans[rows]))
            except (torch.OutOfMemoryError, RuntimeError) as exc:
                if not _is_out_of_memory(exc) or len(rows) == 1:
                    raise
                captured = None
            with lock:
                if captured is None:  # out of memory: halve the batch limits for the rest of the run
                    batch_size = max(1, len(rows) // 2)
                    batch_tokens = batch_tokens // 2 if batch_tokens else None
                    log.warning("out of memory with a batch of %d texts; going on with at most %d",
                                len(rows), batch_size)
                    if torch.cuda.is_available():
                        torch.cuda.empty_cache()
                    queue = length_sorted_batches(lengths, batch_size, batch_tokens, np.concatenate([rows, *queue]))
                    continue
                sink(rows, captured)
                bar.update(len(rows))

    total_threads = torch.get_num_threads()

    def stream() -> None:
        # Set in each thread: a new thread's matmuls would otherwise use every core.
        torch.set_num_threads(max(1, total_threads // streams))
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 (re-raised by the calling thread)
            with lock:
                failures.append(exc)

    with run:
        if streams == 1:
            work()
        else:
            threads = [threading.Thread(target=stream, name=f"extract-{i}") for i in range(streams)]
            for thread in threads:
                thread.start()
            try:
                for thread in threads:
                    thread.join()
            except BaseException as exc:  # e.g. Ctrl-C: every stream stops after its current batch
                with lock:
                    failures.append(exc)
                for thread in threads:
                    thread.join()
            torch.set_num_threads(total_threads)
    bar.close()
    if failures:
        raise failures[0]


def extract_to_shards(model, tokenizer, prompts: Sequence[str], ids: Sequence[str],
                      layers: Sequence[int], positions: Sequence[Position], batch_size: int,
                      shard_path: Callable[[int, str], str], metadata: dict[str, str],
                      forward: Callable = forward_batch, progress: bool = True,
                      batch_tokens: int | None = None, streams: int = 1,
                      answer_tokens: Sequence[int] | None = None,
                      sites: Sequence[str] = (RESIDUAL,),
                      text_chars: Sequence[tuple[int, int]] | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """Extract and stream every (layer, site) of read_pairs to its own shard, at
    shard_path(layer, site); shards appear only when complete.
    With `answer_tokens`, returns (their logits at the last prompt position [N, L] float32, the
    unrestricted top-1 token ids [N]) per row, read in the same forward passes; else None."""
    hidden_size = text_config(model.config).hidden_size
    shape = (len(prompts), len(positions), hidden_size)
    writers = {
        (layer, site): ShardWriter(shard_path(layer, site), shape, {
            **metadata, "format_version": FORMAT_VERSION, "layer": str(layer),
            "positions": json.dumps(list(positions)), "n_rows": str(len(prompts)),
            "hidden_size": str(hidden_size), "site": site,
        })
        for layer, site in read_pairs(layers, sites)
    }

    answers = ((np.full((len(prompts), len(answer_tokens)), np.nan, dtype=np.float32),
                np.full(len(prompts), -1, dtype=np.int64)) if answer_tokens is not None else None)

    def sink(rows: np.ndarray, captured: dict) -> None:
        if answers is not None:
            answers[0][rows], answers[1][rows] = (tensor.numpy() for tensor in captured["answers"])
        for (layer, site), writer in writers.items():
            values = captured[layer, site].numpy()
            finite = np.isfinite(values).all(axis=(1, 2))
            if not finite.all():
                dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
                raise ExtractionError(
                    f"model '{metadata.get('model_id', type(model).__name__)}' gave NaN or inf activations at "
                    f"layer {layer} ({site}) for {np.count_nonzero(~finite)} of a batch's {len(rows)} texts, first "
                    f"{ids[rows[~finite].min()]}. Its weights are likely corrupt (re-download the model file, "
                    f"pin its `sha256`) or computing in {dtype} overflowed"
                    f"{' (set `extraction.dtype: float32`)' if dtype != 'float32' else ''}. No shard was written."
                )
            writer.write_rows(rows, values)

    try:
        extract(model, tokenizer, prompts, ids, layers, positions, batch_size, sink, forward, progress, batch_tokens,
                streams, answer_tokens, sites, text_chars)
        for writer in writers.values():
            writer.check_complete()
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.commit()
    return answers
