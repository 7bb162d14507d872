"""Concept vectors (ConceptVectors, Hong et al. 2024; Geva et al. 2022): locate, validate, Needle.

An MLP's output is Σ_i m_i v_i with v_i = row ``i`` of ``blocks.l.mlp.W_out`` (TL layout
``[d_mlp, d_model]``). Projecting v_i on the vocabulary (``v_i · W_U``) shows which tokens the
vector promotes; a *concept vector* promotes a concept's tokens (``Japan``, ``Japanese``,
``Tokyo`` …).

| step        | function                        | returns                                      |
| ----------- | ------------------------------- | -------------------------------------------- |
| locate      | `scan(model, references)`       | `ConceptScan` (scores of every vector × concept; ``.selection(name)``) |
| validate    | `validate(model, concept, site)`| `Result` (BLEU / ROUGE-L / exact match / log-prob, concept vs unrelated) |
| edit        | `needle(model, concept, site)`  | `Edit` = noise `WeightEdit` + gradient-ascent `DeltaEdit` on that one row |
| file        | `build_concept_file(model, concept_set, path)` | the located + validated `ConceptSet`, written atomically |

>>> refs = concept_set.reference_ids(model)                 # {concept: [token ids]}
>>> found = scan(model, refs)                                # one projection pass for all concepts
>>> found.selection("Japan").top(5).to_frame()[["site", "score", "top_tokens"]]
>>> report = validate(model, concept_set["Japan"], found.best("Japan"))

**Scoring.** Each vector's top-``k`` tokens (``k = 200`` as in the paper) are compared with the
concept's reference tokens by nDCG@k: a reference token at rank ``r`` (0-based) counts
``1/log2(r + 2)``, normalised by the best possible sum for that many reference tokens. Plain
overlap counts (the paper's ``|top-k ∩ R|``) are small integers, so tens of thousands of vectors
tie, and a reference token at rank 190 among unrelated tokens counts as much as one at rank 0.
nDCG keeps the paper's top-k criterion but orders ties by *where* the concept's tokens sit, and
is comparable across concepts with different reference-set sizes. ``scoring="overlap"`` gives
the paper's count (divided by ``|R|``).

**Signs.** SmolLM2's and Gemma's MLPs are gated (``m_i = act(gate_i) · up_i``) and ``up_i`` takes
either sign, so a concept can live in ``+v_i`` or in ``−v_i`` (flipping the signs of ``up_i`` and
``v_i`` together gives the same network). ``signs="both"`` also scores the bottom-``k`` tokens;
the better sign is kept per vector and concept (extra column ``sign``). A non-gated MLP
(bios-tiny's GELU: ``m_i = gelu(·) ≥ −0.17``) only ever adds ``+v_i`` in any real amount, so a
concept in ``v_i``'s bottom tokens is one the vector pushes *down*: there ``signs="positive"``,
the paper's rule. The default ``signs="auto"`` picks by `Model.gated_mlp` and records the choice
in the scan's config.

**Cost.** The projection of every vector on the full vocabulary (``n_layers · d_mlp`` rows, e.g.
46,080 × 49,152 for SmolLM2: 2.6 TFLOP) is done once, in row chunks (``chunk_size``) so that
peak memory is ``chunk_size × d_vocab × 4`` bytes; every concept is scored from the same top-k
ids. Never one projection per concept, never a Python loop over vectors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm.auto import tqdm

from mechunlearn.core.edit import Compose, Edit, WeightEdit
from mechunlearn.core.result import Result, provenance
from mechunlearn.core.selection import MaskSelection, Selection
from mechunlearn.core.site import Site
from mechunlearn.locate.registry import LOCALIZERS
from mechunlearn.models.text import reference_ids  # noqa: F401 (part of this module's API)

if TYPE_CHECKING:
    from mechunlearn.models.model import Model
    from mechunlearn.world.concepts import Concept, ConceptSet
    from mechunlearn.world.target import Target

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- projection
def unembedding(model: "Model", *, final_norm: bool = False) -> Float[Tensor, "d_model d_vocab"]:
    """The unembedding ``W_U`` (raw, as in the paper), or ``diag(g) · W_U`` with the final norm's gain ``g``.

    Bias terms are left out: they shift every vector's logits equally and cannot change its top-k.
    """
    w_u = model.weight("unembed.W_U").detach()
    if not final_norm:
        return w_u
    names = model.weight_names("all", include_tied=True)
    if "ln_final.w" not in names:
        raise ValueError(f"{model.model_id} has no final-norm gain ln_final.w; use final_norm=False")
    return model.weight("ln_final.w").detach()[:, None] * w_u


def value_vectors(model: "Model", layers: Sequence[int] | None = None) -> Float[Tensor, "n_layers d_mlp d_model"]:
    """Every value vector of the chosen layers (all by default), stacked: ``[layer, i, d_model]``."""
    layers = _check_layers(model, layers)
    return torch.stack([model.weight(f"blocks.{l}.mlp.W_out").detach() for l in layers])


def _check_layers(model: "Model", layers: Sequence[int] | None) -> tuple[int, ...]:
    if layers is None:
        return tuple(range(model.n_layers))
    layers = tuple(int(l) for l in layers)
    if not layers:
        raise ValueError("layers is empty; give at least one layer or None for all")
    bad = [l for l in layers if not 0 <= l < model.n_layers]
    if bad:
        raise ValueError(f"layers {bad} out of range: {model.model_id} has layers 0..{model.n_layers - 1}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers contain duplicates: {layers}")
    return layers


def top_token_ids(
    vectors: Float[Tensor, "n d_model"],
    w_u: Float[Tensor, "d_model d_vocab"],
    k: int,
    *,
    largest: bool = True,
    chunk_size: int = 2048,
) -> Int[Tensor, "n k"]:
    """Ids of each vector's ``k`` highest-logit tokens (``largest=False``: lowest), best first, chunked."""
    if vectors.shape[-1] != w_u.shape[0]:
        raise ValueError(f"vectors have width {vectors.shape[-1]} but W_U has {w_u.shape[0]} rows (d_model)")
    k = _check_k(k, w_u.shape[1])
    out = torch.empty(vectors.shape[0], k, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, vectors.shape[0], chunk_size):
            logits = vectors[start : start + chunk_size].float() @ w_u.float()
            out[start : start + chunk_size] = logits.topk(k, dim=-1, largest=largest).indices.cpu()
    return out


def _check_k(k: int, d_vocab: int) -> int:
    if not 1 <= k <= d_vocab:
        raise ValueError(f"k must be in 1..{d_vocab} (the vocabulary size), got {k}")
    return int(k)


# --------------------------------------------------------------------------- scan
@dataclass(frozen=True)
class ScanConfig:
    """How `scan` projects and scores value vectors."""

    k: int = 200
    """Top-k tokens per vector compared with the reference tokens (200 in the paper)."""
    scoring: Literal["ndcg", "overlap"] = "ndcg"
    """``ndcg``: rank-discounted overlap normalised per concept (default, see the module docstring);
    ``overlap``: |top-k ∩ R| / |R| as in the paper."""
    signs: Literal["auto", "positive", "both"] = "auto"
    """``positive``: only the tokens a vector promotes (the paper); ``both``: also its bottom-k,
    for gated MLPs whose activations take either sign; ``auto``: ``both`` for gated MLPs,
    ``positive`` otherwise (see the module docstring)."""
    final_norm: bool = False
    """Multiply ``W_U`` by the final norm's gain before projecting (the paper uses the raw ``W_U``)."""
    chunk_size: int = 2048
    """Vectors projected per matrix product; peak memory ≈ chunk_size × d_vocab × 4 bytes."""
    n_top_tokens: int = 20
    """How many of each vector's top tokens are kept for display (``top_tokens`` extra; at most k)."""
    layers: tuple[int, ...] | None = None
    """Layers to scan (``None``: all)."""

    def __post_init__(self) -> None:
        if self.scoring not in ("ndcg", "overlap"):
            raise ValueError(f"scoring must be 'ndcg' or 'overlap', got {self.scoring!r}")
        if self.signs not in ("auto", "positive", "both"):
            raise ValueError(f"signs must be 'auto', 'positive' or 'both', got {self.signs!r}")
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.n_top_tokens < 1:
            raise ValueError(f"n_top_tokens must be >= 1, got {self.n_top_tokens}")

    def for_model(self, model: "Model") -> "ScanConfig":
        """This config with ``signs="auto"`` resolved for ``model`` (``both`` for gated MLPs)."""
        if self.signs != "auto":
            return self
        resolved = replace(self, signs="both" if model.gated_mlp else "positive")
        log.info("scan: signs=%r (%s MLP)", resolved.signs, "gated" if model.gated_mlp else "non-gated")
        return resolved


@dataclass(frozen=True)
class ConceptScan:
    """Scores of every scanned value vector against every concept, from one projection pass.

    ``scores[c, j, i]`` scores vector ``i`` of ``layers[j]`` for ``concepts[c]`` (higher is
    better); ``hits`` counts reference tokens in its top-k; ``signs`` is +1 or −1 (which
    direction scored). ``top_ids[j, i]`` / ``bottom_ids`` hold each vector's best / worst
    ``n_top_tokens`` token ids.
    """

    model_id: str
    """The model that was scanned."""
    concepts: tuple[str, ...]
    """Concept names, in the order of the first axis of ``scores``."""
    layers: tuple[int, ...]
    """Scanned layers, in the order of the second axis."""
    scores: Float[Tensor, "concept layer d_mlp"]
    """Score of each vector for each concept (nDCG@k or overlap fraction)."""
    hits: Int[Tensor, "concept layer d_mlp"]
    """Number of reference tokens among the vector's top-k (of the scoring sign)."""
    signs: Int[Tensor, "concept layer d_mlp"]
    """+1 if the concept is in the vector's top-k, −1 if in its bottom-k (``signs="both"``)."""
    top_ids: Int[Tensor, "layer d_mlp n_top"]
    """Ids of each vector's highest-logit tokens, best first."""
    bottom_ids: Int[Tensor, "layer d_mlp n_top"] | None
    """Ids of each vector's lowest-logit tokens (``signs="both"`` only)."""
    references: Mapping[str, tuple[int, ...]]
    """Each concept's reference token ids."""
    config: ScanConfig
    """The scan's settings."""
    vocab: tuple[str, ...] = field(repr=False)
    """Decoded string of every token id (for the ``top_tokens`` extra)."""

    def _concept_index(self, concept: str) -> int:
        try:
            return self.concepts.index(concept)
        except ValueError:
            raise KeyError(f"concept {concept!r} was not scanned; scanned: {', '.join(self.concepts)}") from None

    def tokens_of(self, layer: int, index: int, *, sign: int = 1, n: int | None = None) -> list[str]:
        """Decoded top tokens of one vector (``sign=-1``: its bottom tokens)."""
        j = self.layers.index(layer)
        ids = self.top_ids if sign > 0 else self.bottom_ids
        if ids is None:
            raise ValueError("bottom tokens were not kept; scan with signs='both'")
        return [self.vocab[t] for t in ids[j, index, :n].tolist()]

    def selection(self, concept: str, top: int | None = None) -> Selection:
        """The scanned vectors as a `Selection` for one concept, best first (``top``: only the best ``top``).

        Extras: ``concept``, ``sign``, ``hits``, ``top_tokens`` (of the scoring sign).
        """
        c = self._concept_index(concept)
        flat = self.scores[c].reshape(-1)
        n = flat.numel() if top is None else min(int(top), flat.numel())
        order = torch.argsort(flat, descending=True, stable=True)[:n]  # ties: lower layer, then lower index
        d_mlp = self.scores.shape[-1]
        sites, tokens, signs, hits = [], [], [], []
        sign_flat = self.signs[c].reshape(-1)
        hit_flat = self.hits[c].reshape(-1)
        for pos in order.tolist():
            j, i = divmod(pos, d_mlp)
            layer = self.layers[j]
            sign = int(sign_flat[pos])
            sites.append(Site("param", f"blocks.{layer}.mlp.W_out", (i,)))
            tokens.append(self.tokens_of(layer, i, sign=sign))
            signs.append(sign)
            hits.append(int(hit_flat[pos]))
        meta = {"localizer": "concept_vectors", "concept": concept, "model_id": self.model_id, "config": self.config}
        return Selection(
            sites,
            flat[order].double().numpy(),
            {"concept": [concept] * len(sites), "sign": signs, "hits": hits, "top_tokens": tokens},
            meta,
        )

    def rank_of(self, concept: str, site: Site | str) -> int:
        """Position of a vector in the concept's ranking (0 = best; ties by layer, then index)."""
        c = self._concept_index(concept)
        site = Site.parse(site) if isinstance(site, str) else site
        if not site.name.endswith(".mlp.W_out") or len(site.index) != 1 or site.layer not in self.layers:
            raise ValueError(f"{site} is not one of the scanned value vectors (layers {self.layers})")
        pos = self.layers.index(site.layer) * self.scores.shape[-1] + site.index[0]
        order = torch.argsort(self.scores[c].reshape(-1), descending=True, stable=True)
        return int((order == pos).nonzero()[0, 0])

    def selections(self, top: int | None = 100) -> dict[str, Selection]:
        """One `Selection` per concept (best ``top`` vectors each)."""
        return {c: self.selection(c, top) for c in self.concepts}

    def best(self, concept: str, n: int = 1) -> list[Site]:
        """The sites of the ``n`` best-scoring vectors of a concept."""
        return list(self.selection(concept, top=n).sites)

    def to_frame(self, top: int = 10) -> pd.DataFrame:
        """Tidy table of every concept's best ``top`` vectors (columns: concept, rank, site, layer, index, score …)."""
        parts = []
        for concept in self.concepts:
            frame = self.selection(concept, top).to_frame()
            frame.insert(0, "rank", range(len(frame)))
            parts.append(frame)
        frame = pd.concat(parts, ignore_index=True)
        return frame[["concept", *[c for c in frame.columns if c != "concept"]]]


def reference_matrix(references: Mapping[str, Sequence[int]], d_vocab: int) -> Float[Tensor, "concept d_vocab"]:
    """Indicator ``R[c, t] = 1`` if token ``t`` is one of concept ``c``'s reference tokens."""
    ref = torch.zeros(len(references), d_vocab)
    for c, (name, ids) in enumerate(references.items()):
        ids = list(ids)
        if not ids:
            raise ValueError(f"concept {name!r} has no reference tokens; give words that the tokenizer knows")
        bad = [t for t in ids if not 0 <= int(t) < d_vocab]
        if bad:
            raise ValueError(f"concept {name!r}: reference token ids {bad[:5]} out of range 0..{d_vocab - 1}")
        ref[c, torch.as_tensor(ids, dtype=torch.long)] = 1.0
    return ref


def rank_weights(k: int, scoring: str) -> Float[Tensor, "k"]:
    """Weight of a reference token at each top-k rank: ``1/log2(r + 2)`` (nDCG) or 1 (overlap)."""
    if scoring == "ndcg":
        return 1.0 / torch.log2(torch.arange(k, dtype=torch.float32) + 2.0)
    return torch.ones(k)


def score_top_ids(
    ids: Int[Tensor, "n k"], ref: Float[Tensor, "concept d_vocab"], scoring: str = "ndcg"
) -> tuple[Float[Tensor, "concept n"], Int[Tensor, "concept n"]]:
    """Scores and hit counts of vectors (given their top-k ids, best first) against every concept.

    ``ndcg``: Σ over reference tokens in the top-k of ``1/log2(rank + 2)``, divided by the ideal
    sum (all of the first ``min(k, |R|)`` ranks hit). ``overlap``: hits / ``min(k, |R|)``.
    """
    k = ids.shape[-1]
    ref = ref.to(ids.device)
    w = rank_weights(k, scoring).to(ids.device)
    member = ref[:, ids]  # [concept, n, k], 1 where the token at that rank is a reference token
    hits = member.sum(-1)
    sizes = ref.sum(-1).clamp(max=k).long()
    ideal = torch.cumsum(w, 0)[sizes - 1]
    return (member @ w) / ideal[:, None], hits.round().to(torch.int32)


def scan(model: "Model", references: Mapping[str, Sequence[int]], config: ScanConfig = ScanConfig(), *, progress: bool = True) -> ConceptScan:
    """Score every value vector of every scanned layer against every concept's reference tokens.

    One pass over all vectors (chunks of ``config.chunk_size`` rows; each chunk is one matrix
    product with the full unembedding and one top-k); all concepts are scored from the same
    top-k ids. ``references`` maps a concept name to its token ids (`reference_ids`).

    | output          | shape                                  |
    | --------------- | -------------------------------------- |
    | ``scores``      | ``[n_concepts, n_layers, d_mlp]``      |
    | ``top_ids``     | ``[n_layers, d_mlp, n_top_tokens]``    |
    """
    if not references:
        raise ValueError("no concepts to scan: references is empty")
    config = config.for_model(model)
    layers = _check_layers(model, config.layers)
    w_u = unembedding(model, final_norm=config.final_norm).float()
    d_vocab = w_u.shape[1]
    k = _check_k(config.k, d_vocab)
    ref = reference_matrix(references, d_vocab).to(w_u.device)
    vectors = value_vectors(model, layers).float()
    n_layers, d_mlp, _ = vectors.shape
    flat = vectors.reshape(n_layers * d_mlp, -1)
    n, n_c = flat.shape[0], ref.shape[0]
    scores = torch.empty(n_c, n)
    hits = torch.empty(n_c, n, dtype=torch.int32)
    signs = torch.ones(n_c, n, dtype=torch.int8)
    n_top = min(config.n_top_tokens, k)
    top_ids = torch.empty(n, n_top, dtype=torch.int32)
    bottom_ids = torch.empty(n, n_top, dtype=torch.int32) if config.signs == "both" else None
    chunk = config.chunk_size
    # one output buffer for every chunk: a fresh 400 MB result per chunk costs its page faults
    # (the product runs at 167 instead of 187 GFLOP/s on smollm2's shapes here). The products
    # run on the model's device; only the small per-vector results come back to the CPU.
    buffer = torch.empty(min(chunk, n), d_vocab, device=w_u.device)
    with torch.no_grad():
        for start in tqdm(range(0, n, chunk), desc="scan value vectors", leave=False, disable=not progress):
            stop = min(start + chunk, n)
            logits = torch.matmul(flat[start:stop], w_u, out=buffer[: stop - start])  # the one full-vocabulary projection of these rows
            ids = logits.topk(k, dim=-1).indices
            top_ids[start:stop] = ids[:, :n_top].cpu()
            s, h = score_top_ids(ids, ref, config.scoring)
            if bottom_ids is not None:
                low = logits.topk(k, dim=-1, largest=False).indices
                bottom_ids[start:stop] = low[:, :n_top].cpu()
                s_neg, h_neg = score_top_ids(low, ref, config.scoring)
                neg = s_neg > s
                s = torch.where(neg, s_neg, s)
                h = torch.where(neg, h_neg, h)
                signs[:, start:stop] = torch.where(neg, -1, 1).to(torch.int8).cpu()
            scores[:, start:stop] = s.cpu()
            hits[:, start:stop] = h.cpu()
    vocab = vocabulary(model)
    shape = (n_c, n_layers, d_mlp)
    return ConceptScan(
        model_id=model.model_id,
        concepts=tuple(references),
        layers=layers,
        scores=scores.view(shape),
        hits=hits.view(shape),
        signs=signs.view(shape),
        top_ids=top_ids.view(n_layers, d_mlp, -1),
        bottom_ids=None if bottom_ids is None else bottom_ids.view(n_layers, d_mlp, -1),
        references={name: tuple(int(t) for t in ids) for name, ids in references.items()},
        config=replace(config, layers=layers),
        vocab=vocab,
    )


def vocabulary(model: "Model") -> tuple[str, ...]:
    """Every token id decoded on its own (``vocab[id]``), padded to ``d_vocab``."""
    tok = model.tokenizer
    d_vocab = model.d_vocab
    n = min(len(tok), d_vocab)
    names = tok.batch_decode([[i] for i in range(n)])
    return tuple(names) + tuple(f"<{i}>" for i in range(n, d_vocab))


@LOCALIZERS.register("concept_vectors")
@dataclass(frozen=True)
class ConceptVectors(ScanConfig):
    """The localizer form of `scan` for one concept `Target` (made by `Concept.target`).

    ``locate(model, target)`` reads the concept's name and reference words from ``target.meta``
    and returns every scanned value vector as a `Selection`, best first (scores only).
    For many concepts, call `scan` once instead: it shares the projection between them.
    """

    def locate(self, model: "Model", target: "Target", *, progress: bool = True) -> Selection:
        """Scores of every value vector for the target's concept."""
        words = target.meta.get("reference_words")
        if not words:
            raise ValueError(
                f"target {target.name!r} has no reference_words in its meta; build it with Concept.target() "
                "or ConceptSet.target(name)"
            )
        name = target.meta.get("concept", target.name)
        return scan(model, {name: reference_ids(model, words)}, self, progress=progress).selection(name)


# --------------------------------------------------------------------------- validation
@dataclass(frozen=True)
class ValidateConfig:
    """Causal validation of a candidate vector by Gaussian noise (ConceptVectors' test)."""

    sigma: float = 5.0
    """Noise standard deviation. With ``relative=True`` it is in units of the vector's RMS entry,
    so the noise's norm is about ``sigma × ‖v‖``. The paper's σ = 0.1 (absolute, LLaMA-2-7B,
    whose value vectors have norm ≈ 1.3 in d = 4096) is about 5 × ‖v‖; SmolLM2's vectors have norm
    ≈ 4.6 in d = 576, where an absolute σ = 0.1 (noise ≈ 0.5 ‖v‖) changes almost no answer."""
    relative: bool = True
    """Scale ``sigma`` by the vector's root-mean-square entry (False: absolute σ as in the paper)."""
    seeds: tuple[int, ...] = (0,)
    """Noise draws; each is a separate row (average them for a less noisy estimate)."""
    max_new_tokens: int = 8
    """Greedy answer length compared by BLEU / ROUGE-L."""
    batch_size: int = 64
    """Prompts per forward pass."""

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0, got {self.sigma}")
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one noise seed")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def noise(self, site: Site | str, seed: int) -> WeightEdit:
        """The noise edit of one vector for one seed."""
        return WeightEdit(site, "noise", sigma=self.sigma, relative=self.relative, seed=seed)


@dataclass(frozen=True)
class Baseline:
    """The unedited model's greedy answers and item scores for a concept's questions (computed once)."""

    concept: str
    """The concept's name."""
    answers: tuple[str, ...]
    """Greedy continuations of the concept questions, then of the unrelated questions."""
    ids: tuple[tuple[int, ...], ...]
    """The same continuations as token ids (EOS excluded)."""
    scores: pd.DataFrame = field(repr=False)
    """`score_items` rows for the same items, with a ``split`` column."""


def _items_of(concept: "Concept"):
    if not concept.unrelated:
        raise ValueError(f"concept {concept.name!r} has no unrelated questions; validation needs a control")
    items = [*concept.questions, *concept.unrelated]
    splits = ["concept"] * len(concept.questions) + ["unrelated"] * len(concept.unrelated)
    return items, splits


@torch.no_grad()
def greedy_ids(
    model: "Model",
    prompts: Sequence[str],
    max_new_tokens: int = 8,
    *,
    reference: Sequence[Sequence[int]] | None = None,
    batch_size: int = 64,
) -> list[list[int]]:
    """Greedy continuation ids of each prompt (EOS excluded), the same tokens as `Model.generate`.

    ``reference``: continuations of the same prompts by a model that differs a little (the
    unedited one). They are checked in one teacher-forced pass — greedy decoding reproduces a
    continuation exactly when the argmax at each of its positions is its next token — and
    decoding resumes only from the first position where the argmax departs. Questions a noised
    vector does not affect then cost one forward pass instead of ``max_new_tokens``.
    """
    from mechunlearn.models.text import pad

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    prompt_ids = [model.encode(p, prepend_bos=model.prepend_bos) for p in prompts]
    if any(not ids for ids in prompt_ids):
        raise ValueError("every prompt needs at least one token")
    eos = model.eos_token_id
    gen: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    if reference is not None:
        if len(reference) != len(prompts):
            raise ValueError(f"got {len(prompts)} prompts but {len(reference)} reference continuations")
        for start in range(0, len(prompts), batch_size):
            rows = range(start, min(start + batch_size, len(prompts)))
            seqs = [prompt_ids[i] + list(reference[i]) for i in rows]
            tokens, _ = pad(seqs, model.pad_token_id, model.n_ctx)
            argmax = model.forward(tokens).argmax(-1).cpu()
            for r, i in enumerate(rows):
                ref, n_prompt = list(reference[i])[:max_new_tokens], len(prompt_ids[i])
                predicted = argmax[r, n_prompt - 1 : n_prompt + len(ref)].tolist()
                agree = 0
                while agree < len(ref) and predicted[agree] == ref[agree]:
                    agree += 1
                gen[i] = ref[:agree]
                if agree < len(ref) or len(ref) < max_new_tokens:
                    gen[i].append(predicted[agree])  # the first departing (or next) token
                done[i] = len(gen[i]) >= max_new_tokens or gen[i][-1] == eos
    active = [i for i in range(len(prompts)) if not done[i]]
    while active:
        for start in range(0, len(active), batch_size):
            rows = active[start : start + batch_size]
            seqs = [prompt_ids[i] + gen[i] for i in rows]
            tokens, _ = pad(seqs, model.pad_token_id, model.n_ctx)
            logits = model.forward(tokens)
            last = torch.tensor([len(q) - 1 for q in seqs])
            nxt = logits[torch.arange(len(rows)), last].argmax(-1).tolist()
            for i, t in zip(rows, nxt):
                gen[i].append(t)
                done[i] = len(gen[i]) >= max_new_tokens or t == eos
        active = [i for i in active if not done[i]]
    return [[t for t in g if t != eos] for g in gen]


def _decode(model: "Model", ids: Sequence[Sequence[int]]) -> list[str]:
    return [model.tokenizer.decode(list(row)) for row in ids]


def _scores(model: "Model", items, splits, answers, config: ValidateConfig) -> pd.DataFrame:
    from mechunlearn.verify.behavior import score_items

    scores = score_items(model, items, batch_size=config.batch_size, progress=False)
    scores.insert(0, "split", splits)
    scores.insert(1, "item", range(len(items)))
    scores["generated"] = list(answers)
    return scores


def baseline(
    model: "Model", concept: "Concept", config: ValidateConfig = ValidateConfig(), *, ids: Mapping[str, Sequence[int]] | None = None
) -> Baseline:
    """Greedy answers and exact match / log-prob of the unedited model (shared by every candidate).

    ``ids`` (prompt → greedy continuation ids of ``config.max_new_tokens`` tokens, e.g. from
    `greedy_answers`) saves the generation when it was already done.
    """
    items, splits = _items_of(concept)
    prompts = [i.prompt for i in items]
    if ids is None:
        got = greedy_ids(model, prompts, config.max_new_tokens, batch_size=config.batch_size)
    else:
        missing = [p for p in prompts if p not in ids]
        if missing:
            raise KeyError(f"no precomputed continuation for {missing[:3]}")
        got = [list(ids[p]) for p in prompts]
    answers = _decode(model, got)
    return Baseline(concept.name, tuple(answers), tuple(tuple(g) for g in got), _scores(model, items, splits, answers, config))


def greedy_answers(model: "Model", prompts: Sequence[str], max_new_tokens: int = 8, batch_size: int = 64) -> dict[str, list[int]]:
    """Greedy continuation ids of every distinct prompt (prompt → ids), see `greedy_ids`."""
    unique = list(dict.fromkeys(prompts))
    return dict(zip(unique, greedy_ids(model, unique, max_new_tokens, batch_size=batch_size))) if unique else {}


def answer_known(answer: str, generated: str, n_words: int = 5) -> bool:
    """True if the answer's words appear, in order and contiguously, among the first ``n_words``
    words of the generated continuation (case-insensitive; punctuation counts as a word)."""
    from mechunlearn.verify.similarity import words

    want, got = words(answer), words(generated)[:n_words]
    if not want:
        raise ValueError(f"answer {answer!r} has no words")
    return any(got[i : i + len(want)] == want for i in range(len(got) - len(want) + 1))


def check_questions(model: "Model", concepts: "ConceptSet", *, max_new_tokens: int = 8, n_words: int = 5) -> pd.DataFrame:
    """Does the unedited model answer each question? One row per (concept, split, question) with
    the greedy continuation and ``known`` (`answer_known`)."""
    rows = []
    for c in concepts:
        rows += [(c.name, "concept", i) for i in c.questions] + [(c.name, "unrelated", i) for i in c.unrelated]
    ids = greedy_answers(model, [i.prompt for _, _, i in rows], max_new_tokens)
    text = dict(zip(ids, _decode(model, list(ids.values()))))
    frame = pd.DataFrame(
        [
            {
                "concept": name,
                "split": split,
                "prompt": item.prompt,
                "answer": item.answer,
                "generated": text[item.prompt],
                "known": answer_known(item.answer, text[item.prompt], n_words),
            }
            for name, split, item in rows
        ]
    )
    frame.attrs["ids"] = ids  # prompt → continuation ids, reused by locate_concepts
    return frame


VALIDATION_METRICS = ("bleu", "rouge_l", "exact_match", "answer_logprob")
"""Per-item metrics of `validate`: similarity to the unedited answer, and the item scores."""


def validate(
    model: "Model",
    concept: "Concept",
    sites: Site | str | Sequence[Site | str],
    config: ValidateConfig = ValidateConfig(),
    *,
    base: Baseline | None = None,
    aggregate: Literal["site", "item"] = "site",
) -> Result:
    """Noise one candidate vector at a time; measure concept vs unrelated questions.

    For every site and noise seed: greedy answers of the noised model are compared with the
    unedited model's answers by BLEU and ROUGE-L (1 = unchanged), and exact match / answer
    log-probability of the items are recomputed. Rows also hold the unedited values
    (``state="unedited"``) of exact match and log-prob. ``aggregate="site"`` averages over the
    questions of each split; ``"item"`` keeps one row per question. Every edit is reverted.

    Columns: ``concept, site, layer, index, seed, state, split (concept|unrelated), metric, value``.
    See `validation_summary` for one row per site with the concept/unrelated gap.
    """
    from mechunlearn.verify.similarity import bleu, rouge_l

    if aggregate not in ("site", "item"):
        raise ValueError(f"aggregate must be 'site' or 'item', got {aggregate!r}")
    if isinstance(sites, (str, Site)):
        sites = [sites]
    sites = [model.check_site(s) for s in sites]
    for s in sites:
        if not (s.name.endswith(".mlp.W_out") and len(s.index) == 1):
            raise ValueError(f"{s} is not a value vector; use sites like blocks.3.mlp.W_out[401]")
    items, splits = _items_of(concept)
    prompts = [i.prompt for i in items]
    if base is None:
        base = baseline(model, concept, config)
    elif base.concept != concept.name:
        raise ValueError(f"baseline was computed for {base.concept!r}, not {concept.name!r}")
    frames = []
    unedited = base.scores.copy()
    unedited["state"] = "unedited"
    unedited["seed"] = pd.NA
    for site in sites:
        for seed in config.seeds:
            with config.noise(site, seed).applied(model):
                got = greedy_ids(model, prompts, config.max_new_tokens, reference=base.ids, batch_size=config.batch_size)
                answers = _decode(model, got)
                scores = _scores(model, items, splits, answers, config)
            scores["bleu"] = [bleu(a, b) for a, b in zip(answers, base.answers)]
            scores["rouge_l"] = [rouge_l(a, b) for a, b in zip(answers, base.answers)]
            scores["state"] = "noised"
            scores["seed"] = seed
            both = pd.concat([unedited.assign(seed=seed), scores], ignore_index=True)
            both.insert(0, "site", str(site))
            both.insert(1, "layer", site.layer)
            both.insert(2, "index", site.index[0])
            frames.append(both)
    wide = pd.concat(frames, ignore_index=True)
    id_cols = ["site", "layer", "index", "seed", "state", "split", "item", "prompt", "answer", "generated"]
    long = wide.melt(id_vars=id_cols, value_vars=list(VALIDATION_METRICS), var_name="metric", value_name="value").dropna(subset=["value"])
    if aggregate == "site":
        long = long.groupby(["site", "layer", "index", "seed", "state", "split", "metric"], as_index=False, sort=False)["value"].mean()
    long.insert(0, "concept", concept.name)
    long["method"] = "noise"
    prov = provenance(model.model_id, config, concept=concept.name)
    return Result(long, prov)


def validation_summary(result: Result | pd.DataFrame) -> pd.DataFrame:
    """One row per (concept, site): means over seeds of the noised model's metrics per split,
    the unedited exact match, and the gaps (unrelated − concept) that say how specific the vector is.

    ``bleu_gap = unrelated_bleu − concept_bleu`` (the paper's contrast: concept answers change,
    unrelated ones do not); ``rouge_l_gap`` likewise; ``em_drop_gap`` = concept EM drop −
    unrelated EM drop.
    """
    frame = result.frame if isinstance(result, Result) else result
    if "item" in frame.columns:
        frame = frame.groupby(["concept", "site", "layer", "index", "seed", "state", "split", "metric"], as_index=False, sort=False)["value"].mean()
    noised = frame[frame["state"] == "noised"].groupby(["concept", "site", "layer", "index", "split", "metric"], sort=False)["value"].mean()
    before = frame[frame["state"] == "unedited"].groupby(["concept", "site", "layer", "index", "split", "metric"], sort=False)["value"].mean()
    rows = []
    for key in dict.fromkeys(k[:4] for k in noised.index):
        get = lambda split, metric, table=noised: float(table.get((*key, split, metric), np.nan))  # noqa: E731
        row = dict(zip(("concept", "site", "layer", "index"), key))
        for split in ("concept", "unrelated"):
            for metric in ("bleu", "rouge_l", "exact_match", "answer_logprob"):
                row[f"{split}_{metric}"] = get(split, metric)
            row[f"{split}_exact_match_before"] = get(split, "exact_match", before)
            row[f"{split}_logprob_before"] = get(split, "answer_logprob", before)
        row["bleu_gap"] = row["unrelated_bleu"] - row["concept_bleu"]
        row["rouge_l_gap"] = row["unrelated_rouge_l"] - row["concept_rouge_l"]
        row["em_drop_gap"] = (row["concept_exact_match_before"] - row["concept_exact_match"]) - (
            row["unrelated_exact_match_before"] - row["unrelated_exact_match"]
        )
        rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Needle
@dataclass(frozen=True)
class NeedleConfig:
    """Needle (ConceptVectors' direct edit): noise on the vector, then gradient ascent on the
    concept's texts with only that vector trainable."""

    sigma: float = 5.0
    """Noise standard deviation (relative to the vector's RMS entry when ``relative``; see `ValidateConfig.sigma`)."""
    relative: bool = True
    """Scale ``sigma`` by the vector's root-mean-square entry."""
    seed: int = 0
    """Seed of the noise draw and of the training loop."""
    steps: int = 20
    """Gradient-ascent steps."""
    lr: float = 5e-2
    """AdamW learning rate of the one vector (Adam moves each entry by about ``lr`` per step;
    SmolLM2's value-vector entries have RMS ≈ 0.2)."""
    batch_size: int = 8
    """Texts per step."""
    data: str = "texts"
    """What gradient ascent trains on: the concept's ``texts`` (the paper), its question ``items``, or ``both``."""

    def __post_init__(self) -> None:
        if self.sigma < 0:
            raise ValueError(f"sigma must be >= 0 (0: no noise), got {self.sigma}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.data not in ("texts", "items", "both"):
            raise ValueError(f"data must be 'texts', 'items' or 'both', got {self.data!r}")


def row_mask(model: "Model", site: Site | str) -> MaskSelection:
    """A `MaskSelection` over ``blocks.L.mlp.W_out`` that selects exactly row ``i`` of ``site``."""
    site = model.check_site(site)
    if not (site.name.endswith(".mlp.W_out") and len(site.index) == 1):
        raise ValueError(f"{site} is not a value vector; use a site like blocks.3.mlp.W_out[401]")
    shape = model.weight(site.name).shape
    mask = torch.zeros(shape, dtype=torch.bool)
    mask[site.index[0]] = True
    scores = mask.float()
    return MaskSelection({site.name: scores}, {site.name: mask}, {"site": str(site)})


def needle(model: "Model", target: "Target | Concept", site: Site | str, config: NeedleConfig = NeedleConfig()) -> Edit:
    """The Needle edit of one value vector: ``noise + gradient ascent``, as one revertible `Edit`.

    The gradient ascent runs through `mechunlearn.unlearn.unlearn` (loss ``ga``) with a mask that
    selects only the vector's row, starting from the noised weights; the returned edit applies
    the same seeded noise and then the trained delta, so applying it reproduces the trained
    weights and reverting restores the original bits. The model is unchanged on return.
    """
    from mechunlearn.unlearn import UnlearnConfig, unlearn
    from mechunlearn.world.concepts import Concept

    if isinstance(target, Concept):
        target = target.target()
    site = model.check_site(site)
    mask = row_mask(model, site)
    if config.data in ("texts", "both") and not target.forget_texts:
        raise ValueError(f"target {target.name!r} has no forget texts for Needle; give the concept texts or use data='items'")
    train = UnlearnConfig(
        loss="ga",
        data=config.data,
        steps=config.steps,
        lr=config.lr,
        batch_size=config.batch_size,
        stop_forget_em=None,
        seed=config.seed,
    )
    noise = WeightEdit(site, "noise", sigma=config.sigma, relative=config.relative, seed=config.seed) if config.sigma > 0 else None
    if noise is None:
        return unlearn(model, target, train, mask=mask)
    with noise.applied(model):
        delta = unlearn(model, target, train, mask=mask)
    return noise + delta


def needle_subjects(model: "Model", target: "Target", config: NeedleConfig = NeedleConfig(), *, progress: bool = True) -> tuple[Edit, dict[str, str]]:
    """Needle for a forget set of *subjects* (people of the synthetic world): each forget subject
    is a concept whose reference tokens are its answers; its best-scoring value vector is noised
    and trained by gradient ascent on the texts that name it (its bios), only that vector
    trainable. Returns the composed edit (one `needle` per subject) and each subject's site;
    the model is unchanged."""
    from mechunlearn.world.target import Target

    answers: dict[str, list[str]] = {}
    for item in target.forget:
        answers.setdefault(item.subject, [])
        if item.answer not in answers[item.subject]:
            answers[item.subject].append(item.answer)
    if not answers:
        raise ValueError(f"target {target.name!r} has no forget items, so there are no subjects for Needle")
    refs = {s: reference_ids(model, words) for s, words in answers.items()}
    found = scan(model, refs, ScanConfig(k=min(ScanConfig.k, model.d_vocab)), progress=progress)
    parts, sites = [], {}
    for subject in tqdm(answers, desc="Needle per subject", leave=False, disable=not progress):
        texts = tuple(t for t in target.forget_texts if subject in t)
        if config.data in ("texts", "both") and not texts:
            raise ValueError(f"no forget text names {subject!r}; Needle needs texts per subject (or data='items')")
        site = found.best(subject)[0]
        sites[subject] = str(site)
        one = Target(f"subject:{subject}", tuple(i for i in target.forget if i.subject == subject), target.retain[:64], forget_texts=texts)
        parts.append(needle(model, one, site, config))
    return Compose(parts), sites


# --------------------------------------------------------------------------- concept files
@dataclass(frozen=True)
class ConceptFileConfig:
    """How `build_concept_file` locates, validates and keeps concepts."""

    scan: ScanConfig = ScanConfig()
    """Scan settings (one projection pass for all concepts)."""
    validate: ValidateConfig = ValidateConfig()
    """Noise validation settings."""
    n_candidates: int = 3
    """Best-scoring scan candidates validated per concept; the one with the largest BLEU gap is kept."""
    min_questions: int = 4
    """Concepts with fewer questions that the unedited model answers are dropped."""
    answer_words: int = 5
    """A question counts as known when its answer is among the first this many greedy words."""
    min_bleu_gap: float = 0.2
    """Pass: unrelated BLEU − concept BLEU must be at least this."""
    min_drop_ratio: float = 2.0
    """Pass: the concept answers' BLEU drop (1 − BLEU) must be at least this multiple of the unrelated one."""
    decimals: int = 4
    """Rounding of the floats written to the file (so regenerating gives the same bytes)."""

    def __post_init__(self) -> None:
        if self.n_candidates < 1:
            raise ValueError(f"n_candidates must be >= 1, got {self.n_candidates}")
        if self.min_questions < 1:
            raise ValueError(f"min_questions must be >= 1, got {self.min_questions}")

    def passes(self, row: Mapping[str, float]) -> bool:
        """The keep criterion on one `validation_summary` row: concept degradation clearly larger than unrelated."""
        concept_drop = 1.0 - row["concept_bleu"]
        unrelated_drop = 1.0 - row["unrelated_bleu"]
        return bool(row["bleu_gap"] >= self.min_bleu_gap and concept_drop >= self.min_drop_ratio * max(unrelated_drop, 0.0))


def locate_concepts(
    model: "Model", concepts: "ConceptSet", config: ConceptFileConfig = ConceptFileConfig(), *, progress: bool = True
) -> tuple["ConceptSet", pd.DataFrame]:
    """Check questions, scan, validate the best candidates; return the located `ConceptSet` of the
    concepts that pass and the table of every validated candidate (``passed``, ``kept`` columns).

    Deterministic: greedy answers, seeded noise, ties broken by scan rank.
    """
    from mechunlearn.world.concepts import ConceptLocation, ConceptSet

    if not len(concepts):
        raise ValueError("the concept set is empty")
    weights = model.weights_hash()
    vcfg = config.validate
    checked = check_questions(model, concepts, max_new_tokens=vcfg.max_new_tokens, n_words=config.answer_words)
    continuations = checked.attrs["ids"]
    known = set(zip(checked.loc[checked["known"], "prompt"], checked.loc[checked["known"], "answer"]))
    rejected: list[dict] = []
    usable = []
    for c in concepts:
        qs = tuple(i for i in c.questions if (i.prompt, i.answer) in known)
        un = tuple(i for i in c.unrelated if (i.prompt, i.answer) in known)
        if len(qs) < config.min_questions or not un:
            rejected.append({"concept": c.name, "reason": f"the model answers {len(qs)} of its questions (< {config.min_questions})"})
            continue
        usable.append(replace(c, questions=qs, unrelated=un))
    if not usable:
        raise ValueError("no concept has enough questions the model answers; check the prompts with check_questions()")
    refs = {c.name: reference_ids(model, c.reference_words) for c in usable}
    config = replace(config, scan=config.scan.for_model(model))  # the file records what ran
    found = scan(model, refs, config.scan, progress=progress)
    tables = []
    located = []
    for c in tqdm(usable, desc="validate concepts", leave=False, disable=not progress):
        sel = found.selection(c.name, top=config.n_candidates)
        base = baseline(model, c, vcfg, ids=continuations)
        summary = validation_summary(validate(model, c, list(sel.sites), vcfg, base=base))
        extras = sel.to_frame().set_index("site")
        summary["rank"] = range(len(summary))
        summary["scan_score"] = extras.loc[summary["site"], "score"].to_numpy()
        summary["sign"] = extras.loc[summary["site"], "sign"].to_numpy()
        summary["passed"] = [config.passes(r) for r in summary.to_dict("records")]
        best = summary.sort_values(["bleu_gap", "rank"], ascending=[False, True], kind="stable").iloc[0]
        summary["kept"] = (summary["site"] == best["site"]) & bool(best["passed"])
        tables.append(summary)
        log.info("%s: best vector %s, BLEU concept %.3f vs unrelated %.3f (%s)", c.name, best["site"], best["concept_bleu"], best["unrelated_bleu"], "kept" if best["passed"] else "rejected")
        if not best["passed"]:
            rejected.append({"concept": c.name, "reason": "no candidate passed validation", "best_site": best["site"], "best_bleu_gap": round(float(best["bleu_gap"]), config.decimals)})
            continue
        site = Site.parse(best["site"])
        layer, index = site.layer, site.index[0]
        validation = {
            k: round(float(best[k]), config.decimals)
            for k in best.index
            if k.startswith(("concept_", "unrelated_")) or k.endswith("_gap")
        }
        located.append(
            replace(
                c,
                location=ConceptLocation(
                    layer=layer,
                    index=index,
                    sign=int(best["sign"]),
                    score=round(float(best["scan_score"]), config.decimals),
                    rank=int(best["rank"]),
                    top_tokens=tuple(found.tokens_of(layer, index, sign=int(best["sign"]))),
                    reference_tokens=tuple(found.vocab[t] for t in refs[c.name]),
                    reference_ids=tuple(refs[c.name]),
                    validation=validation,
                ),
            )
        )
    if model.weights_hash() != weights:
        raise RuntimeError("the model's weights changed while locating concepts; an edit was not reverted")
    from mechunlearn import __version__

    meta = {
        "mechunlearn_version": __version__,
        "source": concepts.meta.get("source"),
        "config": config,
        "n_defined": len(concepts),
        "n_located": len(located),
        "rejected": rejected,
    }
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return ConceptSet(model.model_id, tuple(located), weights_hash=weights, meta=meta), table


def build_concept_file(
    model: "Model", concept_set: "ConceptSet", path, config: ConceptFileConfig = ConceptFileConfig(), *, progress: bool = True
) -> "ConceptSet":
    """Locate and validate every concept of ``concept_set`` in ``model`` and write the file at ``path``
    atomically (only the concepts that pass; the rest are listed under ``meta.rejected``).

    The same model, definitions and config give the same file, byte for byte (no timestamps).

    >>> from mechunlearn.world.concept_defs import definitions
    >>> build_concept_file(model, definitions("smollm2-135m"), "concept_vectors/smollm2-135m.json")
    """
    located, table = locate_concepts(model, concept_set, config, progress=progress)
    if not len(located):
        raise ValueError(f"no concept passed validation; candidates:\n{table.to_string()}")
    candidates = table[["concept", "site", "rank", "scan_score", "concept_bleu", "unrelated_bleu", "bleu_gap", "passed", "kept"]]
    candidates = candidates.round(config.decimals).to_dict("records")
    meta = dict(located.meta, candidates=candidates)
    located = replace(located, meta=meta)
    located.save(path)
    return located
