import pytest
import torch

from tests.conftest import make_tokenizer


def test_local_hugging_face_directory(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from mechunlearn.models import load_model

    tok = make_tokenizer()
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    torch.manual_seed(0)
    hf = LlamaForCausalLM(config).eval()
    hf.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    model = load_model(str(tmp_path))
    assert model.n_layers == 2 and model.d_mlp == 64
    tokens = model.tokenize(["where was w1 born ?"]).tokens
    with torch.no_grad():
        assert (model(tokens) - hf(tokens).logits).abs().max() < 1e-4
    # gated MLP and grouped-query attention get TL names and layouts
    assert tuple(model.weight("blocks.1.mlp.W_gate").shape) == (32, 64)
    assert tuple(model.weight("blocks.1.attn.W_K").shape) == (2, 32, 8)  # d_head = 32 / 4


def test_not_a_model_directory(tmp_path):
    from mechunlearn.models import load_model

    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(str(tmp_path))


def test_bad_retain_name():
    from mechunlearn.models import load_model

    with pytest.raises(ValueError, match="bios-tiny-retain10"):
        load_model("bios-tiny-retainX")


def test_build_lock_makes_a_second_loader_wait(tmp_path):
    # two processes asking for the same uncached bios-tiny must not both train it: the second
    # waits on the folder's lock until the first is done
    import threading
    import time

    from mechunlearn.core.paths import folder_lock

    folder = tmp_path / "models" / "bios-tiny-abc"
    order = []

    def second():
        with folder_lock(folder):
            order.append("second")

    with folder_lock(folder):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.3)  # give the second a chance to (wrongly) get in
        order.append("first done")
    thread.join(timeout=10)
    assert order == ["first done", "second"]
    assert (folder.parent / ".bios-tiny-abc.lock").exists()


def test_gguf_parsing_is_shared_inside_a_dequantise_and_restored_after(tmp_path):
    """transformers parses a GGUF file three times per load (config, weights, tokenizer); inside
    `_parse_once` the reader of a file and the tensor-name map are built once, and gguf's own
    names are back afterwards."""
    import gguf
    import numpy as np

    from mechunlearn.models.gguf import _parse_once

    path = tmp_path / "tiny.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_tensor("token_embd.weight", np.arange(12, dtype=np.float32).reshape(3, 4))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    with _parse_once():
        first = gguf.GGUFReader(path)
        assert gguf.GGUFReader(path) is first
        assert first.tensors[0].name == "token_embd.weight"
        assert gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2) is gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, 2)
    assert gguf.GGUFReader is reader and gguf.get_tensor_name_map is name_map
    assert gguf.GGUFReader(path) is not gguf.GGUFReader(path)
