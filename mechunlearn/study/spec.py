"""Study files: frozen dataclasses read from YAML, validated with errors that name the bad key.

A study crosses models × targets × methods (each with a parameter grid) × seeds; every
combination is one `RunSpec`, keyed by the hash of its config (`RunSpec.run_id`).

```yaml
name: smoke                                   # required: names the output folder
description: what the study is for            # optional
imports: [my_project.study_methods]           # optional: modules that register more methods
models:
  - {name: bios-tiny, recipe: small}          # load_model name; recipe (bios-tiny): default | small
targets:
  - {source: world, forget_frac: 0.1, paraphrase: trained}
  - {source: file, path: tests/data/tofu, oracle: my_retain_model.gguf, models: [smollm2-135m]}   # your data
methods:
  - none                                      # a bare name takes the method's defaults
  - {name: ga, params: {steps: 20, lr: 1e-3}}
  - {name: npo, label: npo-sweep, sweep: {lr: [1e-4, 1e-3], beta: [0.1, 0.5]}}   # 4 runs
verifiers:
  - {name: behavior, params: {by: [paraphrase]}}
seeds: [0, 1]
executor: {name: local, workers: 2}           # optional: where runs execute (CLI flags override)
```

``params`` are fixed values, passed as they are (lists included); ``sweep`` maps a parameter to a
list of values and the grid over all of them is run. Every parameter a method, target source or
verifier does not declare is an error that lists the known ones. Numbers such as ``1e-3`` are read
as floats (plain YAML 1.1 would read them as strings).
"""

from __future__ import annotations

import importlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

from mechunlearn.core.result import config_hash
from mechunlearn.study.axes import ModelSpec, TargetSpec, short_value  # noqa: F401 (ModelSpec, TargetSpec re-exported)

RECIPES = ("default", "small")
DTYPES = ("float32", "bfloat16", "float16")


class StudyError(ValueError):
    """A study file (or study dict) is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class MethodSpec:
    """One method entry of a study file (before the sweep is expanded)."""

    name: str
    """Name in `mechunlearn.study.METHODS`."""
    label: str | None = None
    """Display name in tables and figures (default: the method name); swept values are appended."""
    params: dict[str, Any] = field(default_factory=dict)
    """Fixed parameters, passed as they are."""
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    """Parameter → list of values; every combination (grid) is run."""


@dataclass(frozen=True)
class VerifierSpec:
    """A verifier run on every edited model."""

    name: str
    """Name in `mechunlearn.study.VERIFIERS`."""
    params: dict[str, Any] = field(default_factory=dict)
    """The verifier's parameters (defaults filled in when the study is validated)."""


EXECUTOR_NAMES = ("local", "ray")


@dataclass(frozen=True)
class ExecutorSpec:
    """Where a study's runs execute (not part of any run's identity); the CLI's ``--executor``,
    ``--workers``, ``--address`` and ``--threads`` override it."""

    name: str = "local"
    """``local`` (this machine: in this process with one worker, else worker processes) or ``ray``."""
    workers: int = 1
    """Runs at once: worker processes (local) or Ray actors."""
    address: str | None = None
    """Ray only: the cluster's address (default ``$RAY_ADDRESS``, else a local Ray instance)."""
    threads: int | None = None
    """Torch threads per run (default: torch's in this process; 1 per worker process or actor)."""


@dataclass(frozen=True)
class RunSpec:
    """One run: a model, a target, a method with concrete parameters, a seed and the verifiers."""

    model: ModelSpec
    """The model to edit."""
    target: TargetSpec
    """The target, parameters resolved."""
    method: str
    """The registered method."""
    params: dict[str, Any]
    """Every method parameter, defaults filled in."""
    seed: int
    """Seed of the method and the verifiers."""
    verifiers: tuple[VerifierSpec, ...]
    """Verifiers, parameters resolved."""
    label: str = ""
    """Display name (not part of the run's identity)."""
    study: str = ""
    """Name of the study (not part of the run's identity)."""
    imports: tuple[str, ...] = ()
    """Modules imported before the run (where extra methods are registered)."""

    def config(self) -> dict[str, Any]:
        """Everything that determines the run's numbers (what `run_id` hashes)."""
        return {
            "model": self.model.identity(),
            "target": asdict(self.target),
            "method": self.method,
            "params": self.params,
            "seed": self.seed,
            "verifiers": [asdict(v) for v in self.verifiers],
        }

    @property
    def run_id(self) -> str:
        """The run's key in the results table: a hash of `config`."""
        return config_hash(self.config())


@dataclass(frozen=True)
class Study:
    """A validated study: the axes to cross and what to measure."""

    name: str
    """Name of the study; the default output folder is ``reports/<name>``."""
    models: tuple[ModelSpec, ...]
    """Models to edit."""
    targets: tuple[TargetSpec, ...]
    """Targets (forget splits, paraphrase sets, concepts), parameters resolved."""
    methods: tuple[MethodSpec, ...]
    """Methods with their fixed parameters and sweeps."""
    verifiers: tuple[VerifierSpec, ...] = (VerifierSpec("behavior"),)
    """Verifiers run on each edited model, parameters resolved."""
    seeds: tuple[int, ...] = (0,)
    """Seeds; every run is repeated once per seed."""
    description: str = ""
    """Free text shown in the report."""
    imports: tuple[str, ...] = ()
    """Modules imported before validation and in every worker (they may register methods)."""
    source: str = ""
    """The study file's text (shown in the report); empty when built from a dict."""
    executor: ExecutorSpec = ExecutorSpec()
    """Where the runs execute by default (`ExecutorSpec`)."""

    @property
    def uses_cuda(self) -> bool:
        """Whether any model runs on a CUDA device (Ray workers then ask for a GPU each)."""
        return any(m.device.startswith("cuda") for m in self.models)

    def runs(self) -> list[RunSpec]:
        """Every run, model-major (consecutive runs share a loaded model)."""
        from mechunlearn.study.registry import METHODS

        out = []
        for model, target, method in itertools.product(self.models, self.targets, self.methods):
            only = target.params.get("models")
            if only and model.name not in only:  # a target for some of the models (e.g. a file in one model's vocabulary)
                continue
            defaults = METHODS.get(method.name).params
            keys = list(method.sweep)
            for values in itertools.product(*(method.sweep[k] for k in keys)):
                chosen = dict(zip(keys, values))
                params = {**defaults, **method.params, **chosen}
                label = method.label or method.name
                if chosen:
                    label += " " + ",".join(f"{k}={short_value(v)}" for k, v in chosen.items())
                for seed in self.seeds:
                    out.append(RunSpec(model, target, method.name, params, seed, self.verifiers, label, self.name, self.imports))
        return out

    def to_dict(self) -> dict[str, Any]:
        """The resolved study as plain data (what the output folder records)."""
        data = asdict(self)
        data.pop("source")
        return data


# ---------------------------------------------------------------------------- reading


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-3`` as a float (YAML 1.1 wants a dot: ``1.0e-3``)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def load_study(path: str | Path) -> Study:
    """Read and validate a study file (YAML)."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as err:
        raise StudyError(f"{path}: not valid YAML: {err}") from None
    try:
        return study_from_dict(data, source=text)
    except StudyError as err:
        raise StudyError(f"{path}: {err}") from None


def study_from_dict(data: Any, *, source: str = "") -> Study:
    """Validate a study given as plain data (the parsed YAML)."""
    from mechunlearn.study.registry import METHODS, TARGETS, VERIFIERS

    data = _mapping(data, "the study")
    _known(data, "the study", [f.name for f in fields(Study) if f.name != "source"])
    for key in ("name", "models", "targets", "methods"):
        if key not in data:
            raise StudyError(f"the study needs a {key!r} key")
    name = _string(data["name"], "name")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise StudyError(f"name: {name!r} must be letters, digits, '_', '.' or '-' (it names a folder)")
    imports = tuple(_string(m, f"imports[{i}]") for i, m in enumerate(_list(data.get("imports", []), "imports")))
    for i, module in enumerate(imports):
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise StudyError(f"imports[{i}]: cannot import {module!r}: {err}") from None

    models = tuple(_model(m, f"models[{i}]") for i, m in enumerate(_list(data["models"], "models", nonempty=True)))
    targets = tuple(_target(t, f"targets[{i}]", TARGETS) for i, t in enumerate(_list(data["targets"], "targets", nonempty=True)))
    methods = tuple(_method(m, f"methods[{i}]", METHODS) for i, m in enumerate(_list(data["methods"], "methods", nonempty=True)))
    verifiers = tuple(_verifier(v, f"verifiers[{i}]", VERIFIERS) for i, v in enumerate(_list(data.get("verifiers", ["behavior"]), "verifiers", nonempty=True)))
    seeds = tuple(_list(data.get("seeds", [0]), "seeds", nonempty=True))
    for i, s in enumerate(seeds):
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise StudyError(f"seeds[{i}]: {s!r} is not a non-negative integer")
    if len(set(seeds)) != len(seeds):
        raise StudyError(f"seeds: {list(seeds)} repeats a seed")
    labels = [m.label or m.name for m in methods]
    clashes = sorted({label for label in labels if labels.count(label) > 1})
    if clashes:
        raise StudyError(f"methods: {clashes} name more than one entry; give each entry a distinct 'label'")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise StudyError(f"description: expected text, got {description!r}")
    executor = _executor(data.get("executor", {}) or {}, "executor")
    study = Study(name, models, targets, methods, verifiers, seeds, description, imports, source, executor)
    ids = [r.run_id for r in study.runs()]
    if len(set(ids)) != len(ids):
        raise StudyError("two entries give identical runs (same method, parameters, target, model and seed); remove the duplicate")
    return study


def _entry(raw: Any, where: str, cls: type, registry=None) -> tuple[dict, str]:
    """A list entry given as a bare name or a mapping with a ``name``: (mapping, name)."""
    if isinstance(raw, str):
        raw = {"name": raw}
    raw = _mapping(raw, where)
    _known(raw, where, [f.name for f in fields(cls)])
    known = f"; registered: {', '.join(registry.names())}" if registry is not None else ""
    if "name" not in raw:
        raise StudyError(f"{where}: needs a 'name'{known}")
    name = _string(raw["name"], f"{where}.name")
    if registry is not None and name not in registry:
        raise StudyError(f"{where}.name: unknown {registry.kind} {name!r}{known}")
    return raw, name


def _model(raw: Any, where: str) -> ModelSpec:
    raw, name = _entry(raw, where, ModelSpec)
    spec = ModelSpec(
        name,
        _string(raw.get("recipe", "default"), f"{where}.recipe"),
        _string(raw.get("device", "cpu"), f"{where}.device"),
        _string(raw.get("dtype", "float32"), f"{where}.dtype"),
    )
    if spec.dtype not in DTYPES:
        raise StudyError(f"{where}.dtype: {spec.dtype!r} is not one of {', '.join(DTYPES)}")
    if spec.device.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise StudyError(f"{where}.device: {spec.device!r} is not cpu, cuda, cuda:N or mps")
    if spec.recipe not in RECIPES:
        raise StudyError(f"{where}.recipe: {spec.recipe!r} is not one of {', '.join(RECIPES)}")
    if spec.recipe != "default" and spec.name != "bios-tiny" and not spec.name.startswith("bios-tiny-planted-"):
        raise StudyError(f"{where}.recipe: only bios-tiny (and its planted models) has recipes, not {spec.name!r}")
    return spec


def _target(raw: Any, where: str, registry) -> TargetSpec:
    raw = dict(_mapping(raw, where))
    source = _string(raw.pop("source", "world"), f"{where}.source")
    if source not in registry:
        raise StudyError(f"{where}.source: unknown target source {source!r}; known: {', '.join(registry.names())}")
    params = resolve_params(registry.get(source).params, raw, where)
    return TargetSpec(source, params)


def _method(raw: Any, where: str, registry) -> MethodSpec:
    raw, name = _entry(raw, where, MethodSpec, registry)
    where = f"{where} ({name})"
    defaults = registry.get(name).params
    params = _mapping(raw.get("params", {}) or {}, f"{where}.params")
    sweep = _mapping(raw.get("sweep", {}) or {}, f"{where}.sweep")
    resolve_params(defaults, params, f"{where}.params")
    for key, values in sweep.items():
        if key in params:
            raise StudyError(f"{where}: {key!r} is both in params and in sweep; keep one")
        if not isinstance(values, list) or not values:
            raise StudyError(f"{where}.sweep.{key}: expected a non-empty list of values, got {values!r}")
        for i, value in enumerate(values):
            resolve_params(defaults, {key: value}, f"{where}.sweep.{key}[{i}]")
        if len({json.dumps(v, sort_keys=True, default=str) for v in values}) != len(values):
            raise StudyError(f"{where}.sweep.{key}: {values} repeats a value")
    label = raw.get("label")
    return MethodSpec(name, None if label is None else _string(label, f"{where}.label"), dict(params), {k: list(v) for k, v in sweep.items()})


def _executor(raw: Any, where: str) -> ExecutorSpec:
    raw = _mapping(raw, where)
    _known(raw, where, [f.name for f in fields(ExecutorSpec)])
    name = _string(raw.get("name", "local"), f"{where}.name")
    if name not in EXECUTOR_NAMES:
        raise StudyError(f"{where}.name: {name!r} is not one of {', '.join(EXECUTOR_NAMES)}")
    counts = {}
    for key in ("workers", "threads"):
        value = raw.get(key, getattr(ExecutorSpec, key))
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise StudyError(f"{where}.{key}: {value!r} is not a positive integer")
        counts[key] = value
    address = raw.get("address")
    if address is not None:
        address = _string(address, f"{where}.address")
        if name != "ray":
            raise StudyError(f"{where}.address: only the ray executor connects to an address; set name: ray")
    return ExecutorSpec(name, counts["workers"], address, counts["threads"])


def _verifier(raw: Any, where: str, registry) -> VerifierSpec:
    raw, name = _entry(raw, where, VerifierSpec, registry)
    params = resolve_params(registry.get(name).params, _mapping(raw.get("params", {}) or {}, f"{where}.params"), f"{where} ({name}).params")
    return VerifierSpec(name, params)


def resolve_params(defaults: Mapping[str, Any], given: Mapping[str, Any], where: str) -> dict[str, Any]:
    """``defaults`` updated with ``given``; unknown keys and values of the wrong type raise `StudyError`."""
    out = dict(defaults)
    for key, value in given.items():
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise StudyError(f"{where}: unknown parameter {key!r}; known parameters: {known}")
        out[key] = _check_type(value, defaults[key], f"{where}.{key}")
    return out


def _check_type(value: Any, default: Any, where: str) -> Any:
    """Values must have the default's kind (an int is fine where a float is expected)."""
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, (int, float)):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if ok and isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float):
            ok = value.is_integer()
            value = int(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple)) or isinstance(value, str)
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok = True
    if not ok:
        raise StudyError(f"{where}: expected {type(default).__name__} like {default!r}, got {value!r} ({type(value).__name__})")
    return value


def _mapping(raw: Any, where: str) -> dict:
    if not isinstance(raw, dict):
        raise StudyError(f"{where}: expected a mapping (key: value), got {raw!r}")
    bad = [k for k in raw if not isinstance(k, str)]
    if bad:
        raise StudyError(f"{where}: keys must be strings, got {bad}")
    return raw


def _list(raw: Any, where: str, *, nonempty: bool = False) -> list:
    if not isinstance(raw, list):
        raise StudyError(f"{where}: expected a list, got {raw!r}")
    if nonempty and not raw:
        raise StudyError(f"{where}: must list at least one entry")
    return raw


def _string(raw: Any, where: str) -> str:
    if not isinstance(raw, str) or not raw:
        raise StudyError(f"{where}: expected a non-empty string, got {raw!r}")
    return raw


def _known(raw: Mapping, where: str, allowed: list[str]) -> None:
    unknown = [k for k in raw if k not in allowed]
    if unknown:
        raise StudyError(f"{where}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")


