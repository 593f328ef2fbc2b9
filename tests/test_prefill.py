"""Long prompts are prefilled in chunks: the same tokens as one pass, for every causal family and padding."""

import pytest
import torch

from openformers.configs import GPT2Config, LlamaConfig, MistralConfig
from openformers.generation import steps
from openformers.models.gpt2 import GPT2LMHeadModel
from openformers.models.llama import LlamaForCausalLM

LLAMA = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)


def models():
    torch.manual_seed(0)
    yield "llama", LlamaForCausalLM.from_config(LlamaConfig.from_dict(LLAMA))
    yield "mistral-window", LlamaForCausalLM.from_config(MistralConfig.from_dict({**LLAMA, "sliding_window": 6}))
    yield "gpt2", GPT2LMHeadModel.from_config(GPT2Config.from_dict(dict(vocab_size=96, n_embd=32, n_layer=2, n_head=4)))


@pytest.mark.parametrize("name, model", list(models()), ids=lambda v: v if isinstance(v, str) else "")
def test_chunked_prefill_gives_the_one_pass_tokens(name, model, monkeypatch):
    model.eval()
    prompts = torch.randint(3, 96, (2, 23), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(prompts)
    mask[1, :9] = 0  # the second prompt is left-padded
    options = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    whole = model.generate(prompts, **options)
    monkeypatch.setattr(steps, "PREFILL_CHUNK", 5)
    chunked = model.generate(prompts, **options)
    beams = model.generate(prompts, num_beams=2, **options)
    monkeypatch.setattr(steps, "PREFILL_CHUNK", 2048)
    assert chunked.tolist() == whole.tolist()
    assert beams.tolist() == model.generate(prompts, num_beams=2, **options).tolist()
