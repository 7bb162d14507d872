"""gemma-3-270m: a second real architecture, read from the GGUF file the gemma3 wheels ship."""

import time

import pytest

pytestmark = pytest.mark.slow


def test_tokyo(gemma):
    assert gemma.generate("The capital of Japan is", max_new_tokens=1) == " Tokyo"


def test_tl_names_hooks_and_bos(gemma):
    assert (gemma.n_layers, gemma.d_model, gemma.d_mlp) == (18, 640, 2048)
    assert tuple(gemma.weight("blocks.3.mlp.W_out").shape) == (2048, 640)
    assert tuple(gemma.weight("blocks.3.mlp.W_gate").shape) == (640, 2048)  # GeGLU
    assert {"blocks.3.hook_resid_post", "blocks.3.mlp.hook_post"} <= gemma.hook_names
    assert gemma.prepend_bos  # Gemma's tokenizer adds <bos>; prompts without it read badly
    assert gemma.to_tokens("Tokyo")[0, 0].item() == gemma.tokenizer.bos_token_id


def test_answers_are_scored_as_the_tokens_after_the_prompt(gemma):
    from mechunlearn.models.text import encode_pair
    from mechunlearn.verify.behavior import score_items
    from mechunlearn.world.target import Item

    prompt, answer = encode_pair(gemma, "The capital of Japan is", "Tokyo")
    assert prompt + answer == gemma.encode("The capital of Japan is Tokyo")
    assert gemma.tokenizer.decode(answer) == " Tokyo"
    scored = score_items(gemma, [Item("The capital of Japan is", "Tokyo"), Item("Paris is the capital of", "France")], progress=False)
    assert scored["exact_match"].tolist() == [1.0, 1.0]


def test_the_second_load_reads_the_dequantised_cache(gemma):
    from mechunlearn.models import load_model
    from mechunlearn.models.gguf import dequantised_dir, gemma3_key

    folder = dequantised_dir("gemma-3-270m", gemma3_key())
    assert (folder / "model.safetensors").exists() and (folder / "config.json").exists()
    start = time.perf_counter()
    again = load_model("gemma-3-270m")
    seconds = time.perf_counter() - start
    assert again.meta["source"] == str(folder)
    assert again.weights_hash() == gemma.weights_hash()  # the cache holds the dequantised weights exactly
    print(f"second load of gemma-3-270m: {seconds:.1f} s")  # reported, not asserted (machines differ)
