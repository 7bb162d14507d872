"""LUNAR: unlearning by neural activation redirection (Shen et al. 2025).

LUNAR makes a model answer forget questions the way it answers questions it *cannot* answer
("I don't know", or ``unknown`` in bios-tiny), by redirecting the forget prompts' activations
towards the "cannot answer" region and writing that redirection into one MLP's down projection:

1. **Direction.** Per layer ``l``, ``r_l`` = mean residual activation (``blocks.l.hook_resid_post``,
   last prompt token) on "cannot answer" prompts − the mean on forget prompts
   (`lunar_directions`). bios-tiny: questions about the world's non-existent people, answered
   ``unknown``; smollm2-135m: completions about invented people in a few-shot frame where the
   model answers "unknown" (`SMOLLM2_FRAME`, `SMOLLM2_CANNOT_ANSWER`, checked against the model).
2. **Layer.** Steering sweep (`steering_sweep`): add ``c·r_l`` at ``blocks.l.hook_resid_post``
   (a `HookEdit`, last prompt token only) and classify the greedy answers of forget and retain
   prompts as correct / ``unknown`` / another valid value / other (gibberish). Optionally the
   sweep also fits the weight edit at every layer (``sweep_fit=True``), which measures what the
   direction costs the retain set once it is written into weights. `choose_layer` keeps the
   layer where forget answers turn into ``unknown`` and retain answers stay correct.
3. **Fit.** Only ``blocks.l.mlp.W_out`` changes: on forget tokens the MLP output should become
   ``mlp_out + c·r_l``, on retain tokens stay ``mlp_out`` (`fit_w_out`). It is linear least
   squares in the cached MLP hidden activations ``H`` (``mlp.hook_post``), so besides the
   paper's AdamW (lr 1e-2, here through the one loop `mechunlearn.unlearn.loop.fit`) the
   closed-form ridge solution is exact:

       J(Δ) = (1/n_f)·‖H_f Δ − R_f‖² + (α/n_r)·‖H_r Δ − R_r‖² + λ·‖Δ‖²,   W_out' = W_out + Δ
       (H_fᵀH_f/n_f + α·H_rᵀH_r/n_r + λ I) Δ = H_fᵀR_f/n_f + α·H_rᵀR_r/n_r

   where ``R`` = target − current MLP output (``c·r_l`` on forget rows, 0 on retain rows when
   the cached outputs are exact) and ``λ = ridge · tr(G)/d_mlp`` is relative to the Gram ``G``.
4. **Result.** A `DeltaEdit` on that one matrix: it reverts bit for bit and leaves no hooks.

Re-tuned for our small models (the paper's defaults are for 7B chat models): c = 2 as in the
paper, but the forget rows are the last prompt token only (the position that emits the first
answer token), the retain rows are every token of retain prompt+answer texts, and the ridge
penalty keeps ``Δ`` small where the data do not constrain it.

>>> result = lunar(model, target, LunarConfig(coef=2.0))
>>> result.layer, result.sweep                   # chosen layer and the per-layer sweep
>>> with result.edit.applied(model):
...     answer_outcomes(model, target.forget)     # share answered ``unknown``
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.edit import DeltaEdit, Edit, HookEdit
from mechunlearn.core.selection import Selection
from mechunlearn.core.site import Site
from mechunlearn.models.activations import cache_activations, model_of, using

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item, Target

log = logging.getLogger(__name__)

OUTCOMES = ("correct", "unknown", "other_value", "other")
"""How a greedy answer is classified: the right answer, a refusal / ``unknown``, another valid
value of the same attribute (a wrong fact), or anything else (gibberish, off-topic text)."""

DEFAULT_REFUSALS = ("unknown", "i don't know", "i do not know", "i'm not sure", "i am not sure", "not sure", "no information", "i cannot", "i can't", "sorry")
"""Markers of a refusal in a greedy answer (lower-cased, matched in its first few words)."""

SMOLLM2_FRAME = (
    "The capital of Italy is Rome. The birthplace of Velka Stroud is unknown. "
    "The author of Hamlet is Shakespeare. The employer of Ormund Threlkeld is unknown. "
)
"""A few-shot frame for smollm2-135m in which "unknown" is a possible answer. Checked on the model:
after it, completions about invented people are answered " unknown." while known facts keep their
answers (" Paris.", " Tokyo.", " yen.", " Jupiter."). Without it the model confabulates ("a small
village nestled in …"), so LUNAR on smollm2 puts every prompt (cannot answer, forget, retain)
in this frame (`framed`)."""

SMOLLM2_CANNOT_ANSWER = (
    "The birthplace of Zorvath Quellin is",
    "The birth year of Brindle Maxoran is",
    "The employer of Pellara Vinsk is",
    "The wife of Quarrin Delphos is",
    "The capital of Zembaria is",
    "The team of Drevik Samhollow is",
    "The profession of Tamsin Okoruwe is",
    "The hometown of Lirien Castavo is",
    "The favourite food of Yselle Marrowind is",
    "The university of Haldor Vexmoor is",
    "The founder of Quellbridge Analytics is",
    "The largest river of Ostravia is",
)
""""Cannot answer" completions for smollm2-135m about invented people and places; in
`SMOLLM2_FRAME` the model completes each with " unknown" (checked)."""


def framed(target: "Target", frame: str) -> "Target":
    """The same target with ``frame`` put before every prompt (forget, retain and holdout items)."""
    def put(items):
        return tuple(replace(it, prompt=frame + it.prompt) for it in items)

    return replace(target, forget=put(target.forget), retain=put(target.retain), holdout=put(target.holdout), meta={**target.meta, "frame": frame})


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class LunarConfig:
    """LUNAR settings (Shen et al. 2025), re-tuned for small models where stated."""

    layer: int | None = None
    """Layer whose ``W_out`` is fitted; ``None``: chosen by the steering sweep."""
    coef: float = 2.0
    """c: the redirection is ``c·r_l`` (paper default 2)."""
    layers: tuple[int, ...] | None = None
    """Candidate layers of the sweep (None: every layer)."""
    sweep_fit: bool = True
    """Also fit the ridge edit at every candidate layer in the sweep and measure it (cheap: one
    linear solve per layer); `choose_layer` then scores the edits, not only the steering."""
    method: str = "ridge"
    """Fit of ``W_out``: ``ridge`` (closed form) or ``adamw`` (the paper's optimiser, lr 1e-2)."""
    ridge: float = 1e-3
    """λ as a fraction of the mean diagonal of the weighted Gram matrix."""
    retain_weight: float = 1.0
    """α: weight of the retain MSE (both MSEs are means over their rows)."""
    forget_positions: str = "last"
    """Forget rows of the fit: ``last`` (last prompt token) or ``prompt`` (every prompt token)."""
    adamw_steps: int = 400
    """AdamW steps (full batch on the cached activations)."""
    adamw_lr: float = 1e-2
    """AdamW peak learning rate (paper: 1e-2), cosine-decayed to 0 so it settles."""
    forget_items: int | None = None
    """Forget items used for the direction and the fit (seeded subset; None: all)."""
    retain_items: int | None = 512
    """Retain items whose prompt+answer tokens are kept unchanged (seeded subset; None: all)."""
    cannot_items: int | None = 256
    """"Cannot answer" prompts for the direction (seeded subset; None: all)."""
    sweep_items: int | None = 200
    """Forget and retain items classified per layer in the sweep (seeded subset; None: all)."""
    refusals: tuple[str, ...] = DEFAULT_REFUSALS
    """Markers counted as an ``unknown`` answer."""
    max_new_tokens: int | None = None
    """Tokens generated to classify an answer (None: longest answer + 2, at least 4)."""
    batch_size: int = 64
    """Prompts per forward pass."""
    seed: int = 0
    """Seed of the item subsets."""

    def __post_init__(self) -> None:
        if self.method not in ("ridge", "adamw"):
            raise ValueError(f"method must be 'ridge' or 'adamw', got {self.method!r}")
        if self.forget_positions not in ("last", "prompt"):
            raise ValueError(f"forget_positions must be 'last' or 'prompt', got {self.forget_positions!r}")
        if self.ridge < 0 or self.retain_weight < 0:
            raise ValueError("ridge and retain_weight must be >= 0")
        if self.adamw_steps < 1 or not self.adamw_lr > 0:
            raise ValueError("adamw_steps must be >= 1 and adamw_lr > 0")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


# --------------------------------------------------------------------------- data


def _subset(items: Sequence, n: int | None, seed: int) -> list:
    from mechunlearn.locate.saliency import seeded_subset

    return seeded_subset(items, n, seed)


def cannot_answer_items(model: "Model") -> list["Item"]:
    """The model's "cannot answer" items: for a model trained on a `World` (bios-tiny) the
    questions about its non-existent people (answer ``unknown``); for smollm2-135m the invented
    people of `SMOLLM2_CANNOT_ANSWER` in `SMOLLM2_FRAME` (answer ``unknown``; put the forget and
    retain prompts in the same frame with `framed`)."""
    from mechunlearn.world.target import Item

    world_config = getattr(model, "meta", {}).get("world_config")
    if world_config is not None:
        from mechunlearn.world.world import World

        return list(World(world_config).unknown_items())
    if model.model_id == "smollm2-135m":
        return [Item(SMOLLM2_FRAME + p, "unknown", subject="invented", attribute="cannot_answer", template="smollm2") for p in SMOLLM2_CANNOT_ANSWER]
    raise ValueError(
        f"no built-in 'cannot answer' prompts for {model.model_id}; pass cannot=[Item(...), …] "
        "(questions the model declines, e.g. about people who do not exist)"
    )


def _prompts(items: Sequence) -> list[str]:
    out = [it.prompt if hasattr(it, "prompt") else it for it in items]
    if not out:
        raise ValueError("no prompts given")
    if not all(isinstance(p, str) and p.strip() for p in out):
        raise ValueError("every prompt must be a non-empty string")
    return out


# --------------------------------------------------------------------------- direction


def lunar_directions(
    model: "Model",
    cannot: Sequence,
    forget: Sequence,
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> Float[Tensor, "layer d_model"]:
    """``r_l`` = mean ``blocks.l.hook_resid_post`` at the last prompt token over ``cannot`` prompts
    − the mean over ``forget`` prompts (Shen et al. 2025), one row per layer in ``layers``
    (default: all). Items or plain prompt strings are accepted."""
    layers = _check_layers(model, layers)
    sites = [f"blocks.{l}.hook_resid_post" for l in layers]
    means = []
    for group in (cannot, forget):
        cache = cache_activations(model, _prompts(group), sites, positions="last", batch_size=batch_size, progress=progress)
        means.append(torch.stack([cache[s].float().mean(0) for s in sites]))
    return means[0] - means[1]


def _check_layers(model: "Model", layers: Sequence[int] | None) -> list[int]:
    out = list(range(model.n_layers)) if layers is None else [int(l) for l in layers]
    bad = [l for l in out if not 0 <= l < model.n_layers]
    if bad or not out:
        raise ValueError(f"layers {bad or out} out of range: {model.model_id} has layers 0..{model.n_layers - 1}")
    return out


def steer_edit(model: "Model", layer: int, vector: Tensor, prompt_lengths: Sequence[int] | None = None) -> HookEdit:
    """`HookEdit` adding ``vector`` at ``blocks.{layer}.hook_resid_post``: at each row's last prompt
    token (``prompt_lengths[i] - 1``, BOS counted) when lengths are given, else at every position."""
    if vector.shape != (model.d_model,):
        raise ValueError(f"steering vector must have shape ({model.d_model},), got {tuple(vector.shape)}")
    lengths = None if prompt_lengths is None else torch.as_tensor(list(prompt_lengths), dtype=torch.long)

    def add(act: Tensor, hook) -> Tensor:
        vec = vector.to(act)
        if lengths is None:
            return act + vec
        if act.shape[0] != len(lengths):
            raise RuntimeError(f"steering hook built for {len(lengths)} rows saw a batch of {act.shape[0]}")
        out = act.clone()
        rows = torch.arange(len(lengths))
        pos = (lengths - 1).clamp(max=act.shape[1] - 1)
        out[rows, pos] = out[rows, pos] + vec
        return out

    return HookEdit(f"blocks.{layer}.hook_resid_post", add, label=f"steer@{layer}")


# --------------------------------------------------------------------------- answers


def classify_answer(text: str, answer: str, *, values: Sequence[str] = (), refusals: Sequence[str] = DEFAULT_REFUSALS) -> str:
    """One of `OUTCOMES` for a greedy continuation ``text`` of a question whose answer is ``answer``.

    ``correct``: the text starts with the answer; ``unknown``: a refusal marker occurs in its
    first six words; ``other_value``: it starts with another known value (``values``); else ``other``.
    """
    norm = " ".join(text.strip().lower().split())
    if norm.startswith(answer.strip().lower()):
        return "correct"
    head = " ".join(norm.split()[:6])
    if any(r.lower() in head for r in refusals):
        return "unknown"
    for v in values:
        v = v.strip().lower()
        if v and v != answer.strip().lower() and norm.startswith(v):
            return "other_value"
    return "other"


@torch.no_grad()
def answer_outcomes(
    subject,
    items: Sequence["Item"],
    *,
    steer: tuple[int, Tensor] | None = None,
    values: Mapping[str, Sequence[str]] | None = None,
    refusals: Sequence[str] = DEFAULT_REFUSALS,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    progress: bool = False,
) -> pd.DataFrame:
    """Greedy answers of ``items`` and their class (`classify_answer`), one row per item.

    ``subject`` is a `Model` or a ``(Model, Edit)`` pair (edit applied while generating).
    ``steer=(layer, vector)`` adds the vector at the last prompt token of ``blocks.{layer}.hook_resid_post``
    (a `HookEdit` per batch, removed afterwards). ``values`` maps an attribute to its valid
    values (default: the answers of ``items`` per attribute), for the ``other_value`` class.
    """
    items = list(items)
    if not items:
        raise ValueError("no items to answer")
    model = model_of(subject)
    if values is None:
        values = {}
        for it in items:
            values.setdefault(it.attribute, set()).add(it.answer)
    n_new = max_new_tokens or max(4, max(len(model.encode(" " + it.answer)) for it in items) + 2)
    texts: list[str] = []
    chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    with using(subject) as m:
        for chunk in tqdm(chunks, desc="answers", leave=False, disable=not progress or len(chunks) < 4):
            prompts = [it.prompt for it in chunk]
            if steer is None:
                texts.extend(m.generate(prompts, n_new, batch_size=len(prompts)))
                continue
            lengths = [len(m.encode(p, prepend_bos=m.prepend_bos)) for p in prompts]
            with steer_edit(m, steer[0], steer[1], lengths).applied(m):
                texts.extend(m.generate(prompts, n_new, batch_size=len(prompts)))
    rows = []
    for it, text in zip(items, texts):
        outcome = classify_answer(text, it.answer, values=sorted(values.get(it.attribute, ())), refusals=refusals)
        rows.append({"prompt": it.prompt, "answer": it.answer, "subject": it.subject, "attribute": it.attribute, "paraphrase": it.paraphrase, "generated": text.strip(), "outcome": outcome})
    return pd.DataFrame(rows)


def outcome_shares(frame: pd.DataFrame) -> dict[str, float]:
    """Share of each outcome class in an `answer_outcomes` frame (every class present, summing to 1)."""
    counts = frame["outcome"].value_counts(normalize=True)
    return {f"share_{o}": float(counts.get(o, 0.0)) for o in OUTCOMES}


# --------------------------------------------------------------------------- fit of W_out


@dataclass(frozen=True)
class MLPRows:
    """Cached MLP inputs/outputs at one layer: hidden activations ``H`` and outputs ``Y`` per row."""

    hidden: Float[Tensor, "row d_mlp"]
    """``blocks.l.mlp.hook_post`` (the input of ``W_out``)."""
    out: Float[Tensor, "row d_model"]
    """``blocks.l.hook_mlp_out`` (``H·W_out + b_out``)."""


def mlp_rows(model: "Model", layer: int, texts: Sequence[str], *, positions="last", batch_size: int = 64, progress: bool = False) -> MLPRows:
    """MLP hidden activations and outputs of ``layer`` at ``positions`` (see `cache_activations`)
    of ``texts``; checks that ``hook_mlp_out == hook_post · W_out + b_out`` on these rows."""
    _check_layers(model, [layer])
    hidden_site, out_site = f"blocks.{layer}.mlp.hook_post", f"blocks.{layer}.hook_mlp_out"
    cache = cache_activations(model, list(texts), [hidden_site, out_site], positions=positions, batch_size=batch_size, progress=progress)
    rows = MLPRows(cache[hidden_site].float(), cache[out_site].float())
    w, b = _w_out(model, layer)
    pred = rows.hidden @ w.float() + (0 if b is None else b.float())
    err = float((pred - rows.out).norm() / rows.out.norm().clamp_min(1e-12))
    if err > 1e-3:
        raise RuntimeError(
            f"{model.model_id}: blocks.{layer}.hook_mlp_out is not hook_post · W_out + b_out (relative error {err:.2e}); "
            "LUNAR's linear fit needs the input of W_out at mlp.hook_post, and no norm between W_out and the residual "
            "(Gemma-style post-feedforward norms make the MLP's contribution nonlinear in W_out)"
        )
    return rows


def _w_out(model: "Model", layer: int) -> tuple[Tensor, Tensor | None]:
    w = model.weight(f"blocks.{layer}.mlp.W_out")
    try:
        b = model.weight(f"blocks.{layer}.mlp.b_out")
    except (KeyError, ValueError):
        b = None
    return w, b


@dataclass(frozen=True)
class FitResult:
    """A fitted ``W_out`` change and how well it meets the objective."""

    delta: Float[Tensor, "d_mlp d_model"]
    """Δ added to ``W_out`` (TL layout)."""
    objective: float
    """J(Δ) (see the module docstring)."""
    forget_error: float
    """Relative residual on forget rows: ‖H_f Δ − R_f‖ / ‖R_f‖ (0: the redirection is met exactly)."""
    retain_error: float
    """Retain rows' change relative to the forget redirection: ‖H_r Δ − R_r‖ / ‖R_f‖ × √(n_f/n_r)."""
    seconds: float
    """Wall time of the fit."""
    method: str
    """``ridge`` or ``adamw``."""
    steps: int = 0
    """Optimiser steps (0 for the closed form)."""


def _weighted_gram(h_f: Tensor, h_r: Tensor, retain_weight: float) -> Tensor:
    g = h_f.T @ h_f / h_f.shape[0]
    if h_r.shape[0]:
        g = g + retain_weight * (h_r.T @ h_r) / h_r.shape[0]
    return g


def ridge_lambda(h_f: Tensor, h_r: Tensor, ridge: float, retain_weight: float = 1.0) -> float:
    """λ = ``ridge`` × mean diagonal of the weighted Gram matrix (scale-free ridge strength)."""
    g = _weighted_gram(h_f.double(), h_r.double(), retain_weight)
    return float(ridge * g.diagonal().mean())


def _objective(delta: Tensor, h_f: Tensor, r_f: Tensor, h_r: Tensor, r_r: Tensor, lam: float, alpha: float) -> Tensor:
    loss = (h_f @ delta - r_f).pow(2).sum() / h_f.shape[0] + lam * delta.pow(2).sum()
    if h_r.shape[0]:
        loss = loss + alpha * (h_r @ delta - r_r).pow(2).sum() / h_r.shape[0]
    return loss


def fit_w_out(
    hidden_forget: Float[Tensor, "nf d_mlp"],
    resid_forget: Float[Tensor, "nf d_model"],
    hidden_retain: Float[Tensor, "nr d_mlp"],
    resid_retain: Float[Tensor, "nr d_model"] | None = None,
    *,
    ridge: float = 1e-3,
    retain_weight: float = 1.0,
    method: str = "ridge",
    steps: int = 400,
    lr: float = 1e-2,
    model: "Model | None" = None,
    layer: int | None = None,
) -> FitResult:
    """Δ minimising J(Δ) = (1/n_f)‖H_f Δ − R_f‖² + (α/n_r)‖H_r Δ − R_r‖² + λ‖Δ‖².

    ``resid_*`` are targets minus current outputs (LUNAR: ``c·r_l`` on forget rows, 0 on retain
    rows; ``resid_retain=None`` means 0). ``method="ridge"``: solve the normal equations
    (Cholesky, float64). ``method="adamw"``: the one loop (`fit`) trains the model's
    ``blocks.{layer}.mlp.W_out`` in place on the same objective (pass ``model`` and ``layer``;
    the weight is restored afterwards), AdamW at ``lr`` with a cosine decay, no weight decay
    (the ridge term is in the loss, so both methods share one optimum).
    """
    if hidden_forget.dim() != 2 or resid_forget.shape[0] != hidden_forget.shape[0]:
        raise ValueError(f"hidden_forget [n, d_mlp] and resid_forget [n, d_model] must match; got {tuple(hidden_forget.shape)} and {tuple(resid_forget.shape)}")
    if hidden_forget.shape[0] == 0:
        raise ValueError("no forget rows to fit")
    if hidden_retain.dim() != 2 or hidden_retain.shape[1] != hidden_forget.shape[1]:
        raise ValueError(f"hidden_retain must be [n, {hidden_forget.shape[1]}], got {tuple(hidden_retain.shape)}")
    if resid_retain is None:
        resid_retain = torch.zeros(hidden_retain.shape[0], resid_forget.shape[1])
    if resid_retain.shape != (hidden_retain.shape[0], resid_forget.shape[1]):
        raise ValueError(f"resid_retain must be [{hidden_retain.shape[0]}, {resid_forget.shape[1]}], got {tuple(resid_retain.shape)}")
    if method not in ("ridge", "adamw"):
        raise ValueError(f"method must be 'ridge' or 'adamw', got {method!r}")
    lam = ridge_lambda(hidden_forget, hidden_retain, ridge, retain_weight)
    start = time.perf_counter()
    n_steps = 0
    if method == "ridge":
        hf, hr = hidden_forget.double(), hidden_retain.double()
        gram = _weighted_gram(hf, hr, retain_weight) + lam * torch.eye(hf.shape[1], dtype=torch.float64)
        rhs = hf.T @ resid_forget.double() / hf.shape[0]
        if hr.shape[0]:
            rhs = rhs + retain_weight * hr.T @ resid_retain.double() / hr.shape[0]
        chol, info = torch.linalg.cholesky_ex(gram)
        if int(info) != 0:  # singular without a ridge: least-squares solution instead
            delta = torch.linalg.lstsq(gram, rhs).solution
        else:
            delta = torch.cholesky_solve(rhs, chol)
        delta = delta.float()
    else:
        if model is None or layer is None:
            raise ValueError("method='adamw' trains the model's W_out through the one loop: pass model= and layer=")
        delta, n_steps = _adamw_fit(model, layer, hidden_forget, resid_forget, hidden_retain, resid_retain, lam, retain_weight, steps, lr)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        obj = float(_objective(delta.double(), hidden_forget.double(), resid_forget.double(), hidden_retain.double(), resid_retain.double(), lam, retain_weight))
        rf = resid_forget.norm().clamp_min(1e-12)
        f_err = float((hidden_forget @ delta - resid_forget).norm() / rf)
        n_f, n_r = hidden_forget.shape[0], max(1, hidden_retain.shape[0])
        r_err = float((hidden_retain @ delta - resid_retain).norm() / rf * (n_f / n_r) ** 0.5) if hidden_retain.shape[0] else 0.0
    return FitResult(delta, obj, f_err, r_err, seconds, method, n_steps)


def _adamw_fit(model, layer, h_f, r_f, h_r, r_r, lam, alpha, steps, lr) -> tuple[Tensor, int]:
    from mechunlearn.unlearn.loop import TrainConfig, fit

    name = f"blocks.{layer}.mlp.W_out"
    original = model.weight(name).detach().clone()
    dev = model.device
    h_f, r_f, h_r, r_r = (t.to(dev, torch.float32) for t in (h_f, r_f, h_r, r_r))
    base = original.to(dev, torch.float32)

    def loss_fn(step: int) -> Tensor:
        delta = model.weight(name).float() - base
        return _objective(delta, h_f, r_f, h_r, r_r, lam, alpha)

    cfg = TrainConfig(steps=steps, lr=lr, weight_decay=0.0, schedule="cosine", min_lr_ratio=0.0, grad_clip=None)
    try:
        log_ = fit(model, loss_fn, cfg, weights=[name], desc=f"lunar adamw@{layer}")
        delta = (model.weight(name).detach().float() - original.float()).cpu()
    finally:
        with torch.no_grad():
            model.weight(name).copy_(original)
    return delta, log_.steps


# --------------------------------------------------------------------------- the method


@dataclass(frozen=True)
class LunarData:
    """Everything LUNAR caches for one target: directions and the fit's items."""

    directions: Float[Tensor, "layer d_model"]
    """r_l for every layer (rows indexed by layer number)."""
    forget: tuple
    """Forget items of the direction and the fit."""
    retain: tuple
    """Retain items whose tokens must stay unchanged."""
    cannot: tuple
    """"Cannot answer" items of the direction."""


def lunar_data(model: "Model", target: "Target", config: LunarConfig = LunarConfig(), *, cannot: Sequence | None = None, progress: bool = True) -> LunarData:
    """Choose the items (seeded subsets) and compute ``r_l`` at every layer."""
    forget = _subset(target.forget, config.forget_items, config.seed)
    retain = _subset(target.retain, config.retain_items, config.seed + 1)
    cannot = _subset(cannot if cannot is not None else cannot_answer_items(model), config.cannot_items, config.seed + 2)
    if not cannot:
        raise ValueError("no 'cannot answer' items: LUNAR's direction needs prompts the model declines")
    dirs = lunar_directions(model, cannot, forget, batch_size=config.batch_size, progress=progress)
    return LunarData(dirs, tuple(forget), tuple(retain), tuple(cannot))


def fit_lunar_edit(model: "Model", data: LunarData, layer: int, config: LunarConfig = LunarConfig(), *, method: str | None = None) -> tuple[DeltaEdit, FitResult]:
    """Fit ``blocks.{layer}.mlp.W_out`` so forget tokens' MLP output becomes ``mlp_out + c·r_l`` and
    retain tokens' stays; returns the one-matrix `DeltaEdit` and the `FitResult`."""
    _check_layers(model, [layer])
    method = method or config.method
    forget_prompts = [it.prompt for it in data.forget]
    positions = "last" if config.forget_positions == "last" else "all"
    f_rows = mlp_rows(model, layer, forget_prompts, positions=positions, batch_size=config.batch_size)
    retain_texts = [f"{it.prompt} {it.answer}" for it in data.retain]
    r_rows = mlp_rows(model, layer, retain_texts, positions="all", batch_size=config.batch_size) if retain_texts else MLPRows(torch.zeros(0, model.d_mlp), torch.zeros(0, model.d_model))
    shift = config.coef * data.directions[layer].float()
    resid_f = shift.expand(f_rows.hidden.shape[0], -1)  # target (mlp_out + c·r) − current output (mlp_out)
    fit = fit_w_out(
        f_rows.hidden, resid_f, r_rows.hidden, None, ridge=config.ridge, retain_weight=config.retain_weight,
        method=method, steps=config.adamw_steps, lr=config.adamw_lr, model=model, layer=layer,
    )
    name = f"blocks.{layer}.mlp.W_out"
    meta = {"layer": layer, "coef": config.coef, "method": method, "objective": fit.objective, "forget_error": fit.forget_error,
            "retain_error": fit.retain_error, "seconds": fit.seconds, "n_forget_rows": int(f_rows.hidden.shape[0]), "n_retain_rows": int(r_rows.hidden.shape[0])}
    return DeltaEdit({name: fit.delta.to(model.weight(name).dtype)}, label=f"lunar-{method}", meta=meta), fit


def steering_sweep(
    model: "Model",
    data: LunarData,
    config: LunarConfig = LunarConfig(),
    *,
    coefs: Sequence[float] | None = None,
    values: Mapping[str, Sequence[str]] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Per layer (and coefficient): add ``c·r_l`` at ``blocks.l.hook_resid_post`` (last prompt token)
    and classify forget and retain answers; with ``config.sweep_fit`` also fit the ridge edit at
    the layer and classify answers under it.

    Long format: ``layer, coef, mode (none / steer / edit), split (forget / retain), metric
    (share_correct, share_unknown, share_other_value, share_other), value, n_items``; ``mode=none``
    rows (the unedited model) have ``layer = -1``.
    """
    coefs = list(coefs) if coefs is not None else [config.coef]
    layers = _check_layers(model, config.layers)
    f_items = _subset(data.forget, config.sweep_items, config.seed + 3)
    r_items = _subset(data.retain, config.sweep_items, config.seed + 4)
    kw = dict(values=values, refusals=config.refusals, max_new_tokens=config.max_new_tokens, batch_size=config.batch_size)
    rows: list[dict] = []

    def record(layer, coef, mode, split, frame):
        for metric, value in outcome_shares(frame).items():
            rows.append({"layer": layer, "coef": coef, "mode": mode, "split": split, "metric": metric, "value": value, "n_items": len(frame)})

    for split, items in (("forget", f_items), ("retain", r_items)):
        record(-1, 0.0, "none", split, answer_outcomes(model, items, **kw))
    jobs = [(l, c) for l in layers for c in coefs]
    for layer, coef in tqdm(jobs, desc="lunar sweep", leave=False, disable=not progress):
        vec = coef * data.directions[layer]
        for split, items in (("forget", f_items), ("retain", r_items)):
            record(layer, coef, "steer", split, answer_outcomes(model, items, steer=(layer, vec), **kw))
        if config.sweep_fit:
            edit, _ = fit_lunar_edit(model, data, layer, replace(config, coef=coef), method="ridge")
            for split, items in (("forget", f_items), ("retain", r_items)):
                record(layer, coef, "edit", split, answer_outcomes((model, edit), items, **kw))
    frame = pd.DataFrame(rows)
    norms = {l: float(data.directions[l].norm()) for l in layers}
    frame["direction_norm"] = frame["layer"].map(norms)
    return frame


def choose_layer(sweep: pd.DataFrame, *, coef: float | None = None) -> int:
    """The layer LUNAR edits: with ``edit`` rows (the fitted edits) the one maximising
    share_unknown(forget) + share_correct(retain) − share_unknown(retain) (a retain answer turned
    ``unknown`` is a side effect even where it was wrong before); with steering rows only, the
    one maximising share_unknown(forget) − share_correct(forget). Ties go to the earlier layer."""
    need = {"layer", "coef", "mode", "split", "metric", "value"}
    if not need <= set(sweep.columns):
        raise ValueError(f"choose_layer needs a steering_sweep frame with columns {sorted(need)}; got {list(sweep.columns)}")
    sub = sweep[sweep["mode"] != "none"]
    if coef is not None:
        sub = sub[np.isclose(sub["coef"], coef)]
    if sub.empty:
        raise ValueError(f"the sweep has no steered rows{'' if coef is None else f' for coef {coef}'}")
    mode = "edit" if (sub["mode"] == "edit").any() else "steer"
    sub = sub[sub["mode"] == mode]
    pivot = sub.pivot_table(index="layer", columns=["split", "metric"], values="value", aggfunc="max")
    if mode == "edit":
        score = pivot[("forget", "share_unknown")] + pivot.get(("retain", "share_correct"), 0.0) - pivot.get(("retain", "share_unknown"), 0.0)
    else:
        score = pivot[("forget", "share_unknown")] - pivot[("forget", "share_correct")]
    best = score.max()
    return int(min(l for l, s in score.items() if np.isclose(s, best)))


def layer_selection(sweep: pd.DataFrame, *, mode: str = "steer") -> Selection:
    """The sweep as a `Selection` of ``blocks.l.hook_resid_post`` sites scored by the share of
    forget answers turned ``unknown`` (best coefficient per layer)."""
    sub = sweep[(sweep["mode"] == mode) & (sweep["split"] == "forget") & (sweep["metric"] == "share_unknown")]
    if sub.empty:
        raise ValueError(f"no {mode!r} forget rows in the sweep")
    best = sub.groupby("layer")["value"].max()
    return Selection.from_scores([Site("hook", f"blocks.{int(l)}.hook_resid_post") for l in best.index], best.to_numpy())


@dataclass(frozen=True)
class LunarResult:
    """What `lunar` returns: the edit and the diagnostics that chose it."""

    edit: DeltaEdit
    """The one-matrix weight edit (``blocks.{layer}.mlp.W_out``)."""
    layer: int
    """The edited layer."""
    data: LunarData
    """Directions and items."""
    fit: FitResult
    """The chosen fit."""
    sweep: pd.DataFrame | None = None
    """The steering sweep (None when the layer was given)."""
    meta: dict = field(default_factory=dict)
    """Config and timings."""


def lunar(model: "Model", target: "Target", config: LunarConfig = LunarConfig(), *, cannot: Sequence | None = None, progress: bool = True) -> LunarResult:
    """LUNAR end to end (Shen et al. 2025): directions, the layer (given or by the steering
    sweep), and the fit of that layer's ``W_out``. The model is left unedited and hook-free."""
    hooks = model.hook_count()
    start = time.perf_counter()
    data = lunar_data(model, target, config, cannot=cannot, progress=progress)
    sweep = None
    layer = config.layer
    if layer is None:
        sweep = steering_sweep(model, data, config, progress=progress)
        layer = choose_layer(sweep, coef=config.coef)
    edit, fit = fit_lunar_edit(model, data, layer, config)
    if model.hook_count() != hooks:
        raise RuntimeError(f"LUNAR left {model.hook_count() - hooks} hooks on the model")
    return LunarResult(edit, layer, data, fit, sweep, {"config": config, "seconds": time.perf_counter() - start})


def compare_fits(model: "Model", data: LunarData, layer: int, config: LunarConfig = LunarConfig()) -> tuple[pd.DataFrame, dict[str, DeltaEdit]]:
    """Ridge (closed form) vs AdamW on the same objective at one layer: one row per method with
    the objective, relative residuals, seconds, steps and the distance between the two Δ's."""
    edits, fits = {}, {}
    for method in ("ridge", "adamw"):
        edits[method], fits[method] = fit_lunar_edit(model, data, layer, config, method=method)
    ref = fits["ridge"].delta
    rows = [
        {"method": m, "layer": layer, "objective": f.objective, "forget_error": f.forget_error, "retain_error": f.retain_error,
         "seconds": f.seconds, "steps": f.steps, "delta_norm": float(f.delta.norm()),
         "rel_dist_to_ridge": float((f.delta - ref).norm() / ref.norm().clamp_min(1e-12))}
        for m, f in fits.items()
    ]
    return pd.DataFrame(rows), edits


@torch.no_grad()
def activation_shift(model: "Model", edit: Edit, layer: int, items: Mapping[str, Sequence["Item"]], direction: Tensor | None = None, *, batch_size: int = 64) -> pd.DataFrame:
    """Per item, the change of ``blocks.{layer}.hook_mlp_out`` at the last prompt token caused by
    ``edit``: its norm and (with ``direction``) its projection on the unit direction. ``items``
    maps a split name (forget / retain …) to items. Columns: split, prompt, shift_norm,
    shift_along (NaN without a direction), base_norm."""
    site = f"blocks.{layer}.hook_mlp_out"
    unit = None if direction is None else (direction.float() / direction.float().norm().clamp_min(1e-12))
    rows = []
    for split, group in items.items():
        prompts = _prompts(group)
        before = cache_activations(model, prompts, [site], positions="last", batch_size=batch_size, progress=False)[site].float()
        with edit.applied(model):
            after = cache_activations(model, prompts, [site], positions="last", batch_size=batch_size, progress=False)[site].float()
        diff = after - before
        along = (diff @ unit).tolist() if unit is not None else [float("nan")] * len(prompts)
        for p, n, a, b in zip(prompts, diff.norm(dim=-1).tolist(), along, before.norm(dim=-1).tolist()):
            rows.append({"split": split, "prompt": p, "shift_norm": n, "shift_along": a, "base_norm": b})
    frame = pd.DataFrame(rows)
    frame["layer"] = layer
    return frame
