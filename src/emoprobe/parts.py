"""Extraction parts: which extraction job holds the shards of which (layer, site, position).

A part is one extraction job's output folder, named after the layers, sites and positions it
holds, e.g. `layers_0to30.positions_-5to-1` (the residual stream only: no sites in the name),
`layers_0to30.positions_-5to-1+text_last+text_mean` (with the pooled positions) or
`layers_0to30.sites_residual+attn_out+mlp_out.positions_-5to-1`; the sites other than the
residual stream have no layer 0, so such a part holds only the residual stream there. A first run
makes one part per model x dataset. A later run that adds layers, sites or positions plans new
parts for just the missing triples and keeps using the parts already on disk: Snakemake reruns
every job downstream of a job that reruns, so new work has to be a new job for the probes already
fitted to stay untouched.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

from .errors import ConfigError
from .positions import TEXT_LAST, TEXT_MEAN, Position, is_pooled, ordered
from .shards import RESIDUAL, SITES, read_pairs

# Fixed positions as runs ('-5to-1', '-6+-2to-1'), then the pooled ones ('+text_last+text_mean'),
# or the pooled ones alone ('text_mean').
_FIXED_PATTERN = r"-\d+(?:to-\d+)?(?:\+-\d+(?:to-\d+)?)*"
POSITIONS_PATTERN = (rf"(?:{_FIXED_PATTERN}(?:\+{TEXT_LAST})?(?:\+{TEXT_MEAN})?|{TEXT_LAST}(?:\+{TEXT_MEAN})?|"
                     rf"{TEXT_MEAN})")
SITES_PATTERN = "(?:" + "|".join(SITES) + ")(?:\\+(?:" + "|".join(SITES) + "))*"
PART_PATTERN = (r"layers_\d+(?:to\d+)?(?:\+\d+(?:to\d+)?)*(?:\.sites_" + SITES_PATTERN + r")?\.positions_"
                + POSITIONS_PATTERN)


class Part(NamedTuple):
    layers: tuple[int, ...]
    sites: tuple[str, ...]
    positions: tuple[Position, ...]


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


def positions_name(positions: Iterable[Position]) -> str:
    """Positions as a part name writes them: [-5, ..., -1, 'text_mean'] -> '-5to-1+text_mean'."""
    positions = ordered(positions)
    fixed = [p for p in positions if not is_pooled(p)]
    return "+".join(([_runs(fixed)] if fixed else []) + [p for p in positions if is_pooled(p)])


def part_name(layers: Iterable[int], positions: Iterable[Position], sites: Iterable[str] = (RESIDUAL,)) -> str:
    sites = set(sites)
    named = "" if sites == {RESIDUAL} else ".sites_" + "+".join(site for site in SITES if site in sites)
    return f"layers_{_runs(layers)}{named}.positions_{positions_name(positions)}"


def part_positions(name: str) -> str:
    """The positions of a part name as written in it: 'layers_0to30.positions_-5to-1' -> '-5to-1'."""
    return name.partition(".positions_")[2]


def parse_positions(spec: str) -> tuple[Position, ...]:
    """Positions as positions_name writes them ('-5to-1', '-6+-2to-1+text_mean', 'text_last'), in
    positions.ordered's order."""
    pooled = tuple(name for name in spec.split("+") if is_pooled(name))
    fixed = "+".join(name for name in spec.split("+") if not is_pooled(name))
    return ordered((_values(fixed) if fixed else ()) + pooled)


def parse_part(name: str) -> Part:
    """(layers, sites, positions) of a part name, layers and positions ascending, sites in SITES order."""
    if not re.fullmatch(PART_PATTERN, name):
        raise ConfigError(f"'{name}' is not an activation part name (expected e.g. layers_0to30.positions_-5to-1).")
    layers, positions = name.removeprefix("layers_").split(".positions_")
    layers, _, sites = layers.partition(".sites_")
    return Part(_values(layers), tuple(site for site in SITES if site in (sites or RESIDUAL).split("+")),
                parse_positions(positions))


def plan_parts(layers: Iterable[int], positions: Iterable[Position], existing: Iterable[str],
               n_layers: int, sites: Iterable[str] = (RESIDUAL,)) -> dict[tuple[int, str, Position], str]:
    """Map every requested (layer, site, position) to the part that holds it (no sub-block site
    at layer 0, see shards.read_pairs).

    Parts in `existing` (folder names found on disk) are used first, in name order, each for
    the (layer, site) pairs where none of its requested triples is taken yet: at every (layer,
    site), the parts in use hold disjoint sets of the requested positions (a probe job fits all
    of a part's positions at one layer and site). A part reaching past the model's `n_layers`
    (another model under the same name) is ignored. The triples left over are grouped into new
    parts, one per set of layers missing the same positions at the same sites (layer 0 joins a
    group whose sites include the residual stream's missing positions there).
    """
    wanted = {(layer, site, position) for layer, site in read_pairs(layers, sites) for position in positions}
    owner: dict[tuple[int, str, Position], str] = {}
    for name in sorted(existing):
        try:
            part = parse_part(name)
        except ConfigError:
            continue  # not a part folder
        if max(part.layers) > n_layers:
            continue
        for layer in part.layers:
            for site in part.sites:
                triples = wanted.intersection((layer, site, position) for position in part.positions)
                if triples and not triples.intersection(owner):
                    owner.update(dict.fromkeys(triples, name))
    missing: dict[int, dict[str, set[Position]]] = defaultdict(lambda: defaultdict(set))
    for layer, site, position in wanted.difference(owner):
        missing[layer][site].add(position)
    groups: dict[tuple[frozenset[str], frozenset[Position]], list[int]] = defaultdict(list)
    for layer, by_site in sorted(missing.items(), reverse=True):  # layer 0 last, to join a group
        sites_missing: dict[frozenset[Position], set[str]] = defaultdict(set)
        for site, held in by_site.items():
            sites_missing[frozenset(held)].add(site)
        for held, group_sites in sites_missing.items():
            key = (frozenset(group_sites), held)
            if layer == 0:  # only the residual stream exists there: join a group reading it
                key = next((other for other in groups if RESIDUAL in other[0] and other[1] == held), key)
            groups[key].append(layer)
    for (group_sites, held), part_layers in groups.items():
        name = part_name(part_layers, held, group_sites)
        owner.update({(layer, site, position): name for layer, site in read_pairs(part_layers, group_sites)
                      for position in held})
    return owner
