"""Device and dtype discipline, proven on a CPU-only build with fake ``cuda`` tensors.

Fake tensors (``FakeTensorMode``) carry a device but no values: mixing a fake ``cuda`` tensor with a
CPU tensor raises the device-mismatch error real CUDA raises, and reading a value raises. So a model
whose weights are fake ``cuda:0`` bf16 tensors checks every donor / ΔW / mask / hook computation for
device mixing and host syncs. Whole forwards cannot run on fake CUDA, so weights, hook functions and
the diff accumulator are exercised directly. bf16 on CPU is real and checks values.
"""
from __future__ import annotations

import peft
import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

import affectlocus as al
from affectlocus.diff.stats import SiteAccumulator, StatsConfig, factor_rows, parse_metrics
from affectlocus.interventions import weight as weight_mod
from affectlocus.sources import base as base_mod

CUDA = torch.device("cuda", 0)
SOURCES = ("adapter", "pth", "safetensors-file", "safetensors-folder", "safetensors-index", "state-dict",
           "model")


@pytest.fixture(scope="module")
def donors(tmp_path_factory):
    """Every source kind, all made from one tiny Llama (real CPU tensors, as they are read)."""
    from affectlocus.models import tiny_model
    root = tmp_path_factory.mktemp("donors")
    donor = tiny_model("llama", seed=5).eval()
    cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"],
                          init_lora_weights=False)
    torch.manual_seed(3)
    wrapped = peft.get_peft_model(tiny_model("llama", seed=0), cfg)
    wrapped.save_pretrained(root / "adapter")
    lora = {k: v for k, v in wrapped.state_dict().items() if "lora_" in k}
    torch.save({"model": {k.replace(".default", ""): v for k, v in lora.items()}}, root / "adapter.pth")
    save_file({k: v.contiguous() for k, v in donor.state_dict().items()}, root / "donor.safetensors")
    donor.save_pretrained(root / "folder")
    donor.save_pretrained(root / "sharded", max_shard_size="20KB")
    return {"adapter": root / "adapter", "pth": root / "adapter.pth",
            "safetensors-file": root / "donor.safetensors", "safetensors-folder": root / "folder",
            "safetensors-index": root / "sharded" / "model.safetensors.index.json",
            "state-dict": dict(donor.state_dict()), "model": donor}


@pytest.fixture
def fake_cuda(monkeypatch):
    """``make(arch)`` → (fake mode, a tiny model whose parameters are fake cuda:0 bf16 tensors).

    Donors are read as on a real machine: into real host tensors, checked there (the mode is
    paused while a source reads), then moved to the fake device by our code.
    """
    from torch._subclasses.fake_tensor import unset_fake_temporarily

    from affectlocus.models import tiny_model
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    host_read = al.Source._host_read

    def read_on_host(self, site, base):
        with unset_fake_temporarily():
            return host_read(self, site, base)
    monkeypatch.setattr(al.Source, "_host_read", read_on_host)

    def make(arch: str = "llama"):
        model = tiny_model(arch, seed=0).eval()
        with mode:
            for module in model.modules():
                for name, p in list(module._parameters.items()):
                    if p is not None:
                        module._parameters[name] = nn.Parameter(
                            torch.empty(p.shape, dtype=torch.bfloat16, device=CUDA), requires_grad=False)
        return model
    with torch.no_grad():  # autograd on a fake CUDA tensor reaches the (absent) device guard
        yield mode, make


def _interventions(source):
    return {
        "graft": al.graft(source, modules="all"),
        "interpolate": al.interpolate(source, 0.5, modules="all"),
        "random_revert": al.random_revert(source, 0.5, seed=1, modules="all"),
        "noise_match": al.noise(match=source, seed=2, modules="gate"),
    }


SOURCELESS = {
    "zero": lambda: al.zero(modules="all"),
    "scale": lambda: al.scale(0.5, modules="all"),
    "noise_std": lambda: al.noise(std=0.01, seed=1, modules="all"),
    "noise_relative": lambda: al.noise(relative=0.1, seed=1, modules="mlp"),
    "neuron_mask": lambda: al.neuron_mask({0: [1, 5], 1: [-1]}, modules="mlp"),
    "neuron_scale": lambda: al.neuron_mask([2, 3], modules="gate", factor=0.5),
}


def _check_on_cuda(model, before, changed):
    now = dict(model.named_parameters())
    for path in changed:
        w = now[path]
        assert isinstance(w, FakeTensor) and w.device == CUDA and w.dtype == torch.bfloat16, path
        assert w is not before[path], f"{path} was not replaced"


def _changed_paths(model, modules, source=None):
    """The weights an intervention replaces: every selected one, except that an adapter leaves the
    sites it does not cover alone (their parameter stays the very same object)."""
    sites = al.select(model, modules)
    if source is not None and source.is_delta:
        sites = [s for s in sites if source.covers(s)]
    return [f"{s.path}.weight" for s in sites]


@pytest.mark.parametrize("kind", SOURCES)
def test_every_source_and_donor_intervention_on_fake_cuda_bf16(donors, fake_cuda, kind):
    mode, make = fake_cuda
    model = make("llama")
    before = dict(model.named_parameters())
    for name, item in _interventions(donors[kind]).items():
        source = getattr(item, "source", None) or item.match
        with mode, al.intervene(model, item):
            changed = _changed_paths(model, item.selection.modules, source)
            _check_on_cuda(model, before, changed)
            now = dict(model.named_parameters())
            kept = [p for p in before if p not in changed and now[p] is not before[p]]
            assert changed and not kept, f"{kind}/{name}: {kept[:3]}"
        assert dict(model.named_parameters()) == before, f"{kind}/{name} did not restore"
        al.assert_clean(model)


@pytest.mark.parametrize("name", sorted(SOURCELESS))
@pytest.mark.parametrize("arch", ["llama", "phi3"])  # phi3: fused qkv / gate_up rows
def test_sourceless_weight_interventions_on_fake_cuda_bf16(fake_cuda, name, arch):
    mode, make = fake_cuda
    model = make(arch)
    before = dict(model.named_parameters())
    item = SOURCELESS[name]()
    with mode, al.intervene(model, item):
        _check_on_cuda(model, before, sorted(set(_changed_paths(model, item.selection.modules))))
    assert dict(model.named_parameters()) == before
    al.assert_clean(model)


def test_adapter_on_fused_phi3_weights_on_fake_cuda(fake_cuda, tmp_path):
    from affectlocus.models import tiny_model
    mode, make = fake_cuda
    cfg = peft.LoraConfig(r=2, target_modules=["qkv_proj", "gate_up_proj"], init_lora_weights=False)
    peft.get_peft_model(tiny_model("phi3", seed=0), cfg).save_pretrained(tmp_path / "phi3-adapter")
    model = make("phi3")
    before = dict(model.named_parameters())
    items = (al.graft(tmp_path / "phi3-adapter", modules=["k", "up"]),  # opened (and checked) on the host
             al.interpolate(tmp_path / "phi3-adapter", 0.25, modules="gate"))
    with mode, al.intervene(model, *items):
        _check_on_cuda(model, before, _changed_paths(model, ["k", "gate"]))
    assert dict(model.named_parameters()) == before


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_hook_functions_keep_outputs_on_the_device(fake_cuda, arch):
    mode, make = fake_cuda
    model = make(arch)
    record = al.record(modules="gate")
    items = [al.zero_output(modules="gate", channels=[0, 3]), al.scale_output(0.5, modules="up", channels={0: [1]}),
             al.zero_output(modules="k"), al.scale_output(2.0, modules="v"),
             al.patch_output(lambda out, site: out * 0.5, modules="q"), record,
             al.mean_ablate({s.name: torch.ones(s.shape[0]) for s in al.select(model, "down")}, modules="down")]
    with mode:
        for item in items:
            for site in item.sites(model):
                out = torch.empty((2, 3, model.get_submodule(site.hook_path).weight.shape[0]),
                                  dtype=torch.bfloat16, device=CUDA)
                new = item._hook_fn(site)(out)
                if new is not None:
                    assert new.device == CUDA and new.dtype == torch.bfloat16 and new.shape == out.shape
    assert all(v[0].device.type == "cpu" for v in record.outputs.values())  # recorded to the host


def test_diff_accumulators_on_fake_cuda(fake_cuda, donors):
    mode, make = fake_cuda
    model = make("llama")
    src = al.open_source(donors["adapter"])
    cfg = StatsConfig(parse_metrics("all"), sample=None)
    site = al.select(model, "gate", 0)[0]
    factors = src.factors(site)
    acc = SiteAccumulator(site.shape, site.layer, site.module, cfg)
    acc.set_factors(factors)  # norms from the host factors
    sampled = SiteAccumulator(site.shape, site.layer, site.module, StatsConfig(sample=100))
    sampled.set_factors(factors)
    with mode:
        base = model.get_submodule(site.path).weight
        acc.add_base(0, base, factor_rows(factors, 0, site.shape[0], base.device))
        assert acc.b2.device == CUDA
        pair = SiteAccumulator(site.shape, site.layer, site.module, cfg)
        pair.add_pair(0, base, torch.ones(site.shape))  # tuned rows from a CPU checkpoint
        assert pair.d2.device == CUDA and pair.lines.device == CUDA
        assert src.delta(site, base).device == CUDA
        untouched = al.select(model, "up", 0)[0]
        assert src.delta(untouched, model.get_submodule(untouched.path).weight).device == CUDA
        checkpoint = al.open_source(donors["safetensors-file"])
        assert checkpoint.delta(site, base).device == CUDA
        sampled.add_base(0, base)
        sampled.add_pair(0, base, base)


def test_neuron_ablation_of_a_ranking_on_fake_cuda(fake_cuda):
    import numpy as np
    mode, make = fake_cuda
    model = make("llama")
    ranking = {layer: np.argsort(np.arange(128))[::-1] for layer in (0, 1)}
    before = dict(model.named_parameters())
    with mode, al.intervene(model, al.neuron_mask({l: r[:4].tolist() for l, r in ranking.items()},
                                                   modules="gate")):
        _check_on_cuda(model, before, _changed_paths(model, "gate"))


# --- values, on the CPU (bf16 is real there) ------------------------------------------------------

def test_adapter_donor_is_the_one_reference_in_bf16(donors, monkeypatch):
    from affectlocus.models import tiny_model
    model = tiny_model("llama", seed=0).to(torch.bfloat16)
    src = al.open_source(donors["adapter"])
    site = al.select(model, "gate", 0)[0]
    w = model.get_submodule(site.path).weight.detach()
    f = src.factors(site)
    ref = (w.float() + f.scale * (f.B @ f.A)).to(torch.bfloat16)
    got = src.donor(site, w)
    assert got.dtype == torch.bfloat16
    ulp = (ref.float().abs() * 2 ** -7).clamp_min(2 ** -133)
    assert ((got.float() - ref.float()).abs() <= ulp).all()  # fused addmm: at most one bf16 rounding apart
    monkeypatch.setattr(base_mod, "_BLOCK", 3 * site.shape[1])  # row blocks: the same reference
    blocked = src.donor(site, w)
    assert ((blocked.float() - ref.float()).abs() <= ulp).all()
    monkeypatch.undo()
    with al.intervene(model, al.graft(src, modules="gate", layers=0)):
        assert torch.equal(model.get_submodule(site.path).weight, got)


def test_lora_factors_are_checked_once_on_open(donors, tmp_path):
    state = torch.load(donors["pth"], weights_only=True)["model"]
    key = next(k for k in state if "lora_A" in k)
    state[key] = state[key].clone()
    state[key][0, 0] = float("inf")
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(al.NonFiniteError, match="lora_A"):
        al.open_source(tmp_path / "bad.pth")
    src = al.open_source(donors["pth"])
    A, B = src._pairs[next(iter(src._pairs))]
    assert A.dtype == B.dtype == torch.float32 and A.is_contiguous() and A.device.type == "cpu"


def test_seeded_noise_is_drawn_on_the_host_in_bounded_blocks(monkeypatch):
    """Same seed → same values wherever the weight lives: values come from the CPU generator in
    row blocks of ≤ 2**20 entries (one block, i.e. a plain draw, for small weights)."""
    from affectlocus.models import tiny_model
    model = tiny_model("llama", seed=0)
    site = al.select(model, "gate", 0)[0]
    w = model.get_submodule(site.path).weight.detach().clone()
    plain = torch.randn(site.shape, generator=weight_mod.site_generator(7, site))
    with al.intervene(model, al.noise(std=0.5, seed=7, modules="gate", layers=0)):
        assert torch.equal(model.get_submodule(site.path).weight, w + plain * 0.5)
    monkeypatch.setattr(weight_mod, "_BLOCK", 5 * site.shape[1])
    gen = weight_mod.site_generator(7, site)
    blocks = torch.cat([torch.randn((min(5, site.shape[0] - r), site.shape[1]), generator=gen)
                        for r in range(0, site.shape[0], 5)])
    with al.intervene(model, al.noise(std=0.5, seed=7, modules="gate", layers=0)):
        assert torch.equal(model.get_submodule(site.path).weight, w + blocks * 0.5)
    with al.intervene(model, al.random_revert(tiny_model("llama", seed=1), 0.5, seed=3, modules="gate",
                                              layers=0)):
        new = model.get_submodule(site.path).weight
        assert 0.3 < (new != w).float().mean() < 0.7
