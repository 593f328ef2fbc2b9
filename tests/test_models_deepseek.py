"""DeepSeek-V3 (model_type "deepseek_v3") and DeepSeek-V2 ("deepseek_v2") against the reference, on tiny random
models it makes and saves.

Multi-head latent attention with queries through a low-rank bottleneck or projected directly, the rotated pairs
interleaved or in halves (V3), YaRN rope scaling with mscale_all_dim folded into the softmax's scale and biases on the
attention's projections; a dense first layer and then a mixture of routed experts and shared experts (V3: sigmoid
scores, grouped choice with drawn correction biases, norm_topk_prob both ways, routed_scaling_factor; V2: softmax
scores, greedy and group-limited choice, MLP biases). Every head on a padded batch with labels, the router logits,
cached decoding (the cache holds the compressed latents as the reference's does), left padding, greedy and beam
generation, static caches, hidden states and attention weights, a training step's gradients, saving both ways,
the Auto classes, the config's defaults and refusals, the multi-token prediction layers a checkpoint may hold, and
the CPU kernel's refusal. The weights are drawn at std 0.15 and the correction biases at 0.3, so that a routing or
scale detail applied wrong moves the logits far past the tolerance.
"""

import json

import pytest
import torch

import openformers
from decoder_parity import (
    assert_bfloat16_matches_the_reference,
    assert_kernel_refuses_and_generate_runs_the_layers,
    assert_kernel_steps_and_generates_as_the_reference,
    assert_outputs_close,
    assert_same_attributes,
    load_quietly,
    outputs_of,
    padded_batch,
)
from decoder_suite import RoutedExpertsTests
from openformers import (
    AutoModelForCausalLM,
    DeepseekV2Config,
    DeepseekV2ForCausalLM,
    DeepseekV3Config,
    DeepseekV3ForCausalLM,
)

transformers = pytest.importorskip("transformers")

YARN = {"rope_type": "yarn", "rope_theta": 1000.0, "factor": 4.0, "original_max_position_embeddings": 64,
        "mscale": 0.8, "mscale_all_dim": 1.0, "beta_fast": 16, "beta_slow": 1}


class DeepseekExpertsTests(RoutedExpertsTests):
    """What a family with DeepSeek's routed and shared experts checks beyond the routed experts' common tests
    (DeepSeek-V2 and V3 here, GLM-4.5 in test_models_glm4moe.py); the reference computes no load-balancing loss for
    them."""

    MODEL_TYPE: str
    LOAD_BALANCING = False

    def test_the_cpu_kernel_refuses_the_family_and_generation_runs_the_layers(self, tiny):
        _, reference, model = tiny
        assert_kernel_refuses_and_generate_runs_the_layers(model, reference, self.ids(1, 5, seed=3), self.MODEL_TYPE)

    @torch.inference_mode()
    def test_multi_token_prediction_layers_of_a_checkpoint_are_left_out(self, tiny, tmp_path):
        """A checkpoint whose num_nextn_predict_layers layers follow the last one (DeepSeek-V3's layer 61) loads to
        the same model, without a warning."""
        from safetensors.torch import load_file, save_file

        folder, reference, model = tiny
        n = model.config.num_hidden_layers
        tensors = load_file(str(folder / "model.safetensors"))
        extra = {name.replace("model.layers.0.", f"model.layers.{n}."): t.clone() for name, t in tensors.items()
                 if name.startswith("model.layers.0.")}
        extra[f"model.layers.{n}.eh_proj.weight"] = torch.zeros(4, 4)
        save_file({**tensors, **extra}, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
        config = json.loads((folder / "config.json").read_text())
        (tmp_path / "config.json").write_text(json.dumps({**config, "num_nextn_predict_layers": 1}))
        loaded = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path)
        inputs = self.inputs()
        assert_outputs_close(outputs_of(loaded, inputs), outputs_of(reference, inputs), "with an MTP layer")


class SteppedDeepseekExpertsTests(DeepseekExpertsTests):
    """DeepSeek-V3's mixture under attention the CPU kernel's step runs (GLM-4.5's, dots.llm1's): the step in place of
    the refusal."""

    test_the_cpu_kernel_refuses_the_family_and_generation_runs_the_layers = None

    @torch.inference_mode()
    def test_the_cpu_kernel_steps_with_the_references_logits_and_tokens(self, tiny):
        """The kernel's step runs the layers with DeepSeek-V3's grouped choice, the scaled weights and the shared
        experts, and generation with it gives the reference's tokens."""
        _, reference, model = tiny
        assert_kernel_steps_and_generates_as_the_reference(model, reference, self.ids(1, 12, seed=9))


def assert_correction_biases_steer_the_choice(model, reference, ids):
    """Zeroing the routers' correction biases changes which experts run, so the logits move far from the
    reference's."""
    ids, mask = padded_batch(ids)
    biases = [m.e_score_correction_bias for m in model.modules() if hasattr(m, "e_score_correction_bias")]
    assert biases
    saved = [b.clone() for b in biases]
    try:
        for b in biases:
            b.zero_()
        moved = model(ids, attention_mask=mask).logits - reference(ids, attention_mask=mask).logits
        assert moved.abs().max() > 1e-2
    finally:
        for b, s in zip(biases, saved):
            b.copy_(s)


class LatentAttentionTests(DeepseekExpertsTests):
    """What both DeepSeek families check beyond the routed experts' tests."""

    @torch.inference_mode()
    def test_the_cache_holds_the_compressed_latents_as_the_references(self, tiny):
        _, reference, model = tiny
        ids = self.ids(1, 6)
        ours, theirs = model(ids, use_cache=True).past_key_values, reference(ids, use_cache=True).past_key_values
        config = model.config
        for i in range(config.num_hidden_layers):
            keys, values = ours.keys[i][:, :, :6], ours.values[i][:, :, :6]
            assert keys.shape == (1, 1, 6, config.kv_lora_rank) and values.shape == (1, 1, 6, config.qk_rope_head_dim)
            torch.testing.assert_close(keys, theirs.layers[i].keys, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(values, theirs.layers[i].values, atol=1e-5, rtol=1e-4)


class TestDeepseekV3(LatentAttentionTests):
    REFERENCE_CONFIG = "DeepseekV3Config"
    MODEL_TYPE = "deepseek_v3"
    TINY = dict(
        vocab_size=128, hidden_size=32, intermediate_size=48, moe_intermediate_size=16, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256, n_routed_experts=8, n_group=4,
        topk_group=2, num_experts_per_tok=2, n_shared_experts=2, first_k_dense_replace=1, kv_lora_rank=16,
        q_lora_rank=24, qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=12, routed_scaling_factor=1.7,
        rms_norm_eps=1e-5, pad_token_id=0, bos_token_id=1, eos_token_id=2, initializer_range=0.15,
        rope_parameters={"rope_type": "default", "rope_theta": 1000.0},
    )
    VARIANTS = {
        "q-lora-interleaved": {},
        "direct-q-halves-yarn-biased-tied": dict(
            q_lora_rank=None, rope_interleave=False, rope_parameters=YARN, attention_bias=True, norm_topk_prob=False,
            first_k_dense_replace=0, tie_word_embeddings=True,
        ),
    }
    HEADS = {
        "DeepseekV3ForCausalLM": "AutoModelForCausalLM",
        "DeepseekV3Model": "AutoModel",
        "DeepseekV3ForSequenceClassification": "AutoModelForSequenceClassification",
        "DeepseekV3ForTokenClassification": "AutoModelForTokenClassification",
    }

    def test_auto_classes_pick_the_deepseek_v3_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is DeepseekV3Config
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is DeepseekV3ForCausalLM
        with pytest.raises(ValueError, match="no question-answering class for 'deepseek_v3'"):
            openformers.AutoModelForQuestionAnswering.from_pretrained(folder)

    @torch.inference_mode()
    def test_the_correction_biases_steer_the_choice_only(self, tiny):
        _, reference, model = tiny
        assert_correction_biases_steer_the_choice(model, reference, self.ids(2, 9, seed=7))


def test_deepseek_v3_config_defaults_match_the_reference():
    ours, theirs = DeepseekV3Config(), transformers.DeepseekV3Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "n_shared_experts", "n_routed_experts", "routed_scaling_factor",
        "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "v_head_dim", "qk_nope_head_dim", "n_group", "topk_group",
        "num_experts_per_tok", "first_k_dense_replace", "norm_topk_prob", "hidden_act", "max_position_embeddings",
        "initializer_range", "rms_norm_eps", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings",
        "rope_interleave", "attention_bias", "attention_dropout", "head_dim", "qk_head_dim", "num_local_experts",
        "num_mtp_layers", "output_router_logits", "pretraining_tp",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None


# DeepSeek-V3's config.json (its own rope_scaling spelling, rope_theta at the top level).
DEEPSEEK_V3 = {
    "architectures": ["DeepseekV3ForCausalLM"], "attention_bias": False, "attention_dropout": 0.0, "bos_token_id": 0,
    "eos_token_id": 1, "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168,
    "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512, "max_position_embeddings": 163840,
    "model_type": "deepseek_v3", "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8,
    "n_routed_experts": 256, "n_shared_experts": 1, "norm_topk_prob": True, "num_attention_heads": 128,
    "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128, "num_nextn_predict_layers": 1,
    "q_lora_rank": 1536, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "rms_norm_eps": 1e-06,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0, "mscale_all_dim": 1.0,
                     "original_max_position_embeddings": 4096, "type": "yarn"},
    "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid", "tie_word_embeddings": False,
    "topk_group": 4, "topk_method": "noaux_tc", "torch_dtype": "bfloat16", "use_cache": True, "v_head_dim": 128,
    "vocab_size": 129280,
}


def test_deepseek_v3_config_reads_as_the_reference_reads_it(tmp_path):
    """Its sizes at one layer, and its YaRN tables and softmax scale against the reference's."""
    from openformers.models.deepseek_v3 import softmax_scale
    from openformers.models.layers import RotaryEmbedding

    (tmp_path / "config.json").write_text(json.dumps({**DEEPSEEK_V3, "num_hidden_layers": 4}))
    ours, theirs = openformers.AutoConfig.from_pretrained(tmp_path), transformers.AutoConfig.from_pretrained(tmp_path)
    assert_same_attributes(ours, theirs, ("hidden_size", "n_routed_experts", "num_nextn_predict_layers", "head_dim",
                                          "q_lora_rank", "n_group", "first_k_dense_replace", "max_position_embeddings"))
    attention = transformers.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3Attention(theirs, 0)
    assert softmax_scale(ours) == pytest.approx(attention.scaling, rel=1e-12)
    rotary = transformers.models.deepseek_v3.modeling_deepseek_v3.DeepseekV3RotaryEmbedding(theirs)
    positions = torch.arange(0, 8192, 97)[None]
    cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    table = RotaryEmbedding(ours.head_dim, ours.rope_theta, ours.rope_scaling, 8192)
    our_cos, our_sin = table(positions, torch.float32)
    torch.testing.assert_close(our_cos[:, 0], cos)
    half = ours.head_dim // 2
    torch.testing.assert_close(our_sin[:, 0, :, half:], sin[..., half:])
    with torch.device("meta"):
        ours_model = AutoModelForCausalLM.from_config(ours)
        theirs_model = transformers.AutoModelForCausalLM.from_config(theirs)
    assert sum(p.numel() for p in ours_model.parameters()) == sum(p.numel() for p in theirs_model.parameters())


@pytest.mark.parametrize("values, field", [
    (dict(num_key_value_heads=2), "num_key_value_heads"),
    (dict(n_group=3), "n_group"),
    (dict(n_group=8), "n_group"),  # groups of one expert: a group scores its two best
    (dict(topk_group=5), "topk_group"),
    (dict(num_experts_per_tok=9), "num_experts_per_tok"),
    (dict(kv_lora_rank=0), "kv_lora_rank"),
    (dict(q_lora_rank=-1), "q_lora_rank"),
    (dict(qk_rope_head_dim=7), "head_dim"),
    (dict(first_k_dense_replace=-1), "first_k_dense_replace"),
    (dict(routed_scaling_factor=0), "routed_scaling_factor"),
    (dict(rope_scaling={"rope_type": "proportional", "factor": 2.0}), "rope_type"),
    (dict(rope_scaling={"rope_type": "yarn"}), "rope_scaling.factor"),
])
def test_deepseek_v3_bad_config_values_name_the_field(values, field):
    with pytest.raises(ValueError, match=f"{field}="):
        DeepseekV3Config(**{**TestDeepseekV3.TINY, "rope_parameters": None, **values})


class TestDeepseekV2(LatentAttentionTests):
    REFERENCE_CONFIG = "DeepseekV2Config"
    MODEL_TYPE = "deepseek_v2"
    TINY = dict(TestDeepseekV3.TINY, n_group=None, topk_group=None)
    VARIANTS = {
        "greedy-q-lora": {},
        "grouped-direct-q-yarn-biased-tied": dict(
            q_lora_rank=None, topk_method="group_limited_greedy", n_group=4, topk_group=1, rope_parameters=YARN,
            attention_bias=True, mlp_bias=True, first_k_dense_replace=0, tie_word_embeddings=True,
        ),
    }
    HEADS = {
        "DeepseekV2ForCausalLM": "AutoModelForCausalLM",
        "DeepseekV2Model": "AutoModel",
        "DeepseekV2ForSequenceClassification": "AutoModelForSequenceClassification",
    }
    HEAD_VARIANTS = ["grouped-direct-q-yarn-biased-tied"]

    def test_auto_classes_pick_the_deepseek_v2_classes(self, tiny):
        folder = tiny[0]
        assert type(openformers.AutoConfig.from_pretrained(folder)) is DeepseekV2Config
        assert type(load_quietly(AutoModelForCausalLM.from_pretrained, folder)) is DeepseekV2ForCausalLM
        with pytest.raises(ValueError, match="no token-classification class for 'deepseek_v2'"):
            openformers.AutoModelForTokenClassification.from_pretrained(folder)


def test_deepseek_v2_config_defaults_match_the_reference():
    ours, theirs = DeepseekV2Config(), transformers.DeepseekV2Config()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
        "num_attention_heads", "num_key_value_heads", "n_shared_experts", "n_routed_experts", "routed_scaling_factor",
        "kv_lora_rank", "q_lora_rank", "qk_rope_head_dim", "v_head_dim", "qk_nope_head_dim", "n_group", "topk_group",
        "topk_method", "num_experts_per_tok", "first_k_dense_replace", "norm_topk_prob", "hidden_act",
        "max_position_embeddings", "initializer_range", "rms_norm_eps", "pad_token_id", "bos_token_id",
        "eos_token_id", "tie_word_embeddings", "attention_bias", "attention_dropout", "mlp_bias", "head_dim",
        "qk_head_dim", "num_experts", "output_router_logits", "pretraining_tp",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"] and ours.rope_scaling is None
    with pytest.raises(ValueError, match="num_experts_per_tok=None"):  # the reference's default cannot route
        DeepseekV2ForCausalLM(DeepseekV2Config(**{**TestDeepseekV2.TINY, "num_experts_per_tok": None}))


@pytest.mark.parametrize("values, field", [
    (dict(topk_method="noaux_tc"), "topk_method"),
    (dict(topk_method="group_limited_greedy"), "n_group"),  # groups needed, none given
    (dict(topk_method="group_limited_greedy", n_group=3, topk_group=1), "n_group"),
    (dict(num_key_value_heads=2), "num_key_value_heads"),
    (dict(v_head_dim=0), "v_head_dim"),
])
def test_deepseek_v2_bad_config_values_name_the_field(values, field):
    with pytest.raises(ValueError, match=f"{field}="):
        DeepseekV2Config(**{**TestDeepseekV2.TINY, "rope_parameters": None, **values})


def test_tokenizer_of_a_deepseek_folder_is_the_references_class(tmp_path):
    """DeepSeek's folders hold a tokenizer.json and name LlamaTokenizerFast: AutoTokenizer picks the class the
    reference picks, and both encode alike."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    special = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=special,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    texts = ["DeepSeek routes tokens to experts.", "Latent attention caches less.", "def f(x):\n    return x"]
    tokenizer.train_from_iterator(texts * 20, trainer)
    tokenizer.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "deepseek_v3"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizerFast", "add_bos_token": True, "add_eos_token": False,
        "bos_token": special[0], "eos_token": special[1], "pad_token": special[1], "legacy": True,
    }))
    reference = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    ours = openformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(ours).__name__ == type(reference).__name__
    for text in texts:
        assert ours(text)["input_ids"] == reference(text)["input_ids"], text
