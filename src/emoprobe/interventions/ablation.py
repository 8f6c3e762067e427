"""Ablation (Tak et al.'s knockout): a site's activation at the last prompt position, over a span
of layers centred on each layer, set to zero (the sub-block adds nothing; for the residual stream,
the stream itself), to the dataset's mean of that activation (read from the extraction shards), or
to another text's activation (random: a seeded donor text per text and site, from the shards too).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from .edits import Edit
from .plan import centred_span

def ablation_edits(centres: Sequence[int], sites: Sequence[str], kinds: Sequence[str], span: int, n_layers: int,
                   means: Mapping[tuple[int, str], torch.Tensor],
                   donors: Mapping[tuple[int, str], torch.Tensor]) -> list[tuple[int, str, str, Edit]]:
    """(centre layer, site, kind, edit) for every centre x site x kind. means[(layer, site)]: the
    dataset's mean activation [H]; donors[(layer, site)]: [N, H], row t the donor's activation
    written into text t (every layer of a span must be there, for the kinds that need them)."""
    def mean_of(site):
        return lambda layer, texts: means[layer, site].expand(len(texts), -1)

    def donor_of(site):
        return lambda layer, texts: donors[layer, site][texts]

    values = {"zero": lambda site: None, "mean": mean_of, "random": donor_of}
    return [(centre, site, kind, Edit(site, centred_span(centre, span, n_layers), values[kind](site)))
            for centre in centres for site in sites for kind in kinds]
