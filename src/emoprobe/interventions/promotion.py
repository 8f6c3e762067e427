"""Direct emotion promotion (Tak et al.): alpha times the unit direction of emotion e's linear probe
(its saved weight row, in the residual stream's own units), scaled by that layer's median residual
norm at the last prompt position, added to the residual stream over a span of layers centred on
each layer; the control adds a seeded random unit direction scaled the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..geometry import unit_rows
from .edits import Edit, residual_shift
from .plan import centred_span

RANDOM = -1  # the emotion column of the random-direction control


def random_directions(layers: Sequence[int], width: int, seed: int) -> dict[int, np.ndarray]:
    """A seeded random unit direction [H] per layer (standard normal, normalised)."""
    rng = np.random.default_rng(seed)
    return {layer: unit_rows(rng.standard_normal((1, width)))[0] for layer in layers}


def promotion_edits(centres: Sequence[int], emotions: Sequence[int], alphas: Sequence[float], span: int,
                    n_layers: int, directions: Mapping[int, np.ndarray], norms: Mapping[int, float],
                    random: Mapping[int, np.ndarray]) -> list[tuple[int, int, float, Edit]]:
    """(centre layer, emotion column or RANDOM, alpha, edit) for every centre x alpha x (emotion,
    then the random control): the edit adds alpha * norms[layer] * direction at each layer of the
    span, directions[layer] [K, H] holding one unit row per emotion column."""
    edits = []
    for centre in centres:
        layers = centred_span(centre, span, n_layers)
        for alpha in alphas:
            for emotion in [*emotions, RANDOM]:
                vectors = random if emotion == RANDOM else {layer: directions[layer][emotion] for layer in layers}
                edits.append((centre, emotion, alpha, residual_shift(layers, vectors, alpha, norms)))
    return edits
