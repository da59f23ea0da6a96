"""Apply interventions and undo them bit-exactly.

Weight changes *rebind* a fresh ``nn.Parameter`` on the module and keep the original object; undo
rebinds the original (never add-then-subtract), so restored tensors are the very same objects.
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

_OWNER = "_affectlocus_owner"        # set on our hook functions and installed parameters
_PREVIOUS = "_affectlocus_previous"  # installed parameter → the parameter it replaced
_IDS = itertools.count(1)
_STACKS: "weakref.WeakKeyDictionary[nn.Module, list[Handle]]" = weakref.WeakKeyDictionary()


def original_parameter(module: nn.Module, name: str) -> nn.Parameter:
    """The parameter ``module.<name>`` had before any intervention of ours."""
    param = module._parameters[name]
    while param is not None and hasattr(param, _PREVIOUS):
        param = getattr(param, _PREVIOUS)
    return param


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


@dataclass(eq=False)
class Handle:
    """One applied stack of interventions on a model; :meth:`detach` undoes it (idempotent)."""

    model: nn.Module
    interventions: tuple
    id: int = field(default_factory=lambda: next(_IDS))
    _rebinds: list[_Rebind] = field(default_factory=list)
    _hooks: list = field(default_factory=list)
    attached: bool = False

    # -- used by interventions while applying -------------------------------------------------
    def rebind(self, module: nn.Module, name: str, new: torch.Tensor, path: str) -> None:
        """Install ``new`` as ``module.<name>`` (keeping requires_grad), remembering the previous."""
        check_dispatch(module, path)
        previous = module._parameters[name]
        if new.shape != previous.shape:
            raise InterventionError(f"{path}.{name}: new tensor has shape {tuple(new.shape)}, "
                                    f"expected {tuple(previous.shape)}")
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
        if not self.attached and not self._rebinds and not self._hooks:
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
            self.attached = False
            if self in stack:
                stack.remove(self)

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc) -> None:
        self.detach()

    def describe(self) -> str:
        return f"handle {self.id}: " + "; ".join(i.describe() for i in self.interventions)


def attach(model: nn.Module, *interventions) -> Handle:
    """Apply interventions in order (each sees the previous ones' effect) and return a handle."""
    from .interventions.base import Intervention
    for item in interventions:
        if not isinstance(item, Intervention):
            raise InterventionError(f"not an intervention: {item!r} ({type(item).__name__}); build one "
                                    f"with al.graft / al.zero / al.interpolate / al.record / …")
    handle = Handle(model, tuple(interventions))
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
def intervene(model: nn.Module, *interventions) -> Iterator[Handle]:
    """Context manager: the model behaves as intervened inside; bit-exact restore on exit or error."""
    handle = attach(model, *interventions)
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
    return found


def assert_clean(model: nn.Module) -> None:
    """Raise :class:`InterventionError` if any handle, hook or parameter of ours remains."""
    left = our_leftovers(model)
    if active(model) or left:
        raise InterventionError(f"model is not clean: {len(active(model))} active handle(s); "
                                f"leftovers: {_preview(left) or 'none'}")
