"""The study's steps. Each takes the :class:`~.pipeline.Study` and earlier results, returns JSON data."""
from __future__ import annotations

from pathlib import Path

from .. import diff as diff_module
from ..interventions import graft, interpolate as interp, noise, random_revert, zero
from ..sites import CANONICAL, parse_modules, select
from ..sources import OriginalSource
from . import plots

HEADLINE = ("l2", "relative", "rms")


def key(modules) -> str:
    """Canonical name of a module set ("all", "attn", or e.g. "q+gate")."""
    mods = parse_modules(modules)
    return "all" if mods == CANONICAL else "attn" if mods == ("q", "k", "v", "o") else "+".join(mods)


def without(module: str) -> list[str]:
    return [m for m in CANONICAL if m != module]


def _graft_score(study, adapter: Path, modules, seed: int, tag: str = "affect-all") -> dict:
    if modules == "none":
        return study.score("base")
    return study.score(f"graft[{key(modules)}]/{tag}-s{seed}", graft(adapter, modules=modules))


# ---- 1. tune ------------------------------------------------------------------------------------
def tune(study, results) -> dict:
    out = {}
    for seed in study.cfg.seeds:
        for name, mods, control in (("affect-all", "all", False), ("affect-gate", "gate", False),
                                    ("control-all", "all", True)):
            info = study.info(study.adapter(name, mods, seed, control))
            out[f"{name}-s{seed}"] = {k: info[k] for k in ("trainable", "seconds", "losses", "selection")}
    return out


# ---- 2. locate ----------------------------------------------------------------------------------
def locate(study, results) -> dict:
    seed = study.cfg.seeds[0]
    summaries, tables = {}, {}
    for run, name in (("affective", "affect-all"), ("control", "control-all")):
        adapter = study.adapter(name, "all", seed, control=name.startswith("control"))
        table = diff_module.diff(study.model, adapter, modules="all", metrics="all",
                                 progress=study.progress)
        folder = study.run / "locate" / run
        table.save(folder)
        frame = table.to_frame()
        summaries[run] = {m: {metric: float(frame[(frame.module == m) & (frame.metric == metric)].value.mean())
                              for metric in HEADLINE} for m in CANONICAL}
        tables[run] = str(folder)
    return {"summaries": summaries, "tables": tables}


# ---- 3. inherit ---------------------------------------------------------------------------------
def inherit(study, results) -> dict:
    rows = {}
    for name in study.bar(study.cfg.inherit_sets, "inherit"):
        rows[name] = study.over_seeds(name, lambda s, name=name: _graft_score(
            study, study.adapter("affect-all", "all", s), name, s))
    return {"rows": rows}


# ---- 4. targeted tuning -------------------------------------------------------------------------
def targeted(study, results) -> dict:
    sets = ["gate", "all"] + [key(m) for m in study.cfg.targeted if key(m) not in ("gate", "all")]
    rows, params = {}, {}
    for mods in study.bar(sets, "targeted tuning"):
        name = {"gate": "affect-gate", "all": "affect-all"}.get(mods, f"affect-{mods}")

        def one(seed, mods=mods, name=name):
            adapter = study.adapter(name, mods, seed)
            params[mods] = study.info(adapter)["trainable"]
            return _graft_score(study, adapter, "all", seed, tag=name)
        rows[mods] = study.over_seeds(mods, one)
    return {"rows": rows, "params": params}


# ---- 5. ablate ----------------------------------------------------------------------------------
def ablate(study, results) -> dict:
    cfg, seed = study.cfg, study.cfg.seeds[0]
    adapter = study.adapter("affect-all", "all", seed)
    tuned_row = _graft_score(study, adapter, "all", seed)
    base = OriginalSource(study.model)
    out = {"tuned": tuned_row, "reverted": {}, "zeroed": {}, "noised": {}, "controls": []}
    jobs = [(kind, m) for kind in cfg.ablate_kinds for m in CANONICAL]
    for kind, m in study.bar(jobs, "ablate"):
        if kind == "revert":
            out["reverted"][m] = _graft_score(study, adapter, without(m), seed)
        elif kind == "zero":
            out["zeroed"][m] = study.score(f"ablate-zero[{m}]/s{seed}", graft(adapter), zero(modules=m))
        else:
            out["noised"][m] = study.score(f"ablate-noise[{m}]/s{seed}", graft(adapter),
                                           noise(match=base, seed=seed, modules=m))
    sites = select(study.model, "all")
    fraction = sum(s.numel for s in sites if s.module == "gate") / sum(s.numel for s in sites)
    for i in range(cfg.random_controls):
        out["controls"].append(study.score(f"ablate-random[{fraction:.4f}]/s{seed}-r{i}", graft(adapter),
                                           random_revert(base, fraction, seed=1000 + i)))
    out["control_fraction"] = fraction
    rows = {"tuned (all modules)": tuned_row}
    rows.update({f"{kind} {m}": r for kind, d in (("revert", out["reverted"]), ("zero", out["zeroed"]),
                                                 ("noise", out["noised"])) for m, r in d.items()})
    rows.update({f"random revert #{i}": r for i, r in enumerate(out["controls"])})
    out["rows"] = rows
    out["notes"] = [f"random controls revert a random {100 * fraction:.1f}% of every projection's entries — "
                    f"as many parameters as gate_proj holds"]
    if {"gate", "up", "down"} <= set(out["zeroed"]):
        same = len({round(out["zeroed"][m]["mean"], 12) for m in ("gate", "up", "down")}) == 1
        out["notes"].append(f"zeroing gate, up or down gives {'identical' if same else 'different'} scores "
                            f"(SwiGLU: each removes the whole MLP block)")
    return out


# ---- 6. interpolate -----------------------------------------------------------------------------
def interpolate(study, results) -> dict:
    seed = study.cfg.seeds[0]
    adapter = study.adapter("affect-all", "all", seed)
    ranking = (results.get("locate") or {}).get("summaries", {}).get("affective")
    runner_up = (sorted((m for m in ranking if m != "gate"), key=lambda m: -ranking[m]["rms"])[0]
                 if ranking else "up")
    curves, rows = {}, {}
    for m in ("gate", runner_up):
        curves[m] = []
        for a in study.bar(study.cfg.alphas, f"interpolate {m}"):
            row = (study.score("base") if a == 0 else _graft_score(study, adapter, m, seed) if a == 1 else
                   study.score(f"interp[{m}]@{a:g}/s{seed}", interp(adapter, a, modules=m)))
            curves[m].append((a, row))
            rows[f"{m} α={a:g}"] = row
    return {"curves": curves, "rows": rows, "runner_up": runner_up}


# ---- 7. cost–performance ------------------------------------------------------------------------
def cost(study, results) -> dict:
    tgt = results.get("targeted")
    if not tgt:
        return {}
    points = {m: (tgt["params"][m], r) for m, r in tgt["rows"].items()}
    g, a = tgt["rows"]["gate"], tgt["rows"]["all"]
    ratio_score = g["mean"] / a["mean"] if a["mean"] else float("nan")
    ratio_params = tgt["params"]["gate"] / tgt["params"]["all"]
    return {"points": points, "rows": tgt["rows"],
            "extra": {m: {"trainable params": f"{tgt['params'][m]:,}"} for m in tgt["rows"]},
            "notes": [f"GET (gate-only) reaches {100 * ratio_score:.1f}% of the all-module mean score with "
                      f"{100 * ratio_params:.1f}% of its trainable parameters (study: 96.6% with ~25%)"],
            "get_score_ratio": ratio_score, "get_param_ratio": ratio_params}


def neurons(study, results) -> dict:
    from .neurons import run_neurons
    return run_neurons(study, results)


# ---- figures ------------------------------------------------------------------------------------
def _close(fig) -> None:
    import matplotlib.pyplot as plt
    plt.close(fig)


def figures(study, results) -> dict[str, str]:
    fig_dir = study.run / "report" / "figures"
    out: dict[str, str] = {}

    def rel(path: Path) -> str:
        return str(Path(path).relative_to(study.run / "report"))
    loc = results.get("locate") or {}
    tables = {run: diff_module.DiffTable.load(folder) for run, folder in (loc.get("tables") or {}).items()}
    for run, table in tables.items():
        for metric in ("rms", "relative"):
            path = fig_dir / f"locate_heatmap_{run}_{metric}.png"
            _close(table.heatmap(metric, path))
            out[f"locate-heatmap-{run}-{metric}"] = rel(path)
        _close(table.histograms(fig_dir / f"locate_histograms_{run}.png"))
        out[f"locate-histograms-{run}"] = rel(fig_dir / f"locate_histograms_{run}.png")
    if len(tables) > 1:
        for metric in ("l2", "rms"):
            path = fig_dir / f"locate_compare_{metric}.png"
            _close(diff_module.compare_diffs(tables, metric, path=path))
            out[f"locate-compare-{metric}"] = rel(path)
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
def unibench(study, results) -> dict:
    """The eight-task benchmark from the user's subtitles: base, grafts of the affective adapter, GET."""
    from ..bench.subtitles import run_unibench
    from ..registry import intervene
    cfg, seed = study.cfg, study.cfg.seeds[0]
    affect = study.adapter("affect-all", "all", seed)
    runs = [("none" if s == "none" else key(s), s, affect) for s in cfg.unibench_sets]
    runs.append(("GET adapter", "all", study.adapter("affect-gate", "gate", seed)))
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
