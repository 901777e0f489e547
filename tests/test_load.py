"""load_llm: tiny offline models, save_pretrained folders, random init, NPAE embeddings, clear errors."""

import os
import time

import pytest
import torch

import glam_ppo as g
import offline_models


@pytest.mark.parametrize("kind", g.TINY_MODELS)
def test_tiny_model_round_trip_through_save_pretrained(kind, tmp_path):
    torch.manual_seed(0)
    llm, tokenizer = g.load_llm(kind)
    assert llm.config.is_encoder_decoder == (kind == "tiny-t5")
    assert tokenizer.unk_token_id not in tokenizer("You see a open red door 2 steps left and 1 step forward").input_ids
    llm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tokenizer = g.load_llm(str(tmp_path))
    actions = g.action_names("canonical")
    prompt = [g.build_prompt("go to the red ball", actions, [["You see a red ball 1 step forward"]], [])]
    with torch.no_grad():
        expected = g.GlamAgent(llm.eval(), tokenizer, actions).score(prompt)
        torch.testing.assert_close(g.GlamAgent(loaded.eval(), loaded_tokenizer, actions).score(prompt), expected)

    random_llm, _ = g.load_llm(str(tmp_path), pretrained=False)
    npae_llm, _ = g.load_llm(str(tmp_path), pretrained=False, load_embedding=True)
    for name, weight in llm.state_dict().items():
        if name.endswith("embed_tokens.weight") or name == "shared.weight":
            assert not torch.equal(random_llm.state_dict()[name], weight)
            assert torch.equal(npae_llm.state_dict()[name], weight), name
        elif weight.dim() == 2 and "embed" not in name and "lm_head" not in name:
            assert not torch.equal(npae_llm.state_dict()[name], weight), name


@pytest.mark.parametrize("name", ["google/flan-t5-typo", "flan-t5-large", "./no/such/folder", "missing.gguf"])
def test_unloadable_model_fails_at_once_naming_the_offline_options(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    start = time.time()
    with pytest.raises(g.UsageError) as error:
        g.load_llm(name)
    assert time.time() - start < 20
    message = str(error.value)
    assert name in message and "\n" not in message
    assert "tiny-t5" in message or "no such file" in message



def test_a_gguf_model_is_saved_as_the_checkpoint_of_an_ordinary_float32_model(tmp_path):
    """A GGUF file loads dequantized (SmolLM2's is Q4_1): a run that starts from one must save float32 checkpoints."""
    gguf = str(tmp_path / "tiny.gguf")
    offline_models.write_tiny_gguf(gguf)
    from safetensors.torch import load_file

    llm, _ = g.load_llm(gguf)
    llm.save_pretrained(tmp_path / "model")
    saved = load_file(tmp_path / "model" / "model.safetensors")
    assert all(saved[name].dtype == torch.float32 and torch.equal(saved[name], weight) for name, weight in llm.state_dict().items() if name in saved)
    assert "quantization_config" not in (tmp_path / "model" / "config.json").read_text()
