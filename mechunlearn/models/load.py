"""`load_model(name)`: the built-in models and local Hugging Face directories."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from mechunlearn.core.registry import Registry
from mechunlearn.models.model import Model

MODELS: Registry[Callable[..., Model]] = Registry("model")


@MODELS.register("bios-tiny")
def _bios_tiny(*, retain_for: float | None = None, rebuild: bool = False, recipe=None) -> Model:
    from mechunlearn.models import bios_tiny

    return bios_tiny.load(recipe or bios_tiny.BiosTinyRecipe(), retain_for=retain_for, rebuild=rebuild)


@MODELS.register("smollm2-135m")
def _smollm2() -> Model:
    from mechunlearn.models.hf import load_smollm2

    return load_smollm2()


def load_model(name: str, **options) -> Model:
    """Load a model by name: ``bios-tiny`` (options ``retain_for=0.1``, ``rebuild``, ``recipe``),
    ``bios-tiny-retain10`` (the retain model of the 10% split), ``smollm2-135m``, or the path of a
    local Hugging Face model directory.

    >>> model = load_model("bios-tiny")          # trains and caches it on first use (minutes)
    >>> retain = load_model("bios-tiny", retain_for=0.1)
    """
    if name.startswith("bios-tiny-retain"):
        pct = name.removeprefix("bios-tiny-retain")
        if not pct.isdigit() or not 0 < int(pct) < 100:
            raise ValueError(f"bad retain model name {name!r}; use e.g. bios-tiny-retain10 for the 10% forget split")
        return MODELS.get("bios-tiny")(retain_for=int(pct) / 100, **options)
    if name in MODELS:
        return MODELS.get(name)(**options)
    if os.path.isdir(name):
        from mechunlearn.models.hf import load_hf_dir

        return load_hf_dir(Path(name), **options)
    raise ValueError(
        f"unknown model {name!r}: use one of {', '.join(MODELS.names())}, bios-tiny-retain10 (5, 1), "
        "or the path of a local Hugging Face model directory (nothing is downloaded)"
    )
