"""Checkpoint I/O end to end: vicuna-7b-v1.5's layout at a tiny size, sharded saves, dtypes, devices, refusals."""

import json
import warnings

import pytest
import torch

from openformers import (
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    LlamaConfig,
)

transformers = pytest.importorskip("transformers")
sentencepiece = pytest.importorskip("sentencepiece")

TINY = dict(
    vocab_size=300, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
    max_position_embeddings=128, rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1, eos_token_id=2,
)
CORPUS = [
    "A chat between a curious user and an artificial intelligence assistant.",
    "The assistant gives helpful, detailed, and polite answers to the user's questions.",
    "USER: What is the capital of France? ASSISTANT: Paris is the capital of France.",
] * 40


def _train_sentencepiece(path):
    """A Llama-2-style SentencePiece model: BPE with byte fallback, <unk> 0, <s> 1, </s> 2."""
    with open(path, "wb") as model_file:
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(CORPUS), model_writer=model_file, vocab_size=TINY["vocab_size"], model_type="bpe",
            byte_fallback=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
        )


def _write_json(path, values):
    path.write_text(json.dumps(values, indent=2))


@pytest.fixture(scope="module")
def vicuna(tmp_path_factory):
    """The files of lmsys/vicuna-7b-v1.5, at a tiny size: float16 weights in two `.bin` shards with their index,
    a SentencePiece tokenizer.model, pad <unk>, and a generation config that samples without do_sample."""
    folder = tmp_path_factory.mktemp("vicuna")
    torch.manual_seed(0)
    reference = transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).eval()
    state_dict = {k: v.to(torch.float16) for k, v in reference.state_dict().items()}
    names = list(state_dict)
    shards = {"pytorch_model-00001-of-00002.bin": names[: len(names) // 2],
              "pytorch_model-00002-of-00002.bin": names[len(names) // 2 :]}
    for shard, keys in shards.items():
        torch.save({k: state_dict[k] for k in keys}, folder / shard)
    weight_map = {k: shard for shard, keys in shards.items() for k in keys}
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    _write_json(folder / "pytorch_model.bin.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})
    config = {**TINY, "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
              "num_key_value_heads": 4, "pretraining_tp": 1, "rope_scaling": None, "tie_word_embeddings": False,
              "torch_dtype": "float16", "transformers_version": "4.31.0", "use_cache": True}
    _write_json(folder / "config.json", config)
    _write_json(folder / "generation_config.json",
                {"bos_token_id": 1, "eos_token_id": 2, "max_length": 128, "pad_token_id": 0, "temperature": 0.9,
                 "top_p": 0.6, "transformers_version": "4.31.0"})
    _train_sentencepiece(folder / "tokenizer.model")
    special = {"content": None, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}
    _write_json(folder / "special_tokens_map.json", {
        "bos_token": {**special, "content": "<s>"}, "eos_token": {**special, "content": "</s>"},
        "pad_token": "<unk>", "unk_token": {**special, "content": "<unk>"},
    })
    _write_json(folder / "tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "clean_up_tokenization_spaces": False, "legacy": False, "model_max_length": 128, "pad_token": None,
        "padding_side": "right", "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
    })
    reference = reference.to(torch.float16).float()  # the weights as the shards hold them
    return folder, reference


def _loaded(load, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load(*args, **kwargs)
    return model, [str(w.message) for w in caught]


@pytest.fixture(scope="module")
def batch(vicuna):
    tokenizer = AutoTokenizer.from_pretrained(vicuna[0])
    encoded = tokenizer(["USER: What is the capital of France?", "USER: Hi"], padding=True, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"]


def test_vicuna_tokenizer_pads_with_unk(vicuna, batch):
    ids, mask = batch
    processor = sentencepiece.SentencePieceProcessor(model_file=str(vicuna[0] / "tokenizer.model"))
    expected = [1, *processor.encode("USER: Hi")]
    assert ids[1, : len(expected)].tolist() == expected and mask[1].sum() == len(expected)
    assert set(ids[1, len(expected) :].tolist()) == {0}  # pad is <unk>, id 0, on the right


@torch.inference_mode()
def test_vicuna_layout_loads_and_matches_the_reference(vicuna, batch):
    folder, reference = vicuna
    model, _ = _loaded(AutoModelForCausalLM.from_pretrained, folder)
    assert model.dtype == torch.float32 and model.config.dtype == "float16"
    ids, mask = batch
    real = mask.bool()
    ours, theirs = model(ids, attention_mask=mask).logits, reference(ids, attention_mask=mask).logits
    torch.testing.assert_close(ours[real], theirs[real])
    auto, _ = _loaded(AutoModelForCausalLM.from_pretrained, folder, dtype="auto")
    assert auto.dtype == torch.float16


@torch.inference_mode()
def test_vicuna_classifies_with_two_labels(vicuna, batch):
    folder, reference = vicuna
    model, messages = _loaded(AutoModelForSequenceClassification.from_pretrained, folder, num_labels=2)
    assert len([m for m in messages if "score.weight" in m]) == 1
    assert "lm_head.weight" in next(m for m in messages if "score.weight" in m)
    assert model.config.num_labels == 2 and model.config.pad_token_id == 0
    ids, mask = batch
    hidden = reference.model(ids, attention_mask=mask).last_hidden_state
    last = mask.sum(1) - 1  # right padding: the last real token
    expected = hidden[torch.arange(2), last] @ model.score.weight.T
    logits = model(ids, attention_mask=mask).logits
    assert logits.shape == (2, 2)
    torch.testing.assert_close(logits, expected)
    assert model(ids, attention_mask=mask, labels=torch.tensor([0, 1])).loss > 0


@torch.inference_mode()
def test_vicuna_generates_greedily_like_the_reference(vicuna, batch):
    folder, reference = vicuna
    model, _ = _loaded(AutoModelForCausalLM.from_pretrained, folder)
    assert model.generation_config.temperature == 0.9 and not model.generation_config.do_sample
    ids = batch[0][:1]
    expected = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
                                  pad_token_id=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # temperature and top_p without do_sample: ignored, with a warning
        assert model.generate(ids, max_new_tokens=8).tolist() == expected.tolist()


@torch.inference_mode()
def test_vicuna_saves_with_a_warning_and_the_reference_loads_it(vicuna, batch, tmp_path):
    folder, reference = vicuna
    model, _ = _loaded(AutoModelForCausalLM.from_pretrained, folder)
    with pytest.warns(UserWarning, match="do_sample"):
        model.save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert saved["temperature"] == 0.9 and saved["top_p"] == 0.6 and "do_sample" not in saved
    ids, mask = batch
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
        ours = AutoModelForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(theirs(ids).logits, reference(ids).logits)
    torch.testing.assert_close(ours(ids).logits, model(ids).logits)


@pytest.mark.parametrize("device_map", ["cpu", "auto"])
def test_device_map_places_the_whole_model(vicuna, device_map):
    model, _ = _loaded(AutoModel.from_pretrained, vicuna[0], device_map=device_map)
    expected = "cuda" if torch.cuda.is_available() and device_map != "cpu" else "cpu"
    assert {p.device.type for p in model.parameters()} == {expected}
    assert model.rotary_emb.cos.device.type == expected
    ids = torch.tensor([[1, 5, 6]], device=expected)
    assert model(ids).last_hidden_state.device.type == expected


def test_loading_options_are_checked(vicuna):
    folder = vicuna[0]
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
    with pytest.raises(ValueError, match="device_map"):
        AutoModelForCausalLM.from_pretrained(folder, device_map="balanced")
    with pytest.raises(ValueError, match="max_shard_size"):
        AutoModel.from_config(LlamaConfig(**TINY)).save_pretrained(folder / "unused", max_shard_size="lots")
    assert not (folder / "unused").exists()


def test_a_checkpoint_that_does_not_fit_names_the_file_and_keys(vicuna, tmp_path):
    config = json.loads((vicuna[0] / "config.json").read_text())
    _write_json(tmp_path / "config.json", {**config, "intermediate_size": 80})
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).save_pretrained(tmp_path)
    _write_json(tmp_path / "config.json", {**config, "intermediate_size": 80})
    with pytest.raises(ValueError, match=r"model\.safetensors does not fit.*wrong shape.*mlp\.gate_proj\.weight"):
        AutoModelForCausalLM.from_pretrained(tmp_path)


def test_a_task_the_family_lacks_names_the_ones_it_has(vicuna):
    from openformers import AutoModelForMaskedLM

    with pytest.raises(ValueError, match=r"no masked-lm class for 'llama'.*sequence-classification"):
        AutoModelForMaskedLM.from_pretrained(vicuna[0])


@pytest.mark.parametrize("family", ["Bert", "Llama"])
def test_ignore_mismatched_sizes_reinitializes_the_head_as_the_reference_does(tmp_path, family):
    """A 3-label classifier loaded with num_labels=2: refused, or with ignore_mismatched_sizes a new 2-label head."""
    torch.manual_seed(0)
    sizes = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    config = getattr(transformers, f"{family}Config")(**sizes, num_labels=3, pad_token_id=0)
    getattr(transformers, f"{family}ForSequenceClassification")(config).save_pretrained(tmp_path)
    head = "classifier" if family == "Bert" else "score"
    with pytest.raises(ValueError, match=rf"model.safetensors.*{head}\.weight: checkpoint \(3, 32\), model \(2, 32\)"
                                         r".*ignore_mismatched_sizes=True"):
        AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2)

    with pytest.warns(UserWarning, match=rf"{head}\.weight: checkpoint \(3, 32\), model \(2, 32\).*newly initialized"):
        ours = AutoModelForSequenceClassification.from_pretrained(tmp_path, num_labels=2, ignore_mismatched_sizes=True)
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(
        tmp_path, num_labels=2, ignore_mismatched_sizes=True
    )
    theirs = reference.state_dict()
    for name, value in ours.state_dict().items():
        assert value.shape == theirs[name].shape, name
        if not name.startswith(head):  # the rest is the checkpoint's, as in the reference
            torch.testing.assert_close(value, theirs[name], msg=name)
    weight = getattr(ours, head).weight
    assert weight.shape == (2, 32) and 0 < float(weight.detach().std()) < 0.1  # the model's own init, not zeros or junk
