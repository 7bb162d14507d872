import numpy as np
import pytest
import torch

from mechunlearn.core.selection import MaskSelection, Selection
from mechunlearn.core.site import Site


def sel():
    sites = [f"blocks.{l}.mlp.W_out[{i}]" for l in range(2) for i in range(3)]
    scores = [0.1, 0.9, 0.5, 0.3, 0.7, 0.2]
    return Selection(sites, scores, {"tokens": [f"t{i}" for i in range(6)]})


def test_sorted_and_top_frac():
    s = sel()
    assert list(s.scores) == sorted(s.scores, reverse=True)
    assert [str(x) for x in s.top(2)] == ["blocks.0.mlp.W_out[1]", "blocks.1.mlp.W_out[1]"]
    assert len(s.frac(0.5)) == 3
    assert len(s.frac(0.01)) == 1
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        s.frac(1.5)


def test_extras_travel_with_sites():
    top = sel().top(1)
    assert top[0].tokens == "t1"
    assert top.to_frame().loc[0, "tokens"] == "t1"


def test_where_union_intersection():
    s = sel()
    layer1 = s.where(layer=1)
    assert {x.layer for x in layer1} == {1} and len(layer1) == 3
    high = s.where(lambda r: r.score > 0.4)
    assert len(high) == 3
    both = layer1 & high
    assert [str(x) for x in both] == ["blocks.1.mlp.W_out[1]"]
    union = layer1 | high
    assert len(union) == 5
    # union keeps the higher score for shared sites
    other = Selection(["blocks.0.mlp.W_out[0]"], [5.0])
    assert (s | other)[0].score == 5.0 and (s | other)[0].site == Site.parse("blocks.0.mlp.W_out[0]")


def test_immutable_and_checks():
    s = sel()
    with pytest.raises(ValueError):
        s.scores[0] = 3.0
    assert s.assert_count_is(6) is s
    with pytest.raises(AssertionError, match="expected 5"):
        s.assert_count_is(5)
    with pytest.raises(ValueError, match="NaN"):
        Selection(["blocks.0.hook_resid_post"], [float("nan")])
    with pytest.raises(ValueError, match="twice"):
        Selection(["blocks.0.hook_resid_post", "blocks.0.hook_resid_post"], [1, 2])
    frame = s.to_frame()
    assert list(frame.columns[:6]) == ["site", "kind", "name", "layer", "index", "score"]


def mask_sel():
    g = torch.Generator().manual_seed(0)
    return MaskSelection({"a": torch.rand(10, 10, generator=g), "b": torch.rand(50, generator=g)})


def test_mask_global_top_is_exact_and_global():
    m = mask_sel()
    assert len(m) == 150
    top = m.top(30)
    top.assert_count_is(30)
    allv = torch.cat([m.scores["a"].reshape(-1), m.scores["b"]])
    threshold = allv.sort(descending=True).values[29]
    for n in ("a", "b"):
        assert bool((m.scores[n][top.masks[n]] >= threshold).all())
    assert len(m.frac(0.5)) == 75


def test_mask_per_tensor_and_algebra():
    m = mask_sel()
    per = m.frac(0.2, per_tensor=True)
    assert int(per.masks["a"].sum()) == 20 and int(per.masks["b"].sum()) == 10
    # top within an existing mask only picks selected entries
    narrowed = per.top(5)
    assert bool((narrowed.masks["a"] <= per.masks["a"]).all())
    assert len(narrowed) == 5
    union, inter = per | m.top(10), per & m.top(10)
    assert len(inter) <= 10 <= len(union)
    only_a = m.where(lambda n: n == "a")
    assert only_a.names == ["a"] and only_a.total == 100
    frame = per.to_frame()
    assert frame.set_index("name").loc["a", "selected"] == 20


def test_mask_scales_without_python_objects():
    # 20M weights: one tensor per weight name, global ranking in one pass
    scores = {f"w{i}": torch.rand(2_000_000) for i in range(10)}
    m = MaskSelection(scores).frac(0.5)
    assert len(m) == 10_000_000
