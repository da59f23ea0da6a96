"""``affectlocus diff BASE TUNED --out DIR``: tables, figures and a one-screen ranked summary."""
from __future__ import annotations

import argparse
from pathlib import Path

from .._runlog import RunLog, add_quiet_arg, show_progress
from ..errors import AffectLocusError, ModelLoadError
from ..models.cli_args import add_device_args, device_kwargs
from .stats import DEFAULT_SAMPLE
from .table import HEADLINE, DiffTable


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``diff`` subcommand to an ``argparse`` subparsers object."""
    p = subparsers.add_parser(
        "diff", help="where does a fine-tune change the model? (module-wise weight differences)",
        description="Stream BASE and TUNED (checkpoint folders/files, a peft adapter folder or a .pth "
                    "adapter for TUNED) one tensor at a time; write diff.csv, diff.json and PNG figures "
                    "to --out and print per-module means ranked.")
    p.add_argument("base", help="base checkpoint (HF folder, .safetensors, index .json)")
    p.add_argument("tuned", help="tuned checkpoint, peft adapter folder, or .pth adapter")
    p.add_argument("--modules", default="all", help="q,k,v,o,gate,up,down, attn, mlp, all (default all)")
    p.add_argument("--layers", default=None, help="e.g. '3', '0,5', '10:20', '10-19' (default all)")
    p.add_argument("--metric", action="append", default=None,
                   help="metric to rank by and draw (repeatable; default relative)")
    p.add_argument("--metrics", default="default",
                   help="metric groups: l2,relative,rms,quantiles,hist,rows or all (default: all but rows)")
    p.add_argument("--rows", action="store_true", help="also per-row (gate/up) / per-column (down) norms")
    p.add_argument("--sample", type=int, default=DEFAULT_SAMPLE,
                   help=f"elements sampled per large tensor for distributions; 0 = every element "
                        f"(default {DEFAULT_SAMPLE})")
    p.add_argument("--seed", type=int, default=0, help="seed of the element sample")
    p.add_argument("--top", type=int, default=5, help="how many top sites to print")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_quiet_arg(p)
    add_device_args(p)
    p.epilog = ("--device: where ΔW is computed (chunks are moved there as they stream); --dtype: both weights "
                "are cast to it before differencing; --device-map: BASE (and a full TUNED checkpoint; an "
                "adapter stays a file) is loaded as a model placed by accelerate instead of streamed.")
    p.set_defaults(func=run)
    return p


def _models(base: str, tuned: str, placement: dict) -> tuple:
    """With a ``device_map`` in ``placement``: BASE (and TUNED when it is a model checkpoint, not an
    adapter) loaded as models placed by accelerate; otherwise the paths, unchanged (streamed)."""
    if "device_map" not in placement:
        return base, tuned
    from ..models import load_model, resolve
    base_model = load_model(base, **placement)[0]
    try:
        resolve(tuned)
    except ModelLoadError:  # a peft adapter, a .pth adapter or a bare weights file: read as before
        return base_model, tuned
    return base_model, load_model(tuned, **placement)[0]


def run(args: argparse.Namespace) -> int:
    placement = device_kwargs(args)  # a bad --device fails before anything is written
    with RunLog(args.out, "diff", args) as log:
        table, ranked, written = _diff(args, placement)
        log.event("summary", sites=len(table), metrics=table.metrics, ranked_by=ranked[0],
                  modules=table.summary(ranked[0]).to_dict(orient="index"),
                  top=table.top(args.top, ranked[0]).to_dict(orient="records"),
                  notes=table.meta.get("notes", []), written=written)
    print(summary_text(table, ranked[0], args.top))
    if not args.quiet:
        print(f"wrote {args.out}/: {', '.join(written)}")
    return 0


def _diff(args: argparse.Namespace, placement: dict) -> tuple[DiffTable, list[str], list[str]]:
    """Compute and save the table and figures: ``(table, metrics ranked by, files written)``."""
    import warnings

    from .compare import diff
    metrics = args.metrics + (",rows" if args.rows else "")
    with warnings.catch_warnings():  # the notes are printed with the summary instead
        warnings.simplefilter("ignore", UserWarning)
        base, tuned = _models(args.base, args.tuned, placement)  # (a checkpoint without a tokenizer is fine)
        table = diff(base, tuned, modules=args.modules, layers=args.layers, metrics=metrics,
                     progress=show_progress(args), sample=args.sample or None, seed=args.seed,
                     device=placement.get("device"), dtype=placement.get("dtype"))
    if placement:
        how = ", ".join(f"{k}={v}" for k, v in placement.items())
        for key, given, obj in (("base", args.base, base), ("tuned", args.tuned, tuned)):
            if not isinstance(obj, str):  # name the files, not "in-memory model LlamaForCausalLM"
                table.meta[key] = f"{given} (loaded with {how})"
        table.meta["placement"] = placement
    out = Path(args.out)
    table.save(out)
    ranked = args.metric or [next((m for m in ("relative", "rms", "l2") if m in table.metrics),
                                  table.metrics[0])]
    for metric in ranked:
        if metric not in table.metrics:
            raise AffectLocusError(f"--metric {metric!r} was not computed; available: "
                                   f"{', '.join(table.metrics)}")
    written = [n for n in ("diff.csv", "diff.json", "rows.safetensors") if (out / n).exists()]
    for metric in dict.fromkeys([*HEADLINE, *ranked]):
        if metric in table.metrics:
            name = f"heatmap_{metric}.png"
            table.heatmap(metric, path=out / name)
            written.append(name)
    if table.edges is not None:
        table.histograms(path=out / "histograms.png")
        written.append("histograms.png")
    return table, ranked, written


def summary_text(table: DiffTable, metric: str = "relative", top: int = 5) -> str:
    """The one-screen summary: what was compared, per-module means ranked, the top sites, notes."""
    meta = table.meta
    lines = [f"compared {table.describe()}",
             f"  base : {meta.get('base', '?')}", f"  tuned: {meta.get('tuned', '?')}"]
    frame = table.summary(metric)
    lines.append(f"per-module mean over layers, ranked by {metric} "
                 f"(raw l2 grows with matrix size: read it beside rms and relative)")
    lines.append(frame.to_string(float_format=lambda v: f"{v:.4g}"))
    cols = [c for c in dict.fromkeys([metric, *HEADLINE]) if c in table.metrics]
    lines.append(f"top {top} sites by {metric}:")
    for _, row in table.top(top, metric).iterrows():
        vals = "  ".join(f"{c}={row[c]:.4g}" for c in cols)
        lines.append(f"  layers.{row['layer']}.{row['module']:<5} {vals}")
    lines += [f"note: {n}" for n in meta.get("notes", [])]
    return "\n".join(lines)

