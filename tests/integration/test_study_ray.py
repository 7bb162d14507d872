"""A study on a real two-node Ray cluster on this machine (`ray start --head` and a second node
joining it, each with one CPU and its own temp folder), run by the CLI with ``--address``: both
nodes run runs, results come back to the driver, a worker SIGKILLed mid-run is retried on
another worker, and the table equals the one of a run in this process. Both nodes are stopped
at the end (only the processes this test started)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

from mechunlearn.study import load_results, load_study, run_study
from tests.unit.study.plugin import write_study_file

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RAY = Path(sys.executable).parent / "ray"
KEY = ["run_id", "verifier", "metric", "split"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_node(args: list[str], temp: Path, env: dict) -> subprocess.Popen:
    """`ray start --block` in its own process group (stopping the group stops that node alone)."""
    cmd = [str(RAY), "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", f"--temp-dir={temp}", "--disable-usage-stats", *args]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def stop_node(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        try:  # the node's other processes (raylet, workers) are in the same group
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


def test_a_study_on_a_two_node_ray_cluster(tmp_path):
    if not RAY.exists():
        pytest.fail(f"{RAY} is missing: the ray executor needs Ray installed in this environment")
    flag = tmp_path / "killed-once"
    methods = ["none", {"name": "ga", "params": {"steps": 3, "lr": 1e-2, "stop_forget_em": None, "batch_size": 4}},
               {"name": "npo", "params": {"steps": 3, "batch_size": 4}}, {"name": "test-kill", "label": "kill-once", "params": {"flag": str(flag)}}]
    study_file = write_study_file(tmp_path / "cluster.yaml", methods, seeds=[0, 1], verifiers=[{"name": "behavior", "params": {"splits": ["forget", "retain"], "by": []}}])
    # what every node needs: this package importable and a model cache folder of its own
    # and a HOME of its own: Ray keeps an auth token in ~/.ray, and a token left there by another
    # Ray instance makes the head refuse this client ("InvalidAuthToken")
    (tmp_path / "ray-home").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_ADDRESS": "", "HOME": str(tmp_path / "ray-home")}
    port = free_port()
    address = f"127.0.0.1:{port}"
    temps = [Path(tempfile.mkdtemp(prefix="ray", dir="/tmp")) for _ in range(2)]  # short: Ray's socket paths have a length limit
    nodes = []
    try:
        nodes.append(start_node(["--head", f"--port={port}", "--include-dashboard=false"], temps[0], {**env, "MECHUNLEARN_HOME": str(tmp_path / "home-a")}))
        deadline = time.monotonic() + 180  # a guard against hanging: a busy machine starts Ray slowly
        while (status := subprocess.run([str(RAY), "status", f"--address={address}"], env=env, capture_output=True, text=True)).returncode != 0:
            assert nodes[0].poll() is None, nodes[0].stderr.read()
            logs = sorted(temps[0].glob("session_*/logs/*.err")) + sorted(temps[0].glob("session_*/logs/*.out"))
            tails = "\n".join(f"--- {p.name}\n" + p.read_text(errors="replace")[-1500:] for p in logs[:6])
            assert time.monotonic() < deadline, f"the head node did not start in 180 s; ray status: {status.stdout[-1500:]}{status.stderr[-1500:]}\n{tails}"
            time.sleep(1)
        nodes.append(start_node([f"--address={address}"], temps[1], {**env, "MECHUNLEARN_HOME": str(tmp_path / "home-b")}))
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "mechunlearn.cli", "study", "run", str(study_file), "--out", str(out), "--executor", "ray", "--workers", "2", "--address", address]
        done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "8 runs: 0 already done, 8 finished, 0 failed" in done.stdout
    finally:
        for node in reversed(nodes):
            stop_node(node)
        for temp in temps:
            shutil.rmtree(temp, ignore_errors=True)
    assert flag.exists()  # kill-once's first attempt killed its Ray worker; the retry finished
    table = load_results(out)
    workers = table.groupby("run_id")["worker"].first()
    assert workers.str.startswith("ray-node:").all() and workers.nunique() == 2  # both nodes ran runs
    # the same numbers as one run at a time in this process (kill-once finds its flag: no kill here)
    here = tmp_path / "here"
    run_study(load_study(study_file), here, threads=1, progress=False)
    a = table[table["verifier"] != "runner"].sort_values(KEY).reset_index(drop=True)
    b = load_results(here)
    b = b[b["verifier"] != "runner"].sort_values(KEY).reset_index(drop=True)
    pd.testing.assert_frame_equal(a[KEY], b[KEY])
    pd.testing.assert_series_equal(a["value"], b["value"], rtol=1e-6, atol=1e-6)
