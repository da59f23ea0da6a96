"""Runner: the cache skips work, interventions and weight edits change the key, a killed run resumes
to the uninterrupted result, bootstrap CIs are deterministic, generate + judge, and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

import affectlocus as al
from affectlocus.evaluation import runner
from affectlocus.tasks.datasets import Example, Task
from affectlocus.tasks.prompts import PromptStyle, char_tokenizer
from affectlocus.evaluation.runner import Scores, classification_metrics, evaluate, score_classification
from affectlocus.models.fingerprint import model_fingerprint
from affectlocus.models import tiny_model

LABELS = ("negative", "neutral", "positive")
_ROWS = [("awful", "negative"), ("so bad", "negative"), ("a film", "neutral"), ("ok", "neutral"),
         ("loved it", "positive"), ("great fun", "positive"), ("terrible", "negative"), ("nice", "positive"),
         ("what a mess", "negative"), ("it exists", "neutral"), ("superb", "positive"), ("dull", "negative"),
         ("it is long", "neutral"), ("joy", "positive"), ("hated it", "negative"), ("fine", "neutral"),
         ("wow", "positive"), ("meh", "neutral"), ("boring", "negative"), ("brilliant", "positive")]
STYLE = PromptStyle(shots_per_label=1)
KW = dict(batch_size=4, style=STYLE, n_boot=200, progress=False)


pytestmark = pytest.mark.usefixtures("one_thread")


def toy_task(name: str = "toy") -> Task:
    ex = [Example(t, lab, f"{name}-{i:02d}") for i, (t, lab) in enumerate(_ROWS)]
    return Task(name, LABELS, "en", ex[:6], ex[6:], "toy task", "tests", 0)


@pytest.fixture
def model():
    return tiny_model("llama", seed=2)


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


def _counting(model) -> list[int]:
    calls = [0]
    model.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_cache_really_skips_work(model, tok, tmp_path):
    calls = _counting(model)
    first = evaluate(model, tok, [toy_task(), toy_task("toy2")], cache_dir=tmp_path, **KW)
    assert calls[0] == 2 * (1 + 4)  # per task: the prefix once + 14 examples in 4 batches
    assert first.meta["stats"] == {"batches": 8, "computed": 28, "cached": 0}
    again = evaluate(model, tok, [toy_task(), toy_task("toy2")], cache_dir=tmp_path, **KW)
    assert calls[0] == 10 and again.meta["stats"] == {"computed": 0, "cached": 28}
    assert again.tasks == first.tasks and again.records == first.records
    evaluate(model, tok, [toy_task()], cache_dir=tmp_path, seed=1, **KW)  # another seed: another entry
    assert calls[0] == 15


def test_interventions_and_weight_edits_change_the_key(model, tok, tmp_path):
    calls = _counting(model)
    base = evaluate(model, tok, [toy_task()], cache_dir=tmp_path, **KW)
    with al.intervene(model, al.zero_output(modules="gate", layers=0)):  # a hook: weights unchanged
        hooked = evaluate(model, tok, [toy_task()], cache_dir=tmp_path, **KW)
    assert calls[0] == 10 and hooked.meta["interventions"] == ["zerooutput(modules=gate layers=0)"]
    fp = model_fingerprint(model)
    with al.intervene(model, al.zero(modules="up", layers=1)):
        assert model_fingerprint(model) != fp
        evaluate(model, tok, [toy_task()], cache_dir=tmp_path, **KW)
    assert calls[0] == 15 and model_fingerprint(model) == fp
    assert evaluate(model, tok, [toy_task()], cache_dir=tmp_path, **KW).tasks == base.tasks
    assert calls[0] == 15  # back to the original model: all cached
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3, 5] += 1e-3  # an edit outside the registry
    assert model_fingerprint(model) != fp
    evaluate(model, tok, [toy_task()], cache_dir=tmp_path, **KW)
    assert calls[0] == 20


@pytest.mark.parametrize("mode", ["label", "generate"])
def test_killed_run_resumes_to_the_uninterrupted_result(model, tok, tmp_path, monkeypatch, mode):
    kw = dict(KW, mode=mode, max_new_tokens=4)
    whole = evaluate(model, tok, [toy_task()], cache_dir=tmp_path / "whole", **kw)
    name = "_label_batch" if mode == "label" else "_generate_batch"
    real = getattr(runner, name)
    seen = []

    def dying(*args, **kwargs):
        if len(seen) == 2:
            raise KeyboardInterrupt("killed")  # the process dies after two finished batches
        seen.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(runner, name, dying)
    with pytest.raises(KeyboardInterrupt):
        evaluate(model, tok, [toy_task()], cache_dir=tmp_path / "run", **kw)
    monkeypatch.setattr(runner, name, real)
    resumed = evaluate(model, tok, [toy_task()], cache_dir=tmp_path / "run", **kw)
    assert resumed.meta["stats"] == {"batches": 2, "computed": 6, "cached": 8}  # only the rest
    assert resumed.records == whole.records  # bit-identical log-likelihoods / answers
    assert resumed.tasks == whole.tasks


def test_generate_mode_maps_answers_through_the_judge(model, tok, tmp_path, monkeypatch):
    canned = {"negative": "I feel sad and angry.", "neutral": "The sentiment is neutral.",
              "positive": "Not bad at all, quite happy!"}
    truth = {t: lab for t, lab in _ROWS}

    def fake(model, tokenizer, prompts, max_new_tokens, seed):
        return [canned[next(lab for t, lab in truth.items() if f"Text: {t}\n" in p)] for p in prompts]
    monkeypatch.setattr(runner, "_generate_batch", fake)
    s = evaluate(model, tok, [toy_task()], mode="generate", cache_dir=tmp_path, **KW)
    assert s["toy"].score == 1.0 and s["toy"].details["judge"].startswith("lexicon(")
    assert s.records["toy"][0]["sentiment"] == truth[toy_task().test[0].text]
    assert len(list(tmp_path.glob("toy/*/judge-*.json"))) == 1


def test_metrics_match_sklearn_and_bootstrap_is_deterministic():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(-1, 3, 200))
    m = classification_metrics(y, p, 3)
    present = sorted(set(y.tolist()))
    assert m["macro_f1"][0] == pytest.approx(f1_score(y, p, labels=present, average="macro"))
    assert m["weighted_f1"][0] == pytest.approx(f1_score(y, p, labels=present, average="weighted"))
    truth, preds = [LABELS[i] for i in y], [LABELS[i] if i >= 0 else None for i in p]
    a = score_classification("t", LABELS, truth, preds, n_boot=300, seed=0)
    b = score_classification("t", LABELS, truth, preds, n_boot=300, seed=0)
    c = score_classification("t", LABELS, truth, preds, n_boot=300, seed=1)
    assert a == b and a.ci == b.ci and a.ci != c.ci
    assert a.ci[0] <= a.score <= a.ci[1] and a.details["n_unmapped"] == int((p < 0).sum())
    assert a.metrics["accuracy"] == pytest.approx(float((y == p).mean()))


def test_scores_frame_roundtrip_and_mean_ci(model, tok, tmp_path):
    s = evaluate(model, tok, [toy_task(), toy_task("toy2")], metric="macro_f1", **KW)
    assert s.mean == pytest.approx(np.mean([t.score for t in s.tasks.values()]))
    assert s.mean_ci[0] <= s.mean <= s.mean_ci[1]
    frame = s.to_frame()
    assert list(frame["task"]) == ["toy", "toy2", "mean"] and frame["score"].iloc[-1] == pytest.approx(s.mean)
    s.save(tmp_path / "s.json")
    s.save(tmp_path / "s.csv")
    back = Scores.load(tmp_path / "s.json")
    assert back.to_dict() == json.loads(json.dumps(s.to_dict()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.csv", "s.json"]  # no temp files left
    assert "accuracy_length_normalised" in s["toy"].details


def test_embedded_task_names_and_cli(model, tok, tmp_path, capsys):
    from affectlocus.evaluation.cli import main
    model.save_pretrained(tmp_path / "m")
    tok.save_pretrained(tmp_path / "m")
    argv = ["--model", str(tmp_path / "m"), "--tasks", "rt-polarity", "--max-examples", "6", "--n-boot", "50",
            "--shots-per-label", "1", "--batch-size", "3", "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(argv) == 0
    first = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert first["tasks"]["rt-polarity"]["n"] == 6 and first["meta"]["stats"]["computed"] == 6
    assert "rt-polarity" in capsys.readouterr().out
    assert main(argv) == 0
    assert json.loads((tmp_path / "out" / "scores.json").read_text())["meta"]["stats"]["computed"] == 0
    assert main(argv + ["--zero", "gate:0"]) == 0
    again = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert again["meta"]["stats"]["computed"] == 6 and again["meta"]["interventions"].startswith("zero(")
    assert (tmp_path / "out" / "scores.csv").read_text().startswith("task,metric,score")
    assert len((tmp_path / "out" / "predictions" / "rt-polarity.jsonl").read_text().splitlines()) == 6
    assert main(argv + ["--graft", "nonsense"]) == 2
    assert "SRC:MODULES" in capsys.readouterr().err


def test_every_cli_shares_one_error_handler(capsys):
    from affectlocus._cli import run_guarded
    from affectlocus.errors import ConfigError

    def fail(exc):
        def handler(args):
            raise exc
        return handler
    assert run_guarded(lambda args: None, None) == 0 and run_guarded(lambda args: 3, None) == 3
    assert run_guarded(fail(ConfigError("unknown metric 'x'; choose one of a, b")), None) == 2
    assert "affectlocus: error: ConfigError: unknown metric 'x'; choose one of a, b" in capsys.readouterr().err
    assert run_guarded(fail(KeyboardInterrupt()), None) == 130
    assert "interrupted (finished work is kept" in capsys.readouterr().err
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        run_guarded(fail(ZeroDivisionError()), None)


def test_task_lists_are_routed_before_anything_loads():
    from affectlocus.errors import ConfigError
    from affectlocus.evaluation.suite import parse_task_list, split_tasks
    names = parse_task_list(" rt-polarity, mosi ,MER2023,")
    assert names == ["rt-polarity", "mosi", "MER2023"]
    assert split_tasks(names, "cfg.toml") == (["rt-polarity"], ["mosi", "MER2023"])
    with pytest.raises(ConfigError, match="mosi, MER2023: MER-UniBench tasks need --unibench"):
        split_tasks(names)
    with pytest.raises(ConfigError, match="empty"):
        parse_task_list(" , ")


def test_adapter_is_grafted_only_where_it_has_weights(tmp_path):
    from peft import LoraConfig, get_peft_model

    from affectlocus.interventions.spec import adapter_grafts, parse_graft_spec, parse_site_spec
    base = tiny_model("llama", seed=8)
    peft_model = get_peft_model(tiny_model("llama", seed=8),
                                LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    grafts = adapter_grafts(base, str(tmp_path / "adapter"))
    assert [g.selection.describe() for g in grafts] == ["modules=q,v layers=(0, 1)"]
    ids = torch.tensor([[5, 9, 20, 33, 7]])
    with torch.no_grad(), al.intervene(base, *grafts):
        np.testing.assert_allclose(base(ids).logits, peft_model(ids).logits, atol=1e-5)
    assert parse_graft_spec("runs/a:o,gate:10:20") == ("runs/a", "o,gate", "10:20")
    assert parse_site_spec("gate") == ("gate", None) and parse_site_spec("mlp:3-5") == ("mlp", "3-5")


def test_register_on_the_bench_parser_keeps_its_subcommands():
    import argparse

    from affectlocus.evaluation.cli import register, run_bench
    from affectlocus.unibench.cli import add_score_parser
    top = argparse.ArgumentParser(prog="affectlocus")
    bench = top.add_subparsers(dest="command").add_parser("bench")
    add_score_parser(bench.add_subparsers(dest="bench_command"))
    register(bench)
    args = top.parse_args(["bench", "--model", "m", "--tasks", "rt-polarity", "--zero", "gate:3", "--out", "o"])
    assert args.func is run_bench and args.zero == ["gate:3"] and args.bench_command is None
    args = top.parse_args(["bench", "score", "x.npz", "--labels", "l.npz"])
    assert args.func is not run_bench and args.bench_command == "score"
    assert top.parse_args(["bench"]).func is run_bench  # → prints the help, exit code 2
