"""Export the affective tasks as lm-evaluation-harness tasks that score like :func:`affectlocus.evaluate`.

``export_lm_eval(DIR, tokenizer, tasks)`` writes, for lm-eval ≥ 0.4.8 (``--include_path DIR``):

- ``<task>.yaml``: ``output_type: multiple_choice`` over local JSONL (absolute ``data_files``, so any
  working directory works; export again after moving DIR), ``doc_to_text: prompt`` — the prompt
  **pre-rendered** exactly as the evaluator renders it (shared prefix + query, chat template and
  few-shot turns included, BOS as text where our scorer adds one) —, ``doc_to_choice`` = our label
  continuations (label + end-of-turn), ``target_delimiter: ""``, ``num_fewshot: 0``, and our metrics
  via ``process_results`` + aggregation functions;
- ``affectlocus.yaml``: the group, each metric the unweighted mean over tasks (as ``Scores.mean``);
- ``utils.py``: numpy only (our :func:`~affectlocus.tasks.classification.classification_metrics`, copied
  in at export time), so the tasks run where affectlocus is not installed;
- ``data/<task>.jsonl`` and ``affectlocus-export.json`` (provenance and the tokenization check).

Examples are the evaluator's: ``load_task(name, seed=seed, max_test=max_examples)``'s test split.
lm-eval moves a context's trailing whitespace into the continuation (the ``\\n`` after a chat
template's assistant header): it scores that token too, a constant per example, so choices and
metrics are the same while its log-likelihoods are ours plus ``log p("\\n" | …)``. The export checks,
per example, that lm-eval's tokens are ours (``tokens_match``), and says which model args it needs.
"""
from __future__ import annotations

import argparse
import inspect
import json
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from .._io import atomic_write_text
from ..errors import ConfigError, DataError, _preview
from ..tasks.classification import classification_metrics
from ..tasks.datasets import EMBEDDED_TASKS, Example, Task, available_tasks, load_task
from ..tasks.prompts import PromptStyle, build_label_prompts, text_needs_bos, tokenizer_fingerprint
from .runner import safe_name

EXPORT_VERSION = "lm-eval-export-1"
GROUP = "affectlocus"
METRICS = ("balanced_accuracy", "accuracy", "weighted_f1", "macro_f1")
MANIFEST = "affectlocus-export.json"


@dataclass
class ExportedTask:
    """One exported task: ``choices[k]`` is label ``labels[k]``'s continuation; ``shift`` is the
    prompts' trailing whitespace that lm-eval scores as part of every choice."""

    name: str
    yaml: Path
    data: Path
    n: int
    labels: tuple[str, ...]
    choices: list[str]
    shift: str
    tokens_match: int
    max_tokens: int


@dataclass
class LmEvalExport:
    """What :func:`export_lm_eval` wrote; ``model_args`` are extra lm-eval model args it needs."""

    out_dir: Path
    tasks: list[ExportedTask]
    group: Path
    model_args: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def command(self, pretrained: str | Path, peft: str | Path | None = None, model: str = "hf") -> str:
        """The ``lm_eval`` command line that runs the group (every task + the means) on ``pretrained``
        (± an adapter: ``peft=`` for ``hf``, ``lora_local_path=`` for ``vllm``)."""
        args = [f"pretrained={pretrained}", "dtype=float32" if model == "hf" else "dtype=auto"]
        if peft:
            args.append(f"peft={peft}" if model == "hf" else f"lora_local_path={peft}")
        args += [a for a in self.model_args.split(",") if a]
        return (f"lm_eval --model {model} --model_args {','.join(args)} --include_path {self.out_dir} "
                f"--tasks {GROUP} --batch_size 8 --log_samples --output_path <out>")


# ---------------------------------------------------------------- lm-eval's tokenization, mirrored
def lm_eval_encode_pair(tokenizer, context: str, continuation: str,
                        add_bos_token: bool | None = None) -> tuple[list[int], list[int]]:
    """The (context, continuation) ids lm-eval's causal backends (``hf``, ``vllm``) score: trailing
    whitespace moves to the continuation, the whole string is encoded, then split at the context's length."""
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation

    def enc(text: str) -> list[int]:
        bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        bos = tokenizer.decode(bos_id) if bos_id is not None else None
        kw = {} if add_bos_token is None else {"add_special_tokens": add_bos_token}
        if bos and text.startswith(bos):
            kw = {"add_special_tokens": False}
        return list(tokenizer.encode(text, **kw))

    whole, ctx = enc(context + continuation), enc(context)
    return ctx, whole[len(ctx):]


def _matches(tokenizer, prompts, text: str, i: int, add_bos_token: bool | None) -> bool:
    """Whether lm-eval scores exactly our tokens for example ``i`` (prompt ``text``; plus the moved whitespace)."""
    for label_text, label in zip(prompts.label_texts, prompts.label_ids):
        ctx, cont = lm_eval_encode_pair(tokenizer, text, label_text, add_bos_token)
        if ctx + cont != prompts.prefix_ids + prompts.query_ids[i] + label or cont[len(cont) - len(label):] != label:
            return False
    return True


# ---------------------------------------------------------------- files
def _utils_source() -> str:
    """``utils.py`` of the export: our metrics (copied from the installed affectlocus) + lm-eval hooks."""
    return f'''"""lm-eval hooks of tasks exported by affectlocus ({EXPORT_VERSION}); numpy only.

process_results: one (gold, predicted index, number of choices) item per doc, the prediction being the
argmax of the summed choice log-likelihoods (first on ties, like affectlocus). The aggregations are
affectlocus' classification metrics on all items (balanced accuracy: mean recall over gold classes)."""
import numpy as np

METRICS = {METRICS!r}


{inspect.getsource(classification_metrics)}

def process_results(doc, results):
    lls = [float(r[0]) for r in results]
    item = (int(doc["gold"]), int(np.argmax(lls)), len(lls))
    return {{m: item for m in METRICS}}


def _aggregate(items, metric):
    y = np.array([i[0] for i in items], dtype=int)
    p = np.array([i[1] for i in items], dtype=int)
    return float(classification_metrics(y, p, max(i[2] for i in items))[metric][0])


def balanced_accuracy(items):
    return _aggregate(items, "balanced_accuracy")


def accuracy(items):
    return _aggregate(items, "accuracy")


def weighted_f1(items):
    return _aggregate(items, "weighted_f1")


def macro_f1(items):
    return _aggregate(items, "macro_f1")
'''


def _task_yaml(name: str, data: Path, choices: Sequence[str], header: str) -> str:
    import yaml
    body = {"task": name, "dataset_path": "json",
            "dataset_kwargs": {"data_files": {"test": str(data)}}, "test_split": "test",
            "output_type": "multiple_choice", "doc_to_text": "prompt", "doc_to_target": "gold",
            "doc_to_choice": list(choices), "target_delimiter": "", "fewshot_delimiter": "", "num_fewshot": 0}
    metrics = "".join(f"  - metric: {m}\n    aggregation: !function utils.{m}\n    higher_is_better: true\n"
                      for m in METRICS)
    return (header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=10 ** 6)
            + "process_results: !function utils.process_results\nmetric_list:\n" + metrics
            + "metadata:\n  version: 1.0\n")


def _group_yaml(names: Sequence[str], header: str) -> str:
    tasks = "".join(f"  - {json.dumps(n)}\n" for n in names)
    aggs = "".join(f"  - metric: {m}\n    aggregation: mean\n    weight_by_size: false\n" for m in METRICS)
    return (f"{header}group: {GROUP}\ntask:\n{tasks}aggregate_metric_list:\n{aggs}"
            "metadata:\n  version: 1.0\n")


# ---------------------------------------------------------------- export
def _resolve_tasks(tasks: Sequence[str | Task] | str, meld_dir, seed: int, max_examples: int | None) -> list[Task]:
    if isinstance(tasks, str):
        tasks = [t.strip() for t in tasks.split(",") if t.strip()]
    if not tasks:
        raise ConfigError(f"no tasks to export; available: {_preview(available_tasks())}")
    if max_examples is not None and (isinstance(max_examples, bool) or not isinstance(max_examples, int)
                                     or max_examples < 1):
        raise ConfigError(f"max_examples must be a positive integer or None, got {max_examples!r}")
    out = [t if isinstance(t, Task) else load_task(t, meld_dir=meld_dir, seed=seed, max_test=max_examples)
           for t in tasks]
    names = [t.name for t in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"task names repeat: {names}")
    return out


def _rendered(tokenizer, task: Task, examples: Sequence[Example], seed: int, style: PromptStyle):
    """The evaluator's label prompts and each example's full prompt text (a BOS that our scorer adds
    to the plain layout's ids but that is not in its text is rendered as text: lm-eval then adds none)."""
    prompts = build_label_prompts(tokenizer, task.labels, [e.text for e in examples], task.train,
                                  seed=seed, style=style)
    bos, bos_text = tokenizer.bos_token_id, tokenizer.bos_token or ""
    if bos is None or prompts.prefix_ids[:1] != [bos] or prompts.prefix_text.startswith(bos_text):
        bos_text = ""
    return prompts, [bos_text + prompts.prefix_text + q for q in prompts.query_texts]


def export_lm_eval(out_dir: str | Path, tokenizer, tasks: Sequence[str | Task] | str = EMBEDDED_TASKS, *,
                   meld_dir: str | Path | None = None, seed: int = 0, max_examples: int | None = None,
                   style: PromptStyle | None = None, model_name: str | None = None) -> LmEvalExport:
    """Write lm-eval tasks for ``tasks`` (names for :func:`load_task`, or :class:`Task`) into ``out_dir``.

    The prompts are rendered with ``tokenizer`` (use the model's own: its chat template shapes them),
    with the evaluator's ``seed``, ``max_examples`` (label-stratified test subset) and ``style``
    (few-shot turns included). ``model_name`` is recorded in the manifest. Raises
    :class:`DataError` for an unknown task or missing data, :class:`ConfigError` for bad options.
    """
    style = style or PromptStyle()
    out = Path(out_dir).expanduser().resolve()
    loaded = _resolve_tasks(tasks, meld_dir, seed, max_examples)
    header = (f"# written by affectlocus export-lm-eval ({EXPORT_VERSION}); prompts pre-rendered for "
              f"tokenizer {tokenizer_fingerprint(tokenizer)}{f' ({model_name})' if model_name else ''}\n")
    exported, needs_no_bos = [], False
    for task in loaded:
        examples = task.test[:max_examples] if max_examples is not None else list(task.test)
        if not examples:
            raise DataError(f"task {task.name} has no test examples")
        prompts, texts = _rendered(tokenizer, task, examples, seed, style)
        ok = [_matches(tokenizer, prompts, t, i, None) for i, t in enumerate(texts)]
        if not all(ok) and all(_matches(tokenizer, prompts, t, i, False) for i, t in enumerate(texts)):
            ok, needs_no_bos = [True] * len(examples), True
        if not all(ok):
            warnings.warn(f"{task.name}: lm-eval would tokenize {ok.count(False)} of {len(examples)} prompts "
                          f"differently from the evaluator; its scores may differ", stacklevel=2)
        index = {lab: k for k, lab in enumerate(task.labels)}
        data = out / "data" / f"{safe_name(task.name)}.jsonl"
        atomic_write_text(data, "".join(json.dumps({"id": e.id, "text": e.text, "label": e.label,
                                                    "gold": index[e.label], "prompt": t}, ensure_ascii=False) + "\n"
                                        for e, t in zip(examples, texts)))
        yaml_path = out / f"{safe_name(task.name)}.yaml"
        atomic_write_text(yaml_path, _task_yaml(task.name, data, prompts.label_texts, header))
        shift = texts[0][len(texts[0].rstrip()):]
        exported.append(ExportedTask(task.name, yaml_path, data, len(examples), tuple(task.labels),
                                     list(prompts.label_texts), shift, sum(ok),
                                     len(prompts.prefix_ids) + max(len(q) for q in prompts.query_ids)
                                     + max(len(x) for x in prompts.label_ids)))
    atomic_write_text(out / "utils.py", _utils_source())
    group = atomic_write_text(out / f"{GROUP}.yaml", _group_yaml([t.name for t in exported], header))
    meta = {"version": EXPORT_VERSION, "model": model_name, "tokenizer": tokenizer_fingerprint(tokenizer),
            "seed": seed, "max_examples": max_examples, "prompt": style.key(), "split": "test",
            "tokenizer_adds_bos": text_needs_bos(tokenizer)}
    result = LmEvalExport(out, exported, group, "add_bos_token=False" if needs_no_bos else "", meta)
    manifest = {**meta, "model_args": result.model_args,
                "tasks": [{**asdict(t), "yaml": str(t.yaml), "data": str(t.data)} for t in exported]}
    atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False))
    return result


# ---------------------------------------------------------------- command line
_HELP = "write the affective tasks as lm-evaluation-harness tasks that score like `affectlocus bench`"


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``export-lm-eval DIR [--tasks …] [--meld DIR] [--model M] [--max-examples N] …``."""
    p = sub.add_parser("export-lm-eval", help=_HELP, description=_HELP)
    p.add_argument("out", metavar="DIR", help="output folder (give it to lm_eval --include_path)")
    p.add_argument("--tasks", default=",".join(EMBEDDED_TASKS), help=f"comma list (default {','.join(EMBEDDED_TASKS)})")
    p.add_argument("--meld", dest="meld_dir", default=None, help="MELD folder for meld-emotion / meld-sentiment")
    p.add_argument("--model", default="smollm2-135m",
                   help="model whose tokenizer and chat template render the prompts (default smollm2-135m)")
    p.add_argument("--max-examples", type=int, default=None, help="test examples per task (default all)")
    p.add_argument("--shots-per-label", "--shots", dest="shots", type=int, default=PromptStyle().shots_per_label,
                   help="few-shot examples per label, rendered into the prompt (default 2, like bench)")
    p.add_argument("--seed", type=int, default=0, help="splits and few-shot choice (default 0, like bench)")
    p.set_defaults(func=run_export)
    return p


def model_folder(name_or_path: str | Path) -> Path:
    """The HF folder lm-eval's ``pretrained=`` takes for a model alias or path (the embedded model's
    cache); a folder with tokenizer files is taken as it is (weights are not needed to render prompts)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir() and any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return path
    from ..models import resolve
    path = resolve(name_or_path)
    return path if path.is_dir() else path.parent


def run_export(args: argparse.Namespace) -> int:
    """Handler of ``affectlocus export-lm-eval``."""
    from ..models.loader import _tokenizer
    if args.shots < 0:
        raise ConfigError(f"--shots-per-label must be ≥ 0, got {args.shots}")
    folder = model_folder(args.model)
    tok = _tokenizer(folder)
    if tok is None:
        raise DataError(f"{folder} has no tokenizer: the prompts cannot be rendered")
    result = export_lm_eval(args.out, tok, args.tasks, meld_dir=args.meld_dir, seed=args.seed,
                            max_examples=args.max_examples, style=PromptStyle(shots_per_label=args.shots),
                            model_name=str(args.model))
    for t in result.tasks:
        print(f"{t.name:<18} {t.n:>6} examples  choices {t.choices}  lm-eval tokens = ours: "
              f"{t.tokens_match}/{t.n}  max {t.max_tokens} tokens")
    print(f"written: {result.out_dir} (group {GROUP}: {', '.join(result.task_names)})")
    print("run:", result.command(folder))
    return 0


__all__ = ["EXPORT_VERSION", "ExportedTask", "GROUP", "LmEvalExport", "export_lm_eval", "lm_eval_encode_pair",
           "model_folder", "register", "run_export"]
