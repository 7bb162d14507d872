"""Edits that change a model and revert exactly.

Every edit has ``apply(model) -> EditHandle`` and the context manager ``applied(model)``:

>>> with WeightEdit("blocks.1.mlp.W_out[7]", "zero").applied(model):
...     logits = model(tokens)            # edited
>>> # here every weight is bitwise what it was, even if the body raised

* Weight edits snapshot only the slices (or masked entries) they touch and write them back on
  revert, so revert is bitwise exact. Overlapping weight edits must be reverted last-in
  first-out; reverting out of order raises instead of silently corrupting weights.
* Hook edits own exactly the hook they register and remove only that one; hooks a user added
  before or after stay.
* `Compose` applies edits in order and reverts them in reverse.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Mapping, Sequence

import torch
from torch import Tensor

from mechunlearn.core.site import Site

if TYPE_CHECKING:
    from mechunlearn.core.selection import MaskSelection
    from mechunlearn.models.model import Model

log = logging.getLogger(__name__)


class EditHandle:
    """The live result of applying an edit; ``revert()`` undoes exactly that edit (idempotent)."""

    def __init__(self, edit: "Edit", model: "Model", undo: Callable[[], None], *, weights: Sequence[str] = ()) -> None:
        self.edit = edit
        self.model = model
        self._undo = undo
        self.weights = tuple(weights)
        """Names of the weights this handle changed (empty for hook edits)."""
        self.active = True
        if self.weights:
            model._active_weight_handles.append(self)

    def revert(self) -> None:
        """Undo the edit. Raises if a later, still-active weight edit touches the same weights."""
        if not self.active:
            return
        if self.weights:
            stack = self.model._active_weight_handles
            later = stack[stack.index(self) + 1 :]
            clash = [h for h in later if set(h.weights) & set(self.weights)]
            if clash:
                raise RuntimeError(
                    f"cannot revert {self.edit!r} before the later edit {clash[-1].edit!r} that touches the same "
                    "weights; revert edits last-in first-out (or use `with edit.applied(model):` blocks)"
                )
            stack.remove(self)
        self._undo()
        self.active = False

    @property
    def changed_weights(self) -> tuple[str, ...]:
        """Every weight this handle and its parts (a `Compose`'s) changed, in order, once each."""
        names = list(self.weights)
        for part in getattr(self, "parts", ()):
            names += part.changed_weights
        return tuple(dict.fromkeys(names))

    def __enter__(self) -> "EditHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.revert()

    def __repr__(self) -> str:
        state = "active" if self.active else "reverted"
        return f"EditHandle({self.edit!r}, {state})"


class Edit(ABC):
    """Base of every edit: weight edits, hook edits and their compositions."""

    @abstractmethod
    def apply(self, model: "Model") -> EditHandle:
        """Change the model; return the handle that undoes it."""

    @contextmanager
    def applied(self, model: "Model") -> Iterator[EditHandle]:
        """Apply for the duration of a ``with`` block; revert on exit, also on exceptions."""
        handle = self.apply(model)
        try:
            yield handle
        finally:
            handle.revert()

    def __add__(self, other: "Edit") -> "Compose":
        """``a + b`` applies ``a`` then ``b`` (and reverts ``b`` then ``a``)."""
        return Compose([self, other])


WeightOp = Literal["set", "add", "scale", "zero", "noise"]


@dataclass(frozen=True)
class WeightEdit(Edit):
    """Change one weight or slice: set / add a value, scale, zero, or add Gaussian noise.

    ``noise`` adds ``sigma * N(0, 1)`` (``relative=True`` scales sigma by the slice's RMS norm,
    so noise is comparable across layers); the draw comes from a generator seeded by ``seed``.
    """

    site: Site | str
    """The weight or slice, e.g. ``blocks.3.mlp.W_out[401]``."""
    op: WeightOp
    """``set``, ``add``, ``scale``, ``zero`` or ``noise``."""
    value: Tensor | float | None = None
    """Tensor or scalar for ``set``/``add``, the factor for ``scale``."""
    sigma: float = 0.1
    """Noise standard deviation for ``noise`` (ConceptVectors uses 0.1)."""
    relative: bool = False
    """For ``noise``: multiply sigma by the slice's root-mean-square value."""
    seed: int = 0
    """Seed of the noise generator."""

    def __post_init__(self) -> None:
        if self.op not in ("set", "add", "scale", "zero", "noise"):
            raise ValueError(f"unknown weight op {self.op!r}; use set, add, scale, zero or noise")
        if self.op in ("set", "add", "scale") and self.value is None:
            raise ValueError(f"op {self.op!r} needs a value")
        object.__setattr__(self, "site", Site.parse(self.site) if isinstance(self.site, str) else self.site)

    def _new_value(self, old: Tensor) -> Tensor:
        if self.op == "zero":
            return torch.zeros_like(old)
        if self.op == "noise":
            gen = torch.Generator(device="cpu").manual_seed(self.seed)
            scale = self.sigma * (old.float().pow(2).mean().sqrt().item() if self.relative else 1.0)
            return old + scale * torch.randn(old.shape, generator=gen, dtype=old.dtype).to(old.device)
        value = torch.as_tensor(self.value, dtype=old.dtype, device=old.device)
        if self.op == "set":
            return value.expand_as(old)
        if self.op == "add":
            return old + value
        return old * value

    def apply(self, model: "Model") -> EditHandle:
        site = model.check_site(self.site)
        if site.kind != "param":
            raise ValueError(f"WeightEdit needs a weight site, got the activation site {site}; use HookEdit")
        view = model.weight(site)
        saved = view.detach().clone()  # only the touched slice
        with torch.no_grad():
            view.copy_(self._new_value(saved))

        def undo() -> None:
            with torch.no_grad():
                model.weight(site).copy_(saved)

        handle = EditHandle(self, model, undo, weights=[site.name])
        handle.snapshot_numel = saved.numel()
        return handle

    def __repr__(self) -> str:
        return f"WeightEdit({str(self.site)!r}, {self.op!r})"


@dataclass(frozen=True)
class DeltaEdit(Edit):
    """Add ``deltas[name]`` (TL layout) to weights, only where ``mask`` selects (if given).

    The unlearning loop returns one of these, so a trained edit reverts like any other.
    With a mask, a delta is either the weight's full TL-shaped tensor or the vector of its
    masked entries (``view[mask]`` order: what masked unlearning stores, |mask| numbers), and
    every delta needs a mask entry: outside the mask the weights are never written. Only the
    changed entries are saved for the revert.
    """

    deltas: Mapping[str, Tensor]
    """Per-weight deltas in TransformerLens layout (or masked-entry vectors, see above)."""
    mask: "MaskSelection | None" = None
    """Entries allowed to change; ``None`` means the whole of each named weight."""
    label: str = "delta"
    """Name shown in reprs and tables (e.g. the unlearning method)."""
    meta: Mapping = field(default_factory=dict, compare=False)
    """Provenance (losses, steps, config) of whatever produced the delta."""

    def __post_init__(self) -> None:
        if self.mask is not None:
            unmasked = [n for n in self.deltas if n not in self.mask.masks]
            if unmasked:
                raise ValueError(
                    f"DeltaEdit has deltas for weights its mask does not cover: {unmasked[:4]}; "
                    "with a mask, Δθ = 0 outside it (add them to the mask or drop their deltas)"
                )

    def _masked_values(self, name: str, keep: Tensor) -> Tensor:
        """The delta at the masked entries of ``name``, whichever form it is stored in."""
        delta = self.deltas[name]
        if tuple(delta.shape) == tuple(keep.shape):
            return delta.to(keep.device)[keep]
        n = int(keep.sum())
        if delta.dim() != 1 or delta.numel() != n:
            raise ValueError(
                f"delta for {name} has shape {tuple(delta.shape)}: give the weight's shape {tuple(keep.shape)} "
                f"or the {n} masked entries"
            )
        return delta

    def dense(self, name: str) -> Tensor:
        """The delta of ``name`` as a full TL-shaped tensor (zero outside the mask)."""
        keep = None if self.mask is None else self.mask.masks[name]
        if keep is None:
            return self.deltas[name]
        values = self._masked_values(name, keep)
        out = torch.zeros(keep.shape, dtype=values.dtype, device=values.device)
        out[keep.to(values.device)] = values
        return out

    def apply(self, model: "Model") -> EditHandle:
        if not self.deltas:
            raise ValueError("DeltaEdit has no deltas")
        saved: dict[str, tuple[Tensor | None, Tensor]] = {}
        try:
            for name, delta in self.deltas.items():
                view = model.weight(name)
                keep = None if self.mask is None else self.mask.masks[name].to(view.device)
                if keep is None and delta.shape != view.shape:
                    raise ValueError(f"delta for {name} has shape {tuple(delta.shape)}, weight is {tuple(view.shape)}")
                if keep is not None and keep.shape != view.shape:
                    raise ValueError(f"mask of {name} has shape {tuple(keep.shape)}, weight is {tuple(view.shape)}")
                with torch.no_grad():
                    if keep is None:
                        saved[name] = (None, view.detach().clone())
                        view.add_(delta.to(view))
                    else:
                        values = self._masked_values(name, keep).to(view)
                        saved[name] = (keep, view[keep].detach().clone())
                        view[keep] = view[keep] + values
        except Exception:
            _restore(model, saved)
            raise
        handle = EditHandle(self, model, lambda: _restore(model, saved), weights=list(saved))
        handle.snapshot_numel = sum(v.numel() for _, v in saved.values())
        return handle

    def norms(self) -> dict[str, float]:
        """Frobenius norm of each (masked) delta."""
        out = {}
        for name in self.deltas:
            keep = None if self.mask is None else self.mask.masks[name]
            values = self.deltas[name] if keep is None else self._masked_values(name, keep)
            out[name] = float(values.float().norm())
        return out

    def __repr__(self) -> str:
        return f"DeltaEdit({self.label!r}, {len(self.deltas)} weights)"


def _restore(model: "Model", saved: Mapping[str, tuple[Tensor | None, Tensor]]) -> None:
    with torch.no_grad():
        for name, (keep, values) in saved.items():
            view = model.weight(name)
            if keep is None:
                view.copy_(values)
            else:
                view[keep] = values


HookFn = Callable[[Tensor, object], Tensor | None]


@dataclass(frozen=True)
class HookEdit(Edit):
    """Apply ``fn(activation, hook) -> new activation`` at one hook site while active.

    With an indexed site (``blocks.2.mlp.hook_post[17]``) ``fn`` receives only that unit's
    activations ``[batch, pos]`` and its return value replaces them.
    """

    site: Site | str
    """The hook site, e.g. ``blocks.3.hook_resid_post``."""
    fn: HookFn
    """The function applied to the activation."""
    label: str = "hook"
    """Name shown in reprs and tables."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "site", Site.parse(self.site) if isinstance(self.site, str) else self.site)

    def apply(self, model: "Model") -> EditHandle:
        site = model.check_site(self.site)
        if site.kind != "hook":
            raise ValueError(f"HookEdit needs an activation site, got {site}")
        fn = self.fn
        if site.index:
            unit = site.index[0]

            def hook(act: Tensor, hook) -> Tensor:
                if unit >= act.shape[-1]:
                    raise IndexError(f"{site}: unit {unit} out of range (the activation at {site.name} has shape {tuple(act.shape)})")
                out = act.clone()
                new = fn(act[..., unit], hook)
                out[..., unit] = act[..., unit] if new is None else new
                return out

        else:

            def hook(act: Tensor, hook) -> Tensor | None:
                return fn(act, hook)

        point = model.hook_point(site.name)
        point.add_hook(hook, dir="fwd")
        mine = next(h for h in reversed(point.fwd_hooks) if h.user_hook is hook)

        def undo() -> None:
            mine.hook.remove()
            if mine in point.fwd_hooks:
                point.fwd_hooks.remove(mine)

        return EditHandle(self, model, undo)

    def __repr__(self) -> str:
        return f"HookEdit({str(self.site)!r}, {self.label!r})"


@dataclass(frozen=True)
class Compose(Edit):
    """Several edits applied in order and reverted in reverse order."""

    edits: Sequence[Edit]

    def __post_init__(self) -> None:
        flat: list[Edit] = []
        for e in self.edits:
            if not isinstance(e, Edit):
                raise TypeError(f"Compose takes Edits, got {type(e).__name__}")
            flat.extend(e.edits if isinstance(e, Compose) else [e])
        object.__setattr__(self, "edits", tuple(flat))

    def apply(self, model: "Model") -> EditHandle:
        handles: list[EditHandle] = []
        try:
            for e in self.edits:
                handles.append(e.apply(model))
        except Exception:
            for h in reversed(handles):
                h.revert()
            raise

        def undo() -> None:
            for h in reversed(handles):
                h.revert()

        handle = EditHandle(self, model, undo)
        handle.parts = tuple(handles)
        return handle

    def __repr__(self) -> str:
        return f"Compose({list(self.edits)!r})"
