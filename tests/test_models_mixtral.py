"""Mixtral against the reference: tiny random models made by transformers, saved and loaded both ways.

TestMixtral runs the common decoder and routed-experts tests (tests/decoder_suite.py: every head on a padded batch,
the router scores and load-balancing loss, generation, caches, left padding, saving both ways, a training step's
gradients with the load-balancing loss, bfloat16) over MixtralExpertsTests, what the families built on
mixtral.SparseMoeBlock share (the base model's router scores, only the chosen experts running, the reference's
in-memory layout, int8 routers, the CPU kernel's step), and adds Mixtral's own: jitter noise, the router scores asked
for in the config, a compiled block, every expert per token; then its config and GGUF files. The helpers here (what
mixtures of experts share, beyond tests/decoder_parity.py) serve tests/test_models_qwen3_moe.py,
test_models_qwen2moe.py and others too.
"""

import json
import warnings

import numpy as np
import pytest
import torch

import openformers
from decoder_parity import (
    add_decoder_metadata,
    assert_decoding_step_gives_the_references_logits,
    assert_outputs_close,
    assert_same_attributes,
    finish_gguf,
    generation_inputs,
    head_inputs,
    llama_cpp_tensors,
    load_quietly,
    load_saved,
    outputs_of,
    padded_batch,
)
from decoder_suite import RoutedExpertsTests, reference_grads_as_checkpoint
from openformers import AutoModelForCausalLM, MixtralConfig, MixtralForCausalLM
from openformers.generation.cache import DynamicCache

transformers = pytest.importorskip("transformers")

VOCAB = 128
TINY = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, max_position_embeddings=256, num_local_experts=4, num_experts_per_tok=2, pad_token_id=0,
)
def ids_of(*shape, seed=1):
    return torch.randint(1, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def batch():
    """Two rows with pad id 0: the first right-padded, the second left-padded."""
    return padded_batch(ids_of(2, 9, seed=7))


def head_outputs(model, head: str, **options) -> dict:
    """Every tensor (or tuple of tensors) of the output on the padded batch with the head's labels, by name."""
    return outputs_of(model, {**head_inputs(head, *batch()), **options})


def assert_training_matches(model, reference, block, expert_names, checkpointing=False):
    """One training step's loss (with the load-balancing loss) and every gradient, against the reference's."""
    ids, mask = batch()
    labels = ids.masked_fill(mask == 0, -100)
    reference.train()
    model.train()
    if checkpointing:
        model.gradient_checkpointing_enable()
    theirs = reference(ids, attention_mask=mask, labels=labels, output_router_logits=True)
    ours = model(ids, attention_mask=mask, labels=labels, output_router_logits=True)
    torch.testing.assert_close(ours.loss, theirs.loss)
    torch.testing.assert_close(ours.aux_loss, theirs.aux_loss)
    theirs.loss.backward()
    ours.loss.backward()
    expected = reference_grads_as_checkpoint(reference, block, expert_names)
    got = {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
    assert sorted(got) == sorted(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=1e-4, msg=name)


def assert_loads_the_reference_in_memory_layout(reference, folder, head="ForCausalLM"):
    """A checkpoint of the reference's state_dict() as it is in memory (the experts fused into 3D tensors, which
    save_pretrained splits; a tied lm_head left out, as save_pretrained leaves it) loads too, as the reference loads
    it, to the same outputs."""
    from safetensors.torch import save_file

    reference.config.save_pretrained(folder)
    state = reference.state_dict()
    if reference.config.tie_word_embeddings:
        del state["lm_head.weight"]
    assert any(name.endswith("mlp.experts.gate_up_proj") for name in state)
    save_file({name: t.contiguous() for name, t in state.items()}, str(folder / "model.safetensors"))
    model = load_quietly(AutoModelForCausalLM.from_pretrained, folder)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    expected = head_outputs(reference, head)
    assert_outputs_close(head_outputs(model, head), expected, "fused layout")
    assert_outputs_close(head_outputs(theirs, head), expected, "fused layout (reference)")


def assert_int8_keeps_the_router_in_float(folder):
    """quantization="int8" packs the experts' and attention's weights but leaves each router in floating point; the
    logits stay near the float model's."""
    from openformers.kernels import Linear
    from openformers.models.mixtral import Router, SparseMoeBlock

    plain = AutoModelForCausalLM.from_pretrained(folder)
    packed = AutoModelForCausalLM.from_pretrained(folder, quantization="int8")
    blocks = [m for m in packed.modules() if isinstance(m, SparseMoeBlock)]
    assert blocks and all(type(b.gate) is Router and b.gate.weight.dtype == torch.float32 for b in blocks)
    expert_layers = [m for b in blocks for m in b.experts.modules() if isinstance(m, torch.nn.Linear)]
    assert expert_layers and all(isinstance(m, Linear) and m.scale is not None for m in expert_layers)
    ids, mask = batch()
    torch.testing.assert_close(packed(ids, attention_mask=mask).logits, plain(ids, attention_mask=mask).logits,
                               atol=2e-2, rtol=0)


def assert_reads_a_real_config_as_the_reference(folder, values: dict, fields: tuple[str, ...]):
    """A released checkpoint's config.json (its sizes, at one layer) gives the reference's values and, built on the
    meta device, as many parameters as the reference's model."""
    (folder / "config.json").write_text(json.dumps({**values, "num_hidden_layers": 1}))
    ours, theirs = openformers.AutoConfig.from_pretrained(folder), transformers.AutoConfig.from_pretrained(folder)
    assert_same_attributes(ours, theirs, fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(ours)
        reference = transformers.AutoModelForCausalLM.from_config(theirs)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())


def experts_run_per_step(model, ids) -> list[int]:
    """How many experts ran in each sparse layer for one forward of `ids`."""
    from openformers.models.mixtral import SparseMoeBlock

    counts = []
    for block in (m for m in model.modules() if isinstance(m, SparseMoeBlock)):
        ran = []
        handles = [expert.register_forward_hook(lambda *_, ran=ran: ran.append(1)) for expert in block.experts]
        counts.append((ran, handles))
    model(ids)
    for _, handles in counts:
        for handle in handles:
            handle.remove()
    return [len(ran) for ran, _ in counts]


def add_gguf_tensors(writer, reference, names: dict, permute_heads: bool):
    """The reference's weights as llama.cpp's converter writes them: its names, each layer's experts stacked into one
    tensor per projection (gate, up, down), and for "llama" files the q/k rows permuted as its converter does."""
    for name, gguf_name, tensor in llama_cpp_tensors(reference, names, permute_heads):
        w = tensor.numpy()
        layer = name.replace("model.layers.", "blk.").rpartition(".mlp.")[0]
        if name.endswith("mlp.experts.gate_up_proj"):
            gate, up = np.split(w, 2, axis=1)
            writer.add_tensor(f"{layer}.ffn_gate_exps.weight", np.ascontiguousarray(gate))
            writer.add_tensor(f"{layer}.ffn_up_exps.weight", np.ascontiguousarray(up))
        elif name.endswith("mlp.experts.down_proj"):
            writer.add_tensor(f"{layer}.ffn_down_exps.weight", w)
        else:
            writer.add_tensor(gguf_name, w)


def write_moe_gguf(writer, reference, names: dict, permute_heads: bool):
    """A mixture of experts' GGUF file: a Llama-style decoder's metadata, how many experts each token uses, and the
    weights as `add_gguf_tensors` writes them."""
    add_decoder_metadata(writer, reference.config)
    writer.add_layer_norm_rms_eps(reference.config.rms_norm_eps)
    writer.add_expert_used_count(reference.config.num_experts_per_tok)
    add_gguf_tensors(writer, reference, names, permute_heads)
    finish_gguf(writer)


class MixtralExpertsTests(RoutedExpertsTests):
    """What the families built on mixtral.SparseMoeBlock (Mixtral, Qwen3-MoE, Qwen2-MoE) check beyond the routed
    experts' common tests."""

    @torch.inference_mode()
    def test_the_base_model_returns_the_router_logits_as_the_reference(self, tiny):
        """The base model (loaded from a causal LM's folder, as the reference loads it) returns the hidden state and
        the router scores, as a tuple too."""
        folder = tiny[0]
        ids, mask = padded_batch(self.ids(2, 9, seed=7))
        model = openformers.AutoModel.from_pretrained(folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the reference reports the lm_head it leaves out
            reference = transformers.AutoModel.from_pretrained(folder).eval()
        ours = model(ids, mask, output_router_logits=True, return_dict=False)
        theirs = reference(ids, mask, output_router_logits=True, use_cache=False, return_dict=False)
        assert len(ours) == len(theirs) == 2  # the hidden state and the router logits
        torch.testing.assert_close(ours[0], theirs[0], atol=1e-4, rtol=1e-4)
        for got, expected in zip(ours[1], theirs[1], strict=True):
            torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
        assert model(ids, mask).router_logits is None  # not asked for, and the config says no

    @torch.inference_mode()
    def test_only_the_chosen_experts_run_in_the_sparse_layers(self, tiny):
        config = tiny[2].config
        sparse = sum(config.is_sparse(i) for i in range(config.num_hidden_layers))
        # one token: its num_experts_per_tok experts in each sparse layer, no others
        assert experts_run_per_step(tiny[2], self.ids(1, 1)) == [config.num_experts_per_tok] * sparse
        assert all(n <= config.num_experts for n in experts_run_per_step(tiny[2], self.ids(2, 9)))

    @torch.inference_mode()
    def test_a_checkpoint_in_the_reference_in_memory_layout_loads(self, tiny, tmp_path):
        assert_loads_the_reference_in_memory_layout(tiny[1], tmp_path)

    @torch.inference_mode()
    def test_int8_quantization_keeps_the_router_in_float(self, tiny):
        assert_int8_keeps_the_router_in_float(tiny[0])

    @torch.inference_mode()
    def test_the_cpu_kernels_decoding_step_routes_as_the_reference(self, tiny):
        _, reference, model = tiny
        assert_decoding_step_gives_the_references_logits(model, reference, self.ids(1, 12, seed=9), prefill=3)


class TestMixtral(MixtralExpertsTests):
    REFERENCE_CONFIG = "MixtralConfig"
    TINY = TINY
    VARIANTS = {
        "untied": {},
        "tied-top1": dict(tie_word_embeddings=True, num_experts_per_tok=1),
        "windowed": dict(sliding_window=4),
    }
    HEADS = {
        "MixtralModel": "AutoModel",
        "MixtralForCausalLM": "AutoModelForCausalLM",
        "MixtralForSequenceClassification": "AutoModelForSequenceClassification",
        "MixtralForTokenClassification": "AutoModelForTokenClassification",
        "MixtralForQuestionAnswering": "AutoModelForQuestionAnswering",
    }
    # the load-balancing loss in the training loss, weighed enough that a wrong one moves the loss and gradients
    TRAINING_OVERRIDES = dict(router_aux_loss_coef=0.5, output_router_logits=True)
    EXPERT_BLOCK = "block_sparse_moe"
    EXPERT_NAMES = ("w1", "w3", "w2")

    def test_router_jitter_noise_draws_as_the_reference_while_training(self, tmp_path):
        reference = self.reference(router_jitter_noise=0.1)
        model = load_saved(reference, tmp_path)
        ids, mask = batch()
        logits = []
        for m in (reference, model):
            torch.manual_seed(3)
            logits.append(m.train()(ids, attention_mask=mask).logits)
        torch.testing.assert_close(logits[1], logits[0], atol=1e-4, rtol=1e-4)
        assert not torch.allclose(model.eval()(ids, attention_mask=mask).logits, logits[1])  # the noise is on

    @torch.inference_mode()
    def test_generate_with_output_router_logits_in_the_config_gives_the_same_tokens(self, tiny):
        """Each step then also scores the load-balancing loss over its new tokens (the mask's last columns), where
        the reference's generate fails on the mask that covers the cached positions too."""
        folder, reference, _ = tiny
        model = AutoModelForCausalLM.from_pretrained(folder, output_router_logits=True)
        ids, mask = generation_inputs(ids_of)
        settings = dict(max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0)
        expected = reference.generate(ids, attention_mask=mask, **settings)
        assert model.generate(ids, attention_mask=mask, **settings).tolist() == expected.tolist()
        cache = DynamicCache()
        model(ids, attention_mask=mask, past_key_values=cache)
        step = model(ids[:, -1:], attention_mask=torch.cat([mask, mask[:, -1:]], dim=1), past_key_values=cache)
        assert step.aux_loss.isfinite() and all(t.shape[0] == 2 for t in step.router_logits)

    @torch.inference_mode()
    def test_a_compiled_block_keeps_its_graphs_whatever_the_routing(self, tiny):
        """torch.compile (a static cache's compiled step) runs the experts eagerly between two graphs, instead of
        tracing a new graph for every new routing."""
        from torch._dynamo.utils import counters

        block = tiny[2].model.layers[0].block_sparse_moe
        torch._dynamo.reset()
        counters.clear()
        compiled = torch.compile(block, backend="eager")
        for seed in range(6):
            x = torch.randn(1, 3, TINY["hidden_size"], generator=torch.Generator().manual_seed(seed))
            for got, expected in zip(compiled(x), block(x)):
                torch.testing.assert_close(got, expected)
        assert counters["stats"]["unique_graphs"] == 2  # the router's, and the reshape after the experts

    @torch.inference_mode()
    def test_every_expert_per_token_matches_the_reference(self, tmp_path):
        """num_experts_per_tok == num_local_experts: every expert runs for every token."""
        reference = self.reference(num_experts_per_tok=TINY["num_local_experts"])
        model = load_saved(reference, tmp_path)
        assert experts_run_per_step(model, ids_of(1, 1)) == [TINY["num_local_experts"]] * 2
        inputs = {**self.inputs(), "output_router_logits": True}
        assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "every expert")

    @torch.inference_mode()
    def test_heads_with_output_router_logits_in_the_config_give_the_reference_outputs(self, tmp_path):
        """The classification heads ignore the router scores the config asks for, as the reference's do."""
        name = "MixtralForSequenceClassification"
        reference = self.reference(name, num_labels=3, output_router_logits=True)
        model = load_saved(reference, tmp_path, self.HEADS[name])
        inputs = self.inputs(name)
        assert_outputs_close(outputs_of(model, inputs), outputs_of(reference, inputs), "classification")


def test_config_defaults_match_the_reference():
    ours, theirs = MixtralConfig(), transformers.MixtralConfig()
    assert_same_attributes(ours, theirs, (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "sliding_window", "tie_word_embeddings",
        "bos_token_id", "eos_token_id", "num_experts_per_tok", "num_local_experts", "num_experts",
        "output_router_logits", "router_aux_loss_coef", "router_jitter_noise",
    ))
    assert ours.rope_theta == theirs.rope_parameters["rope_theta"]


# Mixtral-8x7B-v0.1's config.json.
MIXTRAL_8X7B = {
    "architectures": ["MixtralForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 1, "eos_token_id": 2,
    "hidden_act": "silu", "hidden_size": 4096, "initializer_range": 0.02, "intermediate_size": 14336,
    "max_position_embeddings": 32768, "model_type": "mixtral", "num_attention_heads": 32, "num_experts_per_tok": 2,
    "num_hidden_layers": 32, "num_key_value_heads": 8, "num_local_experts": 8, "output_router_logits": False,
    "rms_norm_eps": 1e-05, "rope_theta": 1000000.0, "router_aux_loss_coef": 0.02, "sliding_window": None,
    "tie_word_embeddings": False, "torch_dtype": "bfloat16", "transformers_version": "4.36.0.dev0", "use_cache": True,
    "vocab_size": 32000,
}


def test_mixtral_8x7b_config_reads_as_the_reference_reads_it(tmp_path):
    assert_reads_a_real_config_as_the_reference(tmp_path, MIXTRAL_8X7B, (
        "hidden_size", "intermediate_size", "num_key_value_heads", "num_local_experts",
        "num_experts_per_tok", "router_aux_loss_coef", "sliding_window", "rms_norm_eps", "max_position_embeddings",
    ))


def test_config_refuses_more_experts_per_token_than_experts():
    with pytest.raises(ValueError, match="num_experts_per_tok"):
        MixtralConfig(num_local_experts=4, num_experts_per_tok=5)
    with pytest.raises(ValueError, match="num_local_experts"):
        MixtralConfig(num_local_experts=0)
    assert MixtralConfig(num_experts=4).num_local_experts == 4  # the reference's other name


def test_heads_build_on_the_mixtral_base_model():
    config = MixtralConfig(**TINY, num_labels=2)
    for head in TestMixtral.HEADS:
        model = getattr(openformers, head)(config)
        base = model if head == "MixtralModel" else model.base_model
        assert type(base).__name__ == "MixtralModel"
        assert len(base.layers[0].block_sparse_moe.experts) == TINY["num_local_experts"]
        block = base.layers[0].block_sparse_moe  # initialized as the reference's: normal(0, 0.02)
        for weight in (block.gate.weight, block.experts[0].w1.weight, block.experts[-1].w2.weight):
            assert weight.isfinite().all() and 0.01 < weight.std() < 0.03
    assert hasattr(openformers.MixtralForQuestionAnswering(config), "model")  # the reference's name


# A GGUF written the way llama.cpp's converter writes Mixtral: architecture "llama" with experts.

GGUF_NAMES = {
    "model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output", "model.layers": "blk",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate": "ffn_gate_inp",
}


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@torch.inference_mode()
def test_gguf_written_like_llama_cpp_matches_the_original(tmp_path, tied):
    import gguf

    reference = TestMixtral.reference(tie_word_embeddings=tied)
    writer = gguf.GGUFWriter(str(tmp_path / "mixtral.gguf"), "llama")
    writer.add_expert_count(reference.config.num_local_experts)
    write_moe_gguf(writer, reference, GGUF_NAMES, permute_heads=True)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "mixtral.gguf")
    assert isinstance(model, MixtralForCausalLM) and model.config.num_local_experts == TINY["num_local_experts"]
    assert model.config.tie_word_embeddings == tied and model.generation_config.eos_token_id == 2
    assert_outputs_close(head_outputs(model, "ForCausalLM"), head_outputs(reference, "ForCausalLM"), "GGUF")
    assert openformers.AutoConfig.from_pretrained(tmp_path / "mixtral.gguf").model_type == "mixtral"
    model.save_pretrained(tmp_path / "saved")  # the split experts are tensors of their own
    assert_outputs_close(head_outputs(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "saved"),
                                    "ForCausalLM"), head_outputs(reference, "ForCausalLM"), "GGUF saved")


@torch.inference_mode()
def test_gguf_with_one_tensor_per_expert_loads(tmp_path):
    """llama.cpp converted Mixtral before April 2024 with each expert's weights apart (blk.N.ffn_gate.E.weight)."""
    import gguf

    reference = TestMixtral.reference()
    writer = gguf.GGUFWriter(str(tmp_path / "mixtral.gguf"), "llama")
    writer.add_expert_count(reference.config.num_local_experts)

    class PerExpert:  # the writer, with each stacked expert tensor written as one tensor per expert
        def __getattr__(self, name):
            return getattr(writer, name)

        def add_tensor(self, name, w):
            if "_exps." not in name:
                return writer.add_tensor(name, w)
            for e, expert in enumerate(w):
                writer.add_tensor(name.replace("_exps.", f".{e}."), np.ascontiguousarray(expert))

    write_moe_gguf(PerExpert(), reference, GGUF_NAMES, permute_heads=True)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "mixtral.gguf")
    assert_outputs_close(head_outputs(model, "ForCausalLM"), head_outputs(reference, "ForCausalLM"), "GGUF per expert")


@torch.inference_mode()
def test_gguf_with_quantized_expert_tensors_loads_them_dequantized(tmp_path):
    """Real Mixtral files quantize the stacked 3D expert tensors (here Q8_0): each expert gets its slice of them."""
    import gguf

    reference = TestMixtral.reference(intermediate_size=64)  # Q8_0 blocks of 32 along every expert tensor's rows
    writer = gguf.GGUFWriter(str(tmp_path / "mixtral.gguf"), "llama")
    writer.add_expert_count(reference.config.num_local_experts)
    stored = {}

    class QuantizedExperts:  # the writer, with the stacked expert tensors written as Q8_0 blocks
        def __getattr__(self, name):
            return getattr(writer, name)

        def add_tensor(self, name, w):
            if "_exps." not in name:
                return writer.add_tensor(name, w)
            stored[name] = gguf.quants.quantize(w, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, stored[name], raw_dtype=gguf.GGMLQuantizationType.Q8_0)

    write_moe_gguf(QuantizedExperts(), reference, GGUF_NAMES, permute_heads=True)
    model = load_quietly(AutoModelForCausalLM.from_pretrained, tmp_path / "mixtral.gguf")
    for name, kind in (("ffn_gate_exps", "w1"), ("ffn_up_exps", "w3"), ("ffn_down_exps", "w2")):
        blocks = stored[f"blk.1.{name}.weight"]
        expected = torch.from_numpy(gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q8_0))
        for e, expert in enumerate(model.model.layers[1].block_sparse_moe.experts):
            torch.testing.assert_close(getattr(expert, kind).weight, expected[e], atol=0, rtol=0)
    logits = model(ids_of(1, 6)).logits
    torch.testing.assert_close(logits, reference(ids_of(1, 6)).logits, atol=2e-2, rtol=0)
