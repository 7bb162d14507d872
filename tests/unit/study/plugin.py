"""Test-only registrations for study tests: a tiny random model, a toy target, and methods that
interrupt, wait or leak. Imported by the tests and, through a study's ``imports:``, by CLI
subprocesses and Ray workers."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch

from mechunlearn.core.edit import Compose, Edit, EditHandle
from mechunlearn.models.load import MODELS
from mechunlearn.study.registry import METHODS, TARGETS, VERIFIERS, Method, StudyTarget, TargetSource, Verifier, unlearn_edit, unlearn_params
from mechunlearn.world.target import Item, Target

FORGET = tuple(Item(f"where was w{i} born ?", f"w{i + 20}", subject=f"w{i}") for i in range(4))
RETAIN = tuple(Item(f"what year is w{i} ?", f"w{i + 10}", subject=f"w{i}") for i in range(4, 12))


def write_study_file(path: Path, methods: list, **changes) -> Path:
    """A study file (JSON is YAML) on the tiny model and toy target, for CLI subprocesses."""
    import json

    data = {
        "name": path.stem,
        "imports": ["tests.unit.study.plugin"],
        "models": ["study-tiny"],
        "targets": [{"source": "toy"}],
        "methods": methods,
        "verifiers": [{"name": "behavior", "params": {"splits": ["forget"], "by": []}}],
    }
    path.write_text(json.dumps({**data, **changes}))
    return path


def tiny(**options):
    from tests.conftest import make_tiny_model

    return make_tiny_model(seed=0)


def toy_target(model, params):
    target = Target("toy", FORGET[: params["n_forget"]], RETAIN)
    return StudyTarget(edit=target, verify=target)


def interrupt_once(model, target, params, seed):
    """Raises KeyboardInterrupt the first time (creates ``params['flag']``), an empty edit after."""
    flag = Path(params["flag"])
    if not flag.exists():
        flag.touch()
        raise KeyboardInterrupt
    return Compose([])


def wait_for_file(model, target, params, seed):
    """Blocks until ``params['file']`` exists (a test sends Ctrl-C meanwhile)."""
    while not Path(params["file"]).exists():
        time.sleep(0.05)
    return Compose([])


def kill_worker(model, target, params, seed):
    """SIGKILLs the process running it: every time, or only the first time (creates ``params['flag']``).
    Only for worker processes: in the test's own process it would kill the test."""
    flag = params["flag"]
    if not flag or not Path(flag).exists():
        if flag:
            Path(flag).touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return Compose([])


def random_mask(model, target, params, seed):
    """A localizer step: random scores on one weight, the top ``keep_ratio`` kept."""
    from mechunlearn.core.selection import MaskSelection

    gen = torch.Generator().manual_seed(seed)
    name = "blocks.0.mlp.W_in"
    return MaskSelection({name: torch.rand(model.weight(name).shape, generator=gen)}).frac(params["keep_ratio"])


class LeakyEdit(Edit):
    """Adds 1 to a weight and 'reverts' by doing nothing: the runner must notice."""

    def apply(self, model):
        with torch.no_grad():
            model.weight("blocks.0.mlp.W_in").add_(1.0)
        return EditHandle(self, model, lambda: None)


def edit_sees_original(model, target, params, ctx):
    """An ``applies_edit`` verifier: records the hash it is called with, then with ctx.edit applied."""
    from mechunlearn.core.result import Result
    import pandas as pd

    before = model.weights_hash()
    with ctx.edit.applied(model):
        during = model.weights_hash()
    frame = pd.DataFrame({"metric": ["hash_before", "hash_during"], "value": [float(int(before[:12], 16)), float(int(during[:12], 16))]})
    return Result(frame)


if "study-tiny" not in MODELS:
    MODELS.add("study-tiny", tiny)
    TARGETS.add("toy", TargetSource(toy_target, {"n_forget": 4}))
    METHODS.add("test-interrupt", Method(interrupt_once, {"flag": ""}))
    METHODS.add("test-wait", Method(wait_for_file, {"file": ""}))
    METHODS.add("test-kill", Method(kill_worker, {"flag": ""}))
    METHODS.add("test-leak", Method(lambda model, target, params, seed: LeakyEdit()))
    VERIFIERS.add("test-sees-original", Verifier(edit_sees_original, applies_edit=True))
    VERIFIERS.add("test-sees-edited", Verifier(lambda model, target, params, ctx: edit_sees_original(model, target, params, ctx)))
    METHODS.add("test-masked-ga", Method(unlearn_edit("ga"), unlearn_params("ga", keep_ratio=0.25), locate=random_mask))
