"""Benchmark: all layers × six attributes × two positions of linear probes on bios-tiny in one
batched L-BFGS run, against a per-probe scikit-learn loop on the same standardised features.

Claims: the whole probe pass (caching the activations + fitting every probe) takes ≤ 60 s, the
batched fit is ≥ 5× faster than scikit-learn's ``LogisticRegression`` fitted probe by probe
(same objective: C = 1/(n·weight_decay), lbfgs), and its mean test accuracy is within 1 point.
Test rows are the held-out retain people and the forget people (the original model knows both).

scikit-learn is only the baseline here (``pip install scikit-learn`` into the venv).

    python -m benchmarks.probes            # full bios-tiny (built on first use, minutes)
    python -m benchmarks.probes --quick    # the small world
"""

from __future__ import annotations

import statistics
import sys
import time
import warnings

import numpy as np
import torch

LIMIT_SECONDS = 60.0
"""Budget for caching + fitting all probes of one model."""
MIN_SPEEDUP = 5.0
"""Required speed-up of the batched fit over the scikit-learn loop."""
MAX_ACC_GAP = 0.01
"""Allowed gap in mean test accuracy (1 point)."""


def _sklearn_loop(x: np.ndarray, y: np.ndarray, train: np.ndarray, weight_decay: float, max_iter: int) -> np.ndarray:
    """Predictions of one scikit-learn probe per row of ``x`` (the naive baseline)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    preds = np.zeros(y.shape, dtype=np.int64)
    for p in range(x.shape[0]):
        rows = train[p]
        scaler = StandardScaler().fit(x[p][rows])
        clf = LogisticRegression(C=1.0 / (rows.sum() * weight_decay), max_iter=max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(scaler.transform(x[p][rows]), y[p][rows])
        preds[p] = clf.predict(scaler.transform(x[p]))
    return preds


def run(quick: bool = False, repeats: int = 3) -> dict:
    """Cache, fit batched, fit with scikit-learn; rows for the benchmark table."""
    from mechunlearn.models import load_model
    from mechunlearn.models.bios_tiny import BiosTinyRecipe
    from mechunlearn.verify.probes import ProbeConfig, _stack, fit_probes, probe_data, probe_features
    from mechunlearn.world import World

    recipe = BiosTinyRecipe().small() if quick else BiosTinyRecipe()
    model = load_model("bios-tiny", recipe=recipe)
    target = World(recipe.world).target(0.1)
    config = ProbeConfig()

    start = time.perf_counter()
    data = probe_data(target, config)
    feats = probe_features(model, data, config, progress=False)
    cache_s = time.perf_counter() - start
    x, y, g, n_classes, codes = _stack(feats, data, list(data.classes))
    train = g == codes["train"]
    test = (g == codes["retain"]) | (g == codes["forget"])

    fit_times, sk_times = [], []
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        t = time.perf_counter()
        probes = fit_probes(x, y, n_classes, mask=train, weight_decay=config.weight_decay, max_iter=config.max_iter)
        fit_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        sk_pred = _sklearn_loop(x.numpy(), y.numpy(), train.numpy(), config.weight_decay, config.max_iter)
        sk_times.append(time.perf_counter() - t)
    ours = probes.accuracy(x, y, test)
    sk_hit = torch.from_numpy(sk_pred == y.numpy()).float()
    theirs = (sk_hit * test).sum(-1) / test.sum(-1)
    fit_s, sk_s = statistics.median(fit_times), statistics.median(sk_times)
    total = cache_s + fit_s
    gap = abs(float(ours.mean() - theirs.mean()))
    n_probes = x.shape[0]
    rows = [
        {"benchmark": "probes", "variant": "cache activations", "probes": n_probes, "seconds": cache_s, "baseline_seconds": None, "ratio": None, "test_acc": None},
        {"benchmark": "probes", "variant": "batched L-BFGS fit", "probes": n_probes, "seconds": fit_s, "baseline_seconds": sk_s, "ratio": sk_s / fit_s, "test_acc": float(ours.mean())},
        {"benchmark": "probes", "variant": "scikit-learn loop", "probes": n_probes, "seconds": sk_s, "baseline_seconds": None, "ratio": None, "test_acc": float(theirs.mean())},
        {"benchmark": "probes", "variant": "cache + batched fit (total)", "probes": n_probes, "seconds": total, "baseline_seconds": cache_s + sk_s, "ratio": (cache_s + sk_s) / total, "test_acc": None},
    ]
    passed = total <= LIMIT_SECONDS and sk_s / fit_s >= MIN_SPEEDUP and gap <= MAX_ACC_GAP
    return {
        "name": "probes",
        "claim": f"{n_probes} probes (layers x attributes x positions) cached and fit in <= {LIMIT_SECONDS:.0f} s, "
        f">= {MIN_SPEEDUP:.0f}x faster than a per-probe scikit-learn loop, mean test accuracy within {MAX_ACC_GAP * 100:.0f} point",
        "model": model.model_id + (" (small world)" if quick else ""),
        "threads": torch.get_num_threads(),
        "rows": rows,
        "accuracy_gap": gap,
        "max_probe_gap": float((ours - theirs).abs().max()),
        "headline": {
            "what": f"{n_probes} linear probes, cached and fit ({total:.0f} s in all)",
            "baseline": "scikit-learn LogisticRegression, probe by probe",
            "ratio": f"{sk_s / fit_s:.1f}x faster, accuracy gap {gap * 100:.2f} points",
            # resident-set growth is no use here (freed pages are reused): the size of what is held
            "peak memory": f"cached features {x.numel() * x.element_size() / 2**20:.0f} MB (both fits read the same)",
        },
        "passed": passed,
    }


if __name__ == "__main__":
    import pandas as pd

    result = run(quick="--quick" in sys.argv)
    print(result["claim"])
    print(pd.DataFrame(result["rows"]).to_string(index=False))
    print(f"mean accuracy gap {result['accuracy_gap']:.4f}, largest per-probe gap {result['max_probe_gap']:.4f}")
    print("passed:", result["passed"])
