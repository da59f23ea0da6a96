"""The ``attribute`` step: where the affective update acts, answered three ways, and whether they agree.

For each witnessed all-module affective adapter (the first ``witness_seeds`` main seeds; GET and the
other single-module adapters change one module only, so ranking modules means nothing for them),
every module gets three scores over the same sites (``witness_layers``):

* **size** — ΔW's ``rms`` (‖ΔW‖_F / √numel, the size-normalised metric of claim 1 and of the study's
  module ranking), summed over layers;
* **mediation** — sufficiency summed over layers (:func:`affectlocus.witnesses.mediate`, KL of the
  next-token distribution at each prompt's last token, where the label is predicted);
* **attribution** — |integrated-gradients attribution| summed over layers
  (:func:`affectlocus.witnesses.attribute`, answer-only LM loss of the true label, ``attribute_steps``).

The batch is ``witness_examples`` test prompts of the evaluation tasks in the evaluator's own prompt
format (:func:`~affectlocus.tasks.prompts.label_training_pairs`), label-balanced, texts of at most
``max_train_chars`` characters when set. Kendall's τ-b between the three rankings with exact
permutation p-values (:mod:`affectlocus.witnesses.agreement`) is reported per seed; the verdict
uses the scores normalised per seed (÷ Σ|score|) and averaged over seeds. The step also runs
:func:`affectlocus.spectrum` on every affective all-module adapter and the control
(effective rank and intruder dimensions per module, mean over layers) for the locate section.
Tables are written under ``witnesses/`` of the run folder (CSV + JSON, atomically).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from ..sites import select
from ..witnesses.agreement import AGREE, DISAGREE, Agreement, agreement
from ..witnesses.table import WitnessTable
from .claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED, WITNESSES_CLAIM as CLAIM, Verdict, precheck

if TYPE_CHECKING:
    from .pipeline import Study

WITNESSES = ("size", "mediation", "attribution")
SIZE_METRIC = "rms"
COLUMNS = {"size": (SIZE_METRIC, False), "mediation": ("sufficiency", False), "attribution": ("attribution", True)}
SPECTRUM_COLUMNS = ("effective_rank", "stable_rank", "intruders")


def witness_examples(study: Study) -> list[tuple[Any, list]]:
    """``(task, examples)`` per evaluation task: ``witness_examples`` test examples in all, spread over the
    tasks, round-robin over labels (in split order), texts of at most ``max_train_chars`` characters
    when that leaves enough."""
    from .data import _round_robin
    tasks, n = study.eval_tasks, study.cfg.witness_examples
    limit = study.cfg.max_train_chars
    out = []
    for i, task in enumerate(tasks):
        want = n // len(tasks) + (i < n % len(tasks))
        short = [e for e in task.test if limit is None or len(e.text) <= limit]
        pool = short if len(short) >= want else list(task.test)
        if want:
            out.append((task, _round_robin(pool, want)))
    return out


def witness_batches(study: Study) -> tuple[dict, dict]:
    """(prompts for mediation, prompts + true-label answers with answer-only ``labels`` for attribution),
    right-padded tensors in the evaluator's prompt format."""
    import torch

    from ..tasks.prompts import label_training_pairs
    from .data import _pad
    pairs = []
    for task, examples in witness_examples(study):
        pairs += label_training_pairs(study.tok, task, examples, seed=0, style=study.style)
    pad = _pad(study.tok)

    def pack(rows: list[tuple[list[int], list[int]]]) -> dict:
        width = max(len(p) + len(a) for p, a in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask, labels = torch.zeros_like(ids), torch.full_like(ids, -100)
        for i, (p, a) in enumerate(rows):
            ids[i, :len(p) + len(a)] = torch.tensor(p + a)
            mask[i, :len(p) + len(a)] = 1
            labels[i, len(p):len(p) + len(a)] = torch.tensor(a, dtype=torch.long)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}
    prompts = pack([(p, []) for p, _ in pairs])
    prompts.pop("labels")
    return prompts, pack(pairs)


def _size_table(study: Study, adapter: Path, layers: list[int]) -> WitnessTable:
    from ..diff import diff
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="the adapter also updates")
        table = diff(study.model, adapter, modules="all", layers=layers, metrics=SIZE_METRIC, progress=False)
    rows = [{"layer": r.layer, "module": r.module, SIZE_METRIC: float(r.values[SIZE_METRIC])} for r in table.results]
    return WitnessTable("size", rows, (SIZE_METRIC,), {"metric": SIZE_METRIC, "tuned": str(adapter)})


def _one_seed(study: Study, seed: int, layers: list[int], batches: tuple[dict, dict]) -> dict:
    from ..witnesses import attribute, mediate
    adapter = study.affect("all", seed)
    folder = study.run / "witnesses" / f"affective-s{seed}"
    tables = {"size": _size_table(study, adapter, layers),
              "mediation": mediate(study.model, adapter, batches[0], modules="all", layers=layers,
                                   progress=study.progress),
              "attribution": attribute(study.model, adapter, batches[1], modules="all", layers=layers,
                                       steps=study.cfg.attribute_steps, progress=study.progress)}
    for table in tables.values():
        table.save(folder)
    scores = {w: tables[w].by_module(col, absolute=ab) for w, (col, ab) in COLUMNS.items()}
    att, med = tables["attribution"], tables["mediation"]
    return {"scores": scores, "agreement": agreement(scores).to_dict(), "folder": str(folder),
            "attribution": {"total": att.meta["total"], "error": att.meta["error"], "steps": att.meta["steps"]},
            "mediation": {"total_kl": med.meta["total"]},
            "notes": [f"seed {seed}: {n}" for n in (*med.notes, *att.notes)]}


def _normalised(scores: Mapping[str, float]) -> dict[str, float]:
    total = sum(abs(v) for v in scores.values())
    return {m: (v / total if total > 0 else 0.0) for m, v in scores.items()}


def pooled_scores(per_seed: Mapping[str, Mapping]) -> dict[str, dict[str, float]]:
    """Each witness's module scores normalised per seed (÷ Σ|score|) and averaged over seeds."""
    out: dict[str, dict[str, float]] = {}
    for w in WITNESSES:
        normed = [_normalised(s["scores"][w]) for s in per_seed.values()]
        mods = [m for m in normed[0] if all(m in n for n in normed)]
        out[w] = {m: sum(n[m] for n in normed) / len(normed) for m in mods}
    return out


def _spread(per_seed: Mapping[str, Mapping]) -> dict[str, dict]:
    taus: dict[str, list[float]] = {}
    for s in per_seed.values():
        for p in s["agreement"]["pairs"]:
            taus.setdefault(f"{p['a']}~{p['b']}", []).append(math.nan if p["tau"] is None else p["tau"])
    out = {}
    for key, values in taus.items():
        finite = [v for v in values if math.isfinite(v)]
        out[key] = {"mean": sum(finite) / len(finite) if finite else None, "min": min(finite, default=None),
                    "max": max(finite, default=None), "per_seed": [v if math.isfinite(v) else None for v in values]}
    return out


def spectrum_summary(study: Study, layers: list[int]) -> dict:
    """``al.spectrum`` of every affective all-module adapter and the control: per module, the mean over
    layers (and seeds) of effective rank, stable rank and intruder dimensions. ΔW's spectrum is exact
    from the LoRA factors; W's and W + ΔW's singular vectors (angles, intruders) come from an exact
    SVD with ``spectrum_exact``, else from a seeded randomized SVD (≈ 20× cheaper on CPU); the worst
    relative triplet error is kept as ``ref_svd_rel_error`` (0 when exact)."""
    from ..witnesses import spectrum
    runs = [("affective", s, study.affect("all", s)) for s in study.seeds] + \
           [("control", s, study.control(s)) for s in study.aux_seeds]
    per_kind: dict[str, list[WitnessTable]] = {}
    meta: dict[str, Any] = {}
    errors: list[float] = []
    for kind, seed, adapter in study.bar(runs, "spectrum"):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="the adapter also updates")
            table = spectrum(study.model, adapter, modules="all", layers=layers,
                             **({} if study.cfg.spectrum_exact else {"exact_max": 0}))
        table.save(study.run / "witnesses" / f"spectrum-{kind}-s{seed}", stem="spectrum")
        per_kind.setdefault(kind, []).append(table)
        meta = {k: table.meta[k] for k in ("k", "eps", "k_ref")}
        errors.append(max((float(r["ref_svd_rel_error"]) for r in table.rows), default=0.0))
    out: dict[str, Any] = {"layers": layers, "seeds": {k: [s for kk, s, _ in runs if kk == k] for k in per_kind},
                           **meta, "exact": study.cfg.spectrum_exact, "ref_svd_rel_error": max(errors, default=0.0),
                           "modules": {}}
    for kind, tables in per_kind.items():
        sums: dict[str, dict[str, list[float]]] = {}
        for table in tables:
            for r in table.rows:
                for col in SPECTRUM_COLUMNS:
                    sums.setdefault(r["module"], {}).setdefault(col, []).append(float(r[col]))
        out["modules"][kind] = {m: {c: sum(v) / len(v) for c, v in cols.items()} for m, cols in sums.items()}
        out.setdefault("intruders_per_site", {})[kind] = (
            sum(float(r["intruders"]) for t in tables for r in t.rows) / max(1, sum(len(t) for t in tables)))
    return out


def run_witnesses(study: Study, results: dict) -> dict:
    """The step: per-seed witness tables and agreements, the pooled verdict's numbers, the spectrum."""
    cfg = study.cfg
    layers = sorted({s.layer for s in select(study.model, "all", cfg.witness_layers)})
    seeds = study.seeds[:cfg.witness_seeds]
    batches = witness_batches(study)
    per_seed = {str(s): _one_seed(study, s, layers, batches) for s in study.bar(seeds, "witnesses")}
    pooled = pooled_scores(per_seed)
    agr = agreement(pooled)
    notes = [f"witnessed: the all-module affective adapters at seeds {seeds}; layers {layers}; "
             f"{int(batches[0]['input_ids'].shape[0])} evaluation prompts; attribution with {cfg.attribute_steps} "
             f"midpoint steps (completeness error per seed: "
             + ", ".join(f"s{s} {d['attribution']['error']:.1%}" for s, d in per_seed.items()) + ")",
             "scores are normalised per seed (÷ Σ|score|) and averaged over seeds before ranking"]
    notes += [n for d in per_seed.values() for n in d["notes"]] + agr.notes
    return {"witnesses": list(WITNESSES), "size_metric": SIZE_METRIC, "layers": layers, "seeds": seeds,
            "examples": int(batches[0]["input_ids"].shape[0]), "attribute_steps": cfg.attribute_steps,
            "per_seed": per_seed, "pooled": {"scores": pooled, "agreement": agr.to_dict()},
            "spread": _spread(per_seed), "verdict": agr.verdict, "sentence": agr.sentence("the affective update"),
            "spectrum": spectrum_summary(study, layers), "notes": notes}


def witnesses_agree(section: Mapping | None, health: Mapping | None) -> Verdict:
    """The verdict on the witnesses' agreement (rule in :data:`.claims.RULES`)."""
    if not section or not (section.get("pooled") or {}).get("agreement"):
        return Verdict(CLAIM, INCONCLUSIVE, "needs the `attribute` step")
    agr = Agreement.from_dict(section["pooled"]["agreement"])
    spread = section.get("spread") or {}
    parts = []
    for p in agr.pairs:
        s = spread.get(f"{p.a}~{p.b}") or {}
        seeds = (f"; per seed {s['mean']:+.2f} [{s['min']:+.2f}, {s['max']:+.2f}]"
                 if s.get("mean") is not None else "")
        parts.append(f"{p.a}~{p.b} τ {p.tau:+.2f} (p {p.p:.3g}, Holm {p.p_holm:.3g}{seeds})"
                     if math.isfinite(p.tau) else f"{p.a}~{p.b} τ undefined")
    numbers = {"agreement": agr.to_dict(), "spread": spread}
    text = "; ".join(parts) + f" — agreement of the rankings: {agr.verdict} ({agr.reason})"
    why = precheck({}, health, ["all"], min_seeds=1)
    if why:
        return Verdict(CLAIM, INCONCLUSIVE, f"the three witnesses are inconclusive on where the affective update "
                                            f"acts: {why}. {text}", numbers)
    label = {AGREE: SUPPORTED, DISAGREE: NOT_SUPPORTED}.get(agr.verdict, INCONCLUSIVE)
    return Verdict(CLAIM, label, f"{agr.sentence('the affective update')}: {text}", numbers)


def figure(study: Study, section: Mapping, path: Path) -> Path | None:
    """Three heatmaps of the first witnessed seed side by side, and the pooled agreement matrix."""
    from .plots import witness_panels
    first = next(iter((section.get("per_seed") or {}).values()), None)
    if not first or not Path(first["folder"]).exists():
        return None
    folder = Path(first["folder"])
    tables = {w: WitnessTable.load(folder / f"{w}.json") for w in WITNESSES}
    columns = {w: c for w, (c, _) in COLUMNS.items()}
    for w, (col, absolute) in COLUMNS.items():
        if absolute:  # drawn as ranked: |value|
            t = tables[w]
            tables[w] = WitnessTable(t.kind, [{**r, f"|{col}|": abs(r[col])} for r in t.rows], (f"|{col}|",),
                                     t.meta, t.notes)
            columns[w] = f"|{col}|"
    seed = next(iter(section["per_seed"]))
    return witness_panels(tables, columns,
                          Agreement.from_dict(section["pooled"]["agreement"]), path,
                          f"Where the affective update acts, three ways (seed {seed}); agreement over seeds")
