"""Benchmark: ``autocast="auto"`` picks the faster precision of this machine for a training step.

One bios-tiny build step (the recipe's batch of 64 documents, forward + backward + AdamW) timed
in float32, in bfloat16 autocast and with ``auto``, interleaved in one process, median of
``repeats`` steps each after a warm-up. On a CPU with AVX512-BF16 bfloat16 is about 2.4x
faster; on one without it about 2.5x slower (emulated). ``auto`` passes when it is within 10% of
the faster of the two.

    python -m benchmarks.train_step
"""

from __future__ import annotations

import statistics
import time

import torch

TOLERANCE = 1.10
"""``auto`` may cost at most this multiple of the faster explicit precision."""


def _setup(quick: bool):
    from transformer_lens.model_bridge import TransformerBridge

    from mechunlearn.models.bios_tiny import BiosTinyRecipe, _bridge_config
    from mechunlearn.models.model import Model
    from mechunlearn.models.text import TokenBatch, pad
    from mechunlearn.world import World, build_tokenizer

    recipe = BiosTinyRecipe().small() if quick else BiosTinyRecipe()
    world = World(recipe.world)
    tokenizer = build_tokenizer(world)
    model = Model(TransformerBridge.boot_native(_bridge_config(recipe, len(tokenizer))), tokenizer, "bios-tiny-shaped (random weights)", prepend_bos=True)
    docs = [[model.bos_token_id, *model.encode(d), model.eos_token_id] for d in world.training_texts()[: recipe.batch_size]]
    tokens, attn = pad(docs, model.pad_token_id, recipe.n_ctx)
    return model, TokenBatch(tokens, attn), recipe


def run(quick: bool = False, repeats: int = 3) -> dict:
    """Time one training step per precision; rows for the benchmark table."""
    from mechunlearn.models.precision import cpu_flags, resolve
    from mechunlearn.models.text import lm_nll
    from mechunlearn.unlearn.loop import TrainConfig, fit

    model, batch, recipe = _setup(quick)
    steps_per_call = 3
    settings = {"float32": "float32", "bfloat16": "bfloat16", "auto": "auto"}
    chosen = resolve("auto", model.device)
    names = model.weight_names()

    def one(setting: str) -> float:
        cfg = TrainConfig(steps=steps_per_call, lr=1e-4, autocast=setting)
        with model.restoring(names):
            start = time.perf_counter()
            fit(model, lambda step: lm_nll(model, batch), cfg, desc=f"bench {setting}")
            return (time.perf_counter() - start) / steps_per_call

    for setting in settings:  # warm-up (oneDNN primitive creation, the precision probe)
        one(setting)
    times: dict[str, list[float]] = {k: [] for k in settings}
    for _ in range(repeats):
        for key in settings:  # interleaved: load changes hit every variant alike
            times[key].append(one(key))
    med = {k: statistics.median(v) for k, v in times.items()}
    best = min(med["float32"], med["bfloat16"])
    rows = [
        {"benchmark": "train_step", "variant": k, "seconds_per_step": med[k], "ratio_to_float32": med["float32"] / med[k],
         "resolves_to": chosen.autocast if k == "auto" else k}
        for k in settings
    ]
    flags = cpu_flags() or frozenset()
    bf16 = sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"}) or ["none"]
    passed = med["auto"] <= TOLERANCE * best
    return {
        "name": "train_step",
        "claim": f"autocast='auto' trains at the speed of the faster precision of this machine (within {TOLERANCE:.2f}x)",
        "model": f"{model.model_id}, batch {recipe.batch_size}",
        "threads": torch.get_num_threads(),
        "cpu_bf16_flags": ",".join(bf16),
        "auto_reason": chosen.reason,
        "rows": rows,
        "headline": {
            "what": f"one bios-tiny training step; auto -> {chosen.autocast} (CPU bf16 flags: {','.join(bf16)})",
            "baseline": "float32 step",
            "ratio": f"bf16 {med['float32'] / med['bfloat16']:.2f}x, auto {med['float32'] / med['auto']:.2f}x float32's speed",
            "peak memory": "not measured",
        },
        "passed": passed,
    }


if __name__ == "__main__":
    import pandas as pd

    result = run()
    print(result["claim"], "|", result["auto_reason"])
    print(pd.DataFrame(result["rows"]).to_string(index=False))
    print("passed:", result["passed"])
