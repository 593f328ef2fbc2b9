"""PreTrainedModel's everyday API against the reference: parameter counts, embeddings, resizing, a user's own model."""

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from openformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification
from openformers import LlamaConfig, LlamaForCausalLM
from openformers import PreTrainedConfig, PreTrainedModel

transformers = pytest.importorskip("transformers")

LLAMA = dict(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)
BERT = dict(vocab_size=90, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
            max_position_embeddings=64)


def _saved(folder, reference):
    reference.eval().save_pretrained(folder)
    return reference


@pytest.fixture(scope="module", params=["tied", "untied"])
def llama(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"llama-{request.param}")
    torch.manual_seed(0)
    config = transformers.LlamaConfig(**LLAMA, tie_word_embeddings=request.param == "tied")
    return folder, _saved(folder, transformers.LlamaForCausalLM(config))


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    torch.manual_seed(0)
    return folder, _saved(folder, transformers.BertForMaskedLM(transformers.BertConfig(**BERT)))


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=80, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    return folder, _saved(folder, transformers.GPT2LMHeadModel(config))


def _pairs(llama, bert, gpt2):
    """(ours, the reference's) loaded afresh: tests may change them."""
    return [(AutoModelForCausalLM.from_pretrained(llama[0]), copy.deepcopy(llama[1])),
            (AutoModelForMaskedLM.from_pretrained(bert[0]), copy.deepcopy(bert[1])),
            (AutoModelForCausalLM.from_pretrained(gpt2[0]), copy.deepcopy(gpt2[1]))]


def test_parameter_counts_match_the_reference(llama, bert, gpt2):
    for ours, theirs in _pairs(llama, bert, gpt2):
        for model in (ours, theirs):
            model.get_input_embeddings().weight.requires_grad_(False)
        for only_trainable in (False, True):
            for exclude_embeddings in (False, True):
                options = dict(only_trainable=only_trainable, exclude_embeddings=exclude_embeddings)
                assert ours.num_parameters(**options) == theirs.num_parameters(**options), (type(ours), options)
        assert ours.get_memory_footprint() >= ours.num_parameters() * 4
        assert ours.device == torch.device("cpu") and ours.dtype == torch.float32


def test_embeddings_are_the_references(llama, bert, gpt2):
    for ours, theirs in _pairs(llama, bert, gpt2):
        torch.testing.assert_close(ours.get_input_embeddings().weight, theirs.get_input_embeddings().weight)
        torch.testing.assert_close(ours.get_output_embeddings().weight, theirs.get_output_embeddings().weight)
        tied = theirs.get_output_embeddings().weight is theirs.get_input_embeddings().weight
        assert (ours.get_output_embeddings().weight is ours.get_input_embeddings().weight) == tied
    base = AutoModel.from_pretrained(llama[0])
    assert base.get_output_embeddings() is None and base.get_input_embeddings() is base.embed_tokens


def test_set_input_embeddings_replaces_the_table(llama):
    model = AutoModelForCausalLM.from_pretrained(llama[0])
    table = nn.Embedding(LLAMA["vocab_size"], LLAMA["hidden_size"])
    model.set_input_embeddings(table)
    assert model.get_input_embeddings() is table and model.model.embed_tokens is table
    head = nn.Linear(LLAMA["hidden_size"], LLAMA["vocab_size"], bias=False)
    model.set_output_embeddings(head)
    assert model.get_output_embeddings() is head and model.lm_head is head


@pytest.mark.parametrize("mean_resizing", [True, False])
def test_resizing_the_vocabulary_like_the_reference(llama, bert, gpt2, mean_resizing):
    for ours, theirs in _pairs(llama, bert, gpt2):
        old_rows = ours.get_input_embeddings().weight.detach().clone()
        old_out = ours.get_output_embeddings().weight.detach().clone()
        tied = ours.get_output_embeddings().weight is ours.get_input_embeddings().weight
        ids = torch.randint(0, old_rows.shape[0], (2, 7), generator=torch.Generator().manual_seed(0))
        before = ours(ids).logits
        for model in (ours, theirs):
            returned = model.resize_token_embeddings(old_rows.shape[0] + 5, pad_to_multiple_of=8,
                                                     mean_resizing=mean_resizing)
            assert returned is model.get_input_embeddings()
        new_rows = ours.get_input_embeddings().weight
        assert new_rows.shape == theirs.get_input_embeddings().weight.shape and new_rows.shape[0] % 8 == 0
        assert ours.config.vocab_size == theirs.config.vocab_size == new_rows.shape[0]
        assert ours.get_output_embeddings().weight.shape == theirs.get_output_embeddings().weight.shape
        torch.testing.assert_close(new_rows[: len(old_rows)], old_rows, rtol=0, atol=0)
        torch.testing.assert_close(ours.get_output_embeddings().weight[: len(old_out)], old_out, rtol=0, atol=0)
        assert (ours.get_output_embeddings().weight is new_rows) == tied
        added = new_rows[len(old_rows):].detach()
        if mean_resizing:  # around the old rows' mean, with a spread of sqrt(1e-9) times theirs
            torch.testing.assert_close(added, old_rows.mean(0).expand_as(added), atol=1e-3, rtol=0)
        else:
            assert 0.005 < added.std() < 0.05  # the init's normal(0, initializer_range=0.02)
        after = ours(ids).logits
        assert after.shape == (*ids.shape, new_rows.shape[0])
        torch.testing.assert_close(after[..., : before.shape[-1]], before)  # old tokens' logits unchanged
    shrunk = _pairs(llama, bert, gpt2)[1][0]
    shrunk.resize_token_embeddings(50)
    assert shrunk(ids % 50).logits.shape[-1] == 50 and shrunk.cls.predictions.bias.shape == (50,)


def test_a_model_built_from_its_config_is_initialized():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**LLAMA))
    assert model.config._attn_implementation == "sdpa"
    weight = model.model.embed_tokens.weight
    assert torch.isfinite(weight).all() and 0.015 < weight.std() < 0.025  # normal(0, 0.02), not torch.empty
    assert (model.model.norm.weight == 1).all() and model.lm_head.weight.std() < 0.025


class ToyConfig(PreTrainedConfig):
    model_type = "toy-regressor"

    def __init__(self, width=8, depth=2, **kwargs):
        self.width = width
        self.depth = depth
        super().__init__(**kwargs)


class ToyModel(PreTrainedModel):
    config_class = ToyConfig
    base_model_prefix = "toy"

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(10, config.width)
        self.layers = nn.ModuleList(nn.Linear(config.width, config.width) for _ in range(config.depth))
        self.out = nn.Linear(config.width, 1)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.constant_(module.weight, 0.5)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=1.0)

    def forward(self, input_ids):
        x = self.embed(input_ids)
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return self.out(x).squeeze(-1)


def test_a_users_own_model_initializes_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    model = ToyModel(ToyConfig(width=6, depth=3))
    assert (model.layers[0].weight == 0.5).all() and model.num_parameters() == 10 * 6 + 3 * 42 + 7
    model.layers[1].weight.data.add_(torch.randn(6, 6))  # trained a little
    model.save_pretrained(tmp_path)
    loaded = ToyModel.from_pretrained(tmp_path)
    assert isinstance(loaded.config, ToyConfig) and (loaded.config.width, loaded.config.depth) == (6, 3)
    ids = torch.tensor([[1, 2, 3]])
    torch.testing.assert_close(loaded(ids), model(ids))
    assert not loaded.training and loaded.get_input_embeddings() is loaded.embed
    again = ToyModel.from_pretrained(tmp_path, depth=3, config=ToyConfig(width=6, depth=1))
    assert again.config.depth == 3


def test_attn_implementation_is_stored_on_the_config(llama):
    eager = AutoModelForCausalLM.from_pretrained(llama[0], attn_implementation="eager")
    sdpa = AutoModelForCausalLM.from_pretrained(llama[0])
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    ids = torch.randint(0, LLAMA["vocab_size"], (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    torch.testing.assert_close(eager(ids, attention_mask=mask).logits, sdpa(ids, attention_mask=mask).logits,
                               atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2'"):
        AutoModelForCausalLM.from_pretrained(llama[0], attn_implementation="flash_attention_2")


def test_save_pretrained_takes_the_references_options(llama, tmp_path, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(llama[0], low_cpu_mem_usage=True)
    ids = torch.randint(0, LLAMA["vocab_size"], (1, 6), generator=torch.Generator().manual_seed(2))
    model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert (tmp_path / "bin" / "pytorch_model.bin").is_file()
    assert not (tmp_path / "bin" / "model.safetensors").exists()
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "bin").eval()
    torch.testing.assert_close(AutoModelForCausalLM.from_pretrained(tmp_path / "bin")(ids).logits, theirs(ids).logits)
    model.save_pretrained(tmp_path / "elsewhere", is_main_process=False)
    assert not (tmp_path / "elsewhere").exists()
    zeroed = {name: torch.zeros_like(value) for name, value in model.state_dict().items()}
    model.save_pretrained(tmp_path / "given", state_dict=zeroed)
    assert (AutoModelForCausalLM.from_pretrained(tmp_path / "given").model.norm.weight == 0).all()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        model.save_pretrained(tmp_path / "pushed", push_to_hub=True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        model.push_to_hub("someone/tiny")
    assert not (tmp_path / "pushed").exists()
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(ValueError, match="a_file is a file; pass a folder to save the model in"):
        model.save_pretrained(tmp_path / "a_file")


def test_from_pretrained_takes_a_generation_config(llama):
    from openformers import GenerationConfig

    chosen = GenerationConfig(max_new_tokens=3, do_sample=False)
    model = AutoModelForCausalLM.from_pretrained(llama[0], generation_config=chosen)
    assert model.generation_config is chosen
    assert model.generate(torch.tensor([[1, 2, 3]])).shape == (1, 6)


def test_the_small_attributes_the_trainer_and_pipelines_read(llama):
    model = AutoModelForCausalLM.from_pretrained(llama[0])
    theirs = llama[1]
    assert model.main_input_name == theirs.main_input_name == "input_ids"
    assert model.name_or_path == str(llama[0]) and model.config.name_or_path == str(llama[0])
    assert model.can_generate() and not AutoModel.from_pretrained(llama[0]).can_generate()
    assert theirs.can_generate() and not transformers.LlamaModel(theirs.config).can_generate()
    model.get_input_embeddings().weight.requires_grad_(False)
    ids = torch.tensor([[1, 2, 3]])
    assert not model.get_input_embeddings()(ids).requires_grad
    model.enable_input_require_grads()
    assert model.get_input_embeddings()(ids).requires_grad
    model.disable_input_require_grads()
    assert not model.get_input_embeddings()(ids).requires_grad


def test_push_to_hub_uploads_what_save_pretrained_writes(llama, monkeypatch):
    """The upload goes through huggingface_hub's HfApi (replaced here by a recorder: no network in tests)."""
    import huggingface_hub

    uploads = []

    class RecordingApi:
        def create_repo(self, repo_id, private=None, token=None, exist_ok=False):
            assert exist_ok
            return type("RepoUrl", (), {"repo_id": f"someone/{repo_id.split('/')[-1]}"})()

        def upload_folder(self, repo_id, folder_path, commit_message, token=None):
            uploads.append((repo_id, sorted(p.name for p in Path(folder_path).iterdir()), commit_message))

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    model = AutoModelForCausalLM.from_pretrained(llama[0])
    model.push_to_hub("tiny-llama", commit_message="first")
    model.config.push_to_hub("tiny-llama")
    assert uploads[0] == ("someone/tiny-llama", ["config.json", "generation_config.json", "model.safetensors"], "first")
    assert uploads[1] == ("someone/tiny-llama", ["config.json"], "Upload config")


@torch.inference_mode()
def test_from_pretrained_passes_model_arguments_to_the_class(bert):
    model = AutoModel.from_pretrained(bert[0], add_pooling_layer=False)
    theirs = transformers.AutoModel.from_pretrained(bert[0], add_pooling_layer=False).eval()
    assert model.pooler is None and theirs.pooler is None
    ids = torch.randint(0, BERT["vocab_size"], (2, 6), generator=torch.Generator().manual_seed(1))
    ours_out, theirs_out = model(ids), theirs(ids)
    assert list(ours_out.keys()) == list(theirs_out.keys()) == ["last_hidden_state"]
    torch.testing.assert_close(ours_out.last_hidden_state, theirs_out.last_hidden_state)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['add_pooling_layr'\].*arguments of BertModel") \
            as unrelated:
        AutoModel.from_pretrained(bert[0], add_pooling_layr=False)
    assert "bitsandbytes" not in str(unrelated.value)
    for option in ("load_in_8bit", "load_in_4bit"):  # tutorials' bitsandbytes options: our own quantization instead
        with pytest.raises(TypeError, match=rf"\['{option}'\].*bitsandbytes options.*quantization=\"int4\""):
            AutoModel.from_pretrained(bert[0], **{option: True})


def test_output_loading_info_reports_like_the_reference(llama, tmp_path):
    AutoModelForCausalLM.from_pretrained(llama[0]).save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="newly initialized"):
        model, info = AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    _, theirs = transformers.AutoModelForSequenceClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert set(info) == set(theirs) == {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"}
    assert info["missing_keys"] == set(theirs["missing_keys"]) == {"score.weight"}
    assert info["unexpected_keys"] == set(theirs["unexpected_keys"])  # the untied LM head's weight, when stored
    assert info["mismatched_keys"] == set() and info["error_msgs"] == []
    plain = AutoModelForCausalLM.from_pretrained(tmp_path, output_loading_info=False)
    assert isinstance(plain, LlamaForCausalLM)


def test_a_models_layers_are_the_entries_of_its_outermost_module_lists():
    # One rule for every family: what quantized loading reads one at a time and FSDP shards apart.
    from openformers import AlbertConfig, AlbertModel, MixtralConfig, MixtralForCausalLM, T5Config
    from openformers import T5ForConditionalGeneration
    from openformers.models.base import named_layers

    mixtral = MixtralForCausalLM.from_config(MixtralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2))
    # The experts are parts of a layer, not layers.
    assert named_layers(mixtral) == [(f"model.layers.{i}", mixtral.model.layers[i]) for i in range(2)]
    t5 = T5ForConditionalGeneration.from_config(T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=2,
                                                         num_decoder_layers=3, num_heads=4))
    # Encoder and decoder blocks, not a block's sublayers (a list of different classes).
    assert [name for name, _ in named_layers(t5)] == [*(f"encoder.block.{i}" for i in range(2)),
                                                      *(f"decoder.block.{i}" for i in range(3))]
    albert = AlbertModel.from_config(AlbertConfig(vocab_size=64, embedding_size=8, hidden_size=16, num_hidden_layers=4,
                                                  num_attention_heads=2, intermediate_size=32, num_hidden_groups=2,
                                                  inner_group_num=2))
    groups = albert.encoder.albert_layer_groups  # each group's own list of layers is inside it
    assert named_layers(albert) == [(f"encoder.albert_layer_groups.{i}", group) for i, group in enumerate(groups)]


def test_an_encoders_base_model_refuses_a_cache_and_labels():
    from openformers import DistilBertConfig, DistilBertModel
    from openformers.generation.cache import DynamicCache

    model = DistilBertModel.from_config(DistilBertConfig(vocab_size=99, dim=32, n_layers=1, n_heads=4, hidden_dim=37))
    ids = torch.tensor([[5, 6, 7]])
    assert model(ids).last_hidden_state.shape == (1, 3, 32)
    with pytest.raises(ValueError, match="DistilBertModel is an encoder and keeps no cache"):
        model(ids, past_key_values=DynamicCache())
    with pytest.raises(ValueError, match="DistilBertModel has no head to compute a loss with"):
        model(ids, labels=ids)
    with pytest.raises(ValueError, match="exactly one of input_ids"):
        model(ids, inputs_embeds=torch.zeros(1, 3, 32))


TINY_CONFIGS = {  # model_type -> a tiny config's values, for the embedding lookups of every family
    "llama": dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                  num_key_value_heads=1),
    "gpt2": dict(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32),
    "gpt_neox": dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
    "falcon": dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2),
    "bert": dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
    "distilbert": dict(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32),
    "mpnet": dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32),
    "modernbert": dict(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, pad_token_id=0,
                       num_attention_heads=2),
    "deberta-v2": dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32, type_vocab_size=2),
    "t5": dict(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2),
    "bart": dict(vocab_size=50, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                 decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32),
}


@pytest.mark.parametrize("model_type", TINY_CONFIGS)
def test_ids_outside_the_embedding_table_name_the_argument_and_the_range(model_type):
    from openformers import AutoConfig

    model = AutoModel.from_config(AutoConfig.for_model(model_type, **TINY_CONFIGS[model_type])).eval()
    good = torch.tensor([[3, 4, 5]])
    # torch's own IndexError, "index out of range in self", names neither the argument nor the table's size
    arguments = {"decoder_input_ids": good} if model_type in ("t5", "bart") else {}
    for bad in (50, -1):
        with pytest.raises(IndexError, match=rf"^input_ids holds {bad}, outside the 50 ids .* \(0 to 49\): ids made "
                                             r"by another model's tokenizer"):
            model(torch.tensor([[3, bad, 5]]), **arguments)
    if model_type in ("t5", "bart"):
        with pytest.raises(IndexError, match=r"^decoder_input_ids holds 50, outside the 50 ids"):
            model(good, decoder_input_ids=torch.tensor([[3, 50]]))
    if model_type in ("bert", "deberta-v2"):
        with pytest.raises(IndexError, match=r"^token_type_ids holds 2, outside the 2 ids .* type_vocab_size"):
            model(good, token_type_ids=torch.tensor([[0, 2, 1]]))
    with pytest.raises(TypeError, match=r"^input_ids must be a torch.Tensor .* got list; use tokenizer"):
        model([[3, 4, 5]], **arguments)


def test_ids_outside_the_vocabulary_stop_the_compiled_step_with_the_same_error():
    from openformers import AutoConfig, kernels

    config = AutoConfig.for_model("llama", **TINY_CONFIGS["llama"])
    model = AutoModelForCausalLM.from_config(config).eval()
    if not kernels.accelerate(model):
        pytest.skip("the decoding kernels are not available here")
    with torch.inference_mode():
        cached = model(torch.tensor([[3, 4, 5]]), use_cache=True).past_key_values
        with pytest.raises(IndexError, match=r"^input_ids holds 50, outside the 50 ids"):  # a cached step
            model(torch.tensor([[50]]), past_key_values=cached, use_cache=True)
        with pytest.raises(IndexError, match=r"^input_ids holds 77, outside the 50 ids"):  # a prompt's step
            model.generate(torch.tensor([[3, 77, 5]]), max_new_tokens=2, do_sample=False)
