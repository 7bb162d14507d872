"""The benchmark report: one summary line per benchmark (what, baseline, ratio, peak memory)."""

from benchmarks.__main__ import discover, report


def test_every_benchmark_module_is_discovered():
    assert {"activations", "concept_scan", "probes", "saliency"} <= set(discover())


def test_summary_has_one_line_per_benchmark_with_its_headline():
    results = [
        {"name": "a", "claim": "A is fast", "rows": [{"x": 1.5}], "passed": True, "headline": {"what": "thing a", "baseline": "naive a", "ratio": "3.0x faster", "peak memory": "10 vs 20 MB"}},
        {"name": "b", "claim": "B", "rows": [], "passed": False, "error": "ValueError: boom"},
    ]
    text = report(results)
    summary = text.split("## Summary")[1].split("## a")[0]
    lines = [line for line in summary.splitlines() if line.startswith("| ")]
    assert lines[0].startswith("| benchmark | what | baseline | ratio | peak memory |")
    assert "| a | thing a | naive a | 3.0x faster | 10 vs 20 MB |" in lines[1]
    assert lines[2].startswith("| b |") and "no" in lines[2]
    assert "**Failed:** `ValueError: boom`" in text

