"""BitNet b1.58 (model_type "bitnet") against the reference, on tiny random models it makes.

Llama's network with an RMSNorm before o_proj and before down_proj and a gated squared-ReLU MLP; with a
quantization_config, ternary linear maps over 8-bit activations. The variants are the reference's kinds of maps: the
released checkpoint's (autobitlinear, offline: weights rounded to ternary steps and packed four to a byte with the
reference's own `pack_weights`, their scale in weight_scale), the -bf16 variant's (autobitlinear, online: float weights
rounded at every call), the reference's default class (bitlinear: packed, the scales divided out) with attention
biases, the offline maps with their own RMSNorm (use_rms_norm) and tied embeddings, and float maps (no
quantization_config). Both heads the reference has, cached decoding, left padding, greedy, beam and static-cache
generation, hidden states and attention weights, a training step (online: the straight-through gradients; offline: the
frozen maps), saving both ways (packed weights stay packed), bfloat16, int8 loading, the kernel's refusal, the config's
defaults and refusals, and the tokenizer of a folder like the released one.

The reference compiles its quantizing functions with torch.compile; they run eagerly here (the `eager_reference`
fixture), the same operations without a compiler's build on every test run.
"""

import collections
import copy
import json
import tempfile
from pathlib import Path

import pytest
import torch

import openformers
from decoder_parity import (
    assert_bfloat16_matches_the_reference,
    assert_kernel_refuses_and_generate_runs_the_layers,
    assert_same_attributes,
    assert_training_step_matches,
    lm_inputs,
    load_quietly,
    padded_batch,
)
from decoder_suite import DecoderFamilyTests
from openformers import AutoModelForCausalLM, BitNetConfig, BitNetForCausalLM
from openformers.models.bitnet import BitLinear, pack_ternary, unpack_ternary

transformers = pytest.importorskip("transformers")
from transformers.integrations.bitnet import pack_weights, unpack_weights  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def eager_reference():
    previous = torch._dynamo.config.disable
    torch._dynamo.config.disable = True
    yield
    torch._dynamo.config.disable = previous


def quantization(linear_class="autobitlinear", mode="offline", **more):
    return {"quantization_config": {"quant_method": "bitnet", "linear_class": linear_class,
                                    "quantization_mode": mode, **more}}


def write_checkpoint(plain, folder: Path, settings: dict | None) -> None:
    """The reference's float model `plain` saved to `folder` as a BitNet checkpoint of the quantization_config
    `settings` (None: as it is): an offline class's layer weights rounded to -1, 0, 1 steps of their mean magnitude, packed
    by the reference's pack_weights, with that scale as weight_scale (autobitlinear multiplies by it; bitlinear
    divides, so it gets the inverse)."""
    from safetensors.torch import load_file, save_file

    plain.save_pretrained(folder)
    if settings is None:
        return
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "quantization_config": settings}))
    online = settings.get("quantization_mode", "offline") == "online" and settings.get("linear_class") == "autobitlinear"
    tensors = load_file(folder / "model.safetensors")
    draw = torch.Generator().manual_seed(1)
    for name, w in list(tensors.items()):
        if "layers." in name and name.endswith("proj.weight") and settings.get("use_rms_norm"):
            tensors[name.removesuffix("weight") + "rms_norm.weight"] = 1 + 0.2 * torch.randn(w.shape[1], generator=draw)
        if "layers." in name and name.endswith("proj.weight") and not online:
            scale = w.abs().mean()
            tensors[name] = pack_weights((w / scale).round().clamp(-1, 1))
            inverse = settings.get("linear_class", "bitlinear") == "bitlinear"
            tensors[name + "_scale"] = (1 / scale if inverse else scale).reshape(1)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


class TestBitNet(DecoderFamilyTests):
    REFERENCE_CONFIG = "BitNetConfig"
    TINY = dict(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=256,
        rope_parameters={"rope_type": "default", "rope_theta": 500.0}, pad_token_id=0, bos_token_id=1,
        eos_token_id=2, initializer_range=0.15,
    )
    VARIANTS = {
        "offline": quantization(),  # bitnet-b1.58-2B-4T's
        "online": quantization(mode="online"),  # bitnet-b1.58-2B-4T-bf16's
        "bitlinear": dict(**quantization("bitlinear"), attention_bias=True),
        "rms-norm-tied": dict(**quantization(use_rms_norm=True, rms_norm_eps=1e-3), tie_word_embeddings=True),
        "float": {},
    }
    HEADS = {"BitNetModel": "AutoModel", "BitNetForCausalLM": "AutoModelForCausalLM"}
    HEAD_VARIANTS = ["offline", "online"]
    HEAD_OVERRIDES = {}

    @classmethod
    def reference(cls, name=None, **overrides):
        """The reference's model of class `name` as it loads a BitNet checkpoint of `overrides`' quantization_config
        (written to a folder of its own by write_checkpoint); without one, its float model."""
        settings = overrides.pop("quantization_config", None)
        plain = super().reference(name, **overrides)
        if settings is None:
            return plain
        folder = Path(tempfile.mkdtemp(prefix="bitnet-"))
        write_checkpoint(plain, folder, settings)
        return getattr(transformers, name or cls.causal_lm()).from_pretrained(folder).eval()

    @pytest.fixture(scope="class")
    @classmethod
    def tiny(cls, variant, tmp_path_factory):
        """(folder, reference, model): the reference's folder as write_checkpoint makes it (the reference cannot save
        an offline model it loaded), loaded by the reference and by ours."""
        return cls.loaded(cls.causal_lm(), cls.VARIANTS[variant], tmp_path_factory.mktemp(variant))

    @pytest.fixture(scope="class")
    @classmethod
    def tiny_head(cls, head, tmp_path_factory):
        name, variant = head
        return (name, *cls.loaded(name, cls.VARIANTS[variant], tmp_path_factory.mktemp(name)))

    @classmethod
    def loaded(cls, name, values, folder):
        values = dict(values)
        settings = values.pop("quantization_config", None)
        write_checkpoint(DecoderFamilyTests.reference.__func__(cls, name, **values), folder, settings)
        reference = getattr(transformers, name).from_pretrained(folder).eval()
        return folder, reference, load_quietly(getattr(openformers, cls.HEADS[name]).from_pretrained, folder)

    @torch.inference_mode()
    def test_causal_lm_logits_and_loss_match_reference(self, tiny):
        super().test_causal_lm_logits_and_loss_match_reference(tiny)
        _, reference, model = tiny
        kinds = {type(m).__name__ for m in model.model.layers.modules() if isinstance(m, (BitLinear, torch.nn.Linear))}
        assert kinds == ({"Linear"} if model.config.quantization_config is None else {"BitLinear"})
        assert isinstance(model.lm_head, torch.nn.Linear)
        assert (model.lm_head.weight is model.model.embed_tokens.weight) == reference.config.tie_word_embeddings

    @torch.inference_mode()
    def test_saved_files_hold_the_references_tensors(self, tiny, tmp_path):
        """Saved by ours, the weights are as the reference's folder holds them: packed uint8 with their weight_scale
        for the offline maps, floats for the online ones; config.json keeps the quantization_config."""
        from safetensors import safe_open

        folder, _, model = tiny
        model.save_pretrained(tmp_path)
        with safe_open(folder / "model.safetensors", "pt") as theirs, safe_open(tmp_path / "model.safetensors",
                                                                                  "pt") as ours:
            assert sorted(ours.keys()) == sorted(theirs.keys())
            for key in theirs.keys():
                assert torch.equal(ours.get_tensor(key), theirs.get_tensor(key)), key
        saved = json.loads((tmp_path / "config.json").read_text())
        assert saved.get("quantization_config") == json.loads((folder / "config.json").read_text()).get(
            "quantization_config")

    @torch.inference_mode()
    def test_bfloat16_matches_the_reference_in_bfloat16(self, tiny):
        """Float maps: the reference's bfloat16 logits, bit for bit. BitNet maps: the reference cannot run them in
        bfloat16 (it keeps the other weights float32 and its products fail on the mixed dtypes), so ours in bfloat16
        (the ternary weights exact in it) are compared with its float32 logits, its weights rounded to bfloat16, within
        bfloat16's rounding."""
        folder, reference, model = tiny
        ids, mask = padded_batch(self.ids(2, 9, seed=7))
        if model.config.quantization_config is None:
            assert_bfloat16_matches_the_reference(folder, ids, mask)
            return
        ours = load_quietly(lambda f: AutoModelForCausalLM.from_pretrained(f, dtype=torch.bfloat16), folder)
        assert {t.dtype for t in ours.state_dict().values()} == {torch.bfloat16}
        rounded = copy.deepcopy(reference)  # its weights as bfloat16 holds them: the online maps round the same ones
        for t in [*rounded.parameters(), *rounded.buffers()]:
            t.copy_(t.bfloat16()) if t.is_floating_point() else None
        expected = rounded(ids, attention_mask=mask).logits
        torch.testing.assert_close(ours(ids, attention_mask=mask).logits.float(), expected, atol=0.3, rtol=0.05)

    # The shared test makes its model by saving the reference's, which cannot save an offline BitNet model it loaded:
    # test_a_training_step_matches_the_reference below loads both from the variant's folder.
    test_training_loss_and_gradients_match_the_reference = None

    def test_a_training_step_matches_the_reference(self, tiny):
        """Dropout off, the loss and gradients of a training step, with gradient checkpointing too: the online maps'
        straight-through gradients, the offline maps frozen (the reference's bitlinear holds its weights and biases
        as buffers)."""
        folder = tiny[0]
        reference = transformers.AutoModelForCausalLM.from_pretrained(folder)
        model = load_quietly(AutoModelForCausalLM.from_pretrained, folder)
        inputs = lm_inputs(self.ids(2, 9, seed=7))
        frozen = {name for name, p in model.named_parameters() if not p.requires_grad}
        assert frozen == {f"{name}.{kind}" for name, m in model.named_modules() if isinstance(m, BitLinear)
                          and not m.online for kind, _ in m.named_parameters()}
        # The reference's autobitlinear leaves its loaded offline weights requiring gradients, though its quantizer
        # refuses to train them (is_trainable); ours are frozen, so that they stay ternary and save packed.
        grads = lambda ref: collections.defaultdict(lambda: None, {
            n: None if n in frozen else p.grad for n, p in ref.named_parameters()})
        assert_training_step_matches(model, reference, inputs, checkpointing=(False, True), reference_grads=grads)

    def test_the_cpu_kernel_refuses_bitnet_and_generate_runs_the_layers(self, tiny):
        _, reference, model = tiny
        assert_kernel_refuses_and_generate_runs_the_layers(model, reference, self.ids(1, 5, seed=3), "bitnet")

    def test_auto_classes_pick_the_bitnet_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is BitNetConfig
        assert type(load_quietly(openformers.AutoModel.from_pretrained, folder)).__name__ == "BitNetModel"
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is BitNetForCausalLM
        with pytest.raises(ValueError, match="no sequence-classification class for 'bitnet'"):
            openformers.AutoModelForSequenceClassification.from_pretrained(folder)


TINY, VARIANTS = TestBitNet.TINY, TestBitNet.VARIANTS
_ids = TestBitNet.ids


def test_packing_is_the_references():
    """pack_ternary writes the reference's bytes, and unpack_ternary reads back the reference's matrix."""
    ternary = torch.randint(-1, 2, (12, 5), generator=torch.Generator().manual_seed(0)).float()
    packed = pack_weights(ternary.clone())
    assert torch.equal(pack_ternary(ternary, "w"), packed)
    assert torch.equal(unpack_ternary(packed, torch.float32), unpack_weights(packed, torch.float32))
    assert torch.equal(unpack_ternary(packed, torch.bfloat16), ternary.bfloat16())
    with pytest.raises(ValueError, match="w .12 rows. cannot be saved packed"):
        pack_ternary(ternary * 0.5, "w")
    with pytest.raises(ValueError, match="v .6 rows."):
        pack_ternary(ternary[:6], "v")


@pytest.mark.parametrize("variant", ["offline", "float"])
@torch.inference_mode()
def test_int8_packs_the_float_maps_and_leaves_the_bitnet_maps(variant, tmp_path):
    """quantization="int8" quantizes the float linear maps (the head; every map without quantization_config) and
    leaves each BitLinear as loaded: logits near the unquantized model's."""
    folder, _, model = TestBitNet.loaded("BitNetForCausalLM", VARIANTS[variant], tmp_path)
    quantized = load_quietly(lambda f: AutoModelForCausalLM.from_pretrained(f, quantization="int8"), folder)
    assert not isinstance(quantized.lm_head, torch.nn.Linear) or getattr(quantized.lm_head, "scale", None) is not None
    bit_linears = [m for m in quantized.modules() if isinstance(m, BitLinear)]
    assert len(bit_linears) == (14 if variant == "offline" else 0)
    for m, original in zip(bit_linears, [m for m in model.modules() if isinstance(m, BitLinear)]):
        assert torch.equal(m.weight, original.weight) and torch.equal(m.weight_scale, original.weight_scale)
    ids = _ids(2, 9, seed=4)
    torch.testing.assert_close(quantized(ids).logits, model(ids).logits, atol=0.5, rtol=0.1)


def test_config_defaults_match_the_reference():
    ours, theirs = BitNetConfig(), transformers.BitNetConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
        "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings", "attention_bias", "attention_dropout",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None
    assert ours.quantization_config is None and ours.bit_linear_settings() is None
    # BitNetQuantConfig's defaults fill what a quantization_config leaves out.
    filled = BitNetConfig(quantization_config={"quant_method": "bitnet"}).bit_linear_settings()
    expected = transformers.BitNetQuantConfig().to_dict()
    assert {key: expected[key] for key in filled} == filled


@pytest.mark.parametrize("values, message", [
    (dict(quantization_config={"quant_method": "gptq"}), "quantization_config="),
    (dict(quantization_config={"quant_method": "bitnet", "linear_class": "linear"}),
     "quantization_config.linear_class='linear'"),
    (dict(quantization_config={"quant_method": "bitnet", "quantization_mode": "dynamic"}),
     "quantization_config.quantization_mode='dynamic'"),
    (dict(quantization_config={"quant_method": "bitnet", "use_rms_norm": 1}), "quantization_config.use_rms_norm=1"),
    (dict(quantization_config={"quant_method": "bitnet", "use_rms_norm": True, "rms_norm_eps": None}),
     "quantization_config.rms_norm_eps=None"),
    (dict(quantization_config={"quant_method": "bitnet", "modules_to_not_convert": ["lm_head"]}),
     "quantization_config.modules_to_not_convert"),
    (dict(mlp_bias=True), "mlp_bias=True"),
    (dict(head_dim=32), "head_dim=32"),
    (dict(hidden_act="gelu_fast"), "hidden_act='gelu_fast'"),
    (dict(attention_dropout=1.0), "attention_dropout=1.0"),
])
def test_config_refuses_bad_values_by_name(values, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        BitNetConfig(**{**TINY, "rope_theta": 500.0, "rope_parameters": None, **values}).validate()


@torch.inference_mode()
def test_a_model_built_from_an_offline_config_saves_packed_and_the_reference_loads_it(tmp_path):
    """Built from its config, an offline model's maps are ternary with their scale, so it saves packed."""
    config = BitNetConfig(**{k: v for k, v in TINY.items() if k != "rope_parameters"}, rope_theta=500.0,
                          **quantization())
    torch.manual_seed(0)
    model = BitNetForCausalLM(config).eval()
    model.save_pretrained(tmp_path)
    reference = transformers.BitNetForCausalLM.from_pretrained(tmp_path).eval()
    ids = _ids(2, 7, seed=5)
    torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)


def test_tokenizer_of_a_bitnet_folder_is_the_references(tmp_path):
    """The released folder ships a tokenizer.json (Llama 3's byte-level BPE) and names PreTrainedTokenizerFast, which
    the reference reads as its TokenizersBackend."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    texts = ["User: Hey, are you conscious?", "Assistant: No, I'm an artificial intelligence. 1.58 bits!"]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(texts * 20, trainers.BpeTrainer(
        vocab_size=300, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bitnet"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": special[0], "eos_token": special[1],
    }))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__
    assert (ours.bos_token_id, ours.eos_token_id) == (reference.bos_token_id, reference.eos_token_id)
    for text in [*texts, "<|begin_of_text|>User: hi<|eot_id|>"]:
        assert ours(text)["input_ids"] == reference(text)["input_ids"]
        assert ours.decode(ours(text)["input_ids"]) == reference.decode(reference(text)["input_ids"])
