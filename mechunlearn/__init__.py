"""mechunlearn: mechanistic and parametric analysis of unlearning — removed vs hidden knowledge."""

__version__ = "0.1.0"
