"""Benchmark: scanning every SmolLM2-135M value vector against 20 concepts in one projection pass.

All 30 × 1536 = 46,080 value vectors are projected on the full 49,152-token unembedding
(2.6 TFLOP) once, in row chunks, and every concept is scored from the same top-k ids
(`mechunlearn.locate.concept_vectors.scan`). Measured in one process, interleaved so that load
from other processes hits every variant alike:

* a plain float32 matrix product (4096³, and the projection's own shape without top-k): this
  machine's matmul throughput, the reference;
* `scan`: its throughput (projection FLOPs / wall time) must be ≥ 60 % of the reference, and the
  projection's peak memory (resident-set growth during the scan) under 2 GiB;
* the naive way — per concept, per layer, a full projection and top-k — timed on
  ``naive_concepts`` concepts and scaled to all 20 (each concept repeats identical work; the
  per-concept times are reported), and checked to give the same scores.

    python -m benchmarks.concept_scan [--quick] [--naive-concepts 20]
"""

from __future__ import annotations

import statistics
import sys
import time

import torch

from benchmarks import peak_growth

N_CONCEPTS = 20
MIN_FRACTION = 0.6
"""Required scan throughput as a fraction of the plain matmul's."""
MAX_PEAK_GIB = 2.0
"""Allowed growth of resident memory during the scan."""


def matmul_gflops(m: int, k: int, n: int, repeats: int = 2) -> float:
    """Best-of-``repeats`` float32 throughput of one ``[m, k] @ [k, n]`` product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * m * k * n / best / 1e9


def projection_only(vectors: torch.Tensor, w_u: torch.Tensor, chunk: int) -> float:
    """The scan's matrix products alone (no top-k): seconds."""
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, vectors.shape[0], chunk):
            vectors[i : i + chunk] @ w_u
    return time.perf_counter() - start


def naive_scan(model, references: dict[str, list[int]], config, layers) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Per concept, per layer: full projection, top-k (both signs), score. The way to avoid."""
    from mechunlearn.locate.concept_vectors import reference_matrix, score_top_ids, unembedding

    w_u = unembedding(model).float()
    out, seconds = {}, []
    for name, ids in references.items():
        start = time.perf_counter()
        ref = reference_matrix({name: ids}, w_u.shape[1])
        per_layer = []
        with torch.no_grad():
            for layer in layers:
                logits = model.weight(f"blocks.{layer}.mlp.W_out").detach().float() @ w_u
                pos, _ = score_top_ids(logits.topk(config.k, dim=-1).indices, ref, config.scoring)
                neg, _ = score_top_ids(logits.topk(config.k, dim=-1, largest=False).indices, ref, config.scoring)
                per_layer.append(torch.maximum(pos, neg)[0])
        out[name] = torch.stack(per_layer)
        seconds.append(time.perf_counter() - start)
    return out, seconds


def run(quick: bool = False, repeats: int = 2, naive_concepts: int | None = None) -> dict:
    """Time the one-pass scan against the matmul reference and the naive loop; rows for the table."""
    from mechunlearn.locate.concept_vectors import ScanConfig, scan, unembedding, value_vectors
    from mechunlearn.models import load_model
    from mechunlearn.world.concept_defs import definitions

    torch.manual_seed(0)
    model = load_model("smollm2-135m")
    concepts = definitions(model.model_id)
    references = {c.name: c for c in list(concepts)[:N_CONCEPTS]}
    references = concepts.subset(list(references)).reference_ids(model)
    layers = tuple(range(6)) if quick else None
    config = ScanConfig(layers=layers)
    n_naive = naive_concepts if naive_concepts is not None else (2 if quick else 3)
    n_naive = min(n_naive, len(references))

    vectors = value_vectors(model, layers).reshape(-1, model.d_model).float().contiguous()
    w_u = unembedding(model).float()
    flops = 2.0 * vectors.shape[0] * vectors.shape[1] * w_u.shape[1]

    square, shaped, proj_s, scan_s, peaks = [], [], [], [], []
    scan(model, references, config, progress=False)  # warm-up
    result = None
    for _ in range(repeats):  # interleaved
        square.append(matmul_gflops(4096, 4096, 4096))
        shaped.append(matmul_gflops(config.chunk_size, model.d_model, w_u.shape[1]))
        proj_s.append(projection_only(vectors, w_u, config.chunk_size))
        start = time.perf_counter()
        result, peak = peak_growth(lambda: scan(model, references, config, progress=False))
        scan_s.append(time.perf_counter() - start)
        peaks.append(peak)
    naive_names = list(references)[:n_naive]
    naive, naive_times = naive_scan(model, {n: references[n] for n in naive_names}, config, result.layers)
    same = all(torch.allclose(naive[n], result.scores[result.concepts.index(n)], atol=1e-6) for n in naive_names)

    reference = max(statistics.median(square), statistics.median(shaped))
    scan_time = min(scan_s)
    scan_gflops = flops / scan_time / 1e9
    fraction = scan_gflops / reference
    known_peaks = [p for p in peaks if p is not None]
    peak_gib = max(known_peaks) / 2**30 if known_peaks else None
    bound_gib = config.chunk_size * w_u.shape[1] * 4 / 2**30
    naive_total = sum(naive_times) * len(references) / len(naive_times)  # exact when all concepts were run
    ratio = naive_total / scan_time
    rows = [
        {"benchmark": "concept_scan", "variant": "plain matmul 4096^3", "seconds": None, "gflops": statistics.median(square), "fraction_of_matmul": None, "peak_gib": None, "ratio": None},
        {"benchmark": "concept_scan", "variant": f"plain matmul {config.chunk_size}x{model.d_model}x{w_u.shape[1]}", "seconds": None, "gflops": statistics.median(shaped), "fraction_of_matmul": None, "peak_gib": None, "ratio": None},
        {"benchmark": "concept_scan", "variant": "projection only (no top-k)", "seconds": min(proj_s), "gflops": flops / min(proj_s) / 1e9, "fraction_of_matmul": flops / min(proj_s) / 1e9 / reference, "peak_gib": None, "ratio": None},
        {"benchmark": "concept_scan", "variant": f"scan: {len(references)} concepts, one pass", "seconds": scan_time, "gflops": scan_gflops, "fraction_of_matmul": fraction, "peak_gib": peak_gib, "ratio": None},
        {"benchmark": "concept_scan", "variant": f"naive per concept x layer (measured {n_naive}, x{len(references)})", "seconds": naive_total, "gflops": flops * len(references) / naive_total / 1e9, "fraction_of_matmul": None, "peak_gib": None, "ratio": ratio},
    ]
    passed = fraction >= MIN_FRACTION and (peak_gib is None or peak_gib < MAX_PEAK_GIB) and bound_gib < MAX_PEAK_GIB and same and ratio > 1
    return {
        "name": "concept_scan",
        "claim": f"one chunked projection of {vectors.shape[0]:,} value vectors on {w_u.shape[1]:,} tokens scores {len(references)} concepts "
        f"at >= {MIN_FRACTION:.0%} of plain float32 matmul throughput, peak memory < {MAX_PEAK_GIB:g} GiB, and beats the per-concept loop",
        "model": model.model_id + (" (layers 0-5)" if quick else ""),
        "threads": torch.get_num_threads(),
        "rows": rows,
        "projection_tflop": flops / 1e12,
        "reference_gflops": reference,
        "scan_fraction_of_matmul": fraction,
        "peak_gib": peak_gib,
        "chunk_bound_gib": bound_gib,
        "naive_seconds_per_concept": naive_times,
        "naive_matches_scan": same,
        "speedup_vs_naive": ratio,
        "headline": {
            "what": f"concept scan, {len(references)} concepts x {vectors.shape[0]:,} value vectors",
            "baseline": "full projection + top-k per concept and layer",
            "ratio": f"{ratio:.1f}x faster; {fraction:.0%} of plain matmul throughput",
            "peak memory": "not measurable here" if peak_gib is None else f"{peak_gib:.2f} GiB (limit {MAX_PEAK_GIB:g})",
        },
        "passed": passed,
    }


if __name__ == "__main__":
    import pandas as pd

    torch.set_num_threads(int(next((a.split("=")[1] for a in sys.argv if a.startswith("--threads=")), torch.get_num_threads())))
    n = next((int(sys.argv[i + 1]) for i, a in enumerate(sys.argv) if a == "--naive-concepts"), None)
    result = run(quick="--quick" in sys.argv, naive_concepts=n)
    print(result["claim"])
    with pd.option_context("display.width", 200, "display.float_format", "{:.3f}".format):
        print(pd.DataFrame(result["rows"]).to_string(index=False))
    print(
        f"scan at {result['scan_fraction_of_matmul']:.0%} of {result['reference_gflops']:.0f} GFLOP/s; peak {result['peak_gib']} GiB "
        f"(chunk bound {result['chunk_bound_gib']:.2f} GiB); naive per concept {[round(s, 1) for s in result['naive_seconds_per_concept']]} s; "
        f"speed-up {result['speedup_vs_naive']:.1f}x; naive == scan: {result['naive_matches_scan']}"
    )
    print("passed:", result["passed"])
