"""Shared fixtures for the world tests: built once per session, never mutated."""

import pytest

from mechunlearn.world import World, WorldConfig, build_tokenizer


@pytest.fixture(scope="session")
def world() -> World:
    return World(WorldConfig())


@pytest.fixture(scope="session")
def tokenizer(world):
    return build_tokenizer(world)
