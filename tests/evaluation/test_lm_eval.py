"""Cross-harness conformance: tasks exported with ``export_lm_eval`` and run by lm-evaluation-harness
(``hf`` backend, by path, ± a peft adapter) choose what ``al.evaluate`` chooses and score the same
metrics, except near-ties (top-two label log-likelihoods within ``TIE``, counted in the messages)."""
from __future__ import annotations

import json

import lm_eval  # the lmeval extra: `make test` installs it
import numpy as np
import pytest
import torch

import affectlocus as al
from affectlocus.errors import ConfigError, DataError
from affectlocus.evaluation.lm_eval_export import GROUP, export_lm_eval, lm_eval_encode_pair, model_folder
from affectlocus.models import tiny_model
from affectlocus.tasks import load_task
from affectlocus.tasks.classification import classification_metrics
from affectlocus.tasks.prompts import PromptStyle, build_label_prompts, char_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")
TASKS = ("rt-polarity", "tweets-sentiment", "zh-reviews")
N = 12
STYLE = PromptStyle(shots_per_label=1, max_shot_chars=100)  # short prompts: fast on the tiny model
TIE = 1e-4
OFFSET_TOL = 1e-3  # lm-eval's per-example constant (the moved "\n") must be the same for every label


def _tiny(tok):
    # vocab = len(tokenizer): else lm-eval's hf backend resizes the embeddings when given a peft adapter
    return tiny_model("llama", seed=3, vocab_size=len(tok), max_position_embeddings=4096, initializer_range=0.2)


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    """(model folder with the char tokenizer, gate-only LoRA adapter folder, tokenizer)."""
    from peft import get_peft_model
    root = tmp_path_factory.mktemp("lm_eval_models")
    tok = char_tokenizer()
    _tiny(tok).save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    base = _tiny(tok)
    config = al.lora_config("gate", model=base, r=4, alpha=8, dropout=0.0, init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        get_peft_model(base, config).save_pretrained(root / "adapter")
    return root / "model", root / "adapter", tok


@pytest.fixture(scope="module")
def exported(tiny_dirs, tmp_path_factory):
    return export_lm_eval(tmp_path_factory.mktemp("lm_eval_tasks"), tiny_dirs[2], TASKS, max_examples=N, style=STYLE)


def run_lm_eval(export, model_args: str, tasks=(GROUP,), batch_size: int = 8) -> dict:
    from lm_eval.tasks import TaskManager
    manager = TaskManager(include_path=str(export.out_dir), include_defaults=False)
    return lm_eval.simple_evaluate(model="hf", model_args=model_args, tasks=list(tasks), task_manager=manager,
                                   log_samples=True, batch_size=batch_size, bootstrap_iters=0, device="cpu")


def assert_conformant(results: dict, scores, names) -> dict[str, int]:
    """Per-example choices and metrics equal; returns the near-ties per task."""
    ties = {}
    for name in names:
        samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
        records = scores.records[name]
        assert [s["doc"]["id"] for s in samples] == [r["id"] for r in records], name
        theirs = np.array([[float(r[0]) for r in s["filtered_resps"]] for s in samples])
        ours = np.array([r["logprobs"] for r in records])
        offset = theirs - ours  # lm-eval also scores the prompt's moved trailing "\n": one constant per example
        spread = np.abs(offset - offset.mean(axis=1, keepdims=True)).max()
        assert spread < OFFSET_TOL, f"{name}: label log-likelihoods differ beyond a per-example constant ({spread:.2e})"
        top = np.sort(ours, axis=1)
        tie = top[:, -1] - top[:, -2] < TIE
        ties[name] = int(tie.sum())
        differ = (theirs.argmax(1) != ours.argmax(1)) & ~tie
        assert not differ.any(), (f"{name}: lm-eval chose differently on examples {np.flatnonzero(differ).tolist()} "
                                  f"({ties[name]} near-ties of {len(tie)} excluded)")
        got = results["results"][name]
        gold = np.array([s["doc"]["gold"] for s in samples])
        expect = scores[name].metrics if not tie.any() else \
            {k: float(v[0]) for k, v in classification_metrics(gold, theirs.argmax(1), ours.shape[1]).items()}
        for metric in ("balanced_accuracy", "accuracy", "weighted_f1", "macro_f1"):
            assert got[f"{metric},none"] == pytest.approx(expect[metric], abs=1e-12), \
                f"{name} {metric} ({ties[name]} near-ties)"
    return ties


def test_export_writes_the_evaluators_prompts(exported, tiny_dirs):
    tok = tiny_dirs[2]
    for task in exported.tasks:
        t = load_task(task.name, seed=0, max_test=N)
        prompts = build_label_prompts(tok, t.labels, [e.text for e in t.test], t.train, style=STYLE)
        rows = [json.loads(line) for line in task.data.read_text(encoding="utf-8").splitlines()]
        assert [r["id"] for r in rows] == [e.id for e in t.test] and task.n == N
        assert [r["prompt"] for r in rows] == [prompts.prefix_text + q for q in prompts.query_texts]
        assert [r["gold"] for r in rows] == [t.labels.index(e.label) for e in t.test]
        assert task.choices == prompts.label_texts == [f"{lab}<|im_end|>" for lab in t.labels]
        assert task.tokens_match == N and task.shift == "\n"
        text = task.yaml.read_text()
        assert str(task.data) in text and "target_delimiter: ''" in text and "num_fewshot: 0" in text
    manifest = json.loads((exported.out_dir / "affectlocus-export.json").read_text())
    assert manifest["prompt"] == STYLE.key() and [t["name"] for t in manifest["tasks"]] == list(TASKS)
    assert exported.model_args == ""


def test_lm_eval_matches_the_evaluator(exported, tiny_dirs, monkeypatch):
    folder, _, tok = tiny_dirs
    monkeypatch.chdir(folder)  # any working directory: the data paths are absolute
    results = run_lm_eval(exported, f"pretrained={folder},dtype=float32")
    model = _tiny(tok)
    scores = al.evaluate(model, tok, list(TASKS), max_examples=N, style=STYLE, n_boot=0, progress=False)
    ties = assert_conformant(results, scores, TASKS)
    assert len({r["pred"] for r in scores.records["zh-reviews"]}) > 1  # not a constant predictor
    if not any(ties.values()):
        assert results["results"][GROUP]["balanced_accuracy,none"] == pytest.approx(scores.mean, abs=1e-12)


def test_lm_eval_matches_the_evaluator_with_a_peft_adapter(exported, tiny_dirs):
    folder, adapter, tok = tiny_dirs
    results = run_lm_eval(exported, f"pretrained={folder},dtype=float32,peft={adapter}", tasks=TASKS[:2])
    model = _tiny(tok)
    plain = al.evaluate(model, tok, list(TASKS[:2]), max_examples=N, style=STYLE, n_boot=0, progress=False)
    with al.intervene(model, al.graft(adapter)):
        scores = al.evaluate(model, tok, list(TASKS[:2]), max_examples=N, style=STYLE, n_boot=0, progress=False)
    assert_conformant(results, scores, TASKS[:2])
    moved = [abs(a["logprobs"][0] - b["logprobs"][0]) for a, b in
             zip(plain.records["rt-polarity"], scores.records["rt-polarity"])]
    assert max(moved) > 1e-3  # the adapter really changes the scores


def test_plain_layout_with_bos_runs_in_lm_eval(tiny_dirs, tmp_path):
    """No chat template, a tokenizer that prepends BOS: the BOS is rendered as text and the
    continuation is " label\\n", so lm-eval scores exactly our tokens (no offset)."""
    from tokenizers import processors
    tok = char_tokenizer(chat=False)
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    folder = tmp_path / "plain"
    _tiny(tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    export = export_lm_eval(tmp_path / "tasks", tok, ["rt-polarity"], max_examples=8, style=STYLE)
    task = export.tasks[0]
    assert task.choices == [" negative\n", " positive\n"] and task.shift == "" and task.tokens_match == 8
    assert json.loads(task.data.read_text().splitlines()[0])["prompt"].startswith("<s>Classify")
    results = run_lm_eval(export, f"pretrained={folder},dtype=float32", tasks=["rt-polarity"])
    scores = al.evaluate(_tiny(tok), tok, ["rt-polarity"], max_examples=8, style=STYLE, n_boot=0, progress=False)
    assert_conformant(results, scores, ["rt-polarity"])
    theirs = [float(r[0]) for s in results["samples"]["rt-polarity"] for r in s["filtered_resps"]]
    ours = [x for r in scores.records["rt-polarity"] for x in r["logprobs"]]
    assert np.allclose(theirs, ours, atol=1e-3)


def test_bos_adding_chat_tokenizer_needs_add_bos_token_false(tmp_path):
    from tokenizers import processors
    tok = char_tokenizer()
    tok._tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    ctx, cont = lm_eval_encode_pair(tok, "ab \n", "c")
    plain = lambda text: tok.encode(text, add_special_tokens=False)  # noqa: E731
    assert ctx == [2] + plain("ab") and cont == plain(" \nc")  # lm-eval adds BOS, moves " \n" to the continuation
    export = export_lm_eval(tmp_path, tok, ["rt-polarity"], max_examples=4, style=PromptStyle(shots_per_label=0))
    assert export.model_args == "add_bos_token=False" and export.tasks[0].tokens_match == 4
    assert "add_bos_token=False" in export.command("m")


def test_typed_errors(tmp_path, tiny_dirs):
    tok = tiny_dirs[2]
    with pytest.raises(DataError, match="available: rt-polarity"):
        export_lm_eval(tmp_path, tok, ["rt-polarity", "nope"])
    with pytest.raises(DataError, match="meld_dir"):
        export_lm_eval(tmp_path, tok, ["meld-emotion"])
    with pytest.raises(ConfigError, match="max_examples"):
        export_lm_eval(tmp_path, tok, ["rt-polarity"], max_examples=0)
    with pytest.raises(ConfigError, match="repeat"):
        export_lm_eval(tmp_path, tok, "rt-polarity,rt-polarity")


def test_cli(tiny_dirs, tmp_path, capsys):
    from affectlocus.cli import main
    folder = tiny_dirs[0]
    argv = ["export-lm-eval", str(tmp_path / "x"), "--model", str(folder), "--tasks", "zh-reviews",
            "--max-examples", "6", "--shots", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "lm-eval tokens = ours: 6/6" in out and f"pretrained={folder}" in out
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == \
        ["affectlocus-export.json", "affectlocus.yaml", "data", "utils.py", "zh-reviews.yaml"]
    assert main(["export-lm-eval", str(tmp_path / "y"), "--model", str(folder), "--tasks", "zh"]) == 2
    assert "available: rt-polarity" in capsys.readouterr().err


def test_meld_export(shared_dir, tiny_dirs, tmp_path):
    export = export_lm_eval(tmp_path, tiny_dirs[2], ["meld-sentiment"], meld_dir=shared_dir / "meld",
                            max_examples=9, style=PromptStyle(shots_per_label=0))
    assert export.tasks[0].n == 9 and export.tasks[0].labels == ("negative", "neutral", "positive")


@pytest.mark.slow
def test_smollm2_matches_the_evaluator(tmp_path):
    """The embedded SmolLM2-135M (by its cache folder) on 16 rt-polarity examples, ± a gate-only adapter."""
    from peft import get_peft_model
    model, tok = al.load_model("smollm2-135m")
    export = export_lm_eval(tmp_path / "tasks", tok, ["rt-polarity"], max_examples=16)
    assert export.tasks[0].tokens_match == 16
    folder = model_folder("smollm2-135m")
    results = run_lm_eval(export, f"pretrained={folder},dtype=float32", tasks=["rt-polarity"])
    scores = al.evaluate(model, tok, ["rt-polarity"], max_examples=16, n_boot=0, progress=False)
    ties = assert_conformant(results, scores, ["rt-polarity"])
    donor, _ = al.load_model("smollm2-135m")
    config = al.lora_config("gate", model=donor, layers="10:20", r=4, alpha=8, dropout=0.0, init_lora_weights=False)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        get_peft_model(donor, config).save_pretrained(tmp_path / "adapter")
    results = run_lm_eval(export, f"pretrained={folder},dtype=float32,peft={tmp_path / 'adapter'}",
                          tasks=["rt-polarity"])
    with al.intervene(model, al.graft(tmp_path / "adapter")):
        scores = al.evaluate(model, tok, ["rt-polarity"], max_examples=16, n_boot=0, progress=False)
    ties.update({f"{k}+adapter": v for k, v in assert_conformant(results, scores, ["rt-polarity"]).items()})
    print("near-ties:", ties)
