import pytest
import torch


def test_restoring_puts_weights_back_bit_for_bit_even_after_an_error(tiny_model):
    m = tiny_model
    names = ["blocks.0.mlp.W_in", "blocks.1.attn.W_Q"]
    before = {n: m.weight(n).clone() for n in names}
    with pytest.raises(RuntimeError, match="boom"):
        with m.restoring(names) as saved:
            assert all(torch.equal(saved[n], before[n]) for n in names)
            m.set_weights({n: torch.zeros_like(before[n]) for n in names})
            assert not m.weight(names[0]).any()
            raise RuntimeError("boom")
    for n in names:
        assert torch.equal(m.weight(n), before[n])


def test_every_parameter_is_named_hashed_and_saved():
    """A parameter the TL weight table does not know (here one added to a block) is still part of
    the weights: listed as extra.<path>, covered by weights_hash and by weight files."""
    from mechunlearn.models.model import Model
    from tests.conftest import make_tiny_model

    plain = make_tiny_model()
    bridge = plain.bridge
    bridge.blocks[0].register_parameter("scale_extra", torch.nn.Parameter(torch.ones(3)))
    m = Model(bridge, plain.tokenizer, "tiny-extra")
    extra = [n for n in m.weight_names() if n.startswith("extra.")]
    assert len(extra) == 1 and extra[0].endswith(".0.scale_extra")  # the module path, under extra.
    assert extra[0] not in m.weight_names("no_embed")  # not trained unless asked for
    before = m.weights_hash()
    with torch.no_grad():
        m.weight(extra[0]).add_(1.0)
    assert m.weights_hash() != before
    assert extra[0] in m.parameters_by_name()


def test_weights_hash_follows_every_write_and_is_the_full_recomputation(tiny_model):
    import hashlib

    def full(m):
        digest = hashlib.sha256()
        for n in m.weight_names():
            t = m.weight_spec(n).param.detach().contiguous()
            digest.update(n.encode())
            digest.update(t.view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()

    m = tiny_model
    h0 = m.weights_hash()
    assert h0 == full(m) and m.weights_hash() == h0
    with torch.no_grad():
        m.weight("blocks.1.mlp.W_out")[3, 4] += 1.0  # a write through a TL view of a late weight
    assert m.weights_hash() == full(m) != h0
    with torch.no_grad():
        m.weight("embed.W_E")[0, 0] += 1.0  # and of the first one
    assert m.weights_hash() == full(m)
