"""Batched probes: recover a planted linear signal, equal per-probe fits, converge, and split
samples by person."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from mechunlearn.verify.probes import ProbeConfig, fit_probes, probe_accuracy, probe_data, probe_summary
from tests.conftest import make_tiny_model


def planted(seed: int = 0, n: int = 400, d: int = 12):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, n, d, generator=gen) * 3 + 1
    w3 = torch.randn(d, 3, generator=gen)
    w5 = torch.randn(d, 5, generator=gen)
    y = torch.stack(
        [
            (x[0] @ w3).argmax(-1),  # planted, 3 classes
            (x[1] @ w5).argmax(-1),  # planted, 5 classes
            torch.randint(0, 3, (n,), generator=gen),  # noise
            torch.randint(0, 5, (n,), generator=gen),  # noise
        ]
    )
    return x, y, torch.tensor([3, 5, 3, 5])


def test_recovers_a_planted_linear_signal_and_not_noise():
    x, y, k = planted()
    train = torch.zeros(y.shape, dtype=torch.bool)
    train[:, :300] = True
    probes = fit_probes(x, y, k, mask=train, weight_decay=1e-3)
    test_acc = probes.accuracy(x, y, ~train)
    assert test_acc[0] > 0.9 and test_acc[1] > 0.85
    assert test_acc[2] < 0.5 and test_acc[3] < 0.35  # chance is 1/3 and 1/5
    assert (probes.predict(x)[[0, 2]] < 3).all()  # never an invalid class


def test_bounded_preconditioner_memory_reaches_the_same_optimum(monkeypatch):
    """Wide models: the d x d preconditioners are solved in chunks of probes under
    PRECOND_BYTES, and where one does not fit, a diagonal one is used; either way the same
    strictly convex objective is minimised, so the probes agree with the unbounded fit."""
    from mechunlearn.verify import probes as probes_module

    x, y, k = planted()
    full = fit_probes(x, y, k, weight_decay=1e-2, max_iter=500, tol=1e-6)
    monkeypatch.setattr(probes_module, "PRECOND_BYTES", 12 * 12 * 4)  # one probe's matrix per solve
    chunked = fit_probes(x, y, k, weight_decay=1e-2, max_iter=500, tol=1e-6)
    monkeypatch.setattr(probes_module, "PRECOND_BYTES", 100)  # not even one: diagonal
    diagonal = fit_probes(x, y, k, weight_decay=1e-2, max_iter=2000, tol=1e-6)
    for other in (chunked, diagonal):
        torch.testing.assert_close(other.weight, full.weight, atol=2e-3, rtol=2e-3)
        torch.testing.assert_close(other.bias, full.bias, atol=2e-3, rtol=2e-3)


def test_batched_fit_equals_per_probe_fits():
    x, y, k = planted(seed=1)
    together = fit_probes(x, y, k, weight_decay=1e-2, max_iter=500)
    acc = together.accuracy(x, y)
    for p in range(4):
        alone = fit_probes(x[p : p + 1], y[p : p + 1], k[p : p + 1], weight_decay=1e-2, max_iter=500)
        assert acc[p].item() == pytest.approx(alone.accuracy(x[p : p + 1], y[p : p + 1]).item(), abs=0.01)
        n_cls = int(k[p])
        torch.testing.assert_close(together.weight[p, :, :n_cls], alone.weight[0, :, :n_cls], atol=2e-2, rtol=2e-2)


def test_solution_is_a_stationary_point_of_the_objective():
    x, y, k = planted(seed=2)
    wd = 1e-2
    probes = fit_probes(x, y, k, weight_decay=wd, max_iter=500)
    w = probes.weight.clone().requires_grad_(True)
    b = probes.bias.clone().requires_grad_(True)
    z = (x - probes.mean[:, None]) / probes.std[:, None]
    logits = torch.baddbmm(b[:, None], z, w)
    invalid = (torch.arange(logits.shape[-1]) >= k[:, None])[:, None]
    logits = logits.masked_fill(invalid, -1e4)
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
    loss = ce * y.shape[0] + 0.5 * wd * w.pow(2).sum()  # mean over rows per probe, summed over probes
    loss.backward()
    assert w.grad[:, :, :3].abs().max() < 1e-3 and b.grad[:, :3].abs().max() < 1e-3


def test_masked_rows_are_ignored():
    x, y, k = planted(seed=3)
    mask = torch.ones(y.shape, dtype=torch.bool)
    mask[:, 350:] = False
    y_garbage = y.clone()
    y_garbage[:, 350:] = 0
    a = fit_probes(x, y_garbage, k, mask=mask)
    b = fit_probes(x[:, :350], y[:, :350], k)
    torch.testing.assert_close(a.weight, b.weight, atol=1e-3, rtol=1e-3)


def test_bad_input_is_explained():
    x, y, k = planted()
    with pytest.raises(ValueError, match=r"\[probe, n, d\]"):
        fit_probes(x[0], y, k)
    with pytest.raises(ValueError, match="labels"):
        fit_probes(x, y + 5, k)
    with pytest.raises(ValueError, match="positions"):
        ProbeConfig(positions=("middle",))


def test_items_without_subject_or_attribute_are_explained(target):
    from dataclasses import replace

    unlabelled = replace(target, retain=target.retain + (replace(target.retain[0], subject=""),))
    with pytest.raises(ValueError, match="need every item's subject and attribute"):
        probe_data(unlabelled)


def test_probe_data_splits_by_person(target):
    data = probe_data(target, ProbeConfig(templates_per_fact=2, test_frac=0.25))
    people = {g: {it.subject for it, gg in zip(data.items, data.group) if gg == g} for g in set(data.group)}
    assert people["train"].isdisjoint(people["retain"]) and len(people["retain"]) == 2
    assert people["forget"] == {it.subject for it in target.forget}
    assert people["train"] | people["retain"] == {it.subject for it in target.retain}
    for attribute in data.classes:
        templates = {it.template for it in data.items if it.attribute == attribute}
        assert len(templates) == 2
        for name in people["forget"]:
            assert {it.template for it in data.items if it.attribute == attribute and it.subject == name} == templates
    assert all(data.classes[it.attribute][int(l)] == it.answer for it, l in zip(data.items, data.labels))


def plant_attribute(model, target, *, wrong_for_forget: bool = False, strength: float = 30.0):
    """Write each person's birth city into the embedding of their name's last token, along one
    direction per city: a model that really encodes the attribute at the subject position.
    ``wrong_for_forget``: the forget people's tokens carry another city's direction instead."""
    everyone = target.forget + target.retain + target.holdout
    cities = sorted({it.answer for it in everyone if it.attribute == "birth_city"})
    directions = torch.linalg.qr(torch.randn(model.d_model, len(cities), generator=torch.Generator().manual_seed(0)))[0].T
    forget = {it.subject for it in target.forget}
    w_e = model.weight("embed.W_E")
    with torch.no_grad():
        for it in everyone:
            if it.attribute != "birth_city":
                continue
            c = cities.index(it.answer)
            if wrong_for_forget and it.subject in forget:
                c = (c + 1) % len(cities)
            w_e[model.to_tokens(it.subject)[0, -1]] = strength * directions[c]
    return model


def test_probe_accuracy_readings(target):
    config = ProbeConfig(attributes=("birth_city",), positions=("subject",), layers=(0, 1), max_iter=200)
    encoding = plant_attribute(make_tiny_model(seed=0), target)
    misdirected = plant_attribute(make_tiny_model(seed=0), target, wrong_for_forget=True)
    random_retain = make_tiny_model(seed=5)  # never saw the people: no city anywhere
    models = {"original": encoding, "edited": misdirected, "retain": random_retain}
    result = probe_accuracy(models, target, config, progress=False)
    f = result.frame
    assert set(f["metric"]) == {"probe_acc"}
    assert set(f["layer"]) == {0, 1} and set(f["position"]) == {"subject"}
    assert set(f[f["model"] == "edited"]["reading"]) == {"refit", "transfer"}
    assert set(f[f["model"] == "retain"]["reading"]) == {"refit"}
    read = f[f["layer"] == 0].set_index(["model", "reading", "split"])["value"]
    # the encoding model: held-out retain people and forget people decoded (planted signal)
    assert read["original", "refit", "retain"] == 1.0 and read["original", "refit", "forget"] == 1.0
    # the edit moved the forget people's code to another city: decoded, but as the wrong city,
    # by the refit probe and by the original's probe alike; retain people are untouched
    assert read["edited", "refit", "forget"] == 0.0 and read["edited", "transfer", "forget"] == 0.0
    assert read["edited", "refit", "retain"] == 1.0 and read["edited", "transfer", "retain"] == 1.0
    # a model without the signal reads at most chance on the held-out people (3 cities)
    assert read["retain", "refit", "forget"] < 0.8
    summary = probe_summary(result)
    assert ("retain", "refit") in summary.columns


def test_reference_models_are_fitted_once_per_process(target, monkeypatch):
    from mechunlearn.core import memo
    from mechunlearn.core.edit import WeightEdit
    from mechunlearn.verify import probes as probes_module

    memo.clear()
    fits = []
    real = probes_module.fit_probes
    monkeypatch.setattr(probes_module, "fit_probes", lambda *a, **k: fits.append(1) or real(*a, **k))
    original, retain = make_tiny_model(seed=0), make_tiny_model(seed=5)
    config = ProbeConfig(attributes=("birth_city",), positions=("question",), layers=(1,), max_iter=30)
    edit = WeightEdit("blocks.0.mlp.W_out", "scale", value=0.5)
    runs = [probe_accuracy({"original": original, "edited": (original, edit), "retain": retain}, target, config, progress=False).frame for _ in range(2)]
    assert len(fits) == 3 + 1  # the second run refits only the edited model
    key = ["model", "reading", "split", "attribute", "position", "layer"]
    a, b = (r.sort_values(key).reset_index(drop=True) for r in runs)
    pd.testing.assert_frame_equal(a, b)
    with WeightEdit("blocks.0.mlp.W_out", "zero").applied(original):  # other weights: fitted afresh
        probe_accuracy({"original": original}, target, config, progress=False)
    assert len(fits) == 5
