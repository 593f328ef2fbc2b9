"""Model class names against the reference: which class each Auto class gives for each family we ship, which it
refuses, and that every model class openformers exports is a class of the reference's with the same name and
the same place in the family (its PreTrainedModel base)."""

import warnings

import pytest
import torch

import openformers

transformers = pytest.importorskip("transformers")

TINY_CONFIGS = {
    "llama": ("LlamaConfig", dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
    "mistral": ("MistralConfig", dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
    "qwen2": ("Qwen2Config", dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
    "mixtral": ("MixtralConfig", dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                      num_local_experts=4)),
    "qwen3_moe": ("Qwen3MoeConfig", dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                         moe_intermediate_size=16, num_experts=4, num_experts_per_tok=2)),
    "olmo2": ("Olmo2Config", dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
    "starcoder2": ("Starcoder2Config", dict(vocab_size=64, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)),
    "gpt2": ("GPT2Config", dict(vocab_size=64, n_positions=32, n_embd=32, n_layer=1, n_head=4)),
    "bert": ("BertConfig", dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                intermediate_size=37, max_position_embeddings=32)),
    "roberta": ("RobertaConfig", dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                      intermediate_size=37, max_position_embeddings=32)),
    "distilbert": ("DistilBertConfig", dict(vocab_size=64, dim=32, n_layers=1, n_heads=4, hidden_dim=37,
                                            max_position_embeddings=32)),
    "xlm-roberta": ("XLMRobertaConfig", dict(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=4, intermediate_size=37, max_position_embeddings=32)),
    "modernbert": ("ModernBertConfig", dict(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                            intermediate_size=37, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                            cls_token_id=1, sep_token_id=2)),
    "albert": ("AlbertConfig", dict(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                                    num_attention_heads=4, intermediate_size=37, max_position_embeddings=32)),
    "electra": ("ElectraConfig", dict(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=4, intermediate_size=37, max_position_embeddings=32)),
    "mpnet": ("MPNetConfig", dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=32)),
    "deberta-v2": ("DebertaV2Config", dict(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                           intermediate_size=37, max_position_embeddings=32, relative_attention=True,
                                           pos_att_type="p2c|c2p", position_buckets=8, share_att_key=True)),
    "bart": ("BartConfig", dict(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                                decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37,
                                max_position_embeddings=32)),
}
AUTO_CLASSES = (
    "AutoModel", "AutoModelForCausalLM", "AutoModelForMaskedLM", "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification", "AutoModelForQuestionAnswering", "AutoModelForMultipleChoice",
    "AutoModelForNextSentencePrediction", "AutoModelForPreTraining", "AutoModelForSeq2SeqLM",
)
MODEL_MODULES = ("openformers.models.llama", "openformers.models.olmo2", "openformers.models.starcoder2",
                 "openformers.models.mixtral", "openformers.models.qwen3_moe",
                 "openformers.models.gpt2", "openformers.models.bert",
                 "openformers.models.distilbert", "openformers.models.xlm_roberta", "openformers.models.modernbert",
                 "openformers.models.albert", "openformers.models.electra", "openformers.models.mpnet",
                 "openformers.models.deberta_v2", "openformers.models.bart")


@pytest.fixture(scope="module", params=list(TINY_CONFIGS))
def checkpoint(request, tmp_path_factory):
    """A base model saved by the reference: every Auto class reads it, initializing the head it lacks."""
    config_name, values = TINY_CONFIGS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    transformers.AutoModel.from_config(getattr(transformers, config_name)(**values)).save_pretrained(folder)
    return request.param, folder


def _class_name_or_refusal(auto_class, folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the newly initialized heads
        try:
            return type(auto_class.from_pretrained(folder)).__name__
        except ValueError:
            return "refused"


@pytest.mark.parametrize("auto", AUTO_CLASSES)
def test_auto_classes_pick_the_reference_class(checkpoint, auto):
    model_type, folder = checkpoint
    theirs = _class_name_or_refusal(getattr(transformers, auto), folder)
    ours = _class_name_or_refusal(getattr(openformers, auto), folder)
    assert ours == theirs, f"{auto} on a {model_type} checkpoint"


@pytest.mark.parametrize("auto", AUTO_CLASSES)
def test_auto_from_config_picks_the_reference_class(checkpoint, auto):
    model_type, folder = checkpoint
    ours_config = openformers.AutoConfig.from_pretrained(folder)
    theirs_config = transformers.AutoConfig.from_pretrained(folder)
    try:
        theirs = type(getattr(transformers, auto).from_config(theirs_config)).__name__
    except ValueError:
        with pytest.raises(ValueError):
            getattr(openformers, auto).from_config(ours_config)
        return
    assert type(getattr(openformers, auto).from_config(ours_config)).__name__ == theirs


def _exported_model_classes():
    return sorted(name for name, module in openformers._MODULE_OF.items() if module in MODEL_MODULES)


@pytest.mark.parametrize("name", _exported_model_classes())
def test_exported_model_classes_are_the_reference_classes(name):
    import importlib

    ours = getattr(openformers, name)
    assert ours is getattr(importlib.import_module(openformers._MODULE_OF[name]), name)
    assert ours.__name__ == name
    theirs = getattr(transformers, name)
    # The family's PreTrainedModel base: the same relation in both libraries.
    family_base = next(cls.__name__ for cls in theirs.__mro__ if cls.__name__.endswith("PreTrainedModel")
                       and cls.__name__ != "PreTrainedModel")
    assert family_base in {cls.__name__ for cls in ours.__mro__}
    assert issubclass(ours, openformers.PreTrainedModel)
