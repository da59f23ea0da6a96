"""Known answers for the verdict machinery: a skill planted in one module of a tiny model.

The "all-module" affective adapter of each seed is replaced by a planted one: a real LoRA trained on
one module only (the others carry zero ΔW), or random norm-matched noise (no skill). The rest of the
study (GET, the control, grafts, reverts, random reverts, the diff) runs as usual.
"""
from __future__ import annotations

import numpy as np
import pytest

from affectlocus.tasks.classification import classification_metrics
from affectlocus.tasks.prompts import char_tokenizer
from affectlocus.models import tiny_model
from affectlocus.study import Label, Study, StudyConfig

from _planted import letters_task, widen

CLAIMS = {"dominates": "gate_proj dominates", "transfers": "gate_proj alone transfers",
          "necessary": "removing gate_proj"}


class PlantedStudy(Study):
    """A study whose all-module affective adapter is planted (``plant``: a module, or "noise")."""

    plant = "gate"

    def adapter(self, name, modules, seed, control=False):
        if name != "affect-all":
            return super().adapter(name, modules, seed, control)
        out = self.adapter_root / f"planted-{self.plant}-s{seed}"
        if not (out / "info.json").exists():
            source = "gate" if self.plant == "noise" else self.plant
            trained = super().adapter(f"affect-{source}", source, seed)  # gate: the GET adapter itself
            widen(trained, out, "noise" if self.plant == "noise" else "plant", seed)
        return out


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("planted")


def run(root, plant: str) -> dict:
    """The study with ``plant`` in a run folder of its own; trained adapters shared under ``root``."""
    tok = char_tokenizer()
    cfg = StudyConfig(out=str(root / plant), train_tasks=["letters"], eval_tasks=["letters"],
                      instruction="pos or neg?", n_train=96, n_eval=48, n_control=16, steps=60, lr=0.03,
                      batch_size=8, max_length=128, max_train_chars=None, seeds=[0, 1, 2], targeted=[],
                      inherit_sets=["none", "attn", "gate", "up", "down", "all"],
                      ablate_modules=["gate", "up", "down", "o"], bootstrap=500,
                      skip=["targeted", "interpolate", "cost", "neurons"])
    study = PlantedStudy.__new__(PlantedStudy)
    study.plant = plant
    # a wider init than the default 0.02 lets a LoRA move the logits (a final RMSNorm caps their range)
    Study.__init__(study, cfg, model=tiny_model("llama", initializer_range=0.2), tokenizer=tok, progress=False, log=lambda s: None,
                   tasks={"letters": letters_task()})
    study.adapter_root = root / "adapters"
    results = study.run_all()
    verdicts = {k: next(v for v in results["verdicts"] if v["claim"].startswith(text))
                for k, text in CLAIMS.items()}
    return results, verdicts


@pytest.mark.parametrize("plant, expected", [("gate", Label.SUPPORTED), ("up", Label.NOT_SUPPORTED),
                                             ("noise", Label.INCONCLUSIVE)])
def test_planted_skill_gives_the_known_verdicts(shared, plant, expected):
    results, verdicts = run(shared, plant)
    for name, v in verdicts.items():
        assert v["verdict"] == expected, (name, v)
    if plant != "noise":
        assert all(e["beats_base"] and not e["failed"] for e in results["health"]["tuned"]["all"])
    else:
        assert not any(e["beats_base"] for e in results["health"]["tuned"]["all"])
    # a score the study reports more than once is the same number everywhere
    tuned = results["inherit"]["rows"]["all"]
    assert results["ablate"]["tuned"]["mean"] == tuned["mean"]
    assert [r["mean"] for r in tuned["per_seed"]] == [e["mean"] for e in results["health"]["tuned"]["all"]]
    assert results["inherit"]["rows"]["none"]["mean"] == results["health"]["base"]["mean"]
    # the health numbers are what the raw per-example predictions give
    for row, e in zip(tuned["per_seed"], results["health"]["tuned"]["all"]):
        t = row["per_task"]["letters"]
        recomputed = classification_metrics(np.array(t["truth"]), np.array(t["pred"]), 2)["balanced_accuracy"][0]
        assert recomputed == pytest.approx(e["mean"])
