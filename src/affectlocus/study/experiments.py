"""The study's steps. Each takes the :class:`~.pipeline.Study` and earlier results, returns JSON data."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .. import diff as diff_module
from ..diff.table import HEADLINE
from ..interventions import graft, interpolate as interp, noise, random_revert, zero
from ..sites import CANONICAL, select
from ..sources import OriginalSource
from . import plots, stats
from .claims import SHARE_METRICS
from .config import set_key as key
from .health import health_table

if TYPE_CHECKING:
    from .pipeline import Study


def without(module: str) -> list[str]:
    """Every canonical module but ``module``."""
    return [m for m in CANONICAL if m != module]


def _graft(study: Study, adapter: Path, modules, name: str) -> dict:
    if modules == "none":
        return study.score("base")
    return study.score(name, graft(adapter, modules=modules))


# ---- 1. tune ------------------------------------------------------------------------------------
def tune(study: Study, results: dict) -> dict:
    """Train (or reuse) every adapter the study uses; record their sizes, times and losses."""
    def summary(adapter: Path) -> dict:
        info = study.info(adapter)
        return {k: info[k] for k in ("trainable", "seconds", "losses", "selection")}
    out = {f"{mods}-s{seed}": summary(study.affect(mods, seed)) for mods, seed in study.affective_runs()}
    out.update({f"control-s{seed}": summary(study.control(seed)) for seed in study.aux_seeds})
    return out


# ---- 2. health ----------------------------------------------------------------------------------
def health(study: Study, results: dict) -> dict:
    """The health table (:func:`.health.health_table`)."""
    return health_table(study)


# ---- 3. locate ----------------------------------------------------------------------------------
def locate(study: Study, results: dict) -> dict:
    """Diff tables of every affective all-module seed and of the control; per-layer values for claim 1."""
    runs = [(f"affective-s{s}", "affective", study.affect("all", s)) for s in study.seeds] + \
           [(f"control-s{s}", "control", study.control(s)) for s in study.aux_seeds]
    per_layer: dict[str, dict[str, list]] = {}
    summaries: dict[str, dict] = {}
    tables: dict[str, str] = {}
    frames: dict[str, list] = {}
    for run, kind, adapter in runs:
        table = diff_module.diff(study.model, adapter, modules="all", metrics="all", progress=study.progress)
        folder = study.run / "locate" / run
        table.save(folder)
        tables.setdefault(kind, str(folder))  # the first seed's table is drawn in the report
        frames.setdefault(kind, []).append(table.to_frame())
    for kind, fs in frames.items():
        import pandas as pd
        frame = pd.concat(fs).groupby(["layer", "module", "metric"], as_index=False).value.mean()
        summaries[kind] = {m: {metric: float(frame[(frame.module == m) & (frame.metric == metric)].value.mean())
                               for metric in HEADLINE} for m in CANONICAL}
        per_layer[kind] = {metric: [{m: float(v) for m, v in zip(g.module, g.value)}
                                    for _, g in frame[frame.metric == metric].groupby("layer")]
                           for metric in SHARE_METRICS}
    return {"summaries": summaries, "per_layer": per_layer, "tables": tables,
            "runs": {kind: len(fs) for kind, fs in frames.items()}}


# ---- 3b. where, three ways ----------------------------------------------------------------------
def attribute(study: Study, results: dict) -> dict:
    """ΔW size, mediation and attribution rank the modules; their agreement; the spectrum (:mod:`.witnesses`)."""
    from .witnesses import run_witnesses
    return run_witnesses(study, results)


# ---- 4. inherit ---------------------------------------------------------------------------------
def inherit(study: Study, results: dict) -> dict:
    """Graft module sets of the affective adapter (and of the control's) into the base: sufficiency."""
    rows = {}
    for name in study.bar(study.cfg.inherit_sets, "inherit"):
        if name == "none":
            rows[name] = study.score("base")
            continue
        rows[name] = study.over_seeds(name, lambda s, name=name: _graft(
            study, study.affect("all", s), name, f"graft[{key(name)}] affect-all s{s}"))
    ctrl = {m: study.over_seeds(f"control {m}", lambda s, m=m: _graft(
        study, study.control(s), m, f"graft[{m}] control s{s}"), study.aux_seeds) for m in ("gate", "all")}
    return {"rows": rows, "control": ctrl,
            "notes": [f"`control gate` / `control all` graft the non-affective control adapter's modules "
                      f"(seeds {study.aux_seeds}): an affective gain must not come from them"]}


# ---- 5. targeted tuning -------------------------------------------------------------------------
def targeted(study: Study, results: dict) -> dict:
    """LoRA on one module set at a time (same rank, steps, data): the base-subtracted gains of claims 3-4."""
    rows, params = {}, {}
    for mods in study.bar(["gate", "all"] + study.single_sets(), "targeted tuning"):
        seeds = study.seeds if mods in ("gate", "all") else study.aux_seeds

        def one(seed, mods=mods):
            adapter = study.affect(mods, seed)
            params[mods] = study.info(adapter)["trainable"]
            return _graft(study, adapter, "all", f"{mods}-LoRA s{seed}")
        rows[mods] = study.over_seeds(mods, one, seeds)
    notes = [f"gate and all: seeds {study.seeds}; other module sets: seeds {study.aux_seeds}"]
    return {"rows": rows, "params": params, "base": study.score("base"), "notes": notes,
            "extra": {m: {"trainable params": f"{params[m]:,}"} for m in rows}}


# ---- 6. ablate ----------------------------------------------------------------------------------
def ablate(study: Study, results: dict) -> dict:
    """Revert / zero / noise each module's update in the affective model; random and swap controls."""
    cfg = study.cfg
    base = OriginalSource(study.model)
    sites = select(study.model, "all")
    fraction = sum(s.numel for s in sites if s.module == "gate") / sum(s.numel for s in sites)
    tuned = study.over_seeds("tuned (all modules)", lambda s: _graft(
        study, study.affect("all", s), "all", f"graft[all] affect-all s{s}"))
    out = {"tuned": tuned, "reverted": {}, "zeroed": {}, "noised": {}, "control_fraction": fraction}
    for kind in cfg.ablate_kinds:
        for m in study.bar(cfg.ablate_modules, f"ablate {kind}"):
            if kind == "revert":
                out["reverted"][m] = study.over_seeds(f"revert {m}", lambda s, m=m: _graft(
                    study, study.affect("all", s), without(m), f"graft[{key(without(m))}] affect-all s{s}"))
            elif kind == "zero":
                out["zeroed"][m] = study.over_seeds(f"zero {m}", lambda s, m=m: study.score(
                    f"zero[{m}] s{s}", graft(study.affect("all", s)), zero(modules=m)))
            else:
                out["noised"][m] = study.over_seeds(f"noise {m}", lambda s, m=m: study.score(
                    f"noise[{m}] s{s}", graft(study.affect("all", s)), noise(match=base, seed=s, modules=m)))
    if cfg.random_controls:
        out["random"] = study.over_seeds("random revert", lambda s: study.score(
            f"random-revert[{fraction:.4f}] s{s}", graft(study.affect("all", s)),
            random_revert(base, fraction, seed=1000 + s)))
        extra = [study.score(f"random-revert[{fraction:.4f}] s{s} r{i}", graft(study.affect("all", s)),
                             random_revert(base, fraction, seed=1000 + 97 * i + s))
                 for i in range(1, cfg.random_controls) for s in study.seeds]
        if extra:
            out["random_more"] = extra
    if cfg.swap_control:
        out["swap"] = study.over_seeds("gate ← control's gate", lambda s: study.score(
            f"swap[gate←control] s{s}", graft(study.affect("all", s), modules=without("gate")),
            graft(study.control(study.aux_seeds[0]), modules="gate")))
    rows = {"tuned (all modules)": tuned}
    rows.update({f"{kind} {m}": r for kind, d in (("revert", out["reverted"]), ("zero", out["zeroed"]),
                                                 ("noise", out["noised"])) for m, r in d.items()})
    if "random" in out:
        rows["random revert"] = out["random"]
    if "swap" in out:
        rows["gate ← control's gate"] = out["swap"]
    out["rows"] = rows
    out["notes"] = [f"random controls revert a random {100 * fraction:.1f}% of every projection's entries — "
                    f"as many parameters as gate_proj holds; one per seed",
                    "`gate ← control's gate`: the affective update everywhere except gate, whose update is the "
                    "non-affective control's (same size of change, no affect)"]
    if {"gate", "up", "down"} <= set(out["zeroed"]):
        same = len({round(out["zeroed"][m]["mean"], 12) for m in ("gate", "up", "down")}) == 1
        out["notes"].append(f"zeroing gate, up or down gives {'identical' if same else 'different'} scores "
                            f"(SwiGLU: each removes the whole MLP block)")
    return out


# ---- 7. interpolate -----------------------------------------------------------------------------
def interpolate(study: Study, results: dict) -> dict:
    """Dose-response: W_base + α·ΔW for gate and the next strongest module (first seed only)."""
    seed = study.seeds[0]
    adapter = study.affect("all", seed)
    ranking = (results.get("locate") or {}).get("summaries", {}).get("affective")
    runner_up = (sorted((m for m in ranking if m != "gate"), key=lambda m: -ranking[m]["rms"])[0]
                 if ranking else "up")
    curves, rows = {}, {}
    for m in ("gate", runner_up):
        curves[m] = []
        for a in study.bar(study.cfg.alphas, f"interpolate {m}"):
            row = (study.score("base") if a == 0 else _graft(study, adapter, m, f"graft[{m}] affect-all s{seed}")
                   if a == 1 else study.score(f"interp[{m}]@{a:g} s{seed}", interp(adapter, a, modules=m)))
            curves[m].append((a, row))
            rows[f"{m} α={a:g}"] = row
    return {"curves": curves, "rows": rows, "runner_up": runner_up,
            "notes": [f"seed {seed} only (exploratory; no claim rests on it)"]}


# ---- 8. cost–performance ------------------------------------------------------------------------
def cost(study: Study, results: dict) -> dict:
    """Trainable parameters vs base-subtracted gain (paired CI) for every targeted configuration."""
    tgt = results.get("targeted")
    if not tgt:
        return {}
    base = tgt["base"]
    gains = {m: stats.paired_diff(r, base) for m, r in tgt["rows"].items()}
    points = {m: (tgt["params"][m], {"mean": g["diff"], "ci": g["ci"]}) for m, g in gains.items()}
    return {"points": points, "gains": gains,
            "notes": ["gain = configuration − base (paired bootstrap over seeds × examples); the headline "
                      "share (GET / all-module gain) is a verdict above"]}


def neurons(study: Study, results: dict) -> dict:
    """Neuron-level probes of gate_proj (:func:`.neurons.run_neurons`)."""
    from .neurons import run_neurons
    return run_neurons(study, results)


# ---- figures ------------------------------------------------------------------------------------
def figures(study: Study, results: dict) -> dict[str, str]:
    """Draw every figure of the report; return ``{key: path relative to the report folder}``."""
    fig_dir = study.run / "report" / "figures"
    out: dict[str, str] = {}

    def rel(path: Path) -> str:
        return str(Path(path).relative_to(study.run / "report"))
    loc = results.get("locate") or {}
    tables = {run: diff_module.DiffTable.load(folder) for run, folder in (loc.get("tables") or {}).items()}
    for run, table in tables.items():
        for metric in ("rms", "relative"):
            path = fig_dir / f"locate_heatmap_{run}_{metric}.png"
            table.heatmap(metric, path)
            out[f"locate-heatmap-{run}-{metric}"] = rel(path)
        table.histograms(fig_dir / f"locate_histograms_{run}.png")
        out[f"locate-histograms-{run}"] = rel(fig_dir / f"locate_histograms_{run}.png")
    if len(tables) > 1:
        for metric in ("l2", "rms"):
            path = fig_dir / f"locate_compare_{metric}.png"
            diff_module.compare_diffs(tables, metric, path=path)
            out[f"locate-compare-{metric}"] = rel(path)
    if results.get("attribute"):
        from .witnesses import figure
        drawn = figure(study, results["attribute"], fig_dir / "attribute_witnesses.png")
        if drawn is not None:
            out["attribute-witnesses"] = rel(drawn)
    base = (results.get("inherit") or {}).get("rows", {}).get("none")
    ref = {"base": base["mean"]} if base else None
    for step, title in (("inherit", "Grafting affective modules into the base (no training)"),
                        ("targeted", "LoRA on one module set (same rank, steps, data)"),
                        ("ablate", "Ablating modules in the affective model")):
        rows = (results.get(step) or {}).get("rows")
        if rows:
            out[f"{step}-bars"] = rel(plots.score_bars(rows, fig_dir / f"{step}_bars.png", title, reference=ref))
    if results.get("interpolate"):
        out["interpolate-curves"] = rel(plots.dose_response(results["interpolate"]["curves"],
                                                            fig_dir / "interpolate_curves.png"))
    if (results.get("cost") or {}).get("points"):
        out["cost-scatter"] = rel(plots.cost_performance(results["cost"]["points"], fig_dir / "cost_scatter.png"))
    nr = results.get("neurons") or {}
    if nr.get("curves"):
        out["neurons-curves"] = rel(plots.neuron_curves(nr["curves"], fig_dir / "neurons_curves.png"))
    if nr.get("probe"):
        out["neurons-probe"] = rel(plots.probe_accuracy(nr["probe"], nr["probe_chance"],
                                                        fig_dir / "neurons_probe.png"))
    return out


# ---- 9. MER-UniBench (optional) -----------------------------------------------------------------
def unibench(study: Study, results: dict) -> dict:
    """The eight-task benchmark from the user's subtitles: base, grafts of the affective adapter, GET."""
    from ..evaluation.subtitles import run_unibench
    from ..registry import intervene
    cfg, seed = study.cfg, study.cfg.seeds[0]
    tuned = study.affect("all", seed)
    runs = [("none" if s == "none" else key(s), s, tuned) for s in cfg.unibench_sets]
    runs.append(("GET adapter", "all", study.affect("gate", seed)))
    rows, details = {}, {}
    for name, mods, adapter in study.bar(runs, "MER-UniBench"):
        with intervene(study.model, *([] if mods == "none" else [graft(adapter, modules=mods)])):
            scores = run_unibench(study.model, study.tok, cfg.unibench, cfg.unibench_datasets or None,
                                  cfg.unibench_mode, seed=seed, cache_dir=study.run / "unibench",
                                  max_examples=cfg.unibench_max, batch_size=cfg.eval_batch_size,
                                  n_boot=cfg.bootstrap, progress=False)
        rows[name] = {"mean": scores.mean, "ci": list(scores.mean_ci) if scores.mean_ci else None,
                      "per_task": {t: {"mean": v.score} for t, v in scores.tasks.items()}}
        details[name] = {t: {"metric": v.metric, "n": v.n, "n_missing": v.details.get("n_missing", 0)}
                         for t, v in scores.tasks.items()}
    first = next(iter(details.values()))
    notes = [f"mode `{cfg.unibench_mode}`, seed {seed}; rows graft the affective adapter's modules into the "
             f"base model (`none` = base), `GET adapter` = the gate-only LoRA",
             "; ".join(f"{t}: {d['metric']}, n = {d['n']}" + (f" ({d['n_missing']} without subtitle)"
                                                               if d["n_missing"] else "")
                       for t, d in first.items())]
    return {"rows": rows, "details": details, "notes": notes}
