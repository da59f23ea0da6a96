"""``affectlocus mediate|attribute|spectrum BASE TUNED --out DIR``: the three witnesses of where a
fine-tune acts, as tables (CSV + JSON), heatmaps (PNG), ``run.jsonl`` and a one-screen summary.

``--data`` (mediate, attribute) is an embedded task name (``rt-polarity`` …; the test split's first
``--n`` examples, label-stratified, in the evaluator's label-prompt format), a ``.txt`` file (one
text a line) or a ``.jsonl`` file (``{"text": …}`` a line). On a task, ``mediate`` reads the
next-token distribution at the end of each prompt (where the label is predicted) and ``attribute``
scores the LM loss of the true label's answer tokens only; on plain texts, ``mediate`` reads it after
each text's last token and ``attribute`` the LM loss of every token.
"""
from __future__ import annotations

import argparse
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .._runlog import RunLog, add_quiet_arg, model_placement, show_progress
from ..errors import ConfigError, DataError
from ..models.cli_args import add_device_args, device_kwargs

#: the table's kind → the columns drawn as heatmaps
HEATMAPS = {"mediation": ("sufficiency", "necessity"), "attribution": ("attribution",),
            "spectrum": ("effective_rank", "intruders")}
DATA_HELP = ("an embedded task name (rt-polarity, tweets-sentiment, zh-reviews; meld-* with --meld), a .txt "
             "file (one text a line) or a .jsonl file ({\"text\": …} a line)")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``mediate``, ``attribute`` and ``spectrum`` to an ``argparse`` subparsers object."""
    m = _common(sub.add_parser(
        "mediate", help="activation patching per site: sufficiency and necessity of each output",
        description="Patch each site's output between the base run and the tuned run (BASE grafted with "
                    "TUNED) on --data; write mediation.csv/json and heatmaps of sufficiency and necessity. The "
                    "tuned run carries the whole fine-tune; --modules/--layers choose the sites patched."),
        data=True)
    m.add_argument("--metric", choices=("kl", "label"), default="kl",
                   help="kl: next-token KL to the tuned model (default); label (task data only): log-odds of "
                        "the true label's first token against the other labels' first tokens")
    m.set_defaults(func=run_mediate)
    a = _common(sub.add_parser(
        "attribute", help="integrated gradients of the LM loss along base → tuned, per site",
        description="Attribute L(tuned) − L(base) on --data to each site's ΔW (midpoint rule over --steps); "
                    "write attribution.csv/json and a heatmap; print the completeness error. Only the selected "
                    "sites move along the path: with --modules/--layers, the total is the partial fine-tune's."),
        data=True)
    a.add_argument("--steps", type=int, default=8, help="midpoint-rule points on the path (default 8)")
    a.set_defaults(func=run_attribute)
    s = _common(sub.add_parser(
        "spectrum", help="singular spectrum of ΔW per site: effective rank, angles, intruder dimensions",
        description="Stream BASE and TUNED one site at a time; write spectrum.csv/json and heatmaps of the "
                    "effective rank and the intruder dimensions of ΔW."), data=False)
    s.add_argument("--k", type=int, default=8, help="top singular values / vectors per site (default 8)")
    s.add_argument("--eps", type=float, default=0.5,
                   help="intruder threshold: best |cosine| with W's top singular vectors below it (default 0.5)")
    s.epilog = ("BASE is streamed unless --dtype or --device-map is given (then it is loaded as a model); "
                "--device: where the SVDs run. The arithmetic is fp32 either way.")
    s.set_defaults(func=run_spectrum)


def _common(p: argparse.ArgumentParser, data: bool) -> argparse.ArgumentParser:
    p.add_argument("base", help="base model: smollm2-135m, an HF folder, a .safetensors or a .gguf file")
    p.add_argument("tuned", help="the fine-tune: peft adapter folder, checkpoint (folder/file), or .pth adapter")
    p.add_argument("--modules", default="all", help="q,k,v,o,gate,up,down, attn, mlp, all (default all)")
    p.add_argument("--layers", default=None, help="e.g. '3', '0,5', '10:20', '10-19' (default all)")
    if data:
        p.add_argument("--data", default=None, help=f"required: {DATA_HELP}")
        p.add_argument("--n", type=int, default=16, help="rows of --data used (default 16)")
        p.add_argument("--max-length", type=int, default=256,
                       help="tokens per row; longer prompts lose tokens from the left, texts from the right "
                            "(default 256)")
        p.add_argument("--shots", type=int, default=0, help="few-shot examples per label in task prompts (default 0)")
        p.add_argument("--seed", type=int, default=0, help="task split and few-shot choice (default 0)")
        p.add_argument("--meld", dest="meld_dir", default=None, help="MELD folder for meld-emotion / meld-sentiment")
    p.add_argument("--top", type=int, default=5, help="how many top sites to print (default 5)")
    p.add_argument("--out", required=True, help="output folder (created)")
    add_quiet_arg(p)
    add_device_args(p)
    return p


# ---- --data ------------------------------------------------------------------------------------------
@dataclass
class Inputs:
    """Encoded ``--data``: ``context`` (mediate: predict after its last token), ``scored`` (attribute:
    with ``labels``), a description of each, and what a label metric needs (task data only)."""

    context: dict[str, Any]
    scored: dict[str, Any]
    context_what: str
    scored_what: str
    labels: tuple[tuple[str, ...], list[int], list[int]] | None = None  # (labels, first tokens, right)

    def label_metric(self) -> Callable:
        """:func:`label_metric` of the task (``--metric label``)."""
        if self.labels is None:
            raise ConfigError("--metric label needs a task as --data (texts have no labels); use --metric kl")
        return label_metric(*self.labels)


def read_data(spec: str | None, n: int, *, seed: int = 0, meld_dir: str | None = None) -> Any:
    """``--data`` read (no tokenizer needed yet): a :class:`~affectlocus.tasks.Task` holding ``n`` test
    examples, or a list of ``n`` texts. Raises :class:`ConfigError` / :class:`DataError`."""
    if not spec:
        raise ConfigError(f"--data is required: {DATA_HELP}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--n must be a positive integer, got {n!r}")
    path = Path(spec).expanduser()
    if path.suffix.lower() in (".txt", ".jsonl") or path.exists():
        if not path.is_file():
            raise DataError(f"--data {'is a folder, not a file' if path.is_dir() else 'file not found'}: {path}")
        if path.suffix.lower() not in (".txt", ".jsonl"):
            raise DataError(f"--data {path}: files must be .txt (one text a line) or .jsonl ({{\"text\": …}} a line)")
        texts = _read_texts(path)
        if not texts:
            raise DataError(f"--data {path} holds no texts")
        return texts[:n]
    from ..tasks import load_task
    task = load_task(spec, meld_dir=meld_dir, seed=seed, max_test=n)
    if not task.test:
        raise DataError(f"task {task.name} has no test examples")
    return task


def _read_texts(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix.lower() != ".jsonl":
        return [line for line in lines if line.strip()]
    texts = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{i} is not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise DataError(f'{path}:{i} must be an object with a string "text", got {line[:60]!r}')
        texts.append(row["text"])
    return texts


def encode_data(data: Any, tokenizer, max_length: int, *, shots: int = 0, seed: int = 0) -> Inputs:
    """Tokenize what :func:`read_data` returned (right-padded batches; see the module docstring)."""
    from ..tuning.data import SFTDataset, collate
    if tokenizer is None:
        raise DataError("the base model has no tokenizer files; mediate and attribute need one to encode --data")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ConfigError(f"--max-length must be an integer ≥ 2, got {max_length!r}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad = int(pad or 0)
    if isinstance(data, list):
        ids = [list(tokenizer(t, add_special_tokens=True).input_ids)[:max_length] for t in data]
        if not any(len(x) >= 2 for x in ids):
            raise DataError("every --data text is under two tokens long: there is no next token to score")
        rows = [{"input_ids": x, "labels": x} for x in ids if x]
        batch = collate(rows, pad)
        return Inputs(batch, batch, f"{len(rows)} texts (the next token after each)",
                      f"{len(rows)} texts (LM loss on every token)")
    from ..tasks.prompts import PromptStyle, build_label_prompts
    task = data
    prompts = build_label_prompts(tokenizer, task.labels, [e.text for e in task.test], task.train, seed=seed,
                                  style=PromptStyle(shots_per_label=shots))
    index = {lab: k for k, lab in enumerate(task.labels)}
    right = [index[e.label] for e in task.test]
    pairs = [(prompts.prefix_ids + q, prompts.label_ids[k]) for q, k in zip(prompts.query_ids, right)]
    scored = SFTDataset.from_ids(pairs, pad, max_length=max_length)
    context = collate([{"input_ids": p[-max_length:], "labels": p[-max_length:]} for p, _ in pairs], pad)
    firsts = [ids[0] for ids in prompts.label_ids]
    what = f"{len(pairs)} test examples of {task.name}"
    return Inputs(context, scored.collate(range(len(scored))), f"{what} (the next token after each prompt)",
                  f"{what} (LM loss on the true label's answer tokens)", (task.labels, firsts, right))


def label_metric(labels: tuple[str, ...], first_tokens: list[int], right: list[int]) -> Callable:
    """``callable(last_logits[B, V]) -> scores[B]``: log p(true label's first token) − log Σ p(first
    tokens of the other labels). Raises :class:`DataError` when another label starts with the same token."""
    import torch
    others = []
    for k in sorted(set(right)):
        rest = {t for j, t in enumerate(first_tokens) if j != k} - {first_tokens[k]}
        clash = [labels[j] for j, t in enumerate(first_tokens) if j != k and t == first_tokens[k]]
        if clash or not rest:
            raise DataError(f"labels {labels[k]!r} and {', '.join(map(repr, clash))} start with the same token: "
                            f"--metric label compares first tokens; use --metric kl")
        others.append((k, sorted(rest)))
    table = dict(others)

    def label_logodds(logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits.double(), -1)
        rows = torch.arange(logits.shape[0], device=logits.device)
        mask = torch.zeros_like(logp, dtype=torch.bool)
        for i, k in enumerate(right):
            mask[i, table[k]] = True
        wrong = torch.logsumexp(logp.masked_fill(~mask, float("-inf")), -1)
        return logp[rows, torch.tensor([first_tokens[k] for k in right], device=logits.device)] - wrong
    return label_logodds


# ---- handlers ----------------------------------------------------------------------------------------
def _tuned(spec: str) -> str:
    """TUNED as a source path: the embedded alias or a ``.gguf`` → its safetensors cache folder."""
    from ..models import ALIASES, resolve
    if (spec.lower() in ALIASES and not Path(spec).exists()) or Path(spec).suffix.lower() == ".gguf":
        return str(resolve(spec))
    return spec


def _check_sites(args: argparse.Namespace) -> None:
    """Fail on an unknown module before anything is loaded (layers need the model: checked by select)."""
    from ..sites import parse_modules
    parse_modules(args.modules)


def _load(args: argparse.Namespace, placement: dict, log: RunLog):
    from ..models import load_model
    model, tok = load_model(args.base, **placement)
    log.event("model", name=args.base, **model_placement(model))
    return model, tok


def run_mediate(args: argparse.Namespace) -> int:
    from .mediation import mediate
    _check_sites(args)
    data = read_data(args.data, args.n, seed=args.seed, meld_dir=args.meld_dir)
    if args.metric == "label" and isinstance(data, list):
        raise ConfigError("--metric label needs a task as --data (texts have no labels); use --metric kl")
    placement = device_kwargs(args)
    with RunLog(args.out, "mediate", args) as log:
        model, tok = _load(args, placement, log)
        inputs = encode_data(data, tok, args.max_length, shots=args.shots, seed=args.seed)
        metric = inputs.label_metric() if args.metric == "label" else None
        table = mediate(model, _tuned(args.tuned), inputs.context, modules=args.modules, layers=args.layers,
                        metric=metric, progress=show_progress(args))
        table.meta["data"] = inputs.context_what
        return _finish(args, table, log)


def run_attribute(args: argparse.Namespace) -> int:
    from .attribution import attribute
    _check_sites(args)
    if isinstance(args.steps, bool) or args.steps < 1:
        raise ConfigError(f"--steps must be ≥ 1, got {args.steps}")
    data = read_data(args.data, args.n, seed=args.seed, meld_dir=args.meld_dir)
    placement = device_kwargs(args)
    with RunLog(args.out, "attribute", args) as log:
        model, tok = _load(args, placement, log)
        inputs = encode_data(data, tok, args.max_length, shots=args.shots, seed=args.seed)
        table = attribute(model, _tuned(args.tuned), inputs.scored, modules=args.modules, layers=args.layers,
                          steps=args.steps, progress=show_progress(args))
        table.meta["data"] = inputs.scored_what
        return _finish(args, table, log)


def run_spectrum(args: argparse.Namespace) -> int:
    from .spectra import spectrum
    _check_sites(args)
    placement = device_kwargs(args)
    with RunLog(args.out, "spectrum", args) as log:
        base: Any = args.base
        if "dtype" in placement or "device_map" in placement:
            base = _load(args, placement, log)[0]
        with warnings.catch_warnings():  # the notes are printed with the summary instead
            warnings.simplefilter("ignore", UserWarning)
            table = spectrum(base, _tuned(args.tuned), modules=args.modules, layers=args.layers, k=args.k,
                             eps=args.eps, progress=show_progress(args), device=placement.get("device"))
        return _finish(args, table, log)


def _finish(args: argparse.Namespace, table, log: RunLog) -> int:
    """Save table and heatmaps atomically, log and print the summary."""
    out = Path(args.out)
    written = [p.name for p in table.save(out)]
    for column in HEATMAPS[table.kind]:
        name = f"heatmap_{column}.png"
        table.heatmap(column, out / name)
        written.append(name)
    rankings = {c: _ranking(table, c) for c in _ranked(table)}
    log.event("summary", kind=table.kind, sites=len(table), rankings=rankings, meta=table.meta,
              notes=table.notes, written=written)
    print(summary_text(table, args.top))
    if not args.quiet:
        print(f"wrote {out}/: {', '.join(written)}")
    return 0


# ---- the summary -------------------------------------------------------------------------------------
def _ranked(table) -> tuple[str, ...]:
    return {"mediation": ("sufficiency", "necessity"), "attribution": ("attribution",),
            "spectrum": ("sigma_1",)}[table.kind]


def _ranking(table, column: str) -> dict[str, float]:
    """Modules by ``column`` summed over layers (|attribution|; spectrum: the mean over layers), largest first."""
    values = table.by_module(column, absolute=table.kind == "attribution")
    if table.kind == "spectrum":
        counts: dict[str, int] = {}
        for r in table.rows:
            counts[r["module"]] = counts.get(r["module"], 0) + 1
        values = {m: v / counts[m] for m, v in values.items()}
    return dict(sorted(values.items(), key=lambda kv: -kv[1]))


def summary_text(table, top: int = 5) -> str:
    """One screen: what was measured, modules ranked by each witness column, the top sites, notes."""
    meta, lines = table.meta, []
    layers = table.layers()
    where = f"{len(table)} sites ({len(table.modules())} modules × {len(layers)} layers)"
    if table.kind == "mediation":
        lines.append(f"mediation ({meta.get('metric')}) on {meta.get('data', meta.get('n'))}: {where}; "
                     f"total effect {meta.get('total', float('nan')):.4g} "
                     f"({'KL(p_tuned ‖ p_base)' if meta.get('metric') == 'kl' else 'score(tuned) − score(base)'})")
    elif table.kind == "attribution":
        lines.append(f"attribution ({meta.get('loss')}, {meta.get('steps')} steps) on {meta.get('data', '?')}: "
                     f"{where}")
        lines.append(f"  total L(tuned) − L(base) = {table.total:.4g}  Σ attribution = {meta.get('sum', 0.0):.4g}  "
                     f"completeness error = {table.error:.2%}")
    else:
        lines.append(f"spectrum of ΔW (k={meta.get('k')}, eps={meta.get('eps')}): {where}; "
                     f"methods {meta.get('methods')}")
    for column in _ranked(table):
        how = ("mean over layers" if table.kind == "spectrum" else
               "|·| summed over layers" if table.kind == "attribution" else "summed over layers")
        ranking = _ranking(table, column)
        lines.append(f"modules by {column} ({how}): " + " > ".join(f"{m} {v:.4g}" for m, v in ranking.items()))
    if table.kind == "spectrum":
        for column, agg in (("effective_rank", "mean"), ("intruders", "total")):
            vals = table.by_module(column)
            if agg == "mean":
                vals = {m: v / max(1, sum(r["module"] == m for r in table.rows)) for m, v in vals.items()}
            lines.append(f"{column} per module ({agg} over layers): "
                         + "  ".join(f"{m} {v:.3g}" for m, v in vals.items()))
    key = _ranked(table)[0]
    rows = sorted(table.rows, key=lambda r: -abs(float(r.get(key) or 0.0)))[:max(0, top)]
    if rows:
        cols = [c for c in HEATMAPS[table.kind] + _ranked(table) if c in table.columns]
        cols = list(dict.fromkeys(cols))
        lines.append(f"top {len(rows)} sites by |{key}|:")
        for r in rows:
            lines.append(f"  layers.{r['layer']}.{r['module']:<5} "
                         + "  ".join(f"{c}={float(r[c]):.4g}" for c in cols))
    lines += [f"note: {n}" for n in table.notes]
    return "\n".join(lines)


__all__ = ["HEATMAPS", "Inputs", "encode_data", "label_metric", "read_data", "register", "run_attribute",
           "run_mediate", "run_spectrum", "summary_text"]
