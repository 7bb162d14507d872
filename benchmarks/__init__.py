"""Performance benchmarks: each claim is a ratio measured in one process (against a plain baseline).

A benchmark is a module in this folder with ``run(quick: bool = False, ...) -> dict`` returning
``name``, ``claim`` (one sentence), ``model``, ``threads``, ``rows`` (list of flat dicts: the
measurements) and ``passed`` (bool). ``python -m benchmarks`` runs every such module and writes
``benchmarks/README.md``; add a module and it is picked up, nothing to register. A result may
carry ``headline`` (``what``, ``baseline``, ``ratio``, ``peak memory``: short strings), the
README's one-line-per-benchmark summary.
"""

from __future__ import annotations


def _rss_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (Linux ≥ 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_growth(fn) -> tuple[object, float | None]:
    """Run ``fn`` and return its result and the growth of peak resident memory (bytes) it caused."""
    if not _reset_peak():
        return fn(), None
    base = _rss_bytes("VmRSS")
    out = fn()
    peak = _rss_bytes("VmHWM")
    return out, (None if base is None or peak is None else float(peak - base))



def main(run) -> None:
    """A benchmark module's ``python -m benchmarks.NAME [--quick]``: run it and print its result."""
    import sys

    import pandas as pd

    result = run(quick="--quick" in sys.argv)
    print(result["claim"])
    print(pd.DataFrame(result["rows"]).to_string(index=False))
    print(result["headline"])
    print("passed:", result["passed"])
