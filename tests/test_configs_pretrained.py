"""PreTrainedConfig: the reference's common attributes, keyword arguments, and a user's own config subclass."""

import json
import subprocess
import sys

import pytest

from openformers import AutoConfig, LlamaConfig, PreTrainedConfig, PretrainedConfig

transformers = pytest.importorskip("transformers")

COMMON = ("output_hidden_states", "output_attentions", "return_dict", "use_return_dict", "num_labels", "id2label",
          "label2id", "problem_type", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings")


class MyConfig(PreTrainedConfig):
    model_type = "my-toy"

    def __init__(self, hidden=4, layers=2, **kwargs):
        self.hidden = hidden
        self.layers = layers
        super().__init__(**kwargs)


def test_both_names_are_one_class():
    assert PreTrainedConfig is PretrainedConfig and issubclass(LlamaConfig, PreTrainedConfig)


@pytest.mark.parametrize("values", [{}, {"num_labels": 3, "pad_token_id": 0}, {"tie_word_embeddings": True}])
def test_common_attributes_match_the_reference(values):
    ours, theirs = LlamaConfig(**values), transformers.LlamaConfig(**values)
    for name in COMMON:
        assert getattr(ours, name) == getattr(theirs, name), name


def test_setting_num_labels_or_id2label_relabels_like_the_reference():
    ours, theirs = LlamaConfig(), transformers.LlamaConfig()
    for config in (ours, theirs):
        config.num_labels = 4
    assert ours.id2label == theirs.id2label and ours.label2id == theirs.label2id
    for config in (ours, theirs):
        config.id2label = {0: "NEG", 1: "POS"}
    assert ours.num_labels == theirs.num_labels == 2 and ours.id2label == theirs.id2label == {0: "NEG", 1: "POS"}


def test_the_reference_keyword_arguments_are_taken():
    config = LlamaConfig(use_cache=False, torch_dtype="bfloat16", attn_implementation="eager",
                         output_hidden_states=True, return_dict=False)
    assert config.use_cache is False and config.dtype == "bfloat16" and config._attn_implementation == "eager"
    assert config.output_hidden_states and not config.use_return_dict
    config.output_attentions = True
    assert config.output_attentions
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_3'"):
        LlamaConfig(attn_implementation="flash_attention_3")


def test_runtime_switches_are_saved_only_when_changed(tmp_path):
    LlamaConfig().save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert not {"output_hidden_states", "output_attentions", "return_dict"} & set(written)
    LlamaConfig(output_hidden_states=True).save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["output_hidden_states"] is True
    assert transformers.AutoConfig.from_pretrained(tmp_path).output_hidden_states is True


def test_to_diff_dict_keeps_what_differs_from_the_defaults():
    diff = LlamaConfig(hidden_size=32, num_attention_heads=4, use_cache=False).to_diff_dict()
    assert diff["hidden_size"] == 32 and diff["model_type"] == "llama" and diff["use_cache"] is False
    assert "intermediate_size" not in diff and "rms_norm_eps" not in diff
    theirs = transformers.LlamaConfig(hidden_size=32, num_attention_heads=4, use_cache=False).to_diff_dict()
    assert {k: theirs[k] for k in ("hidden_size", "num_attention_heads", "use_cache")} == {
        k: diff[k] for k in ("hidden_size", "num_attention_heads", "use_cache")}


def test_a_users_config_subclass_saves_and_loads(tmp_path):
    config = MyConfig(hidden=8, num_labels=3, pad_token_id=0)
    assert (config.hidden, config.layers, config.num_labels, config.pad_token_id) == (8, 2, 3, 0)
    assert config.return_dict and not config.output_hidden_states
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["hidden"] == 8 and written["model_type"] == "my-toy" and len(written["id2label"]) == 3
    again = MyConfig.from_pretrained(tmp_path)
    assert type(again) is MyConfig and (again.hidden, again.num_labels) == (8, 3)
    theirs = transformers.PreTrainedConfig.from_pretrained(tmp_path)  # the reference reads what we wrote
    assert (theirs.hidden, theirs.layers, theirs.num_labels) == (8, 2, 3)
    again.extra_note = "kept"  # an attribute set after loading is saved too, as the reference does
    again.save_pretrained(tmp_path / "again")
    assert MyConfig.from_pretrained(tmp_path / "again").extra_note == "kept"


def test_a_registered_model_type_reads_with_auto_config(tmp_path):
    MyConfig(hidden=16).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="my-toy"):
        AutoConfig.from_pretrained(tmp_path)
    AutoConfig.register("my-toy", MyConfig)
    try:
        config = AutoConfig.from_pretrained(tmp_path, layers=5)
        assert type(config) is MyConfig and (config.hidden, config.layers) == (16, 5)
    finally:
        from openformers.configs import CONFIG_CLASSES

        del CONFIG_CLASSES["my-toy"]


def test_family_from_pretrained_reads_the_reference_config(tmp_path):
    transformers.MistralConfig(hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                               intermediate_size=96, num_hidden_layers=2).save_pretrained(tmp_path)
    config = LlamaConfig.from_pretrained(tmp_path, use_cache=False)
    assert config.model_type == "mistral" and config.num_key_value_heads == 2 and config.use_cache is False
    assert PreTrainedConfig.from_pretrained(tmp_path).model_type == "mistral"


class DeclaredConfig(PreTrainedConfig):
    """transformers 5's way: attributes declared with their defaults, no __init__ of its own."""

    model_type = "declared-toy"
    hidden: int = 4
    widths: list = [1, 2]


def test_a_config_declaring_its_attributes_takes_them(tmp_path):
    config = DeclaredConfig(hidden=8, pad_token_id=3)
    assert (config.hidden, config.widths, config.pad_token_id) == (8, [1, 2], 3)
    assert DeclaredConfig().hidden == 4 and DeclaredConfig().widths is not DeclaredConfig.widths
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["hidden"] == 8 and written["widths"] == [1, 2]
    assert DeclaredConfig.from_pretrained(tmp_path).hidden == 8


def test_pushing_to_the_hub_is_refused_offline_before_writing(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        LlamaConfig().save_pretrained(tmp_path / "pushed", push_to_hub=True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        LlamaConfig().push_to_hub("someone/config")
    assert not (tmp_path / "pushed").exists()


def test_a_family_config_reads_a_gguf_file_before_any_model_is_imported(smollm2_gguf):
    # A fresh interpreter: in this one the test session has long imported every model file.
    code = (
        "import sys; from openformers import LlamaConfig; "
        "assert 'openformers.models.llama' not in sys.modules; "
        f"config = LlamaConfig.from_pretrained({str(smollm2_gguf)!r}); "
        "print(config.model_type, config.num_hidden_layers)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["llama", "30"]
