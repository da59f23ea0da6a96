"""Sites: parsing selections, the architecture table, and layer discovery through wrappers."""
from __future__ import annotations

import pytest
import torch.nn as nn

import affectlocus as al
from affectlocus.sites import parse_layers, parse_modules

from _util import ARCHS


def test_parse_modules_names_groups_and_suffixes():
    assert parse_modules("gate") == ("gate",)
    assert parse_modules("gate_proj") == ("gate",)
    assert parse_modules(["down", "q_proj"]) == ("q", "down")
    assert parse_modules("attn") == ("q", "k", "v", "o")
    assert parse_modules("mlp") == ("gate", "up", "down")
    assert parse_modules("attn+gate") == ("q", "k", "v", "o", "gate")
    assert parse_modules("all") == parse_modules(None) == ("q", "k", "v", "o", "gate", "up", "down")


@pytest.mark.parametrize("bad", ["gates", "fc1", ["q", 3], ""])
def test_unknown_module_names_say_what_exists(bad):
    with pytest.raises(al.SiteError, match="available: q, k, v, o, gate, up, down"):
        parse_modules(bad)


@pytest.mark.parametrize("spec,expected", [
    (3, (3,)), (-1, (9,)), ([0, -1, 0], (0, 9)), (range(2, 5), (2, 3, 4)), (slice(None, None, 4), (0, 4, 8)),
    ("7", (7,)), ("1,3", (1, 3)), ("8:", (8, 9)), ("2-4", (2, 3, 4)), (None, tuple(range(10))),
])
def test_parse_layers_forms(spec, expected):
    assert parse_layers(spec, 10) == expected


@pytest.mark.parametrize("bad,match", [(10, "out of range"), (-11, "out of range"), ([], "empty"),
                                       (slice(5, 5), "empty"), ("x", "cannot parse"), (1.5, "ints")])
def test_bad_layers(bad, match):
    with pytest.raises(al.SiteError, match=match):
        parse_layers(bad, 10)


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_resolves_all_sites(tiny, arch):
    model = tiny(arch)
    stack = al.find_decoder(model)
    sites = al.select(model, "all")
    assert len(sites) == 7 * stack.num_layers
    cfg = stack.config
    for site in sites:
        weight = model.get_submodule(site.path).weight
        rows = weight[site.rows[0]:site.rows[1]] if site.rows else weight
        assert tuple(rows.shape) == site.shape
        if site.module in ("gate", "up"):
            assert site.shape == (cfg.intermediate_size, cfg.hidden_size)
        if site.module == "down":
            assert site.shape == (cfg.hidden_size, cfg.intermediate_size)
    assert (stack.layout.name == "phi3-fused") == (arch == "phi3")


def test_phi3_fused_row_spans_partition_the_weight(tiny):
    model = tiny("phi3")
    sites = {s.module: s for s in al.select(model, "all", 0)}
    qkv = model.get_submodule(sites["q"].path).weight
    assert sites["q"].rows[0] == 0 and sites["q"].rows[1] == sites["k"].rows[0]
    assert sites["k"].rows[1] == sites["v"].rows[0] and sites["v"].rows[1] == qkv.shape[0]
    gate_up = model.get_submodule(sites["gate"].path).weight
    assert sites["gate"].rows == (0, gate_up.shape[0] // 2)
    assert sites["up"].rows == (gate_up.shape[0] // 2, gate_up.shape[0])


def test_layers_found_through_peft_wrapper(tiny):
    import peft
    model = tiny("llama")
    wrapped = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["gate_proj"]))
    sites = al.select(wrapped, "gate", 1)
    assert sites[0].path.endswith("layers.1.mlp.gate_proj.base_layer")
    assert sites[0].hook_path.endswith("layers.1.mlp.gate_proj")
    assert wrapped.get_submodule(sites[0].path) is model.model.layers[1].mlp.gate_proj.base_layer


class _VisionBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.q_proj = nn.Linear(8, 8)
        self.fc1 = nn.Linear(8, 8)


class _Multimodal(nn.Module):
    """A wrapper holding its LLM in an attribute beside a vision tower (as multimodal models do)."""

    def __init__(self, llm):
        super().__init__()
        self.vision_tower = nn.ModuleList(_VisionBlock() for _ in range(12))
        self.language_model = llm


def test_layers_found_through_multimodal_wrapper(tiny):
    llm = tiny("qwen2")
    wrapper = _Multimodal(llm)
    stack = al.find_decoder(wrapper)
    assert stack.path == "language_model.model.layers"
    assert al.select(wrapper, "down", -1)[0].path == f"language_model.model.layers.{stack.num_layers - 1}.mlp.down_proj"


def test_model_without_decoder_names_what_it_has():
    toy = nn.Sequential(nn.Linear(4, 4), nn.ModuleList([nn.Linear(4, 4)]))
    with pytest.raises(al.ArchitectureError, match="ModuleLists found"):
        al.select(toy, "q")


def test_selection_object_is_model_independent(tiny):
    sel = al.Selection("gate", [0, 1])
    assert [s.name for s in sel.resolve(tiny("llama"))] == ["layers.0.gate", "layers.1.gate"]
    assert [s.name for s in sel.resolve(tiny("phi3"))] == ["layers.0.gate", "layers.1.gate"]
    with pytest.raises(al.SiteError):
        al.Selection("nope")


def test_decoder_search_is_remembered_but_follows_changes(tiny):
    """find_decoder reuses its answer per model only while the same list sits at the same path."""
    model = tiny("llama")
    first = al.find_decoder(model)
    assert al.find_decoder(model) is first
    import peft
    peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["gate_proj"]))  # wraps in place
    site = al.select(model, "gate", 0)[0]
    assert site.path.endswith("layers.0.mlp.gate_proj.base_layer")  # the wrapped layer is seen
    model.model.layers = nn.ModuleList(list(model.model.layers)[:1])  # a new, shorter list
    assert al.find_decoder(model).num_layers == 1
    assert [s.layer for s in al.select(model, "q")] == [0]


def test_resolved_modules_are_the_ones_at_the_site_paths(tiny):
    from affectlocus.sites.selection import resolve
    model = tiny("phi3")
    for r in resolve(model, "all"):
        assert r.weight_module is model.get_submodule(r.site.path)
        assert r.hook_module is model.get_submodule(r.site.hook_path)
