"""Causal tracing (Meng et al. 2022) and attribution patching, its first-order approximation.

Causal tracing asks where the model's hidden states carry a fact: run the prompt clean, run it
again with Gaussian noise added to the subject tokens' embeddings (the fact is gone), then
restore one hidden state — one (component, layer, token) — from the clean run inside the noisy
run and measure how much of the answer's probability comes back. Attribution patching
(Nanda 2023, "Attribution Patching") replaces every restoration by its linear estimate from a
single forward and backward pass of the noisy run:

    p(restored at a) − p(corrupt)  ≈  (a_clean − a_corrupt) · ∂p/∂a |corrupt

| function / class        | what it gives                                                           |
| ----------------------- | ----------------------------------------------------------------------- |
| `causal_trace`          | restoration effects, one forward per (component, layer) over every token |
| `attribution_patch`     | the same table from one forward + backward per batch                     |
| `layer_scores`          | per-layer scores of one component (at one token role, or the max)        |
| `CausalTracing`, `AttributionPatching` | localizers (``causal_tracing``, ``attribution_patching``): a `Selection` of layers' MLP / attention weights |
| `mean_ablation`         | an `Edit` replacing activations with their mean over prompts             |

Both tables have the columns ``method, component, layer, position, value, p_clean, p_corrupt,
n_items``: ``component`` is ``resid`` (``blocks.l.hook_resid_post``), ``mlp``
(``blocks.l.hook_mlp_out``) or ``attn`` (``blocks.l.hook_attn_out``); ``position`` is the token's
role, as in Meng et al.'s figures: ``subject_first``, ``subject_middle``, ``subject_last``,
``further`` (after the subject, before the last token), ``last`` (the prompt's last token; a
subject that ends the prompt is ``subject_last``). Tokens before the subject are the same in both
runs, so restoring them does nothing: they are left out. ``value`` is the mean over items, noise
samples and the role's tokens of p(restored) − p(corrupt) (tracing) or of its linear estimate
(patching); ``p_clean`` / ``p_corrupt`` are the mean answer probabilities of the two runs (divide
by their difference for Meng et al.'s normalised effect). The answer's probability is that of
its first token after the prompt. Restoration is of one layer at a time (Meng et al. also restore
windows of 10 layers for MLP and attention; on small models one layer is the natural unit).

>>> table = causal_trace(model, target.forget)
>>> layer_scores(table, component="mlp").idxmax()          # the layer whose MLP matters most
>>> CausalTracing().locate(model, target).top(1)           # the same as a Selection
>>> AttributionPatching().locate(model, target)            # the cheap estimate of it
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, ClassVar, Sequence

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.edit import Compose, Edit, HookEdit
from mechunlearn.core.selection import Selection
from mechunlearn.core.site import Site
from mechunlearn.locate.registry import LOCALIZERS
from mechunlearn.models.activations import activation_stats
from mechunlearn.models.text import encode_pair
from mechunlearn.models.tokens import pad

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item, Target

log = logging.getLogger(__name__)

COMPONENTS = {"resid": "hook_resid_post", "mlp": "hook_mlp_out", "attn": "hook_attn_out"}
"""Traced components and the hook of each (``blocks.{layer}.<hook>``)."""
ROLES = ("subject_first", "subject_middle", "subject_last", "further", "last")
"""Token roles of the table's ``position`` column, in prompt order."""
COLUMNS = ["method", "component", "layer", "position", "value", "p_clean", "p_corrupt", "n_items"]
WEIGHT_OF = {"mlp": "mlp.W_out", "attn": "attn.W_O"}
"""The weight a component's score points to in a localizer's `Selection`."""


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class _Prompts:
    """Token batch of the items' prompts, their subject spans and answers' first tokens."""

    tokens: Tensor  # [n, pos], right padded
    lengths: Tensor  # [n]
    first: Tensor  # [n] the subject's first token
    last: Tensor  # [n] the subject's last token
    answer: Tensor  # [n] the answer's first token
    role: Tensor  # [n, pos] index into ROLES, -1 where not traced (before the subject, padding)


def _prompts(model: "Model", items: Sequence["Item"]) -> _Prompts:
    if not items:
        raise ValueError("no items to trace; give forget items with a prompt, an answer and a subject")
    bos = [model.bos_token_id] if model.prepend_bos else []
    rows, firsts, lasts, answers = [], [], [], []
    for it in items:
        at = it.prompt.find(it.subject) if it.subject else -1
        if at < 0:
            raise ValueError(
                f"causal tracing corrupts the subject's tokens, but item {it.prompt!r} has subject {it.subject!r}, "
                "which does not occur in its prompt; give items whose subject is part of the prompt"
            )
        prompt, answer = encode_pair(model, it.prompt, it.answer)
        head = model.encode(it.prompt[:at].rstrip()) if at else []
        upto = model.encode(it.prompt[: at + len(it.subject)])
        if prompt[: len(upto)] != upto or len(upto) <= len(head):
            raise ValueError(f"the tokenizer merges the subject {it.subject!r} with its neighbours in {it.prompt!r}")
        rows.append(bos + prompt)
        firsts.append(len(bos) + len(head))
        lasts.append(len(bos) + len(upto) - 1)
        answers.append(answer[0])
    tokens, _ = pad(rows, model.pad_token_id, model.n_ctx)
    lengths = torch.tensor([len(r) for r in rows])
    first, last = torch.tensor(firsts), torch.tensor(lasts)
    pos = torch.arange(tokens.shape[1])[None]
    role = torch.full(tokens.shape, -1, dtype=torch.long)
    role[(pos > last[:, None]) & (pos < lengths[:, None] - 1)] = ROLES.index("further")
    role[pos == lengths[:, None] - 1] = ROLES.index("last")
    role[(pos > first[:, None]) & (pos < last[:, None])] = ROLES.index("subject_middle")
    role[pos == first[:, None]] = ROLES.index("subject_first")
    role[pos == last[:, None]] = ROLES.index("subject_last")
    return _Prompts(tokens, lengths, first, last, torch.tensor(answers), role)


def _noise(model: "Model", p: _Prompts, scale: float, samples: int, seed: int) -> Tensor:
    """Gaussian noise on the subject tokens' embeddings, ``scale`` × the embedding's std,
    ``samples`` draws stacked along the batch: ``[samples * n, pos, d_model]``."""
    std = float(model.weight("embed.W_E").detach().float().std())
    gen = torch.Generator().manual_seed(seed)
    n, width = p.tokens.shape
    noise = torch.randn(samples, n, width, model.d_model, generator=gen) * (scale * std)
    pos = torch.arange(width)[None]
    subject = (pos >= p.first[:, None]) & (pos <= p.last[:, None])
    return (noise * subject[None, :, :, None]).reshape(samples * n, width, model.d_model)


def _answer_prob(logits: Tensor, lengths: Tensor, answer: Tensor) -> Tensor:
    rows = torch.arange(logits.shape[0])
    last = logits[rows, lengths.to(logits.device) - 1].float()
    return torch.softmax(last, -1)[rows, answer.to(logits.device)]


def _corrupt(noise: Tensor, *, grad: bool = False) -> HookEdit:
    def add(act, hook):
        out = act + noise.to(act)
        return out.detach().requires_grad_(True) if grad else out

    return HookEdit("hook_embed", add, label="corrupt_subject")


def _sites(model: "Model", components: Sequence[str]) -> list[tuple[str, int, str]]:
    return [(c, l, f"blocks.{l}.{COMPONENTS[c]}") for c in components for l in range(model.n_layers)]


def _table(method: str, value: Tensor, role: Tensor, sites, p_clean: Tensor, p_corrupt: Tensor, n_items: int) -> pd.DataFrame:
    """Mean of ``value`` ``[site, rows, pos]`` per site and token role (``role`` ``[rows, pos]``)."""
    rows = []
    for r, name in enumerate(ROLES):
        at = role == r
        if not at.any():
            continue
        means = (value * at[None]).sum((1, 2)) / at.sum()
        for (component, layer, _), v in zip(sites, means.tolist()):
            rows.append({"method": method, "component": component, "layer": layer, "position": name, "value": v})
    frame = pd.DataFrame(rows, columns=COLUMNS[:5])
    frame = frame.assign(p_clean=float(p_clean.mean()), p_corrupt=float(p_corrupt.mean()), n_items=n_items)
    frame["position"] = pd.Categorical(frame["position"], categories=ROLES, ordered=True)
    return frame.sort_values(["component", "layer", "position"]).reset_index(drop=True)[COLUMNS]


def _check(components: Sequence[str], samples: int, noise: float) -> tuple[str, ...]:
    components = tuple(components)
    bad = [c for c in components if c not in COMPONENTS]
    if bad or not components:
        raise ValueError(f"components must be some of {list(COMPONENTS)}, got {list(components)}")
    if samples < 1 or not noise > 0:
        raise ValueError(f"need samples >= 1 and noise > 0, got samples={samples}, noise={noise}")
    return components


# --------------------------------------------------------------------------- the two tables


@torch.no_grad()
def causal_trace(
    model: "Model",
    items: Sequence["Item"],
    *,
    components: Sequence[str] = ("resid", "mlp", "attn"),
    noise: float = 3.0,
    samples: int = 3,
    batch_size: int = 256,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Restoration effects of every (component, layer, token role) (see the module docstring).

    One forward of the noisy batch per (component, layer), with every traced token of every
    item and noise sample as its own row (chunked by ``batch_size`` rows). ``noise``: the noise's
    standard deviation in multiples of the token embedding's (Meng et al. use 3σ of the subject
    embeddings); ``samples``: noise draws per item.
    """
    components = _check(components, samples, noise)
    p = _prompts(model, items)
    sites = _sites(model, components)
    logits, clean = model.run_with_cache(p.tokens, [s for *_, s in sites])
    p_clean = _answer_prob(logits, p.lengths, p.answer)
    eps = _noise(model, p, noise, samples, seed)
    tokens, lengths, answer = p.tokens.repeat(samples, 1), p.lengths.repeat(samples), p.answer.repeat(samples)
    with _corrupt(eps).applied(model):
        p_corrupt = _answer_prob(model.forward(tokens), lengths, answer)
    role = p.role.repeat(samples, 1)
    row, pos = (role >= 0).nonzero(as_tuple=True)  # one restoration per traced token
    effect = torch.zeros(len(sites), *role.shape)
    bar = tqdm(total=len(sites) * len(row), desc="causal trace", unit="run", leave=False, disable=not progress)
    for s, (_, _, name) in enumerate(sites):
        for start in range(0, len(row), batch_size):
            r, t = row[start : start + batch_size], pos[start : start + batch_size]
            source = clean[name][r % len(p.tokens), t]
            k = torch.arange(len(r))

            def restore(act, hook, t=t, k=k, source=source):
                act = act.clone()
                act[k, t] = source.to(act)
                return act

            with (_corrupt(eps[r]) + HookEdit(name, restore, label="restore")).applied(model):
                restored = _answer_prob(model.forward(tokens[r]), lengths[r], answer[r])
            effect[s, r, t] = (restored - p_corrupt[r]).cpu().float()
            bar.update(len(r))
    bar.close()
    return _table("causal_tracing", effect, role, sites, p_clean, p_corrupt, len(items))


def attribution_patch(
    model: "Model",
    items: Sequence["Item"],
    *,
    components: Sequence[str] = ("resid", "mlp", "attn"),
    noise: float = 3.0,
    samples: int = 3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Attribution patching: ``(a_clean − a_corrupt) · ∂p(answer)/∂a`` at the noisy run, for every
    (component, layer, token) at once from one forward + backward per batch of ``batch_size``
    rows (items × noise samples). Same noise (same ``seed``) and table as `causal_trace`."""
    components = _check(components, samples, noise)
    p = _prompts(model, items)
    sites = _sites(model, components)
    names = [s for *_, s in sites]
    with torch.no_grad():
        logits, clean = model.run_with_cache(p.tokens, names)
    p_clean = _answer_prob(logits, p.lengths, p.answer)
    eps = _noise(model, p, noise, samples, seed)
    n = len(p.tokens)
    role = p.role.repeat(samples, 1)
    score = torch.zeros(len(sites), *role.shape)
    p_corrupt = torch.zeros(len(role))
    starts = range(0, len(role), batch_size)
    for start in tqdm(starts, desc="attribution patching", unit="batch", leave=False, disable=not progress):
        r = torch.arange(start, min(start + batch_size, len(role)))
        kept: dict[str, Tensor] = {}

        def keeper(name):
            def keep(act, hook):
                act.retain_grad()
                kept[name] = act

            return keep

        recorders = [HookEdit(name, keeper(name), label="grad") for name in names]
        with torch.enable_grad(), Compose([_corrupt(eps[r], grad=True), *recorders]).applied(model):
            prob = _answer_prob(model.forward(p.tokens[r % n]), p.lengths[r % n], p.answer[r % n])
            prob.sum().backward()
        p_corrupt[r] = prob.detach().cpu().float()
        for s, name in enumerate(names):
            act = kept[name]
            if act.grad is None:
                raise RuntimeError(f"no gradient reached {name}; is it on the path to the logits?")
            diff = clean[name][r % n].to(act) - act.detach()
            score[s, r] = (diff * act.grad).sum(-1).cpu().float()
    return _table("attribution_patching", score, role, sites, p_clean, p_corrupt, len(items))


def layer_scores(table: pd.DataFrame, *, component: str = "mlp", position: str = "max") -> pd.Series:
    """One score per layer for ``component``: the ``value`` at a token role, or with
    ``position="max"`` the largest over the roles. Indexed by layer, named after the method."""
    need = set(COLUMNS) - {"p_clean", "p_corrupt", "n_items"}
    if not need <= set(table.columns):
        raise ValueError(f"layer_scores needs a causal_trace / attribution_patch table with columns {sorted(need)}")
    sub = table[table["component"] == component]
    if sub.empty:
        raise ValueError(f"no rows for component {component!r}; the table has {sorted(table['component'].unique())}")
    if position == "max":
        scores = sub.groupby("layer")["value"].max()
    elif position in ROLES:
        sub = sub[sub["position"] == position]
        if sub.empty:
            raise ValueError(f"no token has role {position!r} in these prompts")
        scores = sub.set_index("layer")["value"]
    else:
        raise ValueError(f"position must be 'max' or one of {ROLES}, got {position!r}")
    scores = scores.sort_index().astype(float)
    scores.name = str(table["method"].iloc[0])
    return scores


def best_layers(scores: pd.Series, n: int) -> list[int]:
    """The ``n`` layers with the highest scores (ties: the earlier layer), sorted."""
    if not 1 <= n <= len(scores):
        raise ValueError(f"asked for {n} layers but there are scores for {len(scores)}")
    return sorted(int(l) for l in sorted(scores.index, key=lambda l: (-scores[l], l))[:n])


# --------------------------------------------------------------------------- localizers


@dataclass(frozen=True)
class Tracing:
    """Shared settings of the tracing localizers; ``locate`` scores each layer's components."""

    components: tuple[str, ...] = ("mlp", "attn")
    """Components to score: ``mlp`` (site ``blocks.l.mlp.W_out``), ``attn`` (``blocks.l.attn.W_O``),
    ``resid`` (``blocks.l.hook_resid_post``)."""
    position: str = "max"
    """Token role whose value scores a layer (see `ROLES`), or ``max`` over them."""
    split: str = "forget"
    """Items traced: ``forget`` (where the fact to unlearn is stored) or ``retain``."""
    max_items: int | None = 64
    """At most this many items (a seeded random subset; ``None``: all)."""
    noise: float = 3.0
    """Noise std on the subject embeddings, in multiples of the token embedding's std."""
    samples: int = 3
    """Noise draws per item."""
    batch_size: int = 64
    """Rows per forward (tracing: restorations; patching: items × samples per forward+backward)."""
    seed: int = 0
    """Seed of the noise and of the item subset."""

    name: ClassVar[str] = "tracing"

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", _check(self.components, self.samples, self.noise))
        if self.position != "max" and self.position not in ROLES:
            raise ValueError(f"position must be 'max' or one of {ROLES}, got {self.position!r}")
        if self.split not in ("forget", "retain"):
            raise ValueError(f"split must be 'forget' or 'retain', got {self.split!r}")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError(f"max_items must be >= 1 or None, got {self.max_items}")

    def items(self, target: "Target") -> list["Item"]:
        """The traced items: the split, or a seeded subset of ``max_items`` of it."""
        items = list(target.split(self.split))
        if self.max_items is not None and len(items) > self.max_items:
            keep = np.random.default_rng(self.seed).choice(len(items), self.max_items, replace=False)
            items = [items[i] for i in sorted(keep)]
        return items

    def table(self, model: "Model", target: "Target", *, progress: bool = True) -> pd.DataFrame:
        """The method's per-(component, layer, position) table."""
        raise NotImplementedError

    def locate(self, model: "Model", target: "Target", *, table: pd.DataFrame | None = None, progress: bool = True) -> Selection:
        """Each layer's components as a `Selection` scored by `layer_scores` (extras: component,
        position, the role the score was read at)."""
        table = self.table(model, target, progress=progress) if table is None else table
        sites, scores, comps, roles = [], [], [], []
        for component in self.components:
            sub = table[table["component"] == component]
            for layer, score in layer_scores(table, component=component, position=self.position).items():
                at = sub[sub["layer"] == layer]
                role = str(at.loc[at["value"].idxmax(), "position"]) if self.position == "max" else self.position
                name = f"blocks.{layer}.{WEIGHT_OF[component]}" if component in WEIGHT_OF else f"blocks.{layer}.{COMPONENTS[component]}"
                sites.append(Site.parse(name))
                scores.append(score)
                comps.append(component)
                roles.append(role)
        meta = {"localizer": self.name, "config": asdict(self), "p_clean": float(table["p_clean"].iloc[0]), "p_corrupt": float(table["p_corrupt"].iloc[0])}
        return Selection(sites, scores, {"component": comps, "position": roles}, meta)

    def top_layers(self, model: "Model", target: "Target", n: int, *, component: str = "mlp", table: pd.DataFrame | None = None, progress: bool = True) -> list[int]:
        """The ``n`` best layers of one component (ties: earlier layer), sorted."""
        table = self.table(model, target, progress=progress) if table is None else table
        return best_layers(layer_scores(table, component=component, position=self.position), n)

    def _run(self, fn, model, target, progress):
        return fn(model, self.items(target), components=self.components, noise=self.noise, samples=self.samples,
                  batch_size=self.batch_size, seed=self.seed, progress=progress)


@LOCALIZERS.register("causal_tracing")
@dataclass(frozen=True)
class CausalTracing(Tracing):
    """Causal tracing (Meng et al. 2022): restoration effect of each layer's components."""

    name: ClassVar[str] = "causal_tracing"

    def table(self, model, target, *, progress=True):
        return self._run(causal_trace, model, target, progress)


@LOCALIZERS.register("attribution_patching")
@dataclass(frozen=True)
class AttributionPatching(Tracing):
    """Attribution patching: the linear estimate of causal tracing from one forward + backward."""

    name: ClassVar[str] = "attribution_patching"

    def table(self, model, target, *, progress=True):
        return self._run(attribution_patch, model, target, progress)


# --------------------------------------------------------------------------- mean ablation


def mean_ablation(model: "Model", prompts: Sequence[str], sites: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> Edit:
    """An `Edit` that replaces the activation at each hook site, at every token, by its mean over
    the real (non-pad) tokens of ``prompts`` (measured once, with the model as it is now)."""
    if not sites:
        raise ValueError("no sites to mean-ablate")
    stats = activation_stats(model, list(prompts), list(sites), positions="all", batch_size=batch_size, cov=False, progress=progress)
    edits = []
    for name in sites:
        mean = stats[model.check_site(name).name].mean.float()

        def replace(act, hook, mean=mean):
            return mean.to(act).expand_as(act).clone()

        edits.append(HookEdit(name, replace, label="mean_ablation"))
    return Compose(edits)


__all__ = [
    "AttributionPatching",
    "COMPONENTS",
    "CausalTracing",
    "ROLES",
    "Tracing",
    "attribution_patch",
    "best_layers",
    "causal_trace",
    "layer_scores",
    "mean_ablation",
]
