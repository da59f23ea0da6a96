"""Apply interventions and undo them bit-exactly.

Weight changes *rebind* a fresh ``nn.Parameter`` on the module and keep the original object; undo
rebinds the original (never add-then-subtract), so restored tensors are the very same objects.
With ``inplace=`` (big models) the donor is instead copied into the parameter's own storage and
the original values wait off the device (:mod:`affectlocus.originals`); undo copies them back.
Hooks are registered through ``RemovableHandle`` and removed only by their owner. Handles stack per
model and unwind LIFO; everything is undone in ``finally`` blocks, and undo is safe to call twice.
"""
from __future__ import annotations

import itertools
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn as nn

from .errors import InterventionError, _preview
from .originals import InplacePolicy, SavedOriginal, SwapFile, resolve_policy

_OWNER = "_affectlocus_owner"        # set on our hook functions and installed parameters
_PREVIOUS = "_affectlocus_previous"  # installed parameter → the parameter it replaced
_SAVED = "_affectlocus_saved"        # parameter swapped in place → its SavedOriginal records, oldest first
_IDS = itertools.count(1)
_STACKS: "weakref.WeakKeyDictionary[nn.Module, list[Handle]]" = weakref.WeakKeyDictionary()


def original_parameter(module: nn.Module, name: str) -> nn.Parameter:
    """The parameter ``module.<name>`` had before any intervention of ours."""
    param = module._parameters[name]
    while param is not None and hasattr(param, _PREVIOUS):
        param = getattr(param, _PREVIOUS)
    return param


def original_weight(module: nn.Module, name: str) -> torch.Tensor:
    """The values ``module.<name>`` had before any intervention of ours (detached; a host copy
    when an in-place swap holds them off the device)."""
    param = original_parameter(module, name)
    saved = getattr(param, _SAVED, None)
    return saved[0].load() if saved else param.detach()


def check_dispatch(module: nn.Module, path: str) -> None:
    """Refuse modules whose weights accelerate offloads (rebinding would be silently ignored)."""
    hook = getattr(module, "_hf_hook", None)
    weight = module._parameters.get("weight")
    if (hook is not None and getattr(hook, "offload", False)) or (weight is not None and weight.is_meta):
        raise InterventionError(
            f"{path} is offloaded by accelerate (weights live in a weights_map, not on the module): "
            f"weight-space interventions cannot act on it. Load without offload (device_map onto "
            f"GPUs/CPU only), or use an activation-space intervention instead")


def _ours_first(hooks) -> None:
    """Order a module's forward hooks so ours run first (in our order) and others observe the
    intervened output — e.g. nnsight's ``.output`` shows what the model actually passes on."""
    for key in [k for k, fn in hooks.items() if not hasattr(fn, _OWNER)]:
        hooks.move_to_end(key)


@dataclass
class _Rebind:
    module: nn.Module
    name: str
    previous: nn.Parameter
    installed: nn.Parameter
    path: str


@dataclass
class _Swap:
    module: nn.Module
    name: str
    param: nn.Parameter
    saved: SavedOriginal
    path: str


@dataclass(eq=False)
class Handle:
    """One applied stack of interventions on a model; :meth:`detach` undoes it (idempotent).

    ``inplace`` chooses how weights change: ``False`` rebinds fresh parameters (the default);
    ``True``/``"host"``/``"disk"`` copy into the existing storage (see :mod:`affectlocus.originals`).
    """

    model: nn.Module
    interventions: tuple
    inplace: InplacePolicy = False
    id: int = field(default_factory=lambda: next(_IDS))
    _rebinds: list[_Rebind] = field(default_factory=list)
    _swaps: list[_Swap] = field(default_factory=list)
    _swap_file: SwapFile | None = None
    _hooks: list = field(default_factory=list)
    attached: bool = False

    # -- used by interventions while applying -------------------------------------------------
    def replace(self, module: nn.Module, name: str, new: torch.Tensor, path: str) -> None:
        """Make ``new`` the value of ``module.<name>``: rebound, or copied in place per ``inplace``."""
        check_dispatch(module, path)
        previous = module._parameters[name]
        if new.shape != previous.shape:
            raise InterventionError(f"{path}.{name}: new tensor has shape {tuple(new.shape)}, "
                                    f"expected {tuple(previous.shape)}")
        policy = resolve_policy(self.inplace, previous)
        if policy is None:
            self._rebind(module, name, previous, new, path)
        else:
            self._swap(module, name, previous, new, path, policy)

    def _swap(self, module, name, param, new, path, policy) -> None:
        if not any(s.param is param for s in self._swaps):  # the first swap here keeps the original
            if policy == "disk" and self._swap_file is None:
                self._swap_file = SwapFile()
            swap = _Swap(module, name, param, SavedOriginal(param, policy, self._swap_file), path)
            self._swaps.append(swap)
            if not hasattr(param, _SAVED):
                setattr(param, _SAVED, [])
            getattr(param, _SAVED).append(swap.saved)
        with torch.no_grad():
            param.copy_(new)

    def _rebind(self, module, name, previous, new, path) -> None:
        installed = nn.Parameter(new.to(device=previous.device, dtype=previous.dtype),
                                 requires_grad=previous.requires_grad)
        setattr(installed, _OWNER, self.id)
        setattr(installed, _PREVIOUS, previous)
        module._parameters[name] = installed
        self._rebinds.append(_Rebind(module, name, previous, installed, path))

    def add_hook(self, module: nn.Module, fn: Callable, path: str) -> None:
        """Register a forward hook owned by this handle."""
        def hook(mod, args, output):
            return fn(output)
        setattr(hook, _OWNER, self.id)
        self._hooks.append((module.register_forward_hook(hook), path))
        _ours_first(module._forward_hooks)

    # -- lifecycle -----------------------------------------------------------------------------
    def detach(self) -> None:
        """Undo everything this handle did, newest first. Safe to call twice."""
        if not self.attached and not self._rebinds and not self._swaps and not self._hooks \
                and self._swap_file is None:
            return
        stack = _STACKS.get(self.model, [])
        above = stack[stack.index(self) + 1:] if self in stack else []
        if above:
            warnings.warn(f"detaching {len(above)} intervention handle(s) attached after handle "
                          f"{self.id} first (LIFO)", stacklevel=2)
            for other in reversed(above):
                other.detach()
        newest = {(id(r.module), r.name): r for r in self._rebinds}  # the top rebind per parameter
        blocked = [r.path for r in newest.values()
                   if not any(r.module._parameters.get(r.name) is p for p in (r.installed, r.previous))]
        blocked += [s.path for s in self._swaps if s.module._parameters.get(s.name) is not s.param]
        if blocked:
            raise InterventionError(
                f"cannot detach handle {self.id}: {_preview(blocked)} were changed on top of it by "
                f"something else (another model wrapper's handle?); detach that first (LIFO)")
        try:
            for hook, _ in reversed(self._hooks):
                hook.remove()
        finally:
            self._hooks.clear()
            for r in reversed(self._rebinds):
                if r.module._parameters.get(r.name) is r.installed:
                    r.module._parameters[r.name] = r.previous
            self._rebinds.clear()
            try:
                for s in reversed(self._swaps):
                    s.saved.restore(s.param)
            finally:
                for s in reversed(self._swaps):
                    pending = getattr(s.param, _SAVED, [])
                    if s.saved in pending:
                        pending.remove(s.saved)
                    if not pending and hasattr(s.param, _SAVED):
                        delattr(s.param, _SAVED)
                    s.saved.close()
                self._swaps.clear()
                if self._swap_file is not None:
                    self._swap_file.close()
                    self._swap_file = None
            self.attached = False
            if self in stack:
                stack.remove(self)

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def describe(self) -> str:
        how = "" if not self.inplace else f" (inplace={self.inplace!r})"
        return f"handle {self.id}{how}: " + "; ".join(i.describe() for i in self.interventions)

    def __repr__(self) -> str:
        return f"<{self.describe()}>"


def attach(model: nn.Module, *interventions, inplace: InplacePolicy = False) -> Handle:
    """Apply interventions in order (each sees the previous ones' effect) and return a handle.

    ``inplace=True`` copies donors into the existing weight storage instead of rebinding new
    parameters, keeping the originals off the device (host RAM for accelerator weights, an
    unlinked temp file for CPU weights; ``"host"``/``"disk"`` force one): memory stays at one
    model for ``graft(all)`` of a 7B model. Restore is a copy back, still bit-exact and LIFO-safe.
    """
    from .interventions.base import Intervention
    for item in interventions:
        if not isinstance(item, Intervention):
            raise InterventionError(f"not an intervention: {item!r} ({type(item).__name__}); build one "
                                    f"with al.graft / al.zero / al.interpolate / al.record / …")
    resolve_policy(inplace, torch.empty(0))  # reject unknown policies before anything changes
    handle = Handle(model, tuple(interventions), inplace)
    _STACKS.setdefault(model, []).append(handle)
    handle.attached = True
    try:
        with torch.no_grad():
            for item in interventions:
                item.apply(model, handle)
    except BaseException:
        handle.detach()
        raise
    return handle


@contextmanager
def intervene(model: nn.Module, *interventions, inplace: InplacePolicy = False) -> Iterator[Handle]:
    """Context manager: the model behaves as intervened inside; bit-exact restore on exit or error.

    ``inplace``: see :func:`attach`."""
    handle = attach(model, *interventions, inplace=inplace)
    try:
        yield handle
    finally:
        handle.detach()


def active(model: nn.Module) -> list[Handle]:
    """Handles of ours currently attached to ``model``, oldest first."""
    return list(_STACKS.get(model, []))


def detach_all(model: nn.Module) -> None:
    """Detach every handle of ours on ``model`` (LIFO). Touches nothing of anyone else's."""
    for handle in reversed(active(model)):
        handle.detach()


def our_leftovers(model: nn.Module) -> list[str]:
    """Hooks or parameters of ours still present anywhere in ``model`` (should be empty)."""
    found = []
    for name, module in model.named_modules():
        for kind in ("_forward_hooks", "_forward_pre_hooks"):
            if any(hasattr(fn, _OWNER) for fn in getattr(module, kind).values()):
                found.append(f"{name or '<root>'} ({kind})")
        for pname, param in module._parameters.items():
            if param is not None and hasattr(param, _OWNER):
                found.append(f"{name}.{pname} (parameter)")
            if param is not None and getattr(param, _SAVED, None):
                found.append(f"{name}.{pname} (in-place swap)")
    return found


def assert_clean(model: nn.Module) -> None:
    """Raise :class:`InterventionError` if any handle, hook or parameter of ours remains."""
    left = our_leftovers(model)
    if active(model) or left:
        raise InterventionError(f"model is not clean: {len(active(model))} active handle(s); "
                                f"leftovers: {_preview(left) or 'none'}")
