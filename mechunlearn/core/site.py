"""`Site`: the address of one model component, with a canonical string form that parses back.

| form                               | kind       | meaning                                       |
| ---------------------------------- | ---------- | --------------------------------------------- |
| ``blocks.3.mlp.W_out``             | ``param``  | a whole weight, in TransformerLens layout     |
| ``blocks.3.mlp.W_out[401]``        | ``param``  | a slice: value vector 401 of layer 3's MLP    |
| ``blocks.3.attn.W_Q[2]``           | ``param``  | head 2's query weights ``[d_model, d_head]``  |
| ``blocks.3.hook_resid_post``       | ``hook``   | an activation site                            |
| ``blocks.3.mlp.hook_post[17]``     | ``hook``   | one unit (last dimension) of an activation    |
| ``sae:blocks.3.hook_resid_post[412]`` | ``sae`` | latent 412 of the SAE attached at that hook    |
| ``codebook:blocks.3.hook_resid_post[9]`` | ``codebook`` | code 9 of the codebook at that hook   |

Parsing needs no model; :meth:`Model.check_site` validates a site against one.

>>> s = Site.parse("blocks.7.mlp.W_out[1162]")
>>> s.layer, s.index, str(s)
(7, (1162,), 'blocks.7.mlp.W_out[1162]')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

SiteKind = Literal["param", "hook", "sae", "codebook"]
DICTIONARY_KINDS = ("sae", "codebook")

_SITE_RE = re.compile(
    r"^(?:(?P<kind>sae|codebook):)?(?P<name>[A-Za-z_][A-Za-z0-9_.]*)(?:\[(?P<index>[^\]]*)\])?$"
)
_LAYER_RE = re.compile(r"(?:^|\.)blocks\.(\d+)\.")


@dataclass(frozen=True, order=True)
class Site:
    """Address of a weight (or slice of one), an activation, or a dictionary latent."""

    kind: SiteKind
    """``param`` (a weight), ``hook`` (an activation), ``sae`` or ``codebook`` (a latent)."""
    name: str
    """Weight name (``blocks.3.mlp.W_out``) or hook name (``blocks.3.hook_resid_post``)."""
    index: tuple[int, ...] = ()
    """Indices into the leading dimensions of a weight, or the unit/latent number."""

    def __post_init__(self) -> None:
        if self.kind not in ("param", "hook", "sae", "codebook"):
            raise ValueError(f"unknown site kind {self.kind!r}; use param, hook, sae or codebook")
        if any((not isinstance(i, int)) or i < 0 for i in self.index):
            raise ValueError(f"site indices must be non-negative integers, got {self.index!r}")
        if self.kind in DICTIONARY_KINDS and len(self.index) != 1:
            raise ValueError(f"a {self.kind} site needs exactly one latent index, e.g. {self.kind}:{self.name}[12]")
        if self.kind == "hook" and len(self.index) > 1:
            raise ValueError("a hook site takes at most one index (a unit of the last dimension)")

    @staticmethod
    def parse(text: str) -> "Site":
        """Parse the canonical string form (see the module docstring)."""
        if isinstance(text, Site):
            return text
        match = _SITE_RE.match(text.strip()) if isinstance(text, str) else None
        if match is None:
            raise ValueError(
                f"cannot parse site {text!r}; expected forms like 'blocks.3.mlp.W_out[401]', "
                "'blocks.3.hook_resid_post' or 'sae:blocks.3.hook_resid_post[412]'"
            )
        raw = match["index"]
        index: tuple[int, ...] = ()
        if raw is not None:
            try:
                index = tuple(int(part) for part in raw.split(","))
            except ValueError:
                raise ValueError(f"site index in {text!r} must be comma-separated integers") from None
        name = match["name"]
        kind = match["kind"] or ("hook" if is_hook_name(name) else "param")
        if match["kind"] and not is_hook_name(name):
            raise ValueError(f"a {kind} latent is attached at a hook site; {name!r} is not a hook name")
        return Site(kind, name, index)  # type: ignore[arg-type]

    def __str__(self) -> str:
        prefix = "" if self.kind in ("param", "hook") else f"{self.kind}:"
        suffix = f"[{','.join(map(str, self.index))}]" if self.index else ""
        return f"{prefix}{self.name}{suffix}"

    @property
    def layer(self) -> int | None:
        """The block number the site lives in, or ``None`` (embeddings, final norm, unembed)."""
        match = _LAYER_RE.search(self.name)
        return int(match.group(1)) if match else None

    @property
    def module(self) -> str:
        """The module family: ``attn``, ``mlp``, ``ln1`` …, ``resid`` for block hooks, or the top name."""
        parts = self.name.split(".")
        if parts[0] == "blocks" and len(parts) > 3:
            return parts[2]
        if parts[0] == "blocks":
            return "resid"
        return parts[0]

    def whole(self) -> "Site":
        """The same site without its index (the whole weight or activation)."""
        return Site(self.kind if self.kind in ("param", "hook") else "hook", self.name)

    def __repr__(self) -> str:
        return f"Site({str(self)!r})"


def is_hook_name(name: str) -> bool:
    """True for TransformerLens hook names (their last part starts with ``hook_``)."""
    return name.rsplit(".", 1)[-1].startswith("hook_")
