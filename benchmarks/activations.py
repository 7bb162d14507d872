"""Benchmark: `cache_activations` against a full TransformerLens ``run_with_cache`` on the same
prompts and batches (time and peak memory).

The baseline is what one writes without our cache: ``bridge.run_with_cache(tokens)`` per batch
(every hook of the model cached, the whole forward run), then the wanted sites' last-token rows
copied out. Ours caches only the requested sites, selects the positions inside the hook and
stops the forward pass after the last requested site. Two site sets: one early site
(``blocks.0.hook_resid_post``, where the early stop skips the later blocks) and every block's
residual output (the probes' sites: no blocks to skip, only fewer hooks kept).

Each variant runs in a fresh process (peak resident memory is a per-process high-water mark);
``peak_mb`` is the rise of the peak during the first run over the process's state after loading
the model and tokenizer; ``seconds`` is the median of the following ``repeats`` runs. The model is bios-tiny-shaped with random weights (timing does not depend on
the weights, so nothing is trained here).

    python -m benchmarks.activations
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time

N_PROMPTS = 2048
BATCH_SIZE = 256
SITE_SETS = {"early site (block 0)": "early", "all resid_post": "all"}


def _model_and_prompts(quick: bool):
    from transformer_lens.model_bridge import TransformerBridge

    from mechunlearn.models.bios_tiny import BiosTinyRecipe, _bridge_config
    from mechunlearn.models.model import Model
    from mechunlearn.world import World, build_tokenizer

    recipe = BiosTinyRecipe().small() if quick else BiosTinyRecipe()
    world = World(recipe.world)
    tokenizer = build_tokenizer(world)
    bridge = TransformerBridge.boot_native(_bridge_config(recipe, len(tokenizer)))
    model = Model(bridge, tokenizer, "bios-tiny-shaped (random weights)", prepend_bos=True)
    target = world.target(0.1)
    items = (list(target.retain) * (N_PROMPTS // max(1, len(target.retain)) + 1))[:N_PROMPTS]
    return model, [it.prompt for it in items]


def _sites(model, kind: str) -> list[str]:
    if kind == "early":
        return ["blocks.0.hook_resid_post"]
    return [f"blocks.{l}.hook_resid_post" for l in range(model.n_layers)]


def _baseline(model, prompts, sites):
    """Full run_with_cache per batch, then copy out the last-token rows of the wanted sites."""
    import torch

    from mechunlearn.models.text import chunks

    out = {s: [] for s in sites}
    for chunk in chunks(prompts, BATCH_SIZE):
        batch = model.tokenize(chunk)
        last = batch.attention_mask.sum(-1) - 1
        with torch.no_grad():
            _, cache = model.bridge.run_with_cache(batch.tokens)
        for s in sites:
            out[s].append(cache[s][torch.arange(len(chunk)), last].clone())
        del cache
    return {s: torch.cat(v) for s, v in out.items()}


def _ours(model, prompts, sites):
    from mechunlearn.models.activations import cache_activations

    cache = cache_activations(model, prompts, sites, positions="last", batch_size=BATCH_SIZE, progress=False)
    return {s: cache[s] for s in sites}


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes


def _child(variant: str, kind: str, quick: bool, repeats: int) -> dict:
    import torch

    model, prompts = _model_and_prompts(quick)
    sites = _sites(model, kind)
    fn = _baseline if variant == "baseline" else _ours
    before = _maxrss_mb()
    result = fn(model, prompts, sites)  # first run: the memory high-water mark (also a warm-up)
    peak = _maxrss_mb() - before
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn(model, prompts, sites)
        times.append(time.perf_counter() - start)
    check = {s: float(v.double().sum()) for s, v in result.items()}
    return {"seconds": statistics.median(times), "peak_mb": peak, "threads": torch.get_num_threads(), "checksum": check}


def run(quick: bool = False, repeats: int = 3) -> dict:
    """Time and peak memory of ours vs the full run_with_cache, per site set (fresh processes)."""
    rows = []
    threads = None
    for label, kind in SITE_SETS.items():
        measured = {}
        for variant in ("baseline", "ours"):
            cmd = [sys.executable, "-m", "benchmarks.activations", "--child", variant, kind, str(int(quick)), str(repeats)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"benchmark child {variant}/{kind} failed:\n{done.stderr[-3000:]}")
            measured[variant] = json.loads(done.stdout.strip().splitlines()[-1])
            threads = measured[variant]["threads"]
        same = all(abs(measured["ours"]["checksum"][s] - v) <= 1e-3 * max(1.0, abs(v)) for s, v in measured["baseline"]["checksum"].items())
        b, o = measured["baseline"], measured["ours"]
        rows.append({
            "benchmark": "activations", "variant": label, "prompts": N_PROMPTS, "batch_size": BATCH_SIZE,
            "seconds": o["seconds"], "baseline_seconds": b["seconds"], "ratio": b["seconds"] / o["seconds"],
            "peak_mb": o["peak_mb"], "baseline_peak_mb": b["peak_mb"], "same_values": same,
        })
    return {
        "name": "activations",
        "claim": "caching only the requested sites (last token, early stop) is faster and lighter than a full run_with_cache",
        "model": "bios-tiny-shaped (random weights)" + (" (small world)" if quick else ""),
        "threads": threads,
        "rows": rows,
        "headline": {
            "what": f"activation cache, {N_PROMPTS} prompts, " + " / ".join(r["variant"] for r in rows),
            "baseline": "run_with_cache per batch, then slice",
            "ratio": " / ".join(f"{r['ratio']:.1f}x" for r in rows) + " faster",
            "peak memory": " / ".join(f"{r['peak_mb']:.0f} vs {r['baseline_peak_mb']:.0f} MB" for r in rows),
        },
        "passed": all(r["ratio"] > 1 and r["peak_mb"] <= r["baseline_peak_mb"] and r["same_values"] for r in rows),
    }


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        variant, kind, quick, repeats = sys.argv[2], sys.argv[3], bool(int(sys.argv[4])), int(sys.argv[5])
        print(json.dumps(_child(variant, kind, quick, repeats)))
    else:
        import pandas as pd

        result = run(quick="--quick" in sys.argv)
        print(result["claim"])
        print(pd.DataFrame(result["rows"]).to_string(index=False))
        print("passed:", result["passed"])
