"""Shared fixtures: tiny models built in the test session (never mutated by session fixtures)."""

from __future__ import annotations

import os

import pytest
import torch

WORDS = "the a of is in was born city year works at where who what which when ? . : answer unknown".split()
WORDS += [f"w{i}" for i in range(40)]


def make_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<bos>", "<eos>", "<unk>"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", unk_token="<unk>")


def make_tiny_model(seed: int = 0, n_layers: int = 2):
    """A random 2-layer TL-native model wrapped in our adapter (fast: ~0.1 s)."""
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    from mechunlearn.models.model import Model

    tok = make_tokenizer()
    cfg = TransformerBridgeConfig(
        d_model=32, d_head=8, n_heads=4, n_layers=n_layers, n_ctx=32, d_vocab=len(tok), d_mlp=64,
        act_fn="gelu", normalization_type="LN", positional_embedding_type="standard", seed=seed,
    )
    bridge = TransformerBridge.boot_native(cfg)
    return Model(bridge, tok, f"tiny-{seed}")


def dtype_recording_loss(model):
    """A loss over a fixed 4-token batch that records the dtype its logits came out in:
    (loss_fn(step), list of dtypes seen)."""
    seen = []

    def loss(step):
        logits = model.forward(torch.tensor([[1, 2, 3, 4]]))
        seen.append(logits.dtype)
        return logits.float().logsumexp(-1).mean()

    return loss, seen


@pytest.fixture
def tiny_model():
    """A fresh tiny model per test: tests may edit it."""
    return make_tiny_model()


@pytest.fixture(scope="session", autouse=True)
def _isolated_home(tmp_path_factory):
    """Keep test builds out of the user's cache unless MECHUNLEARN_HOME is set explicitly."""
    if "MECHUNLEARN_HOME" not in os.environ:
        os.environ["MECHUNLEARN_HOME"] = str(tmp_path_factory.mktemp("mechunlearn_home"))
    # with pytest-xdist workers (make test runs two), the cores are shared out: two torch
    # processes with two threads each on two cores thrash
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // workers))
    yield
