"""Which tokens a score counts: this project's convention, or the field's (TOFU / open-unlearning).

| protocol      | probabilities, losses, truth ratio, LOSS / zlib / reference MIA | Min-K%, Min-K%++, gradnorm, exact memorization, extraction strength | MIA text |
| ------------- | --------------------------------------------------------------- | ------------------------------------------------------------------- | -------- |
| ``mechunlearn`` | the answer's tokens                                           | the answer's tokens                                                  | ``"{prompt} {answer}"`` (bios-tiny's answers are one token) |
| ``tofu``      | the answer's tokens and the end-of-sequence token               | the answer's tokens (the last labelled token, EOS, dropped)          | the answer given the prompt |

TOFU's rows: open-unlearning appends EOS to every answer (``src/data/utils.py:113-114``),
scores every labelled token for probabilities and losses (``src/evals/metrics/utils.py:82-103``)
and drops the last labelled token for token-wise scores (``src/evals/metrics/utils.py:129-131``
and ``173-175``); its MIA data sets are QA sets whose labels are the answer
(``configs/data/datasets/TOFU_MIA.yaml``). Every metric row records the protocol it used
(column ``protocol``). A target selects one with ``Target.meta["protocol"]`` (the TOFU-layout
loaders set ``"tofu"``); a config's ``protocol`` field overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mechunlearn.core.registry import Registry

if TYPE_CHECKING:
    from mechunlearn.world.target import Target


@dataclass(frozen=True)
class ScoringProtocol:
    """Which tokens the scores of one item count."""

    name: str
    """The protocol's name (written in every row it produced)."""
    eos: bool
    """Probabilities and losses count the end-of-sequence token after the answer."""
    mia_scope: str
    """``full``: membership scores read ``"{prompt} {answer}"``; ``answer``: the answer given the prompt."""


PROTOCOLS: Registry[ScoringProtocol] = Registry("scoring protocol")
PROTOCOLS.add("mechunlearn", ScoringProtocol("mechunlearn", eos=False, mia_scope="full"))
PROTOCOLS.add("tofu", ScoringProtocol("tofu", eos=True, mia_scope="answer"))

DEFAULT_PROTOCOL = "mechunlearn"
"""The protocol of targets that name none (the built-in world's)."""


def protocol_for(target: "Target", name: str | None = None) -> ScoringProtocol:
    """The protocol ``name``, or (None) the target's ``meta["protocol"]``, or `DEFAULT_PROTOCOL`."""
    return PROTOCOLS.get(name or target.meta.get("protocol") or DEFAULT_PROTOCOL)
