"""Scoring protocols: a target picks one, a config overrides it, unknown names are errors."""

import pytest

from mechunlearn.verify.mia import MIAConfig
from mechunlearn.verify.protocol import protocol_for
from mechunlearn.verify.tofu import TofuConfig
from mechunlearn.world.target import Item, Target


def _target(**meta) -> Target:
    return Target("t", forget=(Item("q ?", "a"),), retain=(), meta=meta)


def test_the_target_selects_and_the_config_overrides():
    assert protocol_for(_target()).name == "mechunlearn"  # the built-in world's default
    tofu = protocol_for(_target(protocol="tofu"))
    assert (tofu.name, tofu.eos, tofu.mia_scope) == ("tofu", True, "answer")
    assert protocol_for(_target(protocol="tofu"), "mechunlearn").eos is False
    with pytest.raises(KeyError, match="unknown scoring protocol 'muse'"):
        protocol_for(_target(protocol="muse"))
    with pytest.raises(KeyError, match="scoring protocol"):
        MIAConfig(protocol="muse")
    with pytest.raises(KeyError, match="scoring protocol"):
        TofuConfig(protocol="muse")
