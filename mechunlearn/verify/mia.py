"""Membership inference: can an attacker tell forget people's texts from never-seen people's?

Per text, from the model's token log-probabilities (each score is "member-ness": higher means
more likely seen in training; open-unlearning signs its scores the other way, as losses, and
gives the forget set label 0 in ``roc_auc_score``, ``src/evals/metrics/mia/utils.py:58-68``, so
the AUCs are the same numbers):

| attack              | score                                                                       | open-unlearning |
| ------------------- | --------------------------------------------------------------------------- | --------------- |
| ``loss``            | −mean token NLL                                                             | ``mia/loss.py:9-16`` |
| ``zlib``            | −(mean token NLL) / zlib-compressed length of the text in bytes (Carlini et al. 2021) | ``mia/zlib.py:14-29`` |
| ``min_k``           | mean of the lowest k% token log-probs (Shi et al. 2024; k = 40%)            | ``mia/min_k.py:10-26`` |
| ``min_k_plus_plus`` | mean of the lowest k% of z_t = (log p(x_t) − μ_t)/σ_t, with μ_t, σ_t the mean and std of log p(v) under the model's next-token distribution p(·), σ_t² floored at 1e-6 (Zhang et al. 2024) | ``mia/min_k_plus_plus.py:7-39`` |
| ``gradnorm``        | −mean over parameter tensors of ‖∇_θ mean token NLL‖_p (p = 2), one text at a time | ``mia/gradnorm.py:13-38`` |
| ``reference``       | NLL under the retain model − NLL under the scored model (the retain model is the reference) | ``mia/reference.py:9-25`` |

The lowest k% keeps ``max(1, int(n·k))`` of a text's ``n`` tokens (as open-unlearning does).
Which tokens each score counts is the target's `ScoringProtocol` (`mechunlearn.verify.protocol`;
column ``protocol``): under ``tofu``, LOSS, zlib and the reference attack count the EOS token
and Min-K%, Min-K%++ and gradnorm drop it, and the answer is scored given its question.
``mia_<attack>`` is the ROC AUC of forget (positive) vs holdout (negative) scores: 1 means the
forget people are plainly members, 0.5 that they look like people never seen.

PrivLeak follows MUSE and open-unlearning (``src/evals/metrics/privacy.py:35-52``), which take
AUCs as 1 − AUC: (AUC_retain − AUC_edited) / (1 − AUC_retain) × 100, with AUC_retain the retain
model's on the same split. The retain model reads 0; an unedited model that plainly remembers
its forget set about −100; an edit that makes the forget set look *less* familiar than unseen
data positive. ``privleak`` uses ``MIAConfig.privleak_attack`` (min_k, like open-unlearning's
``configs/eval/tofu_metrics/privleak.yaml``); ``privleak_<attack>`` the others.
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
from mechunlearn.verify.protocol import PROTOCOLS, ScoringProtocol, protocol_for

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Item, Target

log = logging.getLogger(__name__)

TEXT_ATTACKS = ("loss", "zlib", "min_k", "min_k_plus_plus")
"""Attacks scored from one forward pass per batch (`mia_scores`)."""
ATTACKS = (*TEXT_ATTACKS, "gradnorm", "reference")
"""Membership-inference attacks; their AUCs are reported as ``mia_<attack>``."""
DEFAULT_ATTACKS = (*TEXT_ATTACKS, "reference")
"""The attacks a `MIAConfig` runs unless told otherwise (gradnorm costs a backward pass per text;
open-unlearning's ``configs/eval/tofu.yaml`` leaves it off too)."""


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
    """Min-K%++: mean of the lowest ``k`` share of (log p − μ)/σ per token, σ at least 1e-3
    (open-unlearning floors σ² at 1e-6, ``src/evals/metrics/mia/min_k_plus_plus.py:31-35``)."""
    return _lowest_k_mean((logprobs.double() - mu.double()) / sigma.double().clamp_min(1e-3), k)


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
    """MUSE's PrivLeak: ((1 − AUC_edited) − (1 − AUC_retain)) / ((1 − AUC_retain) + 1e-10) × 100.

    open-unlearning ``src/evals/metrics/privacy.py:35-52`` (``privleak``), the same arithmetic.
    The retain model scores 0; an unedited model whose forget set has AUC 1 against a retain AUC
    of 0.5 scores −100. A retain AUC of 1 leaves nothing to compare with: an error.
    """
    for name, value in (("edited", auc_edited), ("retain", auc_retain)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} AUC must be in [0, 1], got {value}")
    if auc_retain >= 1:
        raise ValueError("the retain model's AUC is 1 (it tells forget from holdout perfectly): PrivLeak divides by 1 - AUC_retain")
    score, ref = 1.0 - auc_edited, 1.0 - auc_retain
    return (score - ref) / (ref + 1e-10) * 100.0


def gradnorm(grads: Sequence[Tensor], p: float = 2) -> float:
    """Mean over parameter tensors of ``‖grad‖_p``: open-unlearning's gradnorm statistic
    (``src/evals/metrics/mia/gradnorm.py:23-32``; a larger norm means a less familiar text)."""
    if p not in (1, 2, float("inf")):
        raise ValueError(f"gradnorm's p must be 1, 2 or inf, got {p}")
    if not grads:
        raise ValueError("gradnorm needs at least one parameter gradient")
    return float(torch.stack([g.detach().double().norm(p=p) for g in grads]).mean())


# --------------------------------------------------------------------------- on a model


@dataclass(frozen=True)
class MIAConfig:
    """Membership-inference settings."""

    k: float = 0.4
    """Share of lowest-scoring tokens kept by Min-K% and Min-K%++."""
    attacks: tuple[str, ...] = DEFAULT_ATTACKS
    """Attacks to run (`ATTACKS`; ``reference`` needs the retain model, ``gradnorm`` a backward pass per text)."""
    protocol: str | None = None
    """Scoring protocol (`mechunlearn.verify.protocol`: ``mechunlearn`` or ``tofu``); None: the target's."""
    scope: str | None = None
    """``full``: score every token of ``"{prompt} {answer}"`` (bios-tiny's answers are one token,
    so Min-K% over answers alone would equal LOSS); ``answer``: only the answer tokens given the
    prompt; None: the protocol's."""
    gradnorm_p: float = 2
    """The p of gradnorm's per-tensor norms (1, 2 or inf; open-unlearning's config uses 2)."""
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
        if self.scope not in (None, "full", "answer"):
            raise ValueError(f"scope must be 'full', 'answer' or None, got {self.scope!r}")
        bad = [a for a in self.attacks if a not in ATTACKS]
        if bad or not self.attacks:
            raise ValueError(f"unknown membership attacks {bad} (or none given); choose from {ATTACKS}")
        if self.gradnorm_p not in (1, 2, float("inf")):
            raise ValueError(f"gradnorm_p must be 1, 2 or inf, got {self.gradnorm_p}")
        if self.protocol is not None:
            PROTOCOLS.get(self.protocol)
        if not 0 < self.k <= 1:
            raise ValueError(f"k must be in (0, 1], got {self.k}")
        if self.privleak_attack not in self.attacks or self.privleak_attack == "reference":
            raise ValueError(f"privleak_attack must be one of the attacks run (not 'reference', which has no retain AUC), got {self.privleak_attack!r}")


def item_text(item: "Item") -> str:
    """The text an item stands for: ``"{prompt} {answer}"``."""
    return f"{item.prompt} {item.answer}".strip()


def _encode(model: "Model", items: Sequence["Item"], scope: str, eos: bool):
    if scope == "full":
        return encode_qa(model, [""] * len(items), [item_text(it) for it in items], eos=eos)
    return encode_qa(model, [it.prompt for it in items], [it.answer for it in items], eos=eos)


def _positions(mask_row: Tensor, eos: bool) -> tuple[Tensor, Tensor]:
    """(every scored position, the token-wise scores' positions: without the EOS under ``eos``)."""
    at = mask_row.nonzero()[:, 0]
    return at, (at[:-1] if eos else at)


def _scope(config: MIAConfig, protocol: ScoringProtocol) -> str:
    return config.scope or protocol.mia_scope


@by_weights
@torch.no_grad()
def mia_scores(model: "Model", items: Sequence["Item"], config: MIAConfig = MIAConfig(), *, protocol: str = "mechunlearn", progress: bool = True) -> pd.DataFrame:
    """Per item: the membership score of every attack of `TEXT_ATTACKS` (columns ``loss``,
    ``zlib``, ``min_k``, ``min_k_plus_plus``; higher = more likely a member) and ``n_tokens``
    (the tokens LOSS counts), under the named scoring ``protocol``."""
    if not items:
        raise ValueError("no items to score")
    proto = PROTOCOLS.get(protocol)
    scope = _scope(config, proto)
    rows = []
    n_batches = (len(items) + config.batch_size - 1) // config.batch_size
    for chunk in tqdm(chunks(list(items), config.batch_size), total=n_batches, desc="mia", leave=False, disable=not progress or n_batches < 4):
        batch = _encode(model, chunk, scope, proto.eos)
        logits = model.forward(batch.tokens)
        lp = token_logprobs(logits, batch.targets).double()
        mu, sigma = vocab_moments(logits)
        mask = batch.answer_mask.to(lp.device)
        for i, it in enumerate(chunk):
            every, tokenwise = _positions(mask[i], proto.eos)
            mean_nll = float(-lp[i, every].mean())
            text = item_text(it) if scope == "full" else it.answer
            tok_lp = lp[i, tokenwise].cpu()
            rows.append(
                {
                    "subject": it.subject,
                    "attribute": it.attribute,
                    "template": it.template,
                    "n_tokens": int(every.numel()),
                    "loss": -mean_nll,
                    "zlib": -zlib_ratio(mean_nll, text),
                    "min_k": min_k(tok_lp, config.k),
                    "min_k_plus_plus": min_k_plus_plus(tok_lp, mu[i, tokenwise].cpu(), sigma[i, tokenwise].cpu(), config.k),
                }
            )
    return pd.DataFrame(rows)


@by_weights
def gradnorm_scores(model: "Model", items: Sequence["Item"], config: MIAConfig = MIAConfig(), *, protocol: str = "mechunlearn", progress: bool = True) -> np.ndarray:
    """Per item: −`gradnorm` of the mean token NLL (the token-wise scores' tokens), one item at a
    time as open-unlearning does (its config's ``batch_size: 1``). Higher = more likely a member.

    Every parameter of the model takes part; gradients the model held before are put back after.
    The model stays in eval mode (open-unlearning switches to train mode, which only matters for
    models with dropout)."""
    if not items:
        raise ValueError("no items to score")
    proto = PROTOCOLS.get(protocol)
    scope = _scope(config, proto)
    params = list(model.bridge.parameters())
    saved = [(p.requires_grad, p.grad) for p in params]
    out = []
    try:
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        for it in tqdm(items, desc="gradnorm", leave=False, disable=not progress or len(items) < 64):
            batch = _encode(model, [it], scope, proto.eos)
            lp = token_logprobs(model.forward(batch.tokens), batch.targets)
            _, tokenwise = _positions(batch.answer_mask[0].to(lp.device), proto.eos)
            (-lp[0, tokenwise].mean()).backward()
            out.append(-gradnorm([p.grad for p in params if p.grad is not None], config.gradnorm_p))
            for p in params:
                p.grad = None
    finally:
        for p, (flag, grad) in zip(params, saved):
            p.requires_grad_(flag)
            p.grad = grad
    return np.asarray(out)


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
    """AUC of every attack of ``config.attacks``, forget vs holdout, for each model role;
    ``privleak`` of every other role against ``retain_role`` (when present). The ``reference``
    attack needs ``retain_role`` and is scored for the other roles only (against itself every
    score would be 0).

    ``models`` maps roles to `Model`s or ``(Model, Edit)`` pairs. With ``keep_scores`` the
    per-item scores are included as ``metric="mia_score"`` rows (columns ``attack``, ``item``),
    which `mechunlearn.figures.mia_roc` draws.
    """
    proto = protocol_for(target, config.protocol)
    forget = _subset(target.forget, config)
    holdout = _subset(target.holdout, config)
    if not forget or not holdout:
        raise ValueError(
            f"target {target.name!r} needs forget and holdout items (paraphrase={config.paraphrase!r}) for membership inference; "
            f"got {len(forget)} and {len(holdout)}"
        )
    attacks = [a for a in config.attacks if a != "reference"]
    reference = "reference" in config.attacks and retain_role is not None and retain_role in models
    if "reference" in config.attacks and not reference:
        log.warning("membership inference: no %r model, so no reference attack", retain_role)
    scores: dict[str, dict[str, pd.DataFrame]] = {}
    for role, subject in models.items():
        with using(subject) as model:
            scores[role] = {split: mia_scores(model, items, config, protocol=proto.name, progress=progress) for split, items in (("forget", forget), ("holdout", holdout))}
            if "gradnorm" in attacks:
                for split, items in (("forget", forget), ("holdout", holdout)):
                    scores[role][split]["gradnorm"] = gradnorm_scores(model, items, config, protocol=proto.name, progress=progress)
    if reference:
        for role in models:
            if role != retain_role:
                for split in ("forget", "holdout"):
                    # member-ness: NLL under the reference minus NLL under the scored model
                    scores[role][split]["reference"] = scores[role][split]["loss"] - scores[retain_role][split]["loss"]
    rows: list[dict] = []
    aucs: dict[str, dict[str, float]] = {}
    for role, by_split in scores.items():
        aucs[role] = {}
        for attack in (*attacks, "reference"):
            if attack not in by_split["forget"]:
                continue
            value = auc(by_split["forget"][attack], by_split["holdout"][attack])
            aucs[role][attack] = value
            rows.append({"model": role, "metric": f"mia_{attack}", "attack": attack, "split": "forget_vs_holdout", "value": value, "n_items": len(forget) + len(holdout)})
            if keep_scores:
                for split, frame in by_split.items():
                    rows += [{"model": role, "metric": "mia_score", "attack": attack, "split": split, "item": i, "value": v} for i, v in enumerate(frame[attack].tolist())]
    if retain_role is not None and retain_role in aucs:
        for role in aucs:
            if role == retain_role:
                continue
            for attack in attacks:
                name = "privleak" if attack == config.privleak_attack else f"privleak_{attack}"
                rows.append({"model": role, "metric": name, "attack": attack, "split": "forget_vs_holdout", "value": privleak(aucs[role][attack], aucs[retain_role][attack])})
    frame = pd.DataFrame(rows)
    frame["protocol"] = proto.name
    frame["method"] = method
    frame["run_id"] = run_id
    first = model_of(next(iter(models.values())))
    return Result(frame, provenance(first.model_id, config, target=target.name, models=list(models), protocol=proto.name))
