"""The same results on every device: tiny models made by the reference, on the CPU and on a GPU where there is one.

CI has no GPU, so the "cuda" cases skip there; a machine with one runs them with `pytest tests/test_devices.py`.
Both libraries run on the same device, so the tolerances are the float32 ones of the CPU tests.
"""

import warnings

import pytest
import torch

from openformers import (
    AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSeq2SeqLM, AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    TextIteratorStreamer,
    Trainer, TrainingArguments,
)

transformers = pytest.importorskip("transformers")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
LLAMA = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=128, pad_token_id=0, eos_token_id=None)
FAMILIES = {
    "llama": (transformers.LlamaConfig, LLAMA),
    "gpt2": (transformers.GPT2Config, dict(vocab_size=96, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                                           pad_token_id=0)),
    "bert": (transformers.BertConfig, dict(vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=48, max_position_embeddings=64, pad_token_id=0)),
    "qwen3": (transformers.Qwen3Config, dict(LLAMA, head_dim=24)),
    "gemma2": (transformers.Gemma2Config, dict(LLAMA, head_dim=16, sliding_window=4)),
    "phi3": (transformers.Phi3Config, dict(LLAMA, partial_rotary_factor=0.5)),
    "mixtral": (transformers.MixtralConfig, dict(LLAMA, num_local_experts=4, num_experts_per_tok=2)),
    "gpt_neox": (transformers.GPTNeoXConfig, dict(vocab_size=96, hidden_size=32, num_hidden_layers=2,
                                                  num_attention_heads=4, intermediate_size=48, rotary_pct=0.5,
                                                  max_position_embeddings=64, pad_token_id=0)),
    "falcon": (transformers.FalconConfig, dict(vocab_size=96, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4, new_decoder_architecture=True, num_kv_heads=2,
                                               pad_token_id=0)),
    "deberta-v2": (transformers.DebertaV2Config, dict(vocab_size=96, hidden_size=32, num_hidden_layers=2,
                                                      num_attention_heads=4, intermediate_size=48, relative_attention=True,
                                                      pos_att_type=["p2c", "c2p"], position_buckets=8,
                                                      max_relative_positions=16, pad_token_id=0)),
    "modernbert": (transformers.ModernBertConfig, dict(vocab_size=96, hidden_size=32, num_hidden_layers=3,
                                                       num_attention_heads=4, intermediate_size=48, local_attention=4,
                                                       max_position_embeddings=64, pad_token_id=0)),
}


@pytest.fixture(autouse=True)
def exact_float32_matmuls():
    # TF32 would round float32 products on a GPU to 10-bit mantissas in one library's run and not the other's.
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous


def _save_reference(folder, family, head, **overrides):
    config_class, options = FAMILIES[family]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(transformers, head).from_config(config_class(**{**options, **overrides})).eval()
    model.save_pretrained(folder)
    return model


def _padded_batch(device, vocab=96):
    ids = torch.randint(1, vocab, (2, 9), generator=torch.Generator().manual_seed(3)).to(device)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding, as generation uses it
    return ids, mask


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("llama")
    _save_reference(folder, "llama", "AutoModelForCausalLM")
    return folder


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(
    "family, head, ours_class",
    [("llama", "AutoModelForCausalLM", AutoModelForCausalLM), ("gpt2", "AutoModelForCausalLM", AutoModelForCausalLM),
     ("llama", "AutoModelForSequenceClassification", AutoModelForSequenceClassification),
     ("bert", "AutoModelForTokenClassification", AutoModelForTokenClassification),
     *((family, "AutoModelForCausalLM", AutoModelForCausalLM)
       for family in ("qwen3", "gemma2", "phi3", "mixtral", "gpt_neox", "falcon")),
     ("deberta-v2", "AutoModelForSequenceClassification", AutoModelForSequenceClassification),
     ("modernbert", "AutoModelForMaskedLM", AutoModelForMaskedLM)],
)
@torch.inference_mode()
def test_logits_and_loss_match_the_reference_on_the_device(tmp_path, device, family, head, ours_class):
    reference = _save_reference(tmp_path, family, head).to(device)
    model = ours_class.from_pretrained(tmp_path, device_map=device)
    assert {p.device.type for p in model.parameters()} == {device}
    ids, mask = _padded_batch(device)
    labels = torch.tensor([0, 1], device=device) if "Sequence" in head else ids.masked_fill(mask == 0, -100)
    if "Token" in head:
        labels = (ids % 2).masked_fill(mask == 0, -100)
    if "Causal" in head:  # nor a token predicted from a padding position, whose outputs are arbitrary in both
        labels[:, 1:] = labels[:, 1:].masked_fill(mask[:, :-1] == 0, -100)
    ours = model(ids, attention_mask=mask, labels=labels)
    theirs = reference(ids, attention_mask=mask, labels=labels)
    keep = mask.bool() if ours.logits.dim() == 3 else slice(None)  # padded positions are arbitrary in both
    assert ours.logits.device.type == device
    torch.testing.assert_close(ours.logits[keep], theirs.logits[keep], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
@torch.inference_mode()
def test_generation_matches_the_reference_on_the_device(llama_folder, device):
    reference = transformers.AutoModelForCausalLM.from_pretrained(llama_folder).eval().to(device)
    model = AutoModelForCausalLM.from_pretrained(llama_folder, device_map=device)
    ids, mask = _padded_batch(device)
    for options in (dict(do_sample=False), dict(do_sample=False, num_beams=3), dict(do_sample=False,
                                                                                    repetition_penalty=1.3)):
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=12, pad_token_id=0, **options)
        got = model.generate(ids, attention_mask=mask, max_new_tokens=12, **options)
        assert got.device.type == device
        assert got.tolist() == expected.tolist(), options

    sampling = dict(attention_mask=mask, max_new_tokens=12, do_sample=True, top_k=20, top_p=0.9, temperature=0.8)
    runs = []
    for _ in range(2):
        torch.manual_seed(5)
        runs.append(model.generate(ids, **sampling))
    assert runs[0].device.type == device and runs[0].shape == (2, 21)
    assert runs[0].tolist() == runs[1].tolist()


class _IdTokenizer:
    """Enough of a tokenizer for a streamer: a token's text is its id in brackets."""

    def decode(self, ids, skip_special_tokens=False, **_):
        return "".join(f"[{int(i)}]" for i in ids)


@pytest.mark.parametrize("device", DEVICES)
@torch.inference_mode()
def test_streamed_tokens_equal_the_returned_ones_on_the_device(llama_folder, device):
    model = AutoModelForCausalLM.from_pretrained(llama_folder, device_map=device)
    ids = _padded_batch(device)[0][:1]
    streamer = TextIteratorStreamer(_IdTokenizer(), skip_prompt=True)
    output = model.generate(ids, max_new_tokens=10, do_sample=False, streamer=streamer)
    assert "".join(streamer) == _IdTokenizer().decode(output[0, ids.shape[1]:])


@pytest.mark.parametrize("device", DEVICES)
@torch.inference_mode()
def test_bfloat16_and_int8_models_run_on_the_device(llama_folder, device):
    full = AutoModelForCausalLM.from_pretrained(llama_folder, device_map=device)
    ids, mask = _padded_batch(device)
    expected = full(ids, attention_mask=mask).logits[mask.bool()]
    for options in (dict(dtype=torch.bfloat16), dict(quantization="int8")):
        model = AutoModelForCausalLM.from_pretrained(llama_folder, device_map=device, **options)
        assert {b.device.type for b in [*model.parameters(), *model.buffers()]} == {device}
        logits = model(ids, attention_mask=mask).logits[mask.bool()].float()
        torch.testing.assert_close(logits, expected, rtol=0.05, atol=0.05, msg=lambda m: f"{options}: {m}")
        output = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
        assert output.shape == (2, 15) and output.device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_a_model_saved_from_the_device_loads_anywhere(llama_folder, device, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(llama_folder, device_map=device)
    model.save_pretrained(tmp_path)
    ids, mask = _padded_batch("cpu")
    with torch.inference_mode():
        expected = model(ids.to(device), attention_mask=mask.to(device)).logits.cpu()
        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)(ids, attention_mask=mask).logits
    torch.testing.assert_close(reloaded[mask.bool()], expected[mask.bool()], rtol=1e-4, atol=1e-4)


def _rows(count=16):
    generator = torch.Generator().manual_seed(1)
    return [{"input_ids": (ids := torch.randint(1, 96, (8,), generator=generator).tolist()), "labels": ids}
            for _ in range(count)]


@pytest.mark.parametrize("device", DEVICES)
def test_trainer_matches_the_reference_trainer_on_the_device(llama_folder, device, tmp_path):
    if device == "cpu" and torch.cuda.is_available():
        pytest.skip("both Trainers pick the GPU when there is one")
    if device == "cuda":
        pytest.importorskip("accelerate")  # the reference Trainer needs it
    reference = transformers.AutoModelForCausalLM.from_pretrained(llama_folder)
    model = AutoModelForCausalLM.from_pretrained(llama_folder)
    common = dict(learning_rate=1e-2, warmup_steps=1, weight_decay=0.1, max_grad_norm=0.5, max_steps=4,
                  per_device_train_batch_size=16, logging_steps=1, save_strategy="no", disable_tqdm=True,
                  report_to=[])
    rows = _rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.Trainer(model=reference, train_dataset=rows,
                                      args=transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), **common))
        theirs.train()
    ours = Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "ours"), **common),
                   train_dataset=rows)
    ours.train()
    assert {p.device.type for p in model.parameters()} == {device}
    expected = [e["loss"] for e in theirs.state.log_history if "loss" in e]
    assert [e["loss"] for e in ours.state.log_history if "loss" in e] == pytest.approx(expected, rel=1e-3)

    with pytest.warns(UserWarning, match="score.weight"):
        classifier = AutoModelForSequenceClassification.from_pretrained(llama_folder, num_labels=2)
    mixed = Trainer(model=classifier,
                    args=TrainingArguments(output_dir=str(tmp_path / "bf16"), bf16=True, **common),
                    train_dataset=[{"input_ids": row["input_ids"], "labels": i % 2} for i, row in enumerate(rows)])
    losses = [e["loss"] for e in mixed.train() and mixed.state.log_history if "loss" in e]
    assert len(losses) == 4 and all(map(torch.isfinite, torch.tensor(losses)))


@pytest.mark.parametrize("device", DEVICES)
@torch.inference_mode()
def test_an_encoder_decoder_matches_the_reference_on_the_device(tmp_path, device):
    """T5 (Flan-T5's gated GELU and own LM head): logits, loss, greedy and beam generation on the device."""
    torch.manual_seed(0)
    config = transformers.T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
                                   tie_word_embeddings=False, decoder_start_token_id=0)
    reference = transformers.T5ForConditionalGeneration(config).eval()
    reference.lm_head.weight = torch.nn.Parameter(torch.randn_like(reference.lm_head.weight))
    reference.save_pretrained(tmp_path)
    reference.to(device)
    model = AutoModelForSeq2SeqLM.from_pretrained(tmp_path, device_map=device)
    ids, mask = _padded_batch(device)
    labels = ids[:, :5].contiguous()  # the reference views the labels flat
    ours, theirs = model(ids, attention_mask=mask, labels=labels), reference(ids, attention_mask=mask, labels=labels)
    assert ours.logits.device.type == device
    torch.testing.assert_close(ours.logits, theirs.logits, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.loss, theirs.loss, rtol=1e-4, atol=1e-4)
    for options in (dict(), dict(num_beams=3, num_return_sequences=2)):
        expected = reference.generate(ids, attention_mask=mask, max_new_tokens=10, **options)
        got = model.generate(ids, attention_mask=mask, max_new_tokens=10, **options)
        assert got.device.type == device and got.tolist() == expected.tolist(), options
