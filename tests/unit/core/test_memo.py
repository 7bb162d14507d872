"""The per-model memo: a reference is computed once per weights, never for edited pairs or hooks."""

import pandas as pd
import torch

from mechunlearn.core import WeightEdit
from mechunlearn.core.edit import HookEdit
from mechunlearn.core.memo import by_weights, disabled, freeze


def counting():
    calls = []

    @by_weights
    def measure(subject, items, *, scale=1.0):
        from mechunlearn.models.activations import using

        calls.append(len(items))
        with using(subject) as model, torch.no_grad():
            return pd.DataFrame({"value": [float(model.weight("blocks.0.mlp.W_out").sum()) * scale]})

    return measure, calls


def test_same_weights_and_arguments_compute_once(tiny_model):
    measure, calls = counting()
    a = measure(tiny_model, ["x", "y"])
    a["value"] = -1.0  # callers may mutate what they get
    b = measure(tiny_model, ["x", "y"])
    assert len(calls) == 1 and b["value"].iloc[0] != -1.0
    measure(tiny_model, ["x"])  # other arguments: computed
    measure(tiny_model, ["x", "y"], scale=2.0)
    assert len(calls) == 3


def test_changed_weights_pairs_and_hooks_are_computed_afresh(tiny_model):
    measure, calls = counting()
    before = measure(tiny_model, ["x"])["value"].iloc[0]
    edit = WeightEdit("blocks.0.mlp.W_out[0]", "add", value=torch.ones(tiny_model.d_model))
    with edit.applied(tiny_model):
        during = measure(tiny_model, ["x"])["value"].iloc[0]
    assert abs(during - (before + tiny_model.d_model)) < 1e-4 and len(calls) == 2
    measure((tiny_model, edit), ["x"])  # a (model, edit) pair is never cached
    measure((tiny_model, edit), ["x"])
    assert len(calls) == 4
    with HookEdit("blocks.0.hook_resid_post", lambda a, hook: a).applied(tiny_model):
        measure(tiny_model, ["x"])
    assert len(calls) == 5
    with disabled():
        measure(tiny_model, ["x"])
    assert len(calls) == 6
    assert measure(tiny_model, ["x"])["value"].iloc[0] == before and len(calls) == 6


def test_freeze_distinguishes_values():
    assert freeze({"a": [1, 2]}) == freeze({"a": (1, 2)})
    assert freeze(torch.tensor([1, 2])) != freeze(torch.tensor([1, 3]))
