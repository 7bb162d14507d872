"""Every localizer on one model and target, each read at its own granularity (issue 14, §2).

`run_suite(model, target)` returns ``{name: (granularity, output)}``, the form
`mechunlearn.verify.localization.score_table` scores against a planted ground truth:

| name                  | localizer (registered in `LOCALIZERS` unless noted)                 | granularity |
| --------------------- | ------------------------------------------------------------------- | ----------- |
| ``salun``             | SalUn saliency ``|g_f|``                                             | entries     |
| ``wagle``             | WAGLE attribution ``|(θ − g_r/γ)·g_f|``                              | entries     |
| ``snip``              | SNIP ``|θ·g_f|``                                                      | entries     |
| ``magnitude``         | ``|θ|``                                                              | entries     |
| ``concept_vectors``   | value vectors scanned per forget person (their answers' tokens), best over people | neurons |
| ``sae_latents``       | forget latents of an SAE at the last residual stream (Farrell et al. 2024), each neuron scored by its W_out row's decoder overlap | neurons |
| ``slug``              | SLUG's Pareto tensors, scored by importance ``‖g_f‖/‖θ‖``            | tensors     |
| ``causal_tracing``    | Meng et al. 2022's restoration effect per layer (attention, MLP)      | modules     |
| ``attribution_patching`` | its linear approximation (one forward + backward per batch)        | modules     |
| ``fact_lookup``       | probe-accuracy rise per layer (Guo et al. 2024), not a registered localizer | layers |
| ``lunar``             | LUNAR's steering sweep: forget answers turned "unknown" per layer     | layers      |

The four saliency scores share one gradient pass (`score_all`). Each entry takes about a second
to a minute on bios-tiny on a CPU (the tracing and the sweep are the slow ones); ``names``
picks a subset.

``sae_latents`` reads SAE latents where issue 14 says it is meaningful: through their decoder
directions' overlap with the neurons. A latent lives in the residual stream, a neuron writes
its W_out row there, so neuron ``(L, n)`` scores
``max_j w_j · |cos(W_out[L][n], W_dec[j])|`` over the `SAE_LATENTS` latents ``j`` that
`SAEFeatureFrequency` ranks highest (firing on each forget person's prompts, not on retain
prompts, per person and interleaved), ``w_j`` their scores over the best one
(`mechunlearn.locate.sae.neuron_overlap`). The SAE (`sae_latents_config`) sits at the last
block's ``hook_resid_post``, downstream of every MLP, so nothing in the choice knows which
layer holds the knowledge; it is trained once per model and cached (`ensure_sae`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from mechunlearn.locate.sae import SAETrainConfig
    from mechunlearn.models.model import Model
    from mechunlearn.world.target import Target

SALIENCY = ("salun", "wagle", "snip", "magnitude")


def _saliency(model, target, names, seed):
    from mechunlearn.locate.saliency import MagnitudeScore, SalUnSaliency, SnipScore, WagleAttribution, score_all

    scorers = {"salun": SalUnSaliency(), "wagle": WagleAttribution(retain_items=1024, seed=seed), "snip": SnipScore(), "magnitude": MagnitudeScore()}
    scores = score_all(model, target, {n: scorers[n] for n in names}, progress=False)
    return {n: ("entries", s) for n, s in scores.items()}


def _concept_vectors(model, target, seed):
    """One concept per forget person: the tokens of their attribute answers."""
    from mechunlearn.locate.concept_vectors import ScanConfig, reference_ids, scan

    people: dict[str, list[str]] = {}
    for item in target.forget:
        people.setdefault(item.subject, []).append(item.answer)
    refs = {p: reference_ids(model, sorted(set(a))) for p, a in people.items()}
    result = scan(model, refs, ScanConfig(), progress=False)
    best = result.scores.max(dim=0).values  # [layer, d_mlp]: the best score over the people
    out = np.full((model.bridge.cfg.n_layers, model.bridge.cfg.d_mlp), np.nan)
    out[list(result.layers)] = best.numpy()
    return "neurons", out.reshape(-1)


SAE_LATENTS = 32
"""Forget latents the ``sae_latents`` entry reads (the top of `SAEFeatureFrequency`'s per-subject
ranking: with 4 forget people 8 per person, with 20 people one or two)."""


def sae_latents_config(model: "Model", seed: int = 0) -> "SAETrainConfig":
    """The ``sae_latents`` entry's SAE: TopK (k = 16), 1,024 latents, 500 steps of 1,024 tokens on
    the world's documents, at the last block's ``hook_resid_post``. That site is downstream of
    every MLP (each adds its output to the residual stream), so one dictionary reads every
    layer's neurons and the choice does not depend on where the knowledge is."""
    from mechunlearn.locate.sae import SAETrainConfig

    return SAETrainConfig(hook=f"blocks.{model.n_layers - 1}.hook_resid_post", d_sae=1024, k=16, steps=500, seed=seed)


def _sae_latents(model, target, seed):
    """Every MLP neuron scored by its output direction's overlap with the forget latents' decoder
    directions (`mechunlearn.locate.sae.neuron_overlap`)."""
    from mechunlearn.locate.sae import SAEFeatureFrequency, ensure_sae, neuron_overlap

    config = sae_latents_config(model, seed)
    sae = ensure_sae(model, config, attach=False, progress=False)
    per_subject = len({i.subject for i in target.forget} - {""}) >= 2
    latents = SAEFeatureFrequency(hook=config.hook, per_subject=per_subject, seed=seed).locate(model, target, sae=sae, progress=False)
    return "neurons", neuron_overlap(model, sae, latents.top(SAE_LATENTS))


def _slug(model, target, seed):
    from mechunlearn.locate.slug import SlugConfig

    return "tensors", SlugConfig(seed=seed).locate(model, target, progress=False)


def _tracing(kind):
    def run(model, target, seed):
        from mechunlearn.locate.tracing import AttributionPatching, CausalTracing

        cls = CausalTracing if kind == "causal_tracing" else AttributionPatching
        return "modules", cls(components=("mlp", "attn"), seed=seed).locate(model, target, progress=False)

    return run


def _fact_lookup(model, target, seed):
    from mechunlearn.locate.fact_lookup import FactLookupConfig, fact_lookup_selection, layer_probe_profile

    return "layers", fact_lookup_selection(layer_probe_profile(model, target, FactLookupConfig(seed=seed)))


def _lunar(model, target, seed):
    from mechunlearn.locate.lunar import LunarConfig, layer_selection, lunar_data, steering_sweep

    config = LunarConfig(seed=seed)
    sweep = steering_sweep(model, lunar_data(model, target, config, progress=False), config, progress=False)
    return "layers", layer_selection(sweep, mode="edit" if (sweep["mode"] == "edit").any() else "steer")


RUNS: dict[str, Callable] = {
    "concept_vectors": _concept_vectors,
    "sae_latents": _sae_latents,
    "slug": _slug,
    "causal_tracing": _tracing("causal_tracing"),
    "attribution_patching": _tracing("attribution_patching"),
    "fact_lookup": _fact_lookup,
    "lunar": _lunar,
}
"""How each non-saliency localizer of the suite is run: ``(model, target, seed) → (granularity, output)``."""

SUITE = (*SALIENCY, *RUNS)
"""Every localizer of the suite, in table order."""


def run_suite(model: "Model", target: "Target", names: Sequence[str] | None = None, *, seed: int = 0, progress: bool = True) -> dict[str, tuple[str, object]]:
    """``{name: (granularity, output)}`` for the localizers ``names`` (default: `SUITE`) on ``model``."""
    names = list(SUITE if names is None else names)
    unknown = [n for n in names if n not in SUITE]
    if unknown:
        raise ValueError(f"unknown localizers {unknown}; the suite has {', '.join(SUITE)}")
    if not target.forget:
        raise ValueError(f"target {target.name!r} has no forget items; the localizers score components for forget questions")
    out: dict[str, tuple[str, object]] = {}
    saliency = [n for n in names if n in SALIENCY]
    steps = ([("saliency", None)] if saliency else []) + [(n, RUNS[n]) for n in names if n in RUNS]
    for name, run in tqdm(steps, desc="localizers", disable=not progress):
        if run is None:
            out.update(_saliency(model, target, saliency, seed))
        else:
            out[name] = run(model, target, seed)
    return {n: out[n] for n in names}

