"""Study figures and the HTML report (opened in headless Chromium)."""

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import tests.unit.study.plugin  # noqa: F401 - registers study-tiny, toy, test methods
from mechunlearn import figures
from mechunlearn.figures.study import run_times, split_bars, sweep, tradeoff, tradeoff_frame
from mechunlearn.study import load_results, run_study, study_from_dict, summary_table, write_report
from mechunlearn.study.browser import check_page


def fake_results(seeds=(0, 1)):
    """A study table with three methods on two paraphrase sets (values chosen by hand)."""
    rows = []
    points = {"none": (1.0, 1.0), "ga": (0.1, 0.5), "npo": (0.2, 0.9), "bad": (0.6, 0.4)}
    for label, (forget, retain) in points.items():
        for seed in seeds:
            for paraphrase in ("trained", "heldout"):
                for split, value in (("forget", forget), ("retain", retain), ("holdout", 0.0)):
                    rows.append(dict(run_id=f"{label}{seed}", model="m", target="t", method=label, label=label, params='{"lr": 0.1}', seed=seed,
                                     status="ok", verifier="behavior", metric="exact_match", split=split, layer=pd.NA, paraphrase=paraphrase, value=value + 0.01 * seed))
            for phase in ("seconds_locate", "seconds_edit", "seconds_verify", "seconds_total"):
                rows.append(dict(run_id=f"{label}{seed}", model="m", target="t", method=label, label=label, params="{}", seed=seed,
                                 status="ok", verifier="runner", metric=phase, value=1.0))
    rows.append(dict(run_id="x", model="m", target="t", method="ga", label="ga broken", params="{}", seed=0, status="error", value=np.nan, error="ValueError: no"))
    return pd.DataFrame(rows)


def test_tradeoff_points_are_seed_means_with_the_overall_front():
    frame = fake_results()
    points = tradeoff_frame(frame).set_index("label")
    assert points.loc["ga", "forget"] == pytest.approx(0.105) and points.loc["ga", "retain"] == pytest.approx(0.505)
    fig = tradeoff(frame)
    assert isinstance(fig, go.Figure)
    front = [t for t in fig.data if t.name == "Pareto front (all methods)"][0]
    # ga, npo, none are undominated (sorted by forget); 'bad' (forget 0.6, retain 0.4) is dominated
    assert list(front.x) == pytest.approx([0.105, 0.205, 1.005])
    assert list(front.y) == pytest.approx([0.505, 0.905, 1.005])
    with pytest.raises(ValueError, match="no exact_match rows on 'paraphrased' templates"):
        tradeoff(frame, paraphrase="paraphrased")


def test_split_bars_sweep_and_run_times():
    frame = fake_results()
    bars = split_bars(frame)
    assert {t.name for t in bars.data} == {"forget", "retain", "holdout"}
    assert len(sweep(frame, "lr", split="forget").data) == 4
    times = run_times(frame)
    assert [t.name for t in times.data] == ["locate", "edit", "verify"]
    with pytest.raises(ValueError, match="no finished rows with metric 'nope'"):
        split_bars(frame, metric="nope")
    with pytest.raises(ValueError, match="columns \\['status'"):
        tradeoff(pd.DataFrame({"value": [1.0]}))


def test_summary_table_shows_mean_and_std_over_seeds():
    table = summary_table(fake_results())
    assert table.loc[("m", "t", "ga"), "exact_match · forget · trained"] == "0.105 ± 0.007"
    assert table.loc[("m", "t", "none"), "seconds"] == "1.000 ± 0.000"
    assert "ga broken" not in table.index.get_level_values("label")


def test_save_writes_self_contained_html_and_png(tmp_path):
    fig = tradeoff(fake_results())
    written = figures.save(fig, tmp_path / "tradeoff", png=True)
    assert [p.name for p in written] == ["tradeoff.html", "tradeoff.png"]
    html = written[0].read_text()
    assert 'src="http' not in html and "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js inlined
    assert written[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and written[1].stat().st_size > 5000
    assert figures.save(fig, tmp_path / "only", png=False) == [tmp_path / "only.html"]


def test_report_renders_in_headless_chromium_without_errors(tmp_path):
    study = study_from_dict({
        "name": "report",
        "description": "tiny <report> test",
        "models": ["study-tiny"],
        "targets": [{"source": "toy"}],
        "methods": ["none", {"name": "ga", "params": {"steps": 3, "lr": 1e-2, "stop_forget_em": None, "batch_size": 4}},
                    {"name": "ga", "label": "ga-broken", "params": {"steps": 0}}],
        "verifiers": [{"name": "behavior", "params": {"splits": ["forget", "retain"]}}],
    })
    run_study(study, tmp_path, progress=False)
    path = write_report(tmp_path)
    html = path.read_text()
    assert html.count("<script type=\"text/javascript\">/**") <= 1  # plotly.js inlined once
    assert "tiny &lt;report&gt; test" in html and "steps must be &gt;= 1" in html
    assert 'src="http' not in html
    check = check_page(path)
    assert check.js_errors == [] and check.external_requests == []
    assert check.figure_errors == 0
    # run times + the behaviour verifier's trade-off and split bars (the toy target has no held-out templates)
    assert check.plots == 3 and check.rendered == 3
    assert check.title == "mechunlearn study: report"
    assert check.ok


def test_page_check_sees_js_errors_and_external_requests(tmp_path):
    page = tmp_path / "bad.html"
    page.write_text("<html><head><title>bad</title></head><body><script>undefinedFunction();</script>"
                    "<img src='http://192.0.2.1/x.png'></body></html>")
    check = check_page(page)
    assert any("undefinedFunction" in e for e in check.js_errors)
    assert check.external_requests == ["http://192.0.2.1/x.png"]
    assert not check.ok


def test_page_check_counts_heatmaps_and_empty_plots(tmp_path):
    # heatmap traces are images, not .trace groups: a drawn probe heatmap must count as drawn,
    # and an empty figure must not
    import plotly.graph_objects as go

    from mechunlearn.figures import save

    save(go.Figure(go.Heatmap(z=[[0.1, 0.9], [0.5, 0.2]])), tmp_path / "heat", png=False)
    assert check_page(tmp_path / "heat.html").rendered == 1
    save(go.Figure(), tmp_path / "empty", png=False)
    empty = check_page(tmp_path / "empty.html")
    assert empty.plots == 1 and empty.rendered == 0 and not empty.ok


def test_report_of_a_folder_without_a_study_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a study folder"):
        write_report(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no results in .* \(neither results/ nor results.parquet\)"):
        load_results(tmp_path)


def test_a_two_parameter_sweep_is_drawn_per_parameter_with_mean_and_sd_over_seeds():
    from mechunlearn.figures.study import swept_parameters

    rows = []
    for keep in (0.05, 0.3):
        for lr in (1e-4, 3e-4):
            for seed in (0, 1, 2):
                params = f'{{"keep_ratio": {keep}, "lr": {lr}}}'
                rows.append(dict(run_id=f"{keep}{lr}{seed}", method="wagle", label="w", params=params, seed=seed, status="ok", verifier="behavior",
                                 metric="exact_match", split="forget", layer=pd.NA, value=keep + (lr > 2e-4) + 0.1 * seed))
    study = {"methods": [{"name": "none", "sweep": {}}, {"name": "wagle", "sweep": {"keep_ratio": [0.05, 0.3], "lr": [1e-4, 3e-4]}}]}
    assert swept_parameters(study) == [("wagle", "keep_ratio", ("lr",)), ("wagle", "lr", ("keep_ratio",))]
    fig = sweep(pd.DataFrame(rows), "keep_ratio", by=("lr",), paraphrase=None)
    lines = {t.name: t for t in fig.data}
    assert set(lines) == {"wagle lr=0.0001", "wagle lr=0.0003"}
    slow = lines["wagle lr=0.0001"]
    assert list(slow.x) == [0.05, 0.3] and list(slow.y) == pytest.approx([0.15, 0.4])  # mean over seeds 0, 0.1, 0.2
    assert list(slow.error_y.array) == pytest.approx([0.1, 0.1])  # their sd
    assert list(lines["wagle lr=0.0003"].y) == pytest.approx([1.15, 1.4])
