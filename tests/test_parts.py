"""Extraction parts: names round-trip, and plans reuse what is on disk and cover exactly the rest."""

from __future__ import annotations

import pytest

from emoprobe.errors import ConfigError
from emoprobe.parts import parse_part, parse_positions, part_name, part_positions, plan_parts


@pytest.mark.parametrize(("layers", "positions", "name"), [
    (range(31), [-1, -2, -3, -4, -5], "layers_0to30.positions_-5to-1"),
    ([0, 1, 2, 5, 7, 8], [-1], "layers_0to2+5+7to8.positions_-1"),
    ([12], [-6, -1, -2], "layers_12.positions_-6+-2to-1"),
])
def test_names_round_trip(layers, positions, name):
    assert part_name(layers, positions) == name
    assert parse_part(name) == (tuple(sorted(layers)), ("residual",), tuple(sorted(positions)))


def test_names_with_sites_round_trip():
    name = part_name(range(31), [-1], ["mlp_out", "residual", "attn_out"])
    assert name == "layers_0to30.sites_residual+attn_out+mlp_out.positions_-1"
    assert parse_part(name) == (tuple(range(31)), ("residual", "attn_out", "mlp_out"), (-1,))
    assert part_name([1, 2], [-1], ["attn_out"]) == "layers_1to2.sites_attn_out.positions_-1"


@pytest.mark.parametrize("name", ["layers_0to30", "layers_a.positions_-1", "layers_1.positions_1", "../x",
                                  "layers_1.sites_head.positions_-1", "layers_1.sites_.positions_-1"])
def test_a_bad_name_is_refused(name):
    with pytest.raises(ConfigError, match="not an activation part name"):
        parse_part(name)


def _parts(plan):
    return sorted(set(plan.values()))


def test_first_run_is_one_part():
    plan = plan_parts(range(31), [-1, -2], [], n_layers=30)
    assert _parts(plan) == ["layers_0to30.positions_-2to-1"] and len(plan) == 62


def test_new_layers_and_positions_get_new_parts_and_old_ones_are_kept():
    plan = plan_parts(range(32), [-1, -2, -6], ["layers_0to30.positions_-5to-1", "unrelated"], n_layers=31)
    assert _parts(plan) == ["layers_0to30.positions_-5to-1", "layers_0to30.positions_-6",
                            "layers_31.positions_-6+-2to-1"]
    assert plan[(5, "residual", -2)] == "layers_0to30.positions_-5to-1"
    assert plan[(5, "residual", -6)] == "layers_0to30.positions_-6"
    assert len(plan) == 32 * 3


def test_overlapping_parts_resolve_by_name_order_and_unused_parts_are_left_out():
    existing = ["layers_3to5.positions_-1", "layers_0to5.positions_-1", "layers_9.positions_-1"]
    plan = plan_parts([3, 4], [-1], existing, n_layers=12)
    assert set(plan.values()) == {"layers_0to5.positions_-1"}


def test_parts_deeper_than_the_model_are_ignored():
    plan = plan_parts([0, 1], [-1], ["layers_0to30.positions_-1"], n_layers=4)
    assert _parts(plan) == ["layers_0to1.positions_-1"]


def test_a_part_is_used_at_a_layer_only_if_none_of_its_requested_positions_is_taken():
    """A probe job fits all of a part's positions at one layer, so at every layer the parts in
    use must hold disjoint sets of the requested positions; a part that would overlap there is
    passed over for that layer (its other layers still serve)."""
    existing = ["layers_0to3.positions_-1", "layers_0to4.positions_-2to-1"]
    plan = plan_parts(range(5), [-2, -1], existing, n_layers=4)
    assert {plan[(layer, "residual", -1)] for layer in range(4)} == {"layers_0to3.positions_-1"}
    assert plan[(4, "residual", -1)] == plan[(4, "residual", -2)] == "layers_0to4.positions_-2to-1"
    assert {plan[(layer, "residual", -2)] for layer in range(4)} == {"layers_0to3.positions_-2"}  # a new part
    for layer in range(5):
        used = {plan[(layer, "residual", position)] for position in (-2, -1)}
        held = [set(parse_part(name).positions) & {-2, -1} for name in used]
        assert sum(map(len, held)) == len(set().union(*held)) == 2


def test_part_positions_is_the_name_s_positions_spec():
    assert part_positions("layers_0to30.positions_-6+-2to-1") == "-6+-2to-1"
    assert parse_positions("-6+-2to-1") == (-6, -2, -1)


def test_sites_in_one_part_with_layer_0_reading_only_the_residual_stream():
    """The sub-block sites start at layer 1: a first run with every site is still one part, which
    reads the residual stream alone at layer 0."""
    plan = plan_parts(range(4), [-1, -2], [], n_layers=3, sites=["residual", "attn_out", "mlp_out"])
    assert _parts(plan) == ["layers_0to3.sites_residual+attn_out+mlp_out.positions_-2to-1"]
    assert len(plan) == 2 * (4 + 3 + 3) and (0, "attn_out", -1) not in plan


def test_adding_sites_plans_a_part_for_them_alone():
    plan = plan_parts(range(4), [-1], ["layers_0to3.positions_-1"], n_layers=3, sites=["residual", "mlp_out"])
    assert _parts(plan) == ["layers_0to3.positions_-1", "layers_1to3.sites_mlp_out.positions_-1"]
    assert plan[(2, "residual", -1)] == "layers_0to3.positions_-1"
