"""Activation patching: replay recorded projection outputs into another run (:func:`patch`).

Built on :class:`~affectlocus.interventions.activation.PatchOutput` (the general function hook),
so the hooks, fused row spans and the exact restore are the registry's.
"""
from __future__ import annotations

from typing import Mapping, Sequence, Union

import torch
import torch.nn as nn

from ..errors import InterventionError, ShapeMismatchError, _preview
from ..sites import Site
from ..sites.selection import LayerSpec, ModuleSpec
from .activation import PatchOutput, Record

#: ``"last"``, ``"first"``, an int k (the last k positions, right-aligned), or ``(src, dst)`` indices
Positions = Union[str, int, tuple[Sequence[int], Sequence[int]], None]
Recording = Union[Record, Mapping[str, Union[torch.Tensor, Sequence[torch.Tensor]]]]


class Patch(PatchOutput):
    """Replace the selected projections' outputs by recorded ones (activation patching).

    ``recording`` is a :class:`Record` (the k-th forward call inside the patch context replays the
    k-th recorded call; more calls than recorded is an error, never a cycle) or a mapping
    ``site.name → tensor`` (used for every call) or ``site.name → [tensor per call]``.

    ``modules``/``layers`` left at their defaults mean "whatever was recorded"; a site selected
    explicitly that the recording lacks is an error. ``positions`` aligns recordings made on
    other sequence lengths (the sequence dim is -2): ``"last"``/``"first"`` replace one position,
    an int ``k`` the last ``k`` (right-aligned), ``(src, dst)`` maps recorded position ``src[i]``
    onto live position ``dst[i]``; other positions keep their live values. Batch sizes must match.
    Recorded values are moved to the live output's device and dtype.
    """

    def __init__(self, recording: Recording, modules: ModuleSpec = "all", layers: LayerSpec = None,
                 positions: Positions = None):
        super().__init__(self._replay, modules, layers)
        if not isinstance(recording, (Record, Mapping)):
            raise InterventionError(f"patch needs a Record (al.record) or a mapping site name → tensor, "
                                    f"got {type(recording).__name__}")
        self.recording = recording
        self.positions = _check_positions(positions)
        self._explicit = (modules not in ("all", None), layers is not None)
        self._calls: dict[str, int] = {}

    # -- what is replayed --------------------------------------------------------------------------
    def _values(self) -> Mapping[str, torch.Tensor | Sequence[torch.Tensor]]:
        values = self.recording.outputs if isinstance(self.recording, Record) else self.recording
        if not values:
            raise InterventionError("patch has nothing to replay: the recording is empty (run the model "
                                    "inside al.intervene(model, recording) first)")
        return values

    def _chosen(self, selected: list[Site]) -> list[Site]:
        """``selected`` narrowed to the recording where modules/layers were left at their defaults."""
        values = self._values()
        recorded = [n.split(".") for n in values if n.count(".") == 2]
        mods, lays = {m for _, _, m in recorded}, {int(i) for _, i, _ in recorded if i.isdigit()}
        chosen = [s for s in selected
                  if (self._explicit[0] or s.module in mods) and (self._explicit[1] or s.layer in lays)]
        missing = [s.name for s in chosen if s.name not in values]
        if missing or not chosen:
            raise InterventionError(
                f"patch: the recording has no outputs for {_preview(missing) or 'any selected site'}; "
                f"it has {_preview(sorted(values))} — record those sites, or select fewer")
        return chosen

    def resolved(self, model: nn.Module) -> list:
        found = super().resolved(model)
        keep = {s.name for s in self._chosen([r.site for r in found])}
        return [r for r in found if r.site.name in keep]

    def apply(self, model, handle):
        self._calls = {}  # each patch context replays from the first recorded call
        super().apply(model, handle)

    def _recorded(self, site: Site) -> torch.Tensor:
        value = self._values()[site.name]
        if isinstance(value, torch.Tensor):
            return value
        k = self._calls.get(site.name, 0)
        if k >= len(value):
            raise InterventionError(
                f"patch: forward call {k + 1} at {site.name}, but only {len(value)} call(s) were recorded; "
                f"replay as many calls as were recorded (patching never cycles)")
        self._calls[site.name] = k + 1
        return value[k]

    def _replay(self, output: torch.Tensor, site: Site) -> torch.Tensor:
        recorded = self._recorded(site).detach().to(device=output.device, dtype=output.dtype)
        if self.positions is None:
            if recorded.shape != output.shape:
                raise ShapeMismatchError(
                    f"patch at {site.name}: recorded output has shape {tuple(recorded.shape)}, the live "
                    f"output {tuple(output.shape)}; for other sequence lengths pass positions= "
                    f"('last', 'first', an int k, or (src, dst) index lists)")
            return recorded.clone()
        return _aligned(site, recorded, output, self.positions)

    def _extra(self) -> str:
        what = self.recording.describe() if isinstance(self.recording, Record) else \
            f"{len(self.recording)} tensors"
        pos = "" if self.positions is None else f", positions={self.positions!r}"
        return f", from={what}{pos}"


def _check_positions(positions: Positions) -> Positions:
    """Validate the form of ``positions`` (values are checked against lengths when replaying)."""
    if positions is None or positions in ("last", "first"):
        return positions
    if isinstance(positions, int) and not isinstance(positions, bool):
        if positions < 1:
            raise InterventionError(f"positions={positions}: an int k aligns the last k positions (k ≥ 1)")
        return positions
    if isinstance(positions, (tuple, list)) and len(positions) == 2 and not isinstance(positions[0], (str, int)):
        src, dst = ([int(i) for i in p] for p in positions)
        if len(src) != len(dst) or not src:
            raise InterventionError(f"positions=(src, dst) needs two equally long, non-empty index lists; "
                                    f"got {len(src)} and {len(dst)}")
        return (tuple(src), tuple(dst))
    raise InterventionError(f"positions must be None, 'last', 'first', an int k or (src, dst) index lists; "
                            f"got {positions!r}")


def _aligned(site: Site, recorded: torch.Tensor, output: torch.Tensor, positions: Positions) -> torch.Tensor:
    """``output`` with the aligned positions (sequence dim -2) taken from ``recorded``."""
    if recorded.dim() != output.dim() or output.dim() < 3 or recorded.shape[:-2] != output.shape[:-2] \
            or recorded.shape[-1] != output.shape[-1]:
        raise ShapeMismatchError(
            f"patch at {site.name}: recorded output has shape {tuple(recorded.shape)}, the live output "
            f"{tuple(output.shape)}; with positions= only the sequence length (dim -2) may differ "
            f"(batch sizes and channels must match)")
    n_src, n_dst = recorded.shape[-2], output.shape[-2]
    if positions == "last":
        src, dst = [n_src - 1], [n_dst - 1]
    elif positions == "first":
        src, dst = [0], [0]
    elif isinstance(positions, int):
        if positions > min(n_src, n_dst):
            raise ShapeMismatchError(f"patch at {site.name}: positions={positions} but the recorded output "
                                     f"has {n_src} positions and the live one {n_dst}")
        src, dst = list(range(n_src - positions, n_src)), list(range(n_dst - positions, n_dst))
    else:
        src, dst = positions
        bad = [i for i in src if not -n_src <= i < n_src] + [i for i in dst if not -n_dst <= i < n_dst]
        if bad:
            raise ShapeMismatchError(f"patch at {site.name}: positions {bad[:5]} out of range (recorded "
                                     f"length {n_src}, live length {n_dst})")
    index = torch.tensor([i % n_dst for i in dst], device=output.device)
    taken = recorded.index_select(-2, torch.tensor([i % n_src for i in src], device=output.device))
    return output.index_copy(output.dim() - 2, index, taken)


def patch(recording: Recording, modules: ModuleSpec = "all", layers: LayerSpec = None,
          positions: Positions = None) -> Patch:
    """Replay recorded outputs (a :class:`Record` or ``{site.name: tensor}``) into the selected sites.

    ``positions``: ``None`` (full replacement, shapes must match), ``"last"``, ``"first"``, an int k
    (last k positions, right-aligned) or ``(src_positions, dst_positions)``. See :class:`Patch`.
    """
    return Patch(recording, modules, layers, positions)
