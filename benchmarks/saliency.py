"""Benchmark: a weight score costs at most 1.5× a plain forward+backward pass over the same data.

Measured in one process on a bios-tiny-shaped model (4 layers, d_model 256; timing does not
depend on the weights, so it is not trained here) and the small world's 10% forget split: every
scorer is timed against the plain pass over exactly the data it needs (forget items for SalUn and
SNIP, forget + retain items for WAGLE), interleaved, median of ``repeats`` runs each.

    python -m benchmarks.saliency          # prints the table; `run()` returns it for the suite
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

LIMIT = 1.5
"""Allowed ratio of a score's cost to the plain forward+backward pass."""


def _model_and_target(quick: bool):
    from transformer_lens.model_bridge import TransformerBridge

    from mechunlearn.models.bios_tiny import BiosTinyRecipe, _bridge_config
    from mechunlearn.models.model import Model
    from mechunlearn.world import World, build_tokenizer

    recipe = BiosTinyRecipe().small() if quick else BiosTinyRecipe()
    world = World(recipe.world)
    tokenizer = build_tokenizer(world)
    bridge = TransformerBridge.boot_native(_bridge_config(recipe, len(tokenizer)))
    model = Model(bridge, tokenizer, "bios-tiny-shaped (random weights)", prepend_bos=True)
    return model, world.target(forget_frac=0.1, paraphrase="trained")


def _plain_pass(model, items, names, batch_size: int) -> Callable[[], None]:
    """Forward+backward of the summed answer NLL over pre-encoded batches: the baseline."""
    from mechunlearn.models.text import answer_nll, qa_batches

    batches = [b for _, b in qa_batches(model, items, batch_size)]
    params = list({id(p): p for p in (model.weight_spec(n).param for n in names)}.values())

    def plain() -> None:
        for p in params:
            p.requires_grad_(True)
            p.grad = None
        for batch in batches:
            answer_nll(model, batch).sum().backward()
        for p in params:
            p.requires_grad_(False)
            p.grad = None

    return plain


def run(quick: bool = True, repeats: int = 3, retain_items: int = 1024) -> dict:
    """Time every scorer against its plain pass; rows for the benchmark table."""
    from mechunlearn.locate.saliency import MagnitudeScore, RandomScore, SalUnSaliency, SnipScore, WagleAttribution, seeded_subset

    torch.manual_seed(0)
    model, target = _model_and_target(quick)
    batch_size = 64
    scorers = {
        "salun": SalUnSaliency(batch_size=batch_size),
        "snip": SnipScore(batch_size=batch_size),
        "wagle": WagleAttribution(batch_size=batch_size, retain_items=retain_items),
        "magnitude": MagnitudeScore(),
        "random": RandomScore(),
    }
    names = scorers["salun"].weight_names(model)
    forget = list(target.forget)
    retain = seeded_subset(target.retain, retain_items, scorers["wagle"].seed)  # the items WAGLE's g_r uses
    baselines = {
        "forget": _plain_pass(model, forget, names, batch_size),
        "forget+retain": _plain_pass(model, forget + retain, names, batch_size),
    }
    data_of = {"salun": "forget", "snip": "forget", "wagle": "forget+retain", "magnitude": "forget", "random": "forget"}
    variants: dict[str, Callable[[], object]] = dict(baselines)
    for key, scorer in scorers.items():
        variants[key] = lambda scorer=scorer: scorer.locate(model, target, progress=False)
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(repeats):  # interleaved, so changes in machine load hit every variant alike
        for key, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    rows = []
    for key in scorers:
        base = statistics.median(times[data_of[key]])
        mine = statistics.median(times[key])
        rows.append({
            "benchmark": "saliency", "variant": key, "data": data_of[key],
            "items": len(forget) + (len(retain) if data_of[key] == "forget+retain" else 0),
            "seconds": mine, "baseline_seconds": base, "ratio": mine / base, "limit": LIMIT, "passed": mine / base <= LIMIT,
        })
    return {
        "name": "saliency",
        "claim": f"computing a weight score costs at most {LIMIT}x a plain forward+backward pass over the same data",
        "model": model.model_id,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "headline": {
            "what": "weight scores: " + ", ".join(r["variant"] for r in rows),
            "baseline": "one plain forward+backward pass over the same items",
            "ratio": f"at most {max(r['ratio'] for r in rows):.2f}x the plain pass (limit {LIMIT}x)",
            "peak memory": "not measured (one gradient per weight, like the baseline)",
        },
        "passed": all(r["passed"] for r in rows),
    }


if __name__ == "__main__":
    import pandas as pd

    result = run()
    print(result["claim"])
    print(pd.DataFrame(result["rows"]).to_string(index=False))
    print("passed:", result["passed"])
