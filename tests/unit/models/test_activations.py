"""Activation caching: only the requested sites, early stop, positions, disk == memory, stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mechunlearn.core.edit import HookEdit
from mechunlearn.models.activations import (
    ActivationCache,
    RunningStats,
    activation_stats,
    cache_activations,
    capture,
    substring_last_token,
)
from tests.conftest import make_tiny_model

PROMPTS = ["the a of is", "where was w1 w2 born ?", "w3 w4 works at w5 .", "who", "what is the city of w7 w8 ?"]


@pytest.fixture(scope="module")
def model():
    return make_tiny_model(n_layers=3)


def full(model, prompts, sites):
    """Reference: TransformerLens run_with_cache on each prompt alone (no padding at all)."""
    out = {s: [] for s in sites}
    for p in prompts:
        tokens = model.tokenize([p]).tokens
        _, cache = model.run_with_cache(tokens, sites)
        for s in sites:
            out[s].append(cache[s][0])
    return out


def count_calls(model, site):
    calls = []
    return calls, HookEdit(site, lambda act, hook: calls.append(1), label="count")


def test_capture_keeps_only_requested_sites_and_stops_early(model):
    tokens = model.tokenize(PROMPTS).tokens
    calls, counter = count_calls(model, "blocks.2.hook_resid_post")
    later_block = []
    handle = model.bridge.blocks[2].register_forward_hook(lambda *a: later_block.append(1))
    try:
        with counter.applied(model):
            acts = capture(model, tokens, ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"])
    finally:
        handle.remove()
    assert set(acts) == {"blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"}
    assert calls == [] and later_block == []  # block 2 never ran
    _, ref = model.run_with_cache(tokens, ["blocks.0.hook_resid_post", "blocks.0.mlp.hook_post"])
    torch.testing.assert_close(acts["blocks.0.hook_resid_post"], ref["blocks.0.hook_resid_post"])
    torch.testing.assert_close(acts["blocks.0.mlp.hook_post"], ref["blocks.0.mlp.hook_post"])
    # without early stop the later block does run
    with counter.applied(model):
        capture(model, tokens, ["blocks.0.hook_resid_post"], stop_early=False)
    assert calls == [1]


def test_capture_leaves_no_hooks_even_on_errors(model):
    tokens = model.tokenize(PROMPTS).tokens
    before = model.hook_count()
    with HookEdit("blocks.1.hook_resid_pre", lambda a, h: None, label="user").applied(model):
        inside = model.hook_count()
        capture(model, tokens, ["blocks.1.hook_resid_post"])
        assert model.hook_count() == inside  # the user's hook is still there, ours are gone
        with pytest.raises(ValueError, match="not \\[batch, pos"):
            capture(model, tokens, ["blocks.0.attn.hook_pattern"], select=lambda a: a[:, -1])
        assert model.hook_count() == inside
    assert model.hook_count() == before


def test_capture_sees_edits_and_aliases(model):
    tokens = model.tokenize(PROMPTS[:2]).tokens
    with HookEdit("blocks.0.hook_resid_post", lambda a, h: a * 0, label="zero").applied(model):
        acts = capture(model, tokens, ["blocks.0.hook_resid_post", "blocks.0.hook_out"])
    assert torch.count_nonzero(acts["blocks.0.hook_resid_post"]) == 0
    assert acts["blocks.0.hook_out"] is acts["blocks.0.hook_resid_post"]  # one HookPoint, hooked once


def test_bad_sites_and_positions_are_explained(model):
    with pytest.raises(ValueError, match="no hook"):
        cache_activations(model, PROMPTS, ["blocks.0.hook_nope"])
    with pytest.raises(ValueError, match="out of range"):
        cache_activations(model, PROMPTS, ["blocks.7.hook_resid_post"])
    with pytest.raises(TypeError, match="list"):
        cache_activations(model, PROMPTS, "blocks.0.hook_resid_post")
    with pytest.raises(IndexError, match="out of range for prompt 3"):
        cache_activations(model, PROMPTS, ["blocks.0.hook_resid_post"], positions=[0, 0, 0, 5, 0])
    with pytest.raises(ValueError, match="one index"):
        cache_activations(model, PROMPTS, ["blocks.0.hook_resid_post"], positions=[0, 1])
    with pytest.raises(ValueError, match="positions must be"):
        cache_activations(model, PROMPTS, ["blocks.0.hook_resid_post"], positions="first")


@pytest.mark.parametrize("batch_size", [1, 2, 64])
def test_last_and_indexed_positions_match_run_with_cache(model, batch_size):
    sites = ["blocks.1.hook_resid_post", "blocks.0.mlp.hook_post"]
    ref = full(model, PROMPTS, sites)
    last = cache_activations(model, PROMPTS, sites, positions="last", batch_size=batch_size, progress=False)
    subj = [1, 4, 2, 0, 8]
    two = cache_activations(model, PROMPTS, sites, positions=[[s, -1] for s in subj], batch_size=batch_size, progress=False)
    for site in sites:
        assert last[site].shape == (len(PROMPTS), ref[site][0].shape[-1])
        for i, r in enumerate(ref[site]):
            torch.testing.assert_close(last[site][i], r[-1], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(two.by_prompt(site)[i, 0], r[subj[i]], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(two.by_prompt(site)[i, 1], r[-1], atol=1e-5, rtol=1e-5)
    assert last.prompt_index.tolist() == list(range(len(PROMPTS)))
    assert two.position.view(-1, 2)[:, 0].tolist() == subj


def test_all_positions_and_disk_stream_equal_memory(model, tmp_path):
    sites = ["blocks.0.hook_resid_post", "blocks.1.mlp.hook_out"]
    ref = full(model, PROMPTS, sites)
    mem = cache_activations(model, PROMPTS, sites, positions="all", batch_size=2, progress=False)
    disk = cache_activations(model, PROMPTS, sites, positions="all", batch_size=2, out_dir=tmp_path / "acts", progress=False)
    assert not mem.on_disk and disk.on_disk
    assert isinstance(disk.arrays[sites[0]], np.memmap)
    lengths = [len(model.encode(p, prepend_bos=True)) for p in PROMPTS]
    assert len(mem) == sum(lengths)
    for site in sites:
        torch.testing.assert_close(disk[site], mem[site])
        for i, r in enumerate(ref[site]):
            rows = mem[site][mem.prompt_index == i]
            torch.testing.assert_close(rows, r, atol=1e-5, rtol=1e-5)
    again = ActivationCache.load(tmp_path / "acts")
    torch.testing.assert_close(again[sites[1]], mem[sites[1]])
    assert torch.equal(again.position, mem.position) and torch.equal(again.prompt_index, mem.prompt_index)
    with pytest.raises(ValueError, match="fixed positions"):
        mem.by_prompt(sites[0])


def test_spills_to_disk_above_the_memory_budget(model, tmp_path, monkeypatch):
    monkeypatch.setenv("MECHUNLEARN_HOME", str(tmp_path))
    cache = cache_activations(model, PROMPTS, ["blocks.0.hook_resid_post"], max_memory_bytes=16, progress=False)
    assert cache.on_disk and cache.path.parent == tmp_path / "activations"
    small = cache_activations(model, PROMPTS, ["blocks.0.hook_resid_post"], progress=False)
    torch.testing.assert_close(cache["blocks.0.hook_resid_post"], small["blocks.0.hook_resid_post"])


def test_substring_last_token(model):
    prompts = ["where was w1 w2 born ?", "w3 w4 works at w5 ."]
    assert substring_last_token(model, prompts, ["w1 w2", "w3 w4"]) == [4, 2]  # BOS counted
    with pytest.raises(ValueError, match="does not occur"):
        substring_last_token(model, prompts, ["w9", "w3"])


def test_running_stats_match_numpy_and_merge():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(103, 5, generator=gen) * torch.arange(1, 6) + 3
    stats = RunningStats(5)
    for chunk in x.split(17):
        stats.add(chunk)
    np.testing.assert_allclose(stats.mean.numpy(), x.double().mean(0).numpy(), rtol=1e-10)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(x.double().numpy(), rowvar=False), rtol=1e-9)
    a, b = RunningStats(5).add(x[:40]), RunningStats(5).add(x[40:])
    merged = a.merge(b)
    torch.testing.assert_close(merged.cov, stats.cov)
    resumed = RunningStats.from_state_dict(RunningStats(5).add(x[:50]).state_dict()).add(x[50:])
    torch.testing.assert_close(resumed.mean, stats.mean)
    diag = RunningStats(5, cov=False).add(x)
    torch.testing.assert_close(diag.var, stats.cov.diagonal())
    with pytest.raises(ValueError, match="variances only"):
        diag.cov
    with pytest.raises(ValueError, match=r"\[n, 5\]"):
        stats.add(torch.zeros(3, 4))


def test_activation_stats_equal_cached_stats(model):
    sites = ["blocks.1.hook_resid_post"]
    stats = activation_stats(model, PROMPTS, sites, positions="all", batch_size=2, progress=False)
    cache = cache_activations(model, PROMPTS, sites, positions="all", progress=False)
    torch.testing.assert_close(stats[sites[0]].mean, cache[sites[0]].double().mean(0))
    torch.testing.assert_close(stats[sites[0]].cov, cache.stats(sites[0]).cov)
