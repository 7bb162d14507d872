"""Benchmark: a 1%-mask unlearning run needs >= 5x less memory than the dense run.

Masked runs train only the masked entries (AdamW state, snapshot and delta of |mask| numbers;
each parameter's dense gradient is freed as soon as backward has gathered the masked entries),
where a dense run holds gradients, two AdamW moments, the snapshot and the delta of every
trained weight: about 5x the weights. Measured in one process on smollm2-135m (all block
matrices and biases trained, GA on three concepts' questions, a few steps): the growth of peak
resident memory during `unlearn` beyond the loaded model, masked run first (so memory the
dense run frees cannot flatter the masked one).

    python -m benchmarks.masked_memory
"""

from __future__ import annotations

import torch

from benchmarks import peak_growth

GOAL = 5.0
"""Required ratio of the dense run's peak memory growth to the masked run's."""


def run(quick: bool = False, steps: int = 3, keep: float = 0.01) -> dict:
    """Peak memory of the same unlearning run with a ``keep`` mask and without."""
    from mechunlearn.core.selection import MaskSelection
    from mechunlearn.models import load_model
    from mechunlearn.unlearn import UnlearnConfig, unlearn
    from mechunlearn.world.concepts import ConceptSet, concept_file
    from mechunlearn.world.target import Target

    model = load_model("smollm2-135m")
    concepts = ConceptSet.load(concept_file("smollm2-135m"), model=model)
    forget = tuple(q for c in list(concepts)[:3] for q in c.questions)
    target = Target("three concepts", forget, ())
    names = model.weight_names("no_embed")
    gen = torch.Generator().manual_seed(0)
    mask = MaskSelection({n: torch.rand(model.weight(n).shape, generator=gen) for n in names}).frac(keep)
    cfg = UnlearnConfig(loss="ga", weights=tuple(names), steps=steps, lr=1e-5, batch_size=4, stop_forget_em=None, autocast="float32")
    weights_mb = model.parameter_count(names) * 4 / 2**20
    masked, masked_bytes = peak_growth(lambda: unlearn(model, target, cfg, mask=mask))
    dense, dense_bytes = peak_growth(lambda: unlearn(model, target, cfg))
    if masked_bytes is None or dense_bytes is None:
        raise RuntimeError("peak memory cannot be measured here (/proc/self/clear_refs is not writable)")
    stored = {
        "masked": sum(d.numel() for d in masked.deltas.values()),
        "dense": sum(d.numel() for d in dense.deltas.values()),
    }
    ratio = dense_bytes / max(masked_bytes, 1.0)
    rows = [
        {"benchmark": "masked_memory", "variant": "1% mask" if keep == 0.01 else f"{keep:.1%} mask", "peak_growth_mb": masked_bytes / 2**20,
         "delta_numbers": stored["masked"], "trained_weights_mb": weights_mb},
        {"benchmark": "masked_memory", "variant": "dense", "peak_growth_mb": dense_bytes / 2**20,
         "delta_numbers": stored["dense"], "trained_weights_mb": weights_mb},
    ]
    return {
        "name": "masked_memory",
        "claim": f"a {keep:.0%}-mask unlearning run needs at least {GOAL:g}x less memory than the dense run",
        "model": model.model_id,
        "threads": torch.get_num_threads(),
        "rows": rows,
        "headline": {
            "what": f"GA, {steps} steps, {len(names)} block weights ({weights_mb:.0f} MB)",
            "baseline": "the same run without a mask",
            "ratio": f"{ratio:.1f}x less peak memory (goal {GOAL:g}x)",
            "peak memory": f"{masked_bytes / 2**20:.0f} vs {dense_bytes / 2**20:.0f} MB",
        },
        "passed": ratio >= GOAL,
    }


if __name__ == "__main__":
    import pandas as pd

    result = run()
    print(result["claim"])
    print(pd.DataFrame(result["rows"]).to_string(index=False))
    print("passed:", result["passed"])
