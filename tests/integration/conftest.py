"""The real models, loaded once per test session and shared (tests must leave them as they
found them: edits go through `Edit.applied`, which reverts bit for bit)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2():
    from mechunlearn.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def gemma():
    from mechunlearn.models import load_model

    return load_model("gemma-3-270m")


@pytest.fixture(scope="module")
def small_bios_tiny():
    """The shipped small bios-tiny (40-person world) and its retain model for the 10% split."""
    from mechunlearn.models import load_model
    from mechunlearn.models.bios_tiny import BiosTinyRecipe

    recipe = BiosTinyRecipe().small()
    return load_model("bios-tiny", recipe=recipe), load_model("bios-tiny", recipe=recipe, retain_for=0.1)
