"""Models: the `Model` adapter, `load_model`, and the built-in models (bios-tiny, smollm2-135m)."""

from mechunlearn.models.load import MODELS, load_model
from mechunlearn.models.model import Model, WeightSpec

__all__ = ["MODELS", "Model", "WeightSpec", "load_model"]
