"""Activation patching (Tak et al.): for pairs of texts with different labels, the source's
activation of a site at the last prompt position, over a span of layers centred on each layer,
written into the target's run; how far the target's answer moves to the source's emotion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .edits import Edit
from .plan import centred_span


def patch_edits(centres: Sequence[int], sites: Sequence[str], span: int, n_layers: int,
                sources: Mapping[tuple[int, str], torch.Tensor]) -> list[tuple[int, str, Edit]]:
    """(centre layer, site, edit) for every centre x site: the edit writes sources[(layer, site)][t],
    the source activation [P, H] of pair t, into pair t's target at every layer of the span."""
    def source_of(site):
        return lambda layer, pairs: sources[layer, site][pairs]

    return [(centre, site, Edit(site, centred_span(centre, span, n_layers), source_of(site)))
            for centre in centres for site in sites]
