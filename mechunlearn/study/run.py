"""One run, in whichever process executes it: locate → edit → verify → revert, as one table.

`execute_run` never raises for a failing run (``Exception``): it returns a `RunOutcome` with the
error and traceback, so the other runs go on. ``KeyboardInterrupt`` propagates. After every run
the model's weights hash and hook count are checked against the pristine model; a run that left
the model changed fails and the model is reloaded for the next run.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import random
import socket
import time
import traceback
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from mechunlearn.study.registry import METHODS, TARGETS, VERIFIERS, RunContext, StudyTarget
from mechunlearn.study.spec import ModelSpec, RunSpec, TargetSpec
from mechunlearn.study.store import normalise

if TYPE_CHECKING:
    from mechunlearn.core.selection import MaskSelection, Selection
    from mechunlearn.models.model import Model

log = logging.getLogger(__name__)

TIMING_METRICS = ("seconds_locate", "seconds_edit", "seconds_verify", "seconds_total")
"""Metrics of the ``runner`` rows every finished run has."""


@dataclass(frozen=True)
class RunOutcome:
    """What a run sends back: its rows (all tagged with the run's key) and its status."""

    run_id: str
    """The run's key (hash of its config)."""
    status: str
    """``ok`` or ``error``."""
    frame: pd.DataFrame
    """Long table: verifier rows plus ``runner`` timing rows (ok), or one error row."""
    seconds: float
    """Wall time of the run."""
    error: str | None = None
    """``Type: message`` of a failed run."""


class ModelCache:
    """A worker's loaded models (with their pristine weight hashes) and built targets."""

    def __init__(self) -> None:
        self._models: dict[tuple, tuple["Model", str, int]] = {}
        self._targets: dict[tuple, StudyTarget] = {}
        self._failed: dict[tuple, str] = {}

    @staticmethod
    def _key(spec: ModelSpec, retain_for: float | None) -> tuple:
        return (spec.name, spec.recipe, retain_for)

    def model(self, spec: ModelSpec, retain_for: float | None = None) -> "Model":
        """The model of ``spec`` (its retain model with ``retain_for``), loaded once."""
        key = self._key(spec, retain_for)
        if key in self._failed:  # a failed build is not retried for every run of the study
            raise RuntimeError(f"loading {spec.name} (retain_for={retain_for}) failed earlier in this worker: {self._failed[key]}")
        if key not in self._models:
            from mechunlearn.models.load import load_model

            options = spec.load_options()
            if retain_for is not None:
                options["retain_for"] = retain_for
            try:
                model = load_model(spec.name, **options)
            except Exception as err:
                self._failed[key] = f"{type(err).__name__}: {err}"
                raise
            self._models[key] = (model, model.weights_hash(), model.hook_count())
        return self._models[key][0]

    def check_pristine(self, spec: ModelSpec) -> None:
        """Raise (and forget the model) if its weights or hooks differ from when it was loaded."""
        key = self._key(spec, None)
        model, weights, hooks = self._models[key]
        changed = []
        if model.weights_hash() != weights:
            changed.append("weights")
        if model.hook_count() != hooks:
            changed.append(f"hooks ({hooks} → {model.hook_count()})")
        if changed:
            del self._models[key]
            self._targets = {k: v for k, v in self._targets.items() if k[0] != key}
            raise RuntimeError(
                f"the run left the model changed ({', '.join(changed)}): an edit, method or verifier did not revert "
                "what it did; the model will be reloaded for the next run"
            )

    def target(self, spec: ModelSpec, target: TargetSpec) -> StudyTarget:
        """The targets of ``target`` for the model of ``spec``, built once."""
        key = (self._key(spec, None), json.dumps(asdict(target), sort_keys=True, default=str))
        if key not in self._targets:
            built = TARGETS.get(target.source).build(self.model(spec), target.params)
            if not isinstance(built, StudyTarget):
                raise TypeError(f"target source {target.source!r} returned {type(built).__name__}, not a StudyTarget")
            self._targets[key] = built
        return self._targets[key]


def this_worker() -> str:
    """Names the process running a run: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def execute_run(run: RunSpec, cache: ModelCache, worker: str | None = None) -> RunOutcome:
    """Run one `RunSpec` with the models of ``cache``; failures come back as error outcomes.
    Every row records ``worker``, what ran it (default `this_worker`; a Ray node's id on Ray)."""
    start = time.perf_counter()
    worker = worker or this_worker()
    try:
        frame = _execute(run, cache)
    except Exception as err:  # noqa: BLE001 - a failed run is recorded, the study goes on
        return error_outcome(run, err, traceback.format_exc(), time.perf_counter() - start, worker)
    return RunOutcome(run.run_id, "ok", _tag(frame, run, "ok", worker), time.perf_counter() - start)


def error_outcome(run: RunSpec, err: BaseException, trace: str, seconds: float, worker: str | None = None) -> RunOutcome:
    """The outcome of a failed run: one row with the error and its traceback."""
    message = f"{type(err).__name__}: {err}"
    log.warning("run %s (%s) failed: %s", run.run_id, run.label, message)
    row = pd.DataFrame([{"metric": pd.NA, "value": float("nan"), "error": message, "traceback": trace}])
    return RunOutcome(run.run_id, "error", _tag(row, run, "error", worker), seconds, message)


def _execute(run: RunSpec, cache: ModelCache) -> pd.DataFrame:
    for module in run.imports:
        importlib.import_module(module)
    method = METHODS.get(run.method)
    verifiers = [(spec, VERIFIERS.get(spec.name)) for spec in run.verifiers]
    model = cache.model(run.model)
    targets = cache.target(run.model, run.target)
    _seed_everything(run.seed)
    ctx = RunContext(run.run_id, run.method, run.label, run.seed, run.model, run.target, cache.model)
    frames: list[pd.DataFrame] = []
    try:
        t0 = time.perf_counter()
        selection = method.locate(model, targets.edit, run.params, run.seed) if method.locate else None
        t1 = time.perf_counter()
        kwargs: dict[str, Any] = {}
        if method.locate:
            kwargs["selection"] = selection
        if method.context:
            kwargs["ctx"] = ctx
        edit = method.edit(model, targets.edit, run.params, run.seed, **kwargs)
        t2 = time.perf_counter()
        if selection is not None:
            frames.append(_selection_rows(selection))
        if method.diagnostics is not None:
            frames.append(method.diagnostics(model, targets.edit, edit, selection).assign(verifier="method"))
        ctx = replace(ctx, edit=edit, selection=selection)
        for spec, verifier in verifiers:
            if verifier.applies_edit:
                result = verifier.verify(model, targets.verify, spec.params, ctx)
            else:
                with edit.applied(model):
                    result = verifier.verify(model, targets.verify, spec.params, ctx)
            frames.append(result.frame.assign(verifier=spec.name))
        t3 = time.perf_counter()
    finally:
        cache.check_pristine(run.model)
    times = {"seconds_locate": t1 - t0, "seconds_edit": t2 - t1, "seconds_verify": t3 - t2, "seconds_total": t3 - t0}
    frames.append(pd.DataFrame({"verifier": "runner", "metric": list(times), "value": list(times.values())}))
    # normalised here so that a verifier's malformed rows fail its run, not the table write
    return normalise(pd.concat([f for f in frames if len(f)], ignore_index=True))


def _selection_rows(selection: "Selection | MaskSelection") -> pd.DataFrame:
    """Size of what the localizer step chose (count; density for masks)."""
    from mechunlearn.core.selection import MaskSelection

    rows = [("selected_count", float(len(selection)))]
    if isinstance(selection, MaskSelection):
        rows.append(("selected_density", float(selection.density)))
    return pd.DataFrame({"verifier": "locate", "metric": [r[0] for r in rows], "value": [r[1] for r in rows]})


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def _tag(frame: pd.DataFrame, run: RunSpec, status: str, worker: str | None) -> pd.DataFrame:
    """Stamp every row with the run's identity (these columns win over a verifier's own)."""
    frame = frame.copy()
    model = run.model.name if run.model.recipe == "default" else f"{run.model.name}:{run.model.recipe}"
    tags = {
        "run_id": run.run_id,
        "study": run.study,
        "model": model,
        "target": run.target.name,
        "method": run.method,
        "label": run.label,
        "params": json.dumps(run.params, sort_keys=True, default=str),
        "seed": run.seed,
        "status": status,
        "worker": worker if worker is not None else pd.NA,
    }
    for key, value in tags.items():
        frame[key] = value
    for col in ("verifier", "split", "layer", "error", "traceback"):
        if col not in frame.columns:
            frame[col] = pd.NA
    front = [*tags, "verifier", "metric", "split", "layer", "value"]
    return frame[front + [c for c in frame.columns if c not in front]]
