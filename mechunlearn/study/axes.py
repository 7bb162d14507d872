"""The axes of a study run that other study modules name: which model, which target.

Kept apart from `mechunlearn.study.spec` (which parses study files against the registries) so
that `mechunlearn.study.registry` can name them without importing the parser.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ModelSpec:
    """Which model a run edits."""

    name: str
    """A `load_model` name: ``bios-tiny``, ``smollm2-135m``, ``gemma-3-270m``, a local Hugging
    Face directory or a ``.gguf`` file."""
    recipe: str = "default"
    """bios-tiny only: ``default`` (the full world) or ``small`` (40 people, builds in minutes)."""
    device: str = "cpu"
    """Where the model runs (``cpu``, ``cuda``, ``cuda:1`` …); Ray workers ask for a GPU each
    when a study's models run on CUDA."""
    dtype: str = "float32"
    """Weight dtype: ``float32``, ``bfloat16`` or ``float16``."""

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments for `load_model` (the recipe object for bios-tiny, device, dtype)."""
        import torch

        options: dict[str, Any] = {}
        if self.device != "cpu":
            options["device"] = self.device
        if self.dtype != "float32":
            options["dtype"] = getattr(torch, self.dtype)
        if self.recipe == "default":
            return options
        from mechunlearn.models.bios_tiny import BiosTinyRecipe

        return {"recipe": BiosTinyRecipe().small(), **options}

    def identity(self) -> dict[str, Any]:
        """What names the model in a run's key: the defaults of ``device`` / ``dtype`` are left
        out, so run keys from before those fields existed stay the same."""
        return {k: v for k, v in asdict(self).items() if k in ("name", "recipe") or v != getattr(ModelSpec, k)}


@dataclass(frozen=True)
class TargetSpec:
    """What to forget and keep: a registered target source and its parameters."""

    source: str = "world"
    """Name in `mechunlearn.study.TARGETS` (``world``: a forget split of the model's world)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The source's parameters, every one resolved (defaults filled in)."""

    @property
    def name(self) -> str:
        """Short readable name, e.g. ``world:forget_frac=0.1,paraphrase=trained``."""
        return f"{self.source}:" + ",".join(f"{k}={short_value(v)}" for k, v in self.params.items() if not k.startswith("eval_") and not k.startswith("max_"))


def short_value(value: Any) -> str:
    """A parameter value as a short label (lists and dicts as JSON, floats in %g)."""
    return json.dumps(value, default=str) if isinstance(value, (list, dict)) else f"{value:g}" if isinstance(value, float) else str(value)
