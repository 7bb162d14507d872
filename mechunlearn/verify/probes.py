"""Linear probes for latent knowledge: does the residual stream still encode a forgotten attribute?

Per layer, per attribute and per token position (the subject's last token, the question's last
token), a multinomial logistic regression maps the standardised residual activation to the
attribute's value. All probes of a model — every layer × attribute × position — are fit
together in **one** batched full-batch L-BFGS optimisation (`fit_probes`: a
``[n_probes, d_model, n_classes]`` weight tensor, one summed convex objective whose blocks are
independent), never a Python loop of per-layer fits.

Samples are the target's questions, ``templates_per_fact`` templates per (person, attribute)
(the same templates for everyone). Probes are trained on retain people only; a share of the
retain people (``test_frac``) is held out as a control, so the split is always by person.

Readings (column ``reading``):

| reading    | probe fit on …                                  | evaluated on …                        |
| ---------- | ------------------------------------------------ | ------------------------------------- |
| ``refit``  | the same model's activations (train people)       | forget / held-out retain / holdout people |
| ``transfer`` | the *original* model's activations (train people) | the edited model's activations       |

Knowledge that a refit probe still decodes from the edited model on forget people is hidden,
not removed. The honest floor is the retain model's refit accuracy on forget people (it never
saw them); ``holdout`` people (never trained) give the same floor for every model.

Rows: ``metric="probe_acc"``, ``split`` (forget / retain / holdout), ``layer``, ``attribute``,
``position``, ``reading``, ``model`` (the role: original / edited / retain …), ``n_items``,
``chance`` (1 / number of classes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from mechunlearn.core.memo import by_weights
from mechunlearn.core.result import Result, provenance
from mechunlearn.models.activations import cache_activations, model_of, substring_last_token, using

if TYPE_CHECKING:
    from mechunlearn.world.target import Item, Target

log = logging.getLogger(__name__)

POSITIONS = ("subject", "question")
"""Token positions a probe reads: the subject's last token, the question's last token."""


# --------------------------------------------------------------------------- batched solver


@dataclass(frozen=True)
class LinearProbes:
    """A batch of multinomial logistic-regression probes on standardised features."""

    weight: Float[Tensor, "probe d cls"]
    """Weights on standardised features."""
    bias: Float[Tensor, "probe cls"]
    """Intercepts (not regularised)."""
    mean: Float[Tensor, "probe d"]
    """Feature means of each probe's training rows."""
    std: Float[Tensor, "probe d"]
    """Feature standard deviations of each probe's training rows (floored)."""
    n_classes: Int[Tensor, "probe"]
    """Valid classes per probe (classes ≥ this never win)."""
    iterations: int = 0
    """L-BFGS iterations used."""

    def logits(self, x: Float[Tensor, "probe n d"]) -> Float[Tensor, "probe n cls"]:
        """Class scores; invalid classes get -inf."""
        z = (x.float() - self.mean[:, None]) / self.std[:, None]
        out = torch.baddbmm(self.bias[:, None], z, self.weight)
        invalid = torch.arange(out.shape[-1]) >= self.n_classes[:, None]
        return out.masked_fill(invalid[:, None], float("-inf"))

    def predict(self, x: Float[Tensor, "probe n d"]) -> Int[Tensor, "probe n"]:
        """Predicted class per probe and row."""
        return self.logits(x).argmax(-1)

    def accuracy(self, x: Float[Tensor, "probe n d"], y: Int[Tensor, "probe n"], mask: Bool[Tensor, "probe n"] | None = None) -> Float[Tensor, "probe"]:
        """Accuracy per probe over the rows in ``mask`` (NaN where a probe has none)."""
        hit = (self.predict(x) == y).float()
        if mask is None:
            return hit.mean(-1)
        m = mask.float()
        return (hit * m).sum(-1) / m.sum(-1).where(m.sum(-1) > 0, torch.tensor(float("nan")))


def fit_probes(
    x: Float[Tensor, "probe n d"],
    y: Int[Tensor, "probe n"],
    n_classes: int | Sequence[int] | Tensor,
    *,
    mask: Bool[Tensor, "probe n"] | None = None,
    weight_decay: float = 1e-2,
    max_iter: int = 300,
    tol: float = 1e-4,
    history: int = 10,
) -> LinearProbes:
    """Fit one multinomial logistic regression per probe, all probes in one batched L-BFGS.

    Objective of probe p: mean cross-entropy over its ``mask``-ed rows + ``weight_decay``/2 ·
    ‖W_p‖² (bias not penalised), on features standardised with the probe's own training mean
    and std — exactly scikit-learn's ``LogisticRegression(C=1/(n·weight_decay))`` on
    ``StandardScaler`` features, and the same stopping rule (max |gradient| ≤ ``tol``).

    The solver is L-BFGS run *per probe* but vectorised over probes: every probe has its own
    curvature history, step size (Armijo backtracking) and convergence test, so a batch
    converges like independent fits, while each iteration is one batched matrix product.
    Probes are grouped by class count so no compute is spent on padded classes.
    """
    if x.dim() != 3 or y.shape != x.shape[:2]:
        raise ValueError(f"x must be [probe, n, d] and y [probe, n]; got {tuple(x.shape)} and {tuple(y.shape)}")
    if weight_decay < 0 or max_iter < 1 or tol <= 0 or history < 1:
        raise ValueError("weight_decay must be >= 0, max_iter and history >= 1, tol > 0")
    n_probes, _, d = x.shape
    k = torch.as_tensor(n_classes, dtype=torch.long).expand(n_probes).clone()
    if (y < 0).any() or (y >= k[:, None]).any():
        raise ValueError("labels must be in [0, n_classes) for every probe")
    m = torch.ones(y.shape, dtype=torch.bool) if mask is None else mask.bool()
    count = m.sum(-1)
    if (count < 2).any():
        raise ValueError(f"every probe needs at least 2 training rows; probe {int((count < 2).nonzero()[0])} has {int(count.min())}")
    x = x.float()
    w = m.float()[..., None]
    mean = (x * w).sum(1) / count[:, None]
    std = (((x - mean[:, None]) ** 2 * w).sum(1) / count[:, None]).sqrt().clamp_min(1e-6)
    n_cls = int(k.max())
    weight = torch.zeros(n_probes, d, n_cls)
    bias = torch.zeros(n_probes, n_cls)
    iterations = 0
    for c in torch.unique(k).tolist():  # one batched solve per class count (no padded classes)
        group = (k == c).nonzero()[:, 0]
        n_rows = int(count[group].max())
        # training rows only, packed to the front (row weight 0 pads probes with fewer rows)
        order = torch.argsort((~m[group]).to(torch.int8), dim=1, stable=True)[:, :n_rows]
        rows_x = torch.gather(x[group], 1, order[..., None].expand(-1, -1, d))
        z = (rows_x - mean[group, None]) / std[group, None]
        labels = torch.gather(y[group], 1, order)
        row_w = torch.gather(m[group], 1, order).float() / count[group, None]
        # the preconditioner is d x d per probe (25 GB for 1,500 probes at d = 4096): solve in
        # chunks of probes that keep it under PRECOND_BYTES, diagonal where one would not fit
        per_probe = d * d * 4
        diagonal = per_probe > PRECOND_BYTES
        size = group.numel() if diagonal else max(1, PRECOND_BYTES // per_probe)
        for part in range(0, group.numel(), size):
            sub = slice(part, part + size)
            w_g, b_g, its = _batched_lbfgs(z[sub], labels[sub], row_w[sub], c, weight_decay, max_iter, tol, history, diagonal=diagonal)
            weight[group[sub], :, :c] = w_g
            bias[group[sub], :c] = b_g
            iterations = max(iterations, its)
    return LinearProbes(weight, bias, mean, std, k, iterations)


@dataclass
class _Batch:
    """The data and L-BFGS state of the probes still being optimised (compacted as they converge).

    The curvature history is a ring buffer: slot ``order[j]`` holds the j-th oldest pair.
    """

    idx: Tensor
    z: Tensor
    zt: Tensor
    onehot: Tensor
    row_w: Tensor
    precond: Tensor
    theta: Tensor
    loss: Tensor
    grad: Tensor
    s_hist: Tensor
    y_hist: Tensor
    rho: Tensor
    gamma: Tensor

    def keep(self, mask: Tensor) -> "_Batch":
        """Only the probes where ``mask`` (history tensors are sliced along their probe axis)."""
        out = {}
        for name in self.__dataclass_fields__:
            t = getattr(self, name)
            out[name] = t[:, mask] if name in ("s_hist", "y_hist", "rho") else t[mask]
        return _Batch(**out)


def _loss_and_grad(b: _Batch, theta: Tensor, wd: float) -> tuple[Tensor, Tensor]:
    """Per-probe objective and gradient, by hand: (softmax − onehot) back through one matmul."""
    n_probes, _, d = b.z.shape
    c = b.onehot.shape[-1]
    w = theta[:, : d * c].view(n_probes, d, c)
    logits = torch.baddbmm(theta[:, d * c :][:, None], b.z, w)
    logp = torch.log_softmax(logits, -1)
    loss = -(b.row_w * (b.onehot * logp).sum(-1)).sum(-1) + 0.5 * wd * w.pow(2).sum((1, 2))
    resid = (logp.exp() - b.onehot) * b.row_w[..., None]
    grad = torch.empty_like(theta)
    torch.baddbmm(w, b.zt, resid, beta=wd, out=grad[:, : d * c].view(n_probes, d, c))
    grad[:, d * c :] = resid.sum(1)
    return loss, grad


PRECOND_BYTES = 256 * 2**20
"""Memory for the probes' full preconditioners in one solve (see `fit_probes`)."""


def _batched_lbfgs(
    z: Tensor, labels: Tensor, row_w: Tensor, n_cls: int, wd: float, max_iter: int, tol: float, history: int, *, diagonal: bool = False
) -> tuple[Tensor, Tensor, int]:
    """Independent preconditioned L-BFGS runs for a batch of probes; returns W, b, iterations.

    Each probe has its own two-loop recursion, Armijo step and stopping test; converged probes
    are dropped from the batch, so later iterations only pay for the probes still moving.
    Preconditioner H0 = γ·M, M = (zᵀ diag(w) z / C + wd I)⁻¹ per probe (the weight block's
    Hessian at the start, where the softmax is uniform), γ = sᵀy / yᵀMy: it changes the path,
    not the optimum, and cuts the iterations several-fold on correlated features. With
    ``diagonal`` only that matrix's diagonal is inverted (for widths where d × d per probe
    does not fit `PRECOND_BYTES`).
    """
    n_probes, _, d = z.shape
    dim = d * n_cls + n_cls
    if diagonal:  # the Hessian block's diagonal only: d numbers per probe
        precond = 1.0 / ((z.pow(2) * row_w[..., None]).sum(1) / n_cls + wd + 1e-6)
    else:
        cov = torch.bmm(z.transpose(1, 2) * row_w[:, None], z) / n_cls
        precond = torch.cholesky_inverse(torch.linalg.cholesky(cov + (wd + 1e-6) * torch.eye(d, device=z.device)))

    def apply_m(b: _Batch, v: Tensor) -> Tensor:
        out = torch.empty_like(v)
        if diagonal:
            out[:, : d * n_cls] = (b.precond[..., None] * v[:, : d * n_cls].view(-1, d, n_cls)).reshape(-1, d * n_cls)
        else:
            torch.bmm(b.precond, v[:, : d * n_cls].view(-1, d, n_cls), out=out[:, : d * n_cls].view(-1, d, n_cls))
        out[:, d * n_cls :] = v[:, d * n_cls :] * n_cls
        return out

    theta_out = torch.zeros(n_probes, dim)
    b = _Batch(torch.arange(n_probes), z, z.transpose(1, 2).contiguous(), F.one_hot(labels, n_cls).float(), row_w, precond,
               torch.zeros(n_probes, dim), torch.zeros(n_probes), torch.zeros(n_probes, dim),
               torch.zeros(history, n_probes, dim), torch.zeros(history, n_probes, dim), torch.zeros(history, n_probes), torch.ones(n_probes))
    b.loss, b.grad = _loss_and_grad(b, b.theta, wd)
    order: list[int] = []  # ring-buffer slots, oldest first
    it = 0
    for it in range(1, max_iter + 1):
        active = b.grad.abs().amax(-1) > tol
        if not bool(active.any()):
            it -= 1
            break
        if int(active.sum()) <= 0.75 * active.numel():  # compact once a quarter has converged
            theta_out[b.idx[~active]] = b.theta[~active]
            b = b.keep(active)
            active = active[active]
        # two-loop recursion, per probe (dot products along the parameter axis)
        q = b.grad.clone()
        alphas = []
        for slot in reversed(order):
            a = b.rho[slot] * (b.s_hist[slot] * q).sum(-1)
            q.sub_(a[:, None] * b.y_hist[slot])
            alphas.append(a)
        q = apply_m(b, q).mul_(b.gamma[:, None])
        for slot, a in zip(order, reversed(alphas)):
            q.add_((a - b.rho[slot] * (b.y_hist[slot] * q).sum(-1))[:, None] * b.s_hist[slot])
        direction = q.neg_().mul_(active[:, None])
        slope = (b.grad * direction).sum(-1)
        bad = active & (slope >= 0)  # not a descent direction: fall back to steepest descent
        if bool(bad.any()):
            direction[bad] = -b.grad[bad]
            slope = (b.grad * direction).sum(-1)
        # Armijo backtracking, one step size per probe
        step = torch.ones(b.idx.numel())
        pending = active.clone()
        new_theta, new_loss, new_grad = b.theta, b.loss, b.grad
        for _ in range(30):
            trial = b.theta + step[:, None] * direction
            t_loss, t_grad = _loss_and_grad(b, trial, wd)
            ok = pending & (t_loss <= b.loss + 1e-4 * step * slope)
            if bool((ok | ~active).all()):
                new_theta, new_loss, new_grad = trial, t_loss, t_grad
                pending = torch.zeros_like(ok)
                break
            new_theta = torch.where(ok[:, None], trial, new_theta)
            new_loss = torch.where(ok, t_loss, new_loss)
            new_grad = torch.where(ok[:, None], t_grad, new_grad)
            pending &= ~ok
            if not bool(pending.any()):
                break
            step = torch.where(pending, step * 0.5, step)
        s_new, y_new = new_theta - b.theta, new_grad - b.grad
        sy = (s_new * y_new).sum(-1)
        good = active & ~pending & (sy > 1e-10)
        slot = order.pop(0) if len(order) == history else len(order)
        order.append(slot)
        b.s_hist[slot] = s_new * good[:, None]
        b.y_hist[slot] = y_new * good[:, None]
        b.rho[slot] = torch.where(good, 1.0 / sy.clamp_min(1e-10), 0.0)
        y_m = (y_new * apply_m(b, y_new)).sum(-1)
        b.gamma = torch.where(good & (y_m > 0), sy / y_m.clamp_min(1e-20), b.gamma)
        b.theta, b.loss, b.grad = new_theta, new_loss, new_grad
        if bool(pending.any()):  # no decrease found along the direction: as good as it gets
            b.grad = torch.where(pending[:, None], 0.0, b.grad)
    theta_out[b.idx] = b.theta
    return theta_out[:, : d * n_cls].view(n_probes, d, n_cls), theta_out[:, d * n_cls :], it


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class ProbeConfig:
    """Which probes to fit and how."""

    positions: tuple[str, ...] = POSITIONS
    """Token positions: ``subject`` (last token of the person's name), ``question`` (last prompt token)."""
    layers: tuple[int, ...] | None = None
    """Blocks whose residual output is probed (None: every block)."""
    site: str = "hook_resid_post"
    """Per-block hook read at each layer (``blocks.{layer}.{site}``)."""
    attributes: tuple[str, ...] | None = None
    """Attributes to probe (None: every attribute in the target)."""
    templates_per_fact: int | None = 4
    """Question templates per (person, attribute) used as samples, the same for all people
    (None: every template the target has)."""
    test_frac: float = 0.25
    """Share of retain people held out of probe training (the retain control split)."""
    weight_decay: float = 1e-2
    """L2 penalty on the probe weights (mean cross-entropy + wd/2·‖W‖²)."""
    max_iter: int = 300
    """L-BFGS iterations (one run fits all probes of a model)."""
    batch_size: int = 128
    """Prompts per forward pass while caching activations."""
    seed: int = 0
    """Seed of the template choice and of the person split."""

    def __post_init__(self) -> None:
        bad = [p for p in self.positions if p not in POSITIONS]
        if bad or not self.positions:
            raise ValueError(f"positions must be a non-empty subset of {POSITIONS}, got {self.positions}")
        if not 0 < self.test_frac < 1:
            raise ValueError(f"test_frac must be in (0, 1), got {self.test_frac}")
        if self.templates_per_fact is not None and self.templates_per_fact < 1:
            raise ValueError("templates_per_fact must be >= 1 or None")


@dataclass(frozen=True)
class ProbeData:
    """The probe samples of a target: items, labels, and the person split of every item."""

    items: tuple["Item", ...]
    """Selected question items (all attributes, all splits)."""
    group: tuple[str, ...]
    """Per item: ``train`` (retain, probe training), ``retain`` (held-out retain), ``forget`` or ``holdout``."""
    labels: Int[Tensor, "item"]
    """Class index of each item's answer within its attribute."""
    classes: dict[str, tuple[str, ...]]
    """Per attribute, the class values in index order."""

    def rows(self, attribute: str) -> Int[Tensor, "rows"]:
        """Indices of one attribute's items."""
        return torch.tensor([i for i, it in enumerate(self.items) if it.attribute == attribute])


def probe_data(target: "Target", config: ProbeConfig = ProbeConfig()) -> ProbeData:
    """Choose the probe samples of a target and split people into train / held-out retain."""
    rng = np.random.default_rng(config.seed)
    splits = {s: list(target.split(s)) for s in ("forget", "retain", "holdout")}
    every = [it for items in splits.values() for it in items]
    unlabelled = [it for it in every if not it.subject or not it.attribute]
    if unlabelled:
        example = unlabelled[0]
        raise ValueError(
            f"probes need every item's subject and attribute (they decode the attribute's value from the subject's "
            f"hidden states and split people by subject), but {len(unlabelled)} of target {target.name!r}'s {len(every)} items "
            f"lack one, e.g. {example.prompt!r} (subject={example.subject!r}, attribute={example.attribute!r}); "
            "label the items, or leave probes out of the card"
        )
    attributes = config.attributes or tuple(dict.fromkeys(it.attribute for it in every if it.attribute))
    missing = [a for a in attributes if not any(it.attribute == a for it in splits["retain"])]
    if missing:
        raise ValueError(f"target {target.name!r} has no retain items for attributes {missing}; probes train on retain people")
    chosen: dict[str, set[str]] = {}
    for a in attributes:
        templates = sorted({it.template for it in splits["retain"] if it.attribute == a})
        if config.templates_per_fact is not None:
            templates = list(rng.permutation(templates)[: config.templates_per_fact])
        chosen[a] = set(templates)
    people = sorted({it.subject for it in splits["retain"]})
    n_test = max(1, round(config.test_frac * len(people)))
    if len(people) - n_test < 2:
        raise ValueError(f"only {len(people)} retain people: too few to train probes and hold some out")
    test_people = set(rng.permutation(people)[:n_test].tolist())
    items, group = [], []
    for split, split_items in splits.items():
        for it in split_items:
            if it.attribute in chosen and it.template in chosen[it.attribute]:
                items.append(it)
                group.append(("retain" if it.subject in test_people else "train") if split == "retain" else split)
    classes = {a: tuple(sorted({it.answer for it in items if it.attribute == a})) for a in attributes}
    index = {a: {v: i for i, v in enumerate(vals)} for a, vals in classes.items()}
    labels = torch.tensor([index[it.attribute][it.answer] for it in items])
    return ProbeData(tuple(items), tuple(group), labels, classes)


@by_weights
def probe_features(subject, data: ProbeData, config: ProbeConfig = ProbeConfig(), *, progress: bool = True) -> Float[Tensor, "layer item position d"]:
    """Residual activations of every probe item at every probed layer and position."""
    model = model_of(subject)
    layers = _layers(model, config)
    prompts = [it.prompt for it in data.items]
    cols = []
    for pos in config.positions:
        if pos == "subject":
            cols.append(substring_last_token(model, prompts, [it.subject for it in data.items]))
        else:
            cols.append([-1] * len(prompts))
    positions = torch.tensor(cols).T
    sites = [f"blocks.{l}.{config.site}" for l in layers]
    with using(subject) as m:
        cache = cache_activations(m, prompts, sites, positions=positions, batch_size=config.batch_size, progress=progress)
    return torch.stack([cache.by_prompt(s).float() for s in sites])


def _layers(model, config: ProbeConfig) -> tuple[int, ...]:
    layers = config.layers if config.layers is not None else tuple(range(model.n_layers))
    bad = [l for l in layers if not 0 <= l < model.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: {model.model_id} has layers 0..{model.n_layers - 1}")
    return tuple(layers)


def _stack(feats: Float[Tensor, "layer item position d"], data: ProbeData, attributes: Sequence[str]):
    """Probe-batched features ``[probe, n_max, d]`` (probe = attribute × position × layer),
    labels, per-row group codes (padded rows get group -1) and the probe keys."""
    n_layers, _, n_pos, d = feats.shape
    rows = [data.rows(a) for a in attributes]
    n_max = max(len(r) for r in rows)
    groups = np.array(data.group)
    codes = {g: i for i, g in enumerate(("train", "retain", "forget", "holdout"))}
    x = torch.zeros(len(attributes), n_pos, n_layers, n_max, d)
    y = torch.zeros(len(attributes), n_pos, n_layers, n_max, dtype=torch.long)
    g = torch.full((len(attributes), n_pos, n_layers, n_max), -1)
    for ai, r in enumerate(rows):
        x[ai, :, :, : len(r)] = feats[:, r].permute(2, 0, 1, 3)
        y[ai, :, :, : len(r)] = data.labels[r]
        g[ai, :, :, : len(r)] = torch.tensor([codes[c] for c in groups[r.numpy()]])
    n_classes = torch.tensor([len(data.classes[a]) for a in attributes])[:, None, None].expand(-1, n_pos, n_layers)
    flat = lambda t: t.reshape(-1, *t.shape[3:])  # noqa: E731
    return flat(x), flat(y), flat(g), n_classes.reshape(-1), codes


def _fit(stacked, data: ProbeData, config: ProbeConfig, model) -> tuple[LinearProbes, list[dict]]:
    """Refit probes on one model's stacked features, and their accuracy rows."""
    x, y, g, n_classes, codes = stacked
    probes = fit_probes(x, y, n_classes, mask=g == codes["train"], weight_decay=config.weight_decay, max_iter=config.max_iter)
    log.info("probes: %d probes, %d L-BFGS iterations", x.shape[0], probes.iterations)
    return probes, _accuracy_rows(probes, x, y, g, codes, data, config, model)


@by_weights
def _fit_role(subject, data: ProbeData, config: ProbeConfig, *, progress: bool = True) -> tuple[LinearProbes, list[dict]]:
    """`_fit` memoised by weights: a study's every run refits the same original and retain
    models on the same items, once per process."""
    return _fit(_stack(probe_features(subject, data, config, progress=progress), data, list(data.classes)), data, config, model_of(subject))


def _accuracy_rows(probe: LinearProbes, x, y, g, codes, data: ProbeData, config: ProbeConfig, model) -> list[dict]:
    """Accuracy of ``probe`` per (attribute, position, layer, split) on stacked features."""
    keys = [(a, p, l) for a in data.classes for p in config.positions for l in _layers(model, config)]
    rows = []
    for split in ("train", "retain", "forget", "holdout"):
        sel = g == codes[split]
        acc = probe.accuracy(x, y, sel)
        for (a, p, l), value, count in zip(keys, acc.tolist(), sel.sum(-1).tolist()):
            if count:
                rows.append({"position": p, "attribute": a, "layer": l, "split": split, "value": value, "n_items": count, "chance": 1.0 / len(data.classes[a])})
    return rows


def probe_accuracy(
    models: Mapping[str, object],
    target: "Target",
    config: ProbeConfig = ProbeConfig(),
    *,
    reference: str | None = "original",
    progress: bool = True,
    method: str = "none",
    run_id: str | None = None,
) -> Result:
    """Probe accuracy per (model role, reading, position, attribute, layer, split).

    ``models`` maps a role (``original``, ``edited``, ``retain`` …) to a `Model` or a
    ``(Model, Edit)`` pair. Every model gets the ``refit`` reading; with ``reference`` (a role
    in ``models``) the reference's probes are also evaluated on every other model (``transfer``),
    except roles starting with ``retain`` (a separately trained model: its activation space is
    not the reference's).
    """
    if not models:
        raise ValueError("give at least one model, e.g. {'original': model}")
    if reference is not None and reference not in models:
        raise ValueError(f"reference role {reference!r} is not among the models {list(models)}")
    data = probe_data(target, config)
    first = model_of(next(iter(models.values())))
    probes: dict[str, LinearProbes] = {}
    transfer: dict[str, tuple] = {}  # the features of the roles the reference's probes also read
    frames = []
    for role, subject in models.items():
        if reference is not None and role != reference and not role.startswith("retain"):
            transfer[role] = _stack(probe_features(subject, data, config, progress=progress), data, list(data.classes))
            probes[role], rows = _fit(transfer[role], data, config, first)
        else:
            probes[role], rows = _fit_role(subject, data, config, progress=progress)
        frames += [{"model": role, "reading": "refit", **row} for row in rows]
    for role, (x, y, g, _, codes) in transfer.items():
        frames += [{"model": role, "reading": "transfer", **row} for row in _accuracy_rows(probes[reference], x, y, g, codes, data, config, first)]
    frame = pd.DataFrame(frames)
    frame["metric"] = "probe_acc"
    frame["method"] = method
    frame["run_id"] = run_id
    frame["seed"] = config.seed
    return Result(frame, provenance(first.model_id, config, target=target.name, models=list(models)))


def probe_summary(result: Result | pd.DataFrame, *, split: str = "forget") -> pd.DataFrame:
    """Best-layer accuracy per (model, reading, position, attribute) on one split: the table
    that answers "is the forgotten attribute still decodable, and above the retain floor?"."""
    frame = result.frame if isinstance(result, Result) else result
    sub = frame[(frame["metric"] == "probe_acc") & (frame["split"] == split)]
    if sub.empty:
        raise ValueError(f"no probe_acc rows for split {split!r}")
    return sub.pivot_table(index=["position", "attribute"], columns=["model", "reading"], values="value", aggfunc="max")
