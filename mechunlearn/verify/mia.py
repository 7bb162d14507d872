"""Membership inference: can an attacker tell forget people's texts from never-seen people's?

Per text, from the model's token log-probabilities (each score is "member-ness": higher means
more likely seen in training):

| attack              | score                                                                       |
| ------------------- | --------------------------------------------------------------------------- |
| ``loss``            | −mean token NLL                                                             |
| ``zlib``            | −(mean token NLL) / zlib-compressed length of the text in bytes (Carlini et al. 2021) |
| ``min_k``           | mean of the lowest k% token log-probs (Shi et al. 2024; k = 40%)            |
| ``min_k_plus_plus`` | mean of the lowest k% of z_t = (log p(x_t) − μ_t)/σ_t, with μ_t, σ_t the mean and std of log p(v) under the model's next-token distribution p(·) (Zhang et al. 2024) |

The lowest k% keeps ``max(1, int(n·k))`` of a text's ``n`` tokens (as open-unlearning does).
``mia_<attack>`` is the ROC AUC of forget (positive) vs holdout (negative) scores: 1 means the
forget people are plainly members, 0.5 that they look like people never seen. PrivLeak =
(AUC_edited − AUC_retain) / AUC_retain × 100, against the retain model (near 0 is good; very
negative means the edit made the forget set *stand out* as unusually unlikely). ``privleak``
uses ``MIAConfig.privleak_attack`` (min_k, like open-unlearning); ``privleak_<attack>`` the others.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.memo import by_weights
from mechunlearn.core.result import Result, provenance
from mechunlearn.models.activations import model_of, using
from mechunlearn.models.text import chunks, encode_qa, token_logprobs

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item, Target

log = logging.getLogger(__name__)

ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")
"""Membership-inference attacks; their AUCs are reported as ``mia_<attack>``."""


# --------------------------------------------------------------------------- scores (pure)


def _lowest_k_mean(values: Float[Tensor, "n"], k: float) -> float:
    if values.numel() == 0:
        raise ValueError("a text with no scored tokens has no membership score")
    if not 0 < k <= 1:
        raise ValueError(f"k must be in (0, 1], got {k}")
    count = max(1, int(values.numel() * k))
    return float(torch.sort(values.double()).values[:count].mean())


def min_k(logprobs: Float[Tensor, "n"], k: float = 0.4) -> float:
    """Min-K%: mean of the lowest ``k`` share of a text's token log-probs."""
    return _lowest_k_mean(logprobs, k)


def min_k_plus_plus(logprobs: Float[Tensor, "n"], mu: Float[Tensor, "n"], sigma: Float[Tensor, "n"], k: float = 0.4) -> float:
    """Min-K%++: mean of the lowest ``k`` share of (log p − μ)/σ per token."""
    return _lowest_k_mean((logprobs.double() - mu.double()) / sigma.double().clamp_min(1e-12), k)


def zlib_ratio(mean_nll: float, text: str) -> float:
    """Mean token NLL divided by the zlib-compressed size of the text in bytes."""
    return float(mean_nll) / len(zlib.compress(text.encode("utf-8")))


def vocab_moments(logits: Float[Tensor, "... vocab"]) -> tuple[Float[Tensor, "..."], Float[Tensor, "..."]]:
    """μ = E_p[log p(v)] and σ = std_p[log p(v)] of the next-token distribution at each position."""
    logp = torch.log_softmax(logits.double(), dim=-1)
    p = logp.exp()
    mu = (p * logp).sum(-1)
    var = (p * logp.pow(2)).sum(-1) - mu.pow(2)
    return mu, var.clamp_min(0).sqrt()


def auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """ROC AUC = P(score of a positive > score of a negative), ties counted one half."""
    pos = np.asarray(positive, dtype=float)
    neg = np.asarray(negative, dtype=float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUC needs at least one positive and one negative score")
    if np.isnan(pos).any() or np.isnan(neg).any():
        raise ValueError("membership scores contain NaN")
    # rank-sum (Mann–Whitney U) with average ranks for ties
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    u = ranks[: pos.size].sum() - pos.size * (pos.size + 1) / 2
    return float(u / (pos.size * neg.size))


def roc_curve(positive: Sequence[float], negative: Sequence[float]) -> pd.DataFrame:
    """ROC points (``fpr``, ``tpr``) from the strictest threshold to the loosest, ties grouped."""
    pos = np.asarray(positive, dtype=float)
    neg = np.asarray(negative, dtype=float)
    if pos.size == 0 or neg.size == 0:
        raise ValueError("a ROC curve needs at least one positive and one negative score")
    thresholds = np.unique(np.concatenate([pos, neg]))[::-1]
    tpr = [0.0] + [float((pos >= t).mean()) for t in thresholds]
    fpr = [0.0] + [float((neg >= t).mean()) for t in thresholds]
    return pd.DataFrame({"fpr": fpr, "tpr": tpr})


def privleak(auc_edited: float, auc_retain: float) -> float:
    """(AUC_edited − AUC_retain) / AUC_retain × 100."""
    if auc_retain <= 0:
        raise ValueError(f"retain AUC must be > 0, got {auc_retain}")
    return (auc_edited - auc_retain) / auc_retain * 100.0


# --------------------------------------------------------------------------- on a model


@dataclass(frozen=True)
class MIAConfig:
    """Membership-inference settings."""

    k: float = 0.4
    """Share of lowest-scoring tokens kept by Min-K% and Min-K%++."""
    scope: str = "full"
    """``full``: score every token of ``"{prompt} {answer}"`` (bios-tiny's answers are one token,
    so Min-K% over answers alone would equal LOSS); ``answer``: only the answer tokens given the prompt."""
    paraphrase: str | None = "trained"
    """Keep only items of this template kind (``trained``: phrasings seen in training); None: all."""
    max_items: int | None = 1000
    """Items per split (a seeded random subset; None: all)."""
    privleak_attack: str = "min_k"
    """The attack whose AUC defines ``privleak`` (open-unlearning uses min_k)."""
    batch_size: int = 64
    """Sequences per forward pass."""
    seed: int = 0
    """Seed of the item subset."""

    def __post_init__(self) -> None:
        if self.scope not in ("full", "answer"):
            raise ValueError(f"scope must be 'full' or 'answer', got {self.scope!r}")
        if not 0 < self.k <= 1:
            raise ValueError(f"k must be in (0, 1], got {self.k}")
        if self.privleak_attack not in ATTACKS:
            raise ValueError(f"privleak_attack must be one of {ATTACKS}, got {self.privleak_attack!r}")


def item_text(item: "Item") -> str:
    """The text an item stands for: ``"{prompt} {answer}"``."""
    return f"{item.prompt} {item.answer}".strip()


@by_weights
@torch.no_grad()
def mia_scores(model: "Model", items: Sequence["Item"], config: MIAConfig = MIAConfig(), *, progress: bool = True) -> pd.DataFrame:
    """Per item: the membership score of every attack (columns ``loss``, ``zlib``, ``min_k``,
    ``min_k_plus_plus``; higher = more likely a member) and ``n_tokens``."""
    if not items:
        raise ValueError("no items to score")
    rows = []
    n_batches = (len(items) + config.batch_size - 1) // config.batch_size
    for chunk in tqdm(chunks(list(items), config.batch_size), total=n_batches, desc="mia", leave=False, disable=not progress or n_batches < 4):
        if config.scope == "full":
            batch = encode_qa(model, [""] * len(chunk), [item_text(it) for it in chunk])
        else:
            batch = encode_qa(model, [it.prompt for it in chunk], [it.answer for it in chunk])
        logits = model.forward(batch.tokens)
        lp = token_logprobs(logits, batch.targets).double()
        mu, sigma = vocab_moments(logits)
        mask = batch.answer_mask.to(lp.device)
        for i, it in enumerate(chunk):
            m = mask[i]
            tok_lp = lp[i][m].cpu()
            mean_nll = float(-tok_lp.mean())
            text = item_text(it) if config.scope == "full" else it.answer
            rows.append(
                {
                    "subject": it.subject,
                    "attribute": it.attribute,
                    "template": it.template,
                    "n_tokens": int(m.sum()),
                    "loss": -mean_nll,
                    "zlib": -zlib_ratio(mean_nll, text),
                    "min_k": min_k(tok_lp, config.k),
                    "min_k_plus_plus": min_k_plus_plus(tok_lp, mu[i][m].cpu(), sigma[i][m].cpu(), config.k),
                }
            )
    return pd.DataFrame(rows)


def _subset(items: Sequence["Item"], config: MIAConfig) -> list["Item"]:
    items = [it for it in items if config.paraphrase is None or it.paraphrase == config.paraphrase]
    if config.max_items is not None and len(items) > config.max_items:
        keep = np.sort(np.random.default_rng(config.seed).choice(len(items), config.max_items, replace=False))
        items = [items[i] for i in keep]
    return items


def membership_inference(
    models: Mapping[str, object],
    target: "Target",
    config: MIAConfig = MIAConfig(),
    *,
    retain_role: str | None = "retain",
    keep_scores: bool = False,
    method: str = "none",
    run_id: str | None = None,
    progress: bool = True,
) -> Result:
    """AUC of every attack, forget vs holdout, for each model role; ``privleak`` of every
    other role against ``retain_role`` (when present).

    ``models`` maps roles to `Model`s or ``(Model, Edit)`` pairs. With ``keep_scores`` the
    per-item scores are included as ``metric="mia_score"`` rows (columns ``attack``, ``item``),
    which `mechunlearn.figures.mia_roc` draws.
    """
    forget = _subset(target.forget, config)
    holdout = _subset(target.holdout, config)
    if not forget or not holdout:
        raise ValueError(
            f"target {target.name!r} needs forget and holdout items (paraphrase={config.paraphrase!r}) for membership inference; "
            f"got {len(forget)} and {len(holdout)}"
        )
    rows: list[dict] = []
    aucs: dict[str, dict[str, float]] = {}
    for role, subject in models.items():
        with using(subject) as model:
            scores = {"forget": mia_scores(model, forget, config, progress=progress), "holdout": mia_scores(model, holdout, config, progress=progress)}
        aucs[role] = {}
        for attack in ATTACKS:
            value = auc(scores["forget"][attack], scores["holdout"][attack])
            aucs[role][attack] = value
            rows.append({"model": role, "metric": f"mia_{attack}", "attack": attack, "split": "forget_vs_holdout", "value": value, "n_items": len(forget) + len(holdout)})
            if keep_scores:
                for split, frame in scores.items():
                    rows += [{"model": role, "metric": "mia_score", "attack": attack, "split": split, "item": i, "value": v} for i, v in enumerate(frame[attack].tolist())]
    if retain_role is not None and retain_role in aucs:
        for role in aucs:
            if role == retain_role:
                continue
            for attack in ATTACKS:
                name = "privleak" if attack == config.privleak_attack else f"privleak_{attack}"
                rows.append({"model": role, "metric": name, "attack": attack, "split": "forget_vs_holdout", "value": privleak(aucs[role][attack], aucs[retain_role][attack])})
    frame = pd.DataFrame(rows)
    frame["method"] = method
    frame["run_id"] = run_id
    first = model_of(next(iter(models.values())))
    return Result(frame, provenance(first.model_id, config, target=target.name, models=list(models)))
