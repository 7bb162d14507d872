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
