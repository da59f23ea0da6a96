"""Intervention specs: ``SRC:MODULES[:LAYERS]`` and ``MODULES[:LAYERS]`` parse as documented, bad
specs raise typed errors naming the expected form, and build_interventions builds the stack."""
from __future__ import annotations

import pytest
import torch

import affectlocus as al
from affectlocus.errors import InterventionError, SiteError, SourceError
from affectlocus.interventions import Graft, Zero
from affectlocus.interventions.spec import (adapter_grafts, build_interventions, parse_graft_spec,
                                            parse_site_spec)


@pytest.mark.parametrize("spec, want", [
    ("runs/tuned:gate", ("runs/tuned", "gate", None)),
    ("runs/tuned:o,gate:10-19", ("runs/tuned", "o,gate", "10-19")),
    ("runs/a:o,gate:10:20", ("runs/a", "o,gate", "10:20")),       # LAYERS holding ':'
    (r"C:\runs\a:mlp:3", (r"C:\runs\a", "mlp", "3")),               # SRC holding ':'
    ("runs/a:attn+gate:", ("runs/a", "attn+gate", None)),
])
def test_graft_specs(spec, want):
    assert parse_graft_spec(spec) == want


@pytest.mark.parametrize("spec, want", [
    ("gate", ("gate", None)), ("mlp:3-5", ("mlp", "3-5")), ("gate:10:20", ("gate", "10:20")),
    ("q,k:0,5", ("q,k", "0,5")), ("all:", ("all", None)),
])
def test_site_specs(spec, want):
    assert parse_site_spec(spec) == want


@pytest.mark.parametrize("spec", ["nonsense", "gate", ":gate", "runs/a:nope:3", ""])
def test_bad_graft_spec_names_the_form(spec):
    with pytest.raises(InterventionError, match=r"SRC:MODULES\[:LAYERS\]"):
        parse_graft_spec(spec)


@pytest.mark.parametrize("spec, match", [("", "is empty"), ("nope", "unknown module 'nope'"),
                                         (":3", "is empty"), ("gate,foo:1", "unknown module 'foo'")])
def test_bad_site_spec_names_the_form(spec, match):
    with pytest.raises(SiteError, match=match) as info:
        parse_site_spec(spec)
    assert "MODULES[:LAYERS]" in str(info.value)


def test_layers_are_checked_against_a_depth_with_parse_layers():
    assert parse_site_spec("gate:0-1", num_layers=2) == ("gate", "0-1")
    assert parse_graft_spec("x:gate:-1", num_layers=2) == ("x", "gate", "-1")
    with pytest.raises(SiteError, match=r"layer 5 out of range.*MODULES\[:LAYERS\]"):
        parse_site_spec("gate:5", num_layers=2)
    with pytest.raises(SiteError, match=r"cannot parse layers 'a-b'.*SRC:MODULES"):
        parse_graft_spec("x:gate:a-b", num_layers=2)
    assert parse_site_spec("gate:a-b") == ("gate", "a-b")  # without a depth: checked when applied


def test_build_interventions_in_order_and_applied(tiny, tmp_path):
    base, donor = tiny("llama", seed=0), tiny("llama", seed=1)
    donor.save_pretrained(tmp_path / "donor")
    stack = build_interventions([], [f"{tmp_path / 'donor'}:gate:1"], ["up:0"])
    assert [type(i) for i in stack] == [Graft, Zero]
    assert [i.selection.describe() for i in stack] == ["modules=gate layers=1", "modules=up layers=0"]
    with al.intervene(base, *build_interventions([], [f"{tmp_path / 'donor'}:gate:1"], ["up:0"], base)):
        assert torch.equal(base.model.layers[1].mlp.gate_proj.weight, donor.model.layers[1].mlp.gate_proj.weight)
        assert not base.model.layers[0].mlp.up_proj.weight.any()
    with pytest.raises(SiteError, match="out of range"):
        build_interventions([], [], ["gate:7"], base)  # the tiny model has 2 layers
    with pytest.raises(SourceError, match="not found"):
        build_interventions([], [f"{tmp_path / 'missing'}:gate"], [])


def test_adapter_without_weights_for_the_model_is_a_source_error(tiny):
    model = tiny("llama")
    with pytest.raises(SourceError, match="no weights for any projection"):
        adapter_grafts(model, {"unrelated.weight": torch.zeros(2, 2)})
