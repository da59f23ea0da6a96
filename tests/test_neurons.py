"""Neuron API: pooled activations, rankings (activation / ΔW row norm / random), masks and probes."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import affectlocus as al
from affectlocus.neurons import NeuronRanking, pooled_activations, probe, rank_neurons

from _util import assert_bit_identical, state_snapshot

pytestmark = pytest.mark.usefixtures("one_thread")
WIDTH = 128  # tiny models' intermediate size


def _prompts(n: int, seed: int, token: int | None = None) -> list[list[int]]:
    """``n`` random prompts of 3..14 tokens; ``token`` (if given) fills their second half."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for length in torch.randint(3, 15, (n,), generator=g).tolist():
        ids = torch.randint(3, 128, (length,), generator=g).tolist()
        out.append(ids if token is None else ids[:length // 2] + [token] * (length - length // 2))
    return out


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_batched_pooling_equals_one_at_a_time(tiny, arch):
    model = tiny(arch)
    prompts = _prompts(7, seed=1)
    one = pooled_activations(model, prompts, modules="gate,up", batch_size=1)
    batched = pooled_activations(model, prompts, modules="gate,up", batch_size=3)
    assert sorted(one) == ["layers.0.gate", "layers.0.up", "layers.1.gate", "layers.1.up"]
    for name, value in one.items():
        assert value.shape == (7, WIDTH) and value.dtype == np.float32
        np.testing.assert_allclose(batched[name], value, atol=1e-5)
    # a left-padded tokenizer output gives the same means: pads are dropped by the attention mask
    width = max(map(len, prompts))
    enc = {"input_ids": torch.tensor([[0] * (width - len(p)) + p for p in prompts]),
           "attention_mask": torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])}
    np.testing.assert_array_equal(pooled_activations(model, enc, batch_size=1)["layers.1.gate"],
                                  one["layers.1.gate"])
    al.assert_clean(model)


def test_pooling_is_the_mean_of_the_gate_half_of_phi3s_fused_gate_up(tiny):
    model = tiny("phi3")
    prompt = _prompts(1, seed=2)[0]
    seen = []
    hook = model.model.layers[1].mlp.gate_up_proj.register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        with torch.no_grad():
            model(torch.tensor([prompt]))
    finally:
        hook.remove()
    expected = seen[0][0, :, :WIDTH].float().mean(0).numpy()  # Phi-3 chunks gate_up as [gate | up]
    got = pooled_activations(model, [prompt], layers=1)["layers.1.gate"][0]
    np.testing.assert_allclose(got, expected, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_activation_ranking_and_masking_top_k(tiny, arch):
    model = tiny(arch)
    snap = state_snapshot(model)
    affective, neutral = _prompts(6, seed=3, token=7), _prompts(6, seed=4, token=9)
    ranking = rank_neurons(model, affective, neutral)
    assert isinstance(ranking, NeuronRanking) and ranking.by == "activation" and ranking.modules == ("gate",)
    aff, neu = pooled_activations(model, affective), pooled_activations(model, neutral)
    for layer in (0, 1):
        name = f"layers.{layer}.gate"
        diff = np.abs(aff[name].mean(0) - neu[name].mean(0))
        assert sorted(ranking.order[name].tolist()) == list(range(WIDTH))  # a permutation of the gate half
        assert np.all(np.diff(diff[ranking.order[name]]) <= 0)  # most different first
    top = ranking.top(5)
    assert set(top) == {0, 1} and all(len(v) == 5 for v in top.values())
    assert top[0] == ranking.order["layers.0.gate"][:5].tolist()

    ids = torch.tensor([affective[0]])
    with torch.no_grad():
        before = model(ids).logits
        with al.intervene(model, al.neuron_mask(top, modules="gate")):
            masked = model(ids).logits
        after = model(ids).logits
    assert not torch.allclose(masked, before)
    assert torch.equal(after, before)
    assert_bit_identical(model, snap)
    al.assert_clean(model)
    frame = ranking.to_frame()
    assert len(frame) == 2 * WIDTH and list(frame.columns) == ["layer", "module", "rank", "channel", "score"]


def test_weight_ranking_from_a_diff_table_finds_planted_rows(tiny):
    base, tuned = tiny("llama", seed=0), tiny("llama", seed=0)
    with torch.no_grad():
        tuned.model.layers[1].mlp.gate_proj.weight[[5, 40]] += 3.0
        tuned.model.layers[1].mlp.gate_proj.weight[77] += 1.0
    snap = state_snapshot(base)
    table = al.diff(base, tuned, modules="gate", metrics="rows", progress=False)
    ranking = rank_neurons(base, by="weight", table=table, layers=1)
    assert ranking.top(3) == {1: [5, 40, 77]} or ranking.top(3) == {1: [40, 5, 77]}
    np.testing.assert_array_equal(ranking.scores["layers.1.gate"], table.row_norms(1, "gate"))
    with pytest.raises(al.DataError, match="rows"):  # a table without neuron norms
        rank_neurons(base, by="weight", table=al.diff(base, tuned, modules="gate", metrics="l2", progress=False))
    assert_bit_identical(base, snap)
    al.assert_clean(base)


def test_random_ranking_is_seeded_and_covers_down_columns(tiny):
    model = tiny("phi3")
    a = rank_neurons(model, by="random", modules="mlp", seed=3)
    assert a.modules == ("gate", "up", "down")
    assert all(sorted(v.tolist()) == list(range(WIDTH)) for v in a.order.values())
    b = rank_neurons(model, by="random", modules="mlp", seed=3)
    c = rank_neurons(model, by="random", modules="mlp", seed=4)
    assert a.top(4, module="down") == b.top(4, module="down") != c.top(4, module="down")
    assert np.isnan(a.to_frame()["score"]).all()


def test_probe_separates_planted_classes(tiny):
    model = tiny("llama")
    snap = state_snapshot(model)
    pos, neg = _prompts(20, seed=5, token=11), _prompts(20, seed=6, token=99)
    prompts = [p for pair in zip(pos, neg) for p in pair]
    labels = ["pos", "neg"] * 20
    res = probe(model, prompts, labels, train=24)
    assert set(res.accuracy) == {0, 1} and res.n_train == 24 and res.n_test == 16
    assert all(0.0 <= a <= 1.0 for a in res.accuracy.values())
    assert res.chance == 0.5 and max(res.accuracy.values()) > res.chance
    both = probe(model, prompts, labels, modules="gate,up", layers=-1, train=0.6)
    assert set(both.accuracy) == {1} and both.n_train == 24
    assert res.to_dict()["accuracy"].keys() == {"0", "1"}
    assert_bit_identical(model, snap)
    al.assert_clean(model)


def test_texts_need_a_tokenizer_and_are_tokenized_with_it(tiny):
    model = tiny("llama")

    def tok(text):
        return {"input_ids": [3 + ord(c) % 100 for c in text]}
    out = pooled_activations(model, ["hello", "hi there"], tokenizer=tok, layers=0)
    ids = [tok("hello")["input_ids"], tok("hi there")["input_ids"]]
    np.testing.assert_array_equal(out["layers.0.gate"], pooled_activations(model, ids, layers=0)["layers.0.gate"])
    with pytest.raises(al.DataError, match="tokenizer"):
        pooled_activations(model, ["hello"])


def test_bad_inputs_raise_typed_errors(tiny):
    model = tiny("llama")
    p = _prompts(4, seed=7)
    with pytest.raises(al.SiteError, match="available"):
        rank_neurons(model, p, p, modules="gatez")
    with pytest.raises(al.SiteError, match="out of range"):
        pooled_activations(model, p, layers=5)
    with pytest.raises(al.SiteError, match="gate, up"):
        rank_neurons(model, p, p, modules="down")
    with pytest.raises(al.SiteError, match="MLP"):
        rank_neurons(model, by="random", modules="q")
    with pytest.raises(al.ConfigError, match="activation, weight, random"):
        rank_neurons(model, p, p, by="gradient")
    with pytest.raises(al.ConfigError, match="table"):
        rank_neurons(model, by="weight")
    with pytest.raises(al.DataError, match="neutral"):
        rank_neurons(model, p)
    with pytest.raises(al.DataError, match="no prompts"):
        pooled_activations(model, [])
    with pytest.raises(al.DataError, match="no tokens"):
        pooled_activations(model, [[5, 6], []])
    with pytest.raises(al.ConfigError, match="batch_size"):
        pooled_activations(model, p, batch_size=0)
    ranking = rank_neurons(model, by="random", modules="gate,up")
    with pytest.raises(al.ConfigError, match="module="):
        ranking.top(3)
    with pytest.raises(al.ConfigError, match=f"0..{WIDTH}"):
        ranking.top(WIDTH + 1, module="gate")
    with pytest.raises(al.ConfigError, match="not in this ranking"):
        ranking.top(3, module="down")
    with pytest.raises(al.DataError, match="labels"):
        probe(model, p, [0, 1, 0])
    with pytest.raises(al.ConfigError, match="train"):
        probe(model, p, [0, 1, 0, 1], train=4)
    with pytest.raises(al.DataError, match="one class"):
        probe(model, p, [0, 0, 1, 1], train=2)
    al.assert_clean(model)


def test_top_level_names_are_the_neuron_functions():
    assert al.rank_neurons is rank_neurons and al.probe is probe and al.pooled_activations is pooled_activations
