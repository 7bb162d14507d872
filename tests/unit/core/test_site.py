import pytest

from mechunlearn.core.site import Site


@pytest.mark.parametrize(
    "text, kind, name, index, layer",
    [
        ("blocks.3.mlp.W_out", "param", "blocks.3.mlp.W_out", (), 3),
        ("blocks.3.mlp.W_out[401]", "param", "blocks.3.mlp.W_out", (401,), 3),
        ("blocks.0.attn.W_Q[2,5]", "param", "blocks.0.attn.W_Q", (2, 5), 0),
        ("unembed.W_U", "param", "unembed.W_U", (), None),
        ("blocks.3.hook_resid_post", "hook", "blocks.3.hook_resid_post", (), 3),
        ("blocks.1.mlp.hook_post[17]", "hook", "blocks.1.mlp.hook_post", (17,), 1),
        ("sae:blocks.3.hook_resid_post[412]", "sae", "blocks.3.hook_resid_post", (412,), 3),
        ("codebook:blocks.2.mlp.hook_post[9]", "codebook", "blocks.2.mlp.hook_post", (9,), 2),
    ],
)
def test_round_trip(text, kind, name, index, layer):
    site = Site.parse(text)
    assert (site.kind, site.name, site.index, site.layer) == (kind, name, index, layer)
    assert str(site) == text
    assert Site.parse(str(site)) == site


@pytest.mark.parametrize(
    "bad, message",
    [
        ("blocks.3.mlp.W_out[x]", "comma-separated integers"),
        ("3blocks", "cannot parse"),
        ("sae:blocks.3.mlp.W_out[1]", "not a hook name"),
        ("sae:blocks.3.hook_resid_post", "exactly one latent index"),
        ("blocks.1.hook_resid_post[1,2]", "at most one index"),
    ],
)
def test_parse_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        Site.parse(bad)


def test_model_validation_names_what_exists(tiny_model):
    m = tiny_model
    assert m.check_site("blocks.1.mlp.W_out[63]").index == (63,)
    with pytest.raises(IndexError, match="size 64"):
        m.check_site("blocks.1.mlp.W_out[64]")
    with pytest.raises(ValueError, match="layers 0..1"):
        m.check_site("blocks.5.hook_resid_post")
    with pytest.raises(KeyError, match="Per block: .*mlp.W_out"):
        m.check_site("blocks.0.mlp.W_outt")
    with pytest.raises(ValueError, match="hook_resid_post"):
        m.check_site("blocks.0.hook_resid_postt")
    with pytest.raises(ValueError, match="no sae is attached"):
        m.check_site("sae:blocks.0.hook_resid_post[3]")


def test_weight_views_share_storage_and_layout(tiny_model):
    m = tiny_model
    w_out = m.weight("blocks.0.mlp.W_out")
    assert tuple(w_out.shape) == (m.d_mlp, m.d_model)
    assert tuple(m.weight("blocks.0.attn.W_Q").shape) == (4, m.d_model, 8)
    assert tuple(m.weight("blocks.0.attn.W_O").shape) == (4, 8, m.d_model)
    assert tuple(m.weight("unembed.W_U").shape) == (m.d_model, m.d_vocab)
    # the bridge's own TL-layout views agree with ours
    block = m.bridge.blocks[0]
    for ours, theirs in [("mlp.W_out", block.mlp.W_out), ("mlp.W_in", block.mlp.W_in), ("attn.W_Q", block.attn.W_Q), ("attn.W_O", block.attn.W_O)]:
        assert (m.weight(f"blocks.0.{ours}") == theirs).all(), ours
    # value vector 5 is column 5 of the underlying out-projection
    spec = m.weight_spec("blocks.0.mlp.W_out")
    assert (m.weight("blocks.0.mlp.W_out[5]") == spec.param[:, 5]).all()
