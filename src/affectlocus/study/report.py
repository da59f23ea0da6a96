"""``report/index.md`` and ``report/index.html``: tables, figures, configuration and verdicts."""
from __future__ import annotations

import html
import json
import os
import platform
import re
from pathlib import Path
from typing import Mapping

from .._io import atomic_write_text as atomic_write
from .claims import INCONCLUSIVE, WITNESSES_CLAIM, Verdict
from .results import RowLike, ScoreRow, fmt_ci
from .stats import constant_tasks


def collapse_note(rows: Mapping[str, Mapping]) -> str | None:
    """One sentence naming the configurations that gave one label to every example of a task."""
    bad = {name: constant_tasks(row) for name, row in rows.items() if row and row.get("per_task")}
    bad = {k: v for k, v in bad.items() if v}
    if not bad:
        return None
    return ("constant predictor (one label for every example; balanced accuracy = chance): "
            + "; ".join(f"`{k}` on {', '.join(v)}" for k, v in bad.items()))


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(float(x), fmt)


def health_lines(health: Mapping) -> list[str]:
    """The health table: base and every fine-tune, seed by seed."""
    base = health.get("base") or {}
    out = ["| configuration | seed | score [95% CI] | chance | tuned − base [paired 95% CI] | loss first → final "
           "| collapsed | failed | beats base |", "|" + "---|" * 9,
           f"| base | — | {_num(base.get('mean'))} {fmt_ci(base.get('ci'))} | {_num(base.get('chance'))} | — | — | "
           f"{'yes' if base.get('constant_tasks') else 'no'} | — | — |"]
    for name, entries in (health.get("tuned") or {}).items():
        for e in entries:
            out.append(f"| `{name}` | {e['seed']} | {_num(e['mean'])} {fmt_ci(e.get('ci'))} | {_num(e.get('chance'))} | "
                       f"{_num(e.get('diff'), '+.3f')} {fmt_ci(e.get('diff_ci'), '+.3f')} | "
                       f"{_num(e.get('first_loss'))} → {_num(e.get('final_loss'))} | "
                       f"{'yes' if e['collapsed'] else 'no'} | {'**yes**' if e['failed'] else 'no'} | "
                       f"{'yes' if e['beats_base'] else '**no**'} |")
    if health.get("failures"):
        out += ["", f"- **training failures**: {', '.join(health['failures'])} — every claim using them is {INCONCLUSIVE}"]
    if health.get("not_beating"):
        out += ["", f"- **not beating the base**: {', '.join(health['not_beating'])}"]
    if health.get("rules"):
        out += ["", f"- {health['rules']}"]
    return out


def _fmt(row: ScoreRow) -> str:
    return "—" if row.mean is None else f"{float(row.mean):.3f} {fmt_ci(row.interval)}"


def _task_mean(row: ScoreRow, task: str) -> str:
    score = (row.per_task or {}).get(task)
    return "—" if score is None or score.mean is None else f"{float(score.mean):.3f}"


def score_table(rows: Mapping[str, RowLike], first: str = "configuration",
                extra: Mapping[str, Mapping] | None = None) -> list[str]:
    """Markdown table: name | mean [CI] | per-task means (| extra columns)."""
    rows = {name: ScoreRow.coerce(row) for name, row in rows.items()}
    tasks = sorted({t for r in rows.values() for t in (r.per_task or {})})
    extra = extra or {}
    extra_cols = sorted({c for e in extra.values() for c in e})
    head = [first, "mean score [95% CI]", *tasks, *extra_cols]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in rows.items():
        cells = [f"`{name}`", _fmt(row), *(_task_mean(row, t) for t in tasks)]
        cells += [str(extra.get(name, {}).get(c, "—")) for c in extra_cols]
        out.append("| " + " | ".join(cells) + " |")
    return out


def spectrum_lines(spec: Mapping) -> list[str]:
    """The locate section's spectrum table: effective rank, stable rank and intruders, affective vs control."""
    kinds = list((spec.get("modules") or {}))
    if not kinds:
        return []
    head = [f"{col} ({kind})" for col in ("effective rank", "stable rank", "intruders") for kind in kinds]
    seeds = ", ".join(f"{k} seeds {v}" for k, v in (spec.get("seeds") or {}).items())
    out = [f"Spectrum of ΔW (LoRA, exact from the factors; layers {spec.get('layers')}, mean over layers and "
           f"seeds — {seeds}): effective rank exp(H(σ/Σσ)), stable rank ‖ΔW‖²_F/σ₁², and intruder "
           f"dimensions — of the tuned weight's top {spec.get('k')} singular vectors, those with |cos| < "
           f"{spec.get('eps')} to every one of the base weight's top {spec.get('k_ref') or 8 * (spec.get('k') or 8)} "
           f"singular vectors ("
           + ("exact SVDs" if not spec.get("ref_svd_rel_error") else
              f"randomized SVD, worst relative triplet error {_num(spec.get('ref_svd_rel_error'), '.1e')}") + ").", "",
           "| module | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
    mods = list(spec["modules"][kinds[0]])
    for m in mods:
        cells = [_num(spec["modules"].get(kind, {}).get(m, {}).get(col), ".2f")
                 for col in ("effective_rank", "stable_rank", "intruders") for kind in kinds]
        out.append(f"| {m} | " + " | ".join(cells) + " |")
    per_site = spec.get("intruders_per_site") or {}
    if per_site:
        out += ["", "- intruder dimensions per site, affective vs control fine-tunes: "
                + ", ".join(f"{k} {v:.2f}" for k, v in per_site.items())]
    return out + [""]


def witness_lines(section: Mapping, verdicts: list[Verdict]) -> list[str]:
    """The *Where, three ways* section: the verdict line, τ per pair, and the modules' pooled scores."""
    verdict = next((v for v in verdicts if v.claim == WITNESSES_CLAIM), None)
    out = [f"**{verdict.verdict}** — {verdict.evidence}" if verdict else f"**{section.get('sentence')}**", "",
           "| witnesses | τ (pooled) | p (one-sided, permutation) | Holm p | τ per seed: mean [min, max] |",
           "|---|---|---|---|---|"]
    spread = section.get("spread") or {}
    for p in (section.get("pooled") or {}).get("agreement", {}).get("pairs", []):
        s = spread.get(f"{p['a']}~{p['b']}") or {}
        out.append(f"| {p['a']} ~ {p['b']} | {_num(p['tau'], '+.2f')} | {_num(p['p'], '.3g')} | "
                   f"{_num(p['p_holm'], '.3g')} | {_num(s.get('mean'), '+.2f')} [{_num(s.get('min'), '+.2f')}, "
                   f"{_num(s.get('max'), '+.2f')}] |")
    pooled = (section.get("pooled") or {}).get("scores") or {}
    if pooled:
        names = list(pooled)
        out += ["", "Module scores (share of Σ|score| per seed, mean over seeds; rank in brackets):", "",
                "| module | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        ranks = {w: {m: i + 1 for i, m in enumerate(sorted(v, key=lambda m: -v[m]))} for w, v in pooled.items()}
        for m in pooled[names[0]]:
            out.append(f"| {m} | " + " | ".join(f"{_num(pooled[w].get(m))} ({ranks[w].get(m, '—')})"
                                                 for w in names) + " |")
    return out


def _figure(lines: list[str], figures: Mapping[str, str], key: str, caption: str) -> None:
    if key in figures:
        lines += ["", f"![{caption}]({figures[key]})", ""]


def render_markdown(results: Mapping) -> str:
    """The whole report as Markdown (figures referenced relative to the report folder)."""
    cfg, figs = results.get("config", {}), results.get("figures", {})
    lines = [f"# affectlocus study — {cfg.get('model', '?')}", "",
             "Where does affective fine-tuning live in this model, and is `gate_proj` sufficient, "
             "efficient and necessary? Every number below was measured in this run; scores are means "
             "over the evaluation tasks with bootstrap 95% confidence intervals.", ""]
    if results.get("health"):
        h = results["health"]
        lines += ["## Health", "", f"Does each fine-tune work? Main seeds {h.get('seeds')} (all-module and GET); "
                  f"auxiliary runs (control, other single modules) at seeds {h.get('aux_seeds')}.", ""]
        lines += health_lines(h) + [""]
    lines += ["## Verdicts", "", "| claim | verdict | evidence |", "|---|---|---|"]
    for v in map(Verdict.from_dict, results.get("verdicts", [])):
        lines.append(f"| {v.claim} | **{v.verdict}** | {v.evidence} |")
    if results.get("rules"):
        lines += ["", "### Decision rules", ""] + [f"- {r}" for r in results["rules"]]
        lines.append(f"- This run: n = {cfg.get('n_eval')} test examples per task ({', '.join(cfg.get('eval_tasks', []))}), "
                     f"{cfg.get('bootstrap')} bootstrap draws; seeds {cfg.get('seeds')} for the all-module and GET "
                     f"adapters, the first {cfg.get('aux_seeds')} for the control and other single modules.")
    loc = results.get("locate") or {}
    lines += ["", "## Locate", "", "Per-module mean over layers of the weight change (affective and "
              "non-affective control fine-tunes). Raw L2 favours big matrices; `relative` and `rms` "
              "are size-normalised.", ""]
    for run, summary in (loc.get("summaries") or {}).items():
        lines += [f"**{run}**", "", "| module | l2 | relative | rms |", "|---|---|---|---|"]
        for mod, vals in summary.items():
            lines.append(f"| {mod} | {vals['l2']:.4g} | {vals['relative']:.4g} | {vals['rms']:.4g} |")
        lines.append("")
    lines += spectrum_lines((results.get("attribute") or {}).get("spectrum") or {})
    for key in sorted(k for k in figs if k.startswith("locate")):
        _figure(lines, figs, key, key)
    wit = results.get("attribute") or {}
    lines += ["", "## Where, three ways", "", "The affective all-module update, located by three independent "
              "witnesses — the size of ΔW, activation mediation (how much of the change flows through each "
              "module's output) and weight-path attribution (integrated gradients of the true label's loss "
              "along W + α·ΔW) — and whether their module rankings agree (Kendall's τ).", ""]
    if wit:
        lines += witness_lines(wit, [Verdict.from_dict(v) for v in results.get("verdicts", [])])
        for note in wit.get("notes", []):
            lines += ["", f"- {note}"]
        _figure(lines, figs, "attribute-witnesses", "attribute-witnesses")
    else:
        lines.append("_skipped in this run_")
    sections = [("Inherit", "inherit", "Grafting modules of the affective adapter into the base model "
                 "(no training): sufficiency, the study's Table 1."),
                ("Targeted tuning", "targeted", "LoRA on one module set at a time, same rank, steps and data."),
                ("Ablate", "ablate", "In the affective model, each module's update reverted, zeroed or replaced "
                 "by norm-matched noise; random parameter-matched reverts as controls. Note: in a SwiGLU "
                 "MLP, zeroing any one of gate/up/down removes the whole MLP block, so zero-ablation cannot "
                 "separate them; revert and noise can."),
                ("Interpolate", "interpolate", "α-sweep W_base + α·ΔW for gate_proj and the next strongest "
                 "module (dose–response)."),
                ("Cost–performance", "cost", "Trainable parameters vs mean score for every tuned configuration."),
                ("Neurons", "neurons", "gate_proj channels ranked by ΔW row norm and by activation difference; "
                 "top-k vs random-k ablation; a linear probe on gate activations."),
                ("MER-UniBench", "unibench", "The benchmark's tasks run on your subtitles and scored as the "
                 "benchmark does (hit rate on the emotion wheels for emotion tasks, weighted F1 for "
                 "sentiment); runs only when the configuration sets `unibench`.")]
    for title, key, blurb in sections:
        lines += ["", f"## {title}", "", blurb, ""]
        section = results.get(key) or {}
        if section.get("rows"):
            rows = {**section["rows"], **{f"control {m}": r for m, r in (section.get("control") or {}).items()}}
            lines += score_table(rows, extra=section.get("extra"))
            note = collapse_note(section["rows"])
            if note:
                lines += ["", f"- **warning**: {note}"]
        for note in section.get("notes", []):
            lines += ["", f"- {note}"]
        for fig in sorted(k for k in figs if k.startswith(key)):
            _figure(lines, figs, fig, fig)
        if not section:
            lines.append("_skipped in this run_")
    lines += ["", "## Configuration", "", "```json", json.dumps(cfg, indent=2), "```", "",
              "## Versions and timings", ""]
    for k, v in {**versions(), **{f"wall time: {s}": f"{t:.1f} s" for s, t in
                                   (results.get("timings") or {}).items()}}.items():
        lines.append(f"- {k}: {v}")
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str]:
    """Versions of the package, Python and the libraries a run depends on, and the machine."""
    import peft
    import torch
    import transformers

    from .._version import __version__
    return {"affectlocus": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "peft": peft.__version__,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


def markdown_to_html(md: str, title: str) -> str:
    """A small, dependency-free renderer for the report's own Markdown subset."""
    out, in_table, in_code = [], False, False
    for line in md.splitlines():
        if line.startswith("```"):
            out.append("</pre>" if in_code else "<pre>")
            in_code = not in_code
            continue
        if in_code:
            out.append(html.escape(line))
            continue
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if all(set(c) <= set("-:") for c in cells):
                continue
            tag = "th" if not in_table else "td"
            if not in_table:
                out.append("<table>")
                in_table = True
            out.append("<tr>" + "".join(f"<{tag}>{_inline(c)}</{tag}>" for c in cells) + "</tr>")
            continue
        if in_table:
            out.append("</table>")
            in_table = False
        if line.startswith("!["):
            alt, src = line[2:].split("](", 1)
            out.append(f'<figure><img src="{html.escape(src[:-1])}" alt="{html.escape(alt)}">'
                       f"<figcaption>{html.escape(alt)}</figcaption></figure>")
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.startswith("- "):
            out.append(f"<li>{_inline(line[2:])}</li>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    if in_table:
        out.append("</table>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "font-size:90%}img{max-width:100%}figure{margin:1em 0}code{background:#f4f4f4}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(out) + "\n</body></html>\n")


def write_report(results: Mapping, run_dir: str | Path) -> Path:
    """Write ``report/index.md`` and ``report/index.html`` in the run folder; return the md path."""
    report = Path(run_dir) / "report"
    md = render_markdown(results)
    atomic_write(report / "index.html", markdown_to_html(md, "affectlocus study"))
    return atomic_write(report / "index.md", md)
