"""The per-run store: one file per add, read as one dataset with filters pushed down, newest
attempt of a run wins, legacy results.parquet read and migrated, compaction, leftovers of a
killed write never read."""

import shutil

import pandas as pd
import pytest

from mechunlearn.study.store import RESULTS_FILE, ResultStore, read_table


def rows(run_id, method, status="ok", n=3, **extra):
    frame = pd.DataFrame({
        "run_id": run_id, "method": method, "label": method, "status": status, "seed": 0,
        "verifier": "behavior", "metric": [f"m{i}" for i in range(n)], "split": "forget", "layer": pd.NA,
        "value": [float(i) for i in range(n)],
    })
    return frame.assign(**extra)


def test_each_add_is_one_file_and_filters_select_rows(tmp_path):
    store = ResultStore(tmp_path)
    for i, method in enumerate(["none", "ga", "npo"]):
        path = store.add(rows(f"{i:04x}", method))
        assert path.name == f"{i + 1:08d}-{i:04x}-ok.parquet"
    assert len(store.files()) == 3 and store.finished() == {"0000", "0001", "0002"}
    ga = read_table(tmp_path, filters=[("method", "==", "ga")])
    assert set(ga["method"]) == {"ga"} and len(ga) == 3
    assert list(read_table(tmp_path, filters=[("method", "in", ["ga", "npo"])], columns=["method", "value"]).columns) == ["method", "value"]
    whole = read_table(tmp_path)
    assert len(whole) == 9 and "_seq" not in whole.columns
    assert str(whole["seed"].dtype) == "Int64"
    # a new store (a resumed driver) sees the same runs from the file names alone
    assert ResultStore(tmp_path).runs() == {"0000": "ok", "0001": "ok", "0002": "ok"}


def test_a_retried_run_supersedes_its_failed_attempt(tmp_path):
    store = ResultStore(tmp_path)
    store.add(rows("00aa", "ga", status="error", n=1, error="RuntimeError: boom"))
    store.add(rows("00bb", "none"))
    assert store.failed() == {"00aa"}
    store.add(rows("00aa", "ga"))
    assert store.failed() == set() and store.finished() == {"00aa", "00bb"}
    assert sorted(p.name for p in store.files()) == ["00000002-00bb-ok.parquet", "00000003-00aa-ok.parquet"]
    table = read_table(tmp_path)
    assert (table["status"] == "ok").all() and len(table) == 6


def test_columns_differ_between_runs(tmp_path):
    store = ResultStore(tmp_path)
    store.add(rows("0001", "a", head=[1, 2, 3]))
    store.add(rows("0002", "b", head=["x", "y", "z"]))  # text here, numbers in the other run
    store.add(rows("0003", "c", only_here=[0.5, 0.5, 0.5]))
    table = read_table(tmp_path).set_index(["run_id", "metric"])
    assert table.loc[("0001", "m1"), "head"] == "2" and table.loc[("0002", "m1"), "head"] == "y"
    assert pd.isna(table.loc[("0001", "m0"), "only_here"]) and table.loc[("0003", "m0"), "only_here"] == 0.5


def test_a_legacy_table_is_read_then_migrated_on_the_next_write(tmp_path):
    legacy = pd.concat([rows("0001", "none"), rows("0002", "ga", status="error", n=1)], ignore_index=True)
    legacy.to_parquet(tmp_path / RESULTS_FILE, index=False)
    store = ResultStore(tmp_path)
    assert store.finished() == {"0001"} and store.failed() == {"0002"}
    assert len(read_table(tmp_path)) == 4
    store.add(rows("0002", "ga"))  # the retried failure
    assert not (tmp_path / RESULTS_FILE).exists()
    assert [p.name for p in store.files()] == ["00000000-runs.parquet", "00000001-0002-ok.parquet"]
    table = read_table(tmp_path)
    assert len(table) == 6 and (table["status"] == "ok").all()
    assert ResultStore(tmp_path).runs() == {"0001": "ok", "0002": "ok"}


def test_compact_merges_into_one_file_and_an_interrupted_compaction_reads_the_same(tmp_path):
    store = ResultStore(tmp_path)
    for i in range(5):
        store.add(rows(f"{i:04x}", f"m{i % 2}"))
    store.add(rows("0001", "m1", n=2))  # supersedes run 0001's first file
    before = read_table(tmp_path).sort_values(["run_id", "metric"]).reset_index(drop=True)
    saved = tmp_path / "saved"
    shutil.copytree(tmp_path / "results", saved)
    merged = store.compact()
    assert store.files() == [merged] and merged.name == "00000007-runs.parquet"
    after = read_table(tmp_path).sort_values(["run_id", "metric"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(after, before)
    assert ResultStore(tmp_path).runs() == store.runs()
    # killed after the merged file was renamed into place, before the old files were removed
    for old in saved.iterdir():
        shutil.copy(old, tmp_path / "results" / old.name)
    again = read_table(tmp_path).sort_values(["run_id", "metric"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(again, before)
    ResultStore(tmp_path).compact()
    assert len(ResultStore(tmp_path).files()) == 1
    pd.testing.assert_frame_equal(read_table(tmp_path).sort_values(["run_id", "metric"]).reset_index(drop=True), before)


def test_leftovers_of_a_killed_write_are_never_read(tmp_path):
    store = ResultStore(tmp_path)
    store.add(rows("0001", "none"))
    leftover = tmp_path / "results" / ".00000002-0002-ok.parquet.k3j2.tmp"
    leftover.write_bytes(b"PAR1 half a file")
    assert len(read_table(tmp_path)) == 3  # a reader ignores it
    ResultStore(tmp_path)  # the next driver removes it
    assert not leftover.exists()
    (tmp_path / "results" / "notes.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="not a results file of this store; move it out"):
        ResultStore(tmp_path)


def test_cli_compact(tmp_path, capsys):
    from mechunlearn.cli import main

    store = ResultStore(tmp_path)
    for i in range(3):
        store.add(rows(f"{i:04x}", "ga"))
    before = read_table(tmp_path).sort_values(["run_id", "metric"]).reset_index(drop=True)
    assert main(["study", "compact", str(tmp_path)]) == 0
    assert "3 runs: 3 files merged into" in capsys.readouterr().out
    assert [p.name for p in ResultStore(tmp_path).files()] == ["00000004-runs.parquet"]
    pd.testing.assert_frame_equal(read_table(tmp_path).sort_values(["run_id", "metric"]).reset_index(drop=True), before)
    assert main(["study", "compact", str(tmp_path / "empty")]) == 2


def test_reading_some_runs_opens_only_their_files(tmp_path, monkeypatch):
    import pyarrow.dataset as pads

    from mechunlearn.study import store as store_module

    store = store_module.ResultStore(tmp_path)
    for i in range(4):
        store.add(pd.DataFrame({"run_id": [f"{i:04x}"] * 2, "status": "ok", "metric": ["a", "b"], "value": [float(i), 1.0]}))
    opened = []
    real = pads.dataset
    monkeypatch.setattr(store_module.ds, "dataset", lambda paths, **k: opened.append(list(paths)) or real(paths, **k))
    rows = store.read(runs=["0001", "0003"], filters=[("metric", "==", "a")])
    assert sorted(rows["value"]) == [1.0, 3.0]
    assert [p.rsplit("/", 1)[-1] for p in opened[0]] == ["00000002-0001-ok.parquet", "00000004-0003-ok.parquet"]
