"""Extraction parts: which extraction job holds the shards of which (layer, position) pairs.

A part is one extraction job's output folder, named after the layers and positions it holds,
e.g. `layers_0to30.positions_-5to-1`. A first run makes one part per model x dataset. A later
run that adds layers or positions plans new parts for just the missing pairs and keeps using
the parts already on disk: Snakemake reruns every job downstream of a job that reruns, so new
work has to be a new job for the probes already fitted to stay untouched.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable

from .errors import ConfigError

POSITIONS_PATTERN = r"-\d+(?:to-\d+)?(?:\+-\d+(?:to-\d+)?)*"
PART_PATTERN = r"layers_\d+(?:to\d+)?(?:\+\d+(?:to\d+)?)*\.positions_" + POSITIONS_PATTERN


def _runs(values: Iterable[int]) -> str:
    """Sorted integers as runs of consecutive values: [0, 1, 2, 5] -> '0to2+5'."""
    values = sorted(set(values))
    runs, start, previous = [], values[0], values[0]
    for value in values[1:]:
        if value != previous + 1:
            runs.append((start, previous))
            start = value
        previous = value
    runs.append((start, previous))
    return "+".join(str(first) if first == last else f"{first}to{last}" for first, last in runs)


def _values(runs: str) -> tuple[int, ...]:
    values = []
    for run in runs.split("+"):
        first, _, last = run.partition("to")
        values.extend(range(int(first), int(last or first) + 1))
    return tuple(values)


def part_name(layers: Iterable[int], positions: Iterable[int]) -> str:
    return f"layers_{_runs(layers)}.positions_{_runs(positions)}"


def part_positions(name: str) -> str:
    """The positions of a part name as written in it: 'layers_0to30.positions_-5to-1' -> '-5to-1'."""
    return name.partition(".positions_")[2]


def parse_positions(spec: str) -> tuple[int, ...]:
    """Positions written as runs ('-5to-1', '-6+-2to-1'), ascending."""
    return _values(spec)


def parse_part(name: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(layers, positions) of a part name, both ascending."""
    if not re.fullmatch(PART_PATTERN, name):
        raise ConfigError(f"'{name}' is not an activation part name (expected e.g. layers_0to30.positions_-5to-1).")
    layers, positions = name.removeprefix("layers_").split(".positions_")
    return _values(layers), _values(positions)


def plan_parts(layers: Iterable[int], positions: Iterable[int], existing: Iterable[str],
               n_layers: int) -> dict[tuple[int, int], str]:
    """Map every requested (layer, position) to the part that holds it.

    Parts in `existing` (folder names found on disk) are used first, in name order, each for
    the layers where none of its requested pairs is taken yet: at every layer, the parts in use
    hold disjoint sets of the requested positions (a probe job fits all of a part's positions at
    one layer). A part reaching past the model's `n_layers` (another model under the same name)
    is ignored. The pairs left over are grouped into new parts, one per set of layers missing
    the same positions.
    """
    wanted = {(layer, position) for layer in layers for position in positions}
    owner: dict[tuple[int, int], str] = {}
    for name in sorted(existing):
        try:
            part_layers, held_positions = parse_part(name)
        except ConfigError:
            continue  # not a part folder
        if max(part_layers) > n_layers:
            continue
        for layer in part_layers:
            pairs = wanted.intersection((layer, position) for position in held_positions)
            if pairs and not pairs.intersection(owner):
                owner.update(dict.fromkeys(pairs, name))
    missing_positions: dict[int, set[int]] = defaultdict(set)
    for layer, position in wanted.difference(owner):
        missing_positions[layer].add(position)
    layers_missing: dict[frozenset[int], list[int]] = defaultdict(list)
    for layer, missing in missing_positions.items():
        layers_missing[frozenset(missing)].append(layer)
    for missing, part_layers in layers_missing.items():
        name = part_name(part_layers, missing)
        owner.update({(layer, position): name for layer in part_layers for position in missing})
    return owner
