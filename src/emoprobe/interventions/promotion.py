"""Direct emotion promotion (Tak et al.): alpha times the unit direction of emotion e's linear probe
(its saved weight row, in the residual stream's own units), scaled by that layer's median residual
norm at the last prompt position, added to the residual stream over a span of layers centred on
each layer; the control adds a seeded random unit direction scaled the same way."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .edits import Edit
from .plan import centred_span

RANDOM = -1  # the emotion column of the random-direction control


def unit_rows(weight: np.ndarray) -> np.ndarray:
    """Each row of weight [K, H] divided by its Euclidean norm."""
    weight = np.asarray(weight, dtype=np.float64)
    return weight / np.linalg.norm(weight, axis=1, keepdims=True)


def probe_directions(weight: np.ndarray, n_classes: int) -> np.ndarray:
    """Unit directions [K, H] that raise each class's probe logit against the others, from a saved
    logistic probe's weight (fit_directions): its rows as they are for K > 2 classes; for two
    classes, where one row is the second class's logit, minus it for the first and it for the second."""
    weight = np.asarray(weight, dtype=np.float64)
    if n_classes == 2 and len(weight) == 1:
        weight = np.concatenate([-weight, weight])
    return unit_rows(weight)


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
    def added(vectors, alpha):
        def values(layer, texts):
            return torch.as_tensor(alpha * norms[layer] * vectors[layer], dtype=torch.float32).expand(len(texts), -1)
        return values

    edits = []
    for centre in centres:
        layers = centred_span(centre, span, n_layers)
        for alpha in alphas:
            for emotion in [*emotions, RANDOM]:
                vectors = random if emotion == RANDOM else {layer: directions[layer][emotion] for layer in layers}
                edits.append((centre, emotion, alpha, Edit("residual", layers, added(vectors, alpha), add=True)))
    return edits
