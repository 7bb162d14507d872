"""The study registries: `METHODS`, `VERIFIERS`, `TARGETS`, and the records they hold.

A **method** turns a model and a target into an `Edit` (optionally after a localizer step); a
**verifier** measures the edited model; a **target source** builds the `Target` from a model.
Each record declares its parameters with their defaults: study files may set or sweep exactly
those, and every run receives all of them (defaults filled in). See `mechunlearn.study` for how
to register your own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Callable, Mapping

from mechunlearn.core.registry import Registry

if TYPE_CHECKING:
    import pandas as pd
    import plotly.graph_objects as go

    from mechunlearn.core.edit import Edit
    from mechunlearn.core.result import Result
    from mechunlearn.core.selection import MaskSelection, Selection
    from mechunlearn.models.model import Model
    from mechunlearn.study.axes import ModelSpec, TargetSpec
    from mechunlearn.world.target import Target

Params = Mapping[str, Any]
FigureFn = Callable[["pd.DataFrame"], "go.Figure | None"]


@dataclass(frozen=True)
class StudyTarget:
    """The targets of one run: what the edit trains on and what the verifiers score."""

    edit: "Target"
    """Given to the localizer and the edit (e.g. the trained question templates only)."""
    verify: "Target"
    """Given to the verifiers (e.g. trained and held-out templates, a subsample of retain people)."""


@dataclass(frozen=True)
class RunContext:
    """What a run knows besides the model and the target; passed to verifiers (and to methods
    registered with ``context=True``)."""

    run_id: str
    """The run's key (hash of its config)."""
    method: str
    """The registered method name."""
    label: str
    """The display label (method plus swept values)."""
    seed: int
    """The run's seed."""
    model_spec: "ModelSpec"
    """The model spec of the run (to load related models, e.g. the retain model)."""
    target_spec: "TargetSpec"
    """The target spec of the run."""
    loader: Callable[..., "Model"]
    """``loader(model_spec, retain_for=None)``: a model from the worker's cache (never edit it)."""
    edit: "Edit | None" = None
    """The edit being verified (None inside the method itself)."""
    selection: "Selection | MaskSelection | None" = None
    """What the localizer step selected, if the method has one."""

    def has_retain_model(self) -> bool:
        """Whether the target names a retain model (a world split, or a file target's ``oracle``)."""
        return self.target_spec.params.get("oracle") is not None or self.target_spec.params.get("forget_frac") is not None

    def retain_model(self) -> "Model":
        """The retain model of this run's target (trained without the forget set): the target's
        ``oracle`` (a `load_model` name or path), else the world split's retain model."""
        from dataclasses import replace

        oracle = self.target_spec.params.get("oracle")
        if oracle is not None:
            return self.loader(replace(self.model_spec, name=str(oracle)))
        frac = self.target_spec.params.get("forget_frac")
        if frac is None:
            raise ValueError(f"target {self.target_spec.name!r} has no forget_frac and no oracle, so it has no retain model (set oracle: <model name or path>)")
        return self.loader(self.model_spec, retain_for=frac)


@dataclass(frozen=True)
class Method:
    """A study method: an optional localizer step, then an edit."""

    edit: Callable[..., "Edit"]
    """``edit(model, target, params, seed) -> Edit``; it also receives ``selection=`` when
    ``locate`` is set and ``ctx=`` (a `RunContext`) when ``context`` is true. It must leave the
    model as it found it (`unlearn` does)."""
    params: Params = field(default_factory=dict)
    """Every parameter the method accepts, with its default."""
    locate: Callable[..., "Selection | MaskSelection"] | None = None
    """``locate(model, target, params, seed) -> Selection | MaskSelection``, timed on its own."""
    diagnostics: Callable[..., "pd.DataFrame"] | None = None
    """``diagnostics(model, target, edit, selection) -> DataFrame`` with ``metric``/``value``
    columns (plus e.g. ``layer``), added to the results as verifier ``method``."""
    context: bool = False
    """Pass the `RunContext` to ``edit`` as ``ctx=``."""
    figures: tuple[FigureFn, ...] = ()
    """Report figures: each gets the study's rows of this method, returns a Figure or None."""
    description: str = ""
    """One line for listings and the report."""


@dataclass(frozen=True)
class Verifier:
    """A study verifier."""

    verify: Callable[..., "Result"]
    """``verify(model, target, params, ctx) -> Result``; the model is edited while it runs, and
    anything it changes must be reverted before it returns."""
    params: Params = field(default_factory=dict)
    """Every parameter the verifier accepts, with its default."""
    headline: tuple[str, ...] = ()
    """Metrics shown in the report's summary table (split-level rows without a layer)."""
    applies_edit: bool = False
    """The verifier applies ``ctx.edit`` itself (to compare edited with original weights in one
    call, like the evaluation card): the runner calls it with the model unedited."""
    figures: tuple[FigureFn, ...] = ()
    """Report figures: each gets the study's rows of this verifier, returns a Figure or None."""
    description: str = ""
    """One line for listings and the report."""


@dataclass(frozen=True)
class TargetSource:
    """Builds a run's targets from the loaded model."""

    build: Callable[["Model", Params], StudyTarget]
    """``build(model, params) -> StudyTarget``."""
    params: Params = field(default_factory=dict)
    """Every parameter the source accepts, with its default."""
    description: str = ""
    """One line for listings."""


METHODS: Registry[Method] = Registry("method")
VERIFIERS: Registry[Verifier] = Registry("verifier")
TARGETS: Registry[TargetSource] = Registry("target source")


# ---------------------------------------------------------------------------- unlearning helpers


def unlearn_params(loss: str, **extra: Any) -> dict[str, Any]:
    """The study parameters of an `unlearn` run with ``loss``: `UnlearnConfig`'s fields and the
    loss's options with their defaults (``seed`` comes from the run, ``loss`` from the method),
    updated with ``extra`` (other defaults, or the parameters of a localizer step)."""
    from mechunlearn.unlearn import LOSSES, UnlearnConfig

    cfg = UnlearnConfig()
    params = {f.name: getattr(cfg, f.name) for f in fields(UnlearnConfig) if f.name not in ("loss", "loss_options", "seed")}
    for f in fields(LOSSES.get(loss)):
        if f.init and f.name != "seed":
            params[f.name] = f.default
    params.update(extra)
    return params


def unlearn_edit(loss: str) -> Callable[..., "Edit"]:
    """An edit function running `unlearn` with ``loss``: params split into `UnlearnConfig`
    fields and loss options; a `MaskSelection` from the localizer step becomes the mask."""

    def edit(model: "Model", target: "Target", params: Params, seed: int, selection=None) -> "Edit":
        from mechunlearn.core.selection import MaskSelection
        from mechunlearn.unlearn import LOSSES, UnlearnConfig, unlearn

        config_keys = {f.name for f in fields(UnlearnConfig)}
        loss_keys = {f.name for f in fields(LOSSES.get(loss)) if f.init}
        options = {k: v for k, v in params.items() if k in loss_keys and k not in config_keys}
        if "seed" in loss_keys:
            options["seed"] = seed
        config = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items() if k in config_keys}
        cfg = UnlearnConfig(loss=loss, loss_options=options, seed=seed, **config)
        if selection is not None and not isinstance(selection, MaskSelection):
            raise TypeError(f"unlearn needs a MaskSelection from the localizer step, got {type(selection).__name__}")
        return unlearn(model, target, cfg, mask=selection)

    edit.__name__ = f"unlearn_{loss}"
    edit.__doc__ = f"`unlearn` with the {loss!r} loss (under the localizer's mask, if any)."
    return edit
