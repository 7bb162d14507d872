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
| ``slug``              | SLUG's Pareto tensors, scored by importance ``‖g_f‖/‖θ‖``            | tensors     |
| ``causal_tracing``    | Meng et al. 2022's restoration effect per layer (attention, MLP)      | modules     |
| ``attribution_patching`` | its linear approximation (one forward + backward per batch)        | modules     |
| ``fact_lookup``       | probe-accuracy rise per layer (Guo et al. 2024), not a registered localizer | layers |
| ``lunar``             | LUNAR's steering sweep: forget answers turned "unknown" per layer     | layers      |

The four saliency scores share one gradient pass (`score_all`). Each entry takes about a second
to a minute on bios-tiny on a CPU (the tracing and the sweep are the slow ones); ``names``
picks a subset. SAE latents are not in the suite yet: a latent lives in the residual stream, and
its match to a planted neuron (its decoder direction against the neuron's W_out row) is a
stated choice still to be measured.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:
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

