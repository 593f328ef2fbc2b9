"""A tiny BART made by the reference, with a byte-level BPE tokenizer trained here, saved in one folder: what the
seq2seq training and pipeline tests load with both libraries."""

import json
from pathlib import Path

import torch

TEXTS = [
    "The cat sat on the mat.", "A quick brown fox jumps over the lazy dog.", "Summaries are shorter than articles.",
    "translate English to French: How old are you?", "Hello world! Don't panic.", "numbers 1 2 3 and words",
]


def bart_vocabulary_folder(folder: Path, texts: list[str], vocab_size: int) -> Path:
    """vocab.json and merges.txt of a byte-level BPE trained on `texts` with RoBERTa's special tokens, beside a
    config.json that says "bart" (so both libraries' AutoTokenizer read the folder as BART's tokenizer)."""
    import tokenizers
    from tokenizers import models, pre_tokenizers, trainers

    folder.mkdir(parents=True, exist_ok=True)
    bpe = tokenizers.Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    bpe.train_from_iterator(texts * 30 + [json.__doc__] * 3, trainer)
    bpe.model.save(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "bart"}))
    return folder


def tiny_bart_folder(folder: Path, **config) -> Path:
    """Write a tokenizer (vocab.json, merges.txt, tokenizer files as the reference saves them) and a random
    BartForConditionalGeneration sized to it (fixed seed, biases and norms drawn) into `folder`."""
    import transformers

    bart_vocabulary_folder(folder, TEXTS, vocab_size=320)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    options = dict(vocab_size=len(tokenizer), d_model=32, encoder_layers=2, decoder_layers=2,
                   encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=37, decoder_ffn_dim=37,
                   max_position_embeddings=300, dropout=0.0, init_std=0.5)  # large weights: varied generations
    model = transformers.BartForConditionalGeneration(transformers.BartConfig(**{**options, **config})).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith("bias"):
                parameter.normal_(std=0.1)
            elif "layer_norm" in name or "layernorm" in name:
                parameter.normal_(mean=1.0, std=0.1)
        model.final_logits_bias.normal_(std=0.1)
    model.save_pretrained(folder)
    return folder


def cached_steps_and_full_pass(model, ids, mask, decoder_ids) -> tuple[torch.Tensor, torch.Tensor]:
    """The logits of `decoder_ids` fed one token at a time through an EncoderDecoderCache (the encoder run once),
    and those of one pass without a cache."""
    from openformers.generation import DynamicCache, EncoderDecoderCache

    full = model(ids, mask, decoder_input_ids=decoder_ids, use_cache=False).logits
    encoder_outputs = model.get_encoder()(ids, mask)
    cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
    steps = [model(attention_mask=mask, decoder_input_ids=decoder_ids[:, t:t + 1], encoder_outputs=encoder_outputs,
                   past_key_values=cache).logits for t in range(decoder_ids.shape[1])]
    return torch.cat(steps, dim=1), full


def assert_decoder_inputs_wanted(reference, model, ids) -> None:
    """A translation model's base model, as the reference's, refuses to run without decoder inputs (it does not shift
    input_ids into them)."""
    import pytest

    with pytest.raises(ValueError):
        reference(input_ids=ids)
    with pytest.raises(ValueError, match="decoder_input_ids"):
        model(input_ids=ids)


def write_checkpoint(reference, folder: Path, **extra: torch.Tensor) -> dict[str, torch.Tensor]:
    """The reference's config and every tensor of its state dict (tied copies included), with `extra` ones, in one
    model.safetensors: what older converted checkpoints hold. Returns the tensors written."""
    from safetensors.torch import save_file

    reference.config.save_pretrained(folder)
    tensors = {name: tensor.clone().contiguous() for name, tensor in {**reference.state_dict(), **extra}.items()}
    save_file(tensors, folder / "model.safetensors")
    return tensors


def reloaded_both_ways(model, folder: Path, name: str):
    """`model` saved into `folder`, then loaded by the reference's class `name` (no key missing, unexpected or of
    another shape) and by ours (without a warning): (theirs, ours)."""
    import warnings

    import transformers

    import openformers
    from encoder_parity import load_quietly

    model.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference's own notices
        theirs, info = getattr(transformers, name).from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    return theirs.eval(), load_quietly(getattr(openformers, name).from_pretrained, folder)


def assert_padded_row_gives_what_it_gives_alone(model, ids, mask, decoder_ids, short: int, atol=1e-5) -> None:
    """The second row of `ids`, right-padded after `short` tokens, gives in the batch the logits it gives alone."""
    batched = model(ids, mask, decoder_input_ids=decoder_ids).logits
    alone = model(ids[1:, :short], decoder_input_ids=decoder_ids[1:]).logits
    torch.testing.assert_close(batched[1:], alone, atol=atol, rtol=atol)


def assert_hidden_states_and_attentions_match(model, reference, inputs: dict, layers: int) -> None:
    """Every layer's hidden states (the embeddings' first) and attention weights of both stacks, as the reference's
    (made with attn_implementation="eager")."""
    ours = model(**inputs, output_hidden_states=True, output_attentions=True)
    theirs = reference(**inputs, output_hidden_states=True, output_attentions=True)
    for key in ("encoder_hidden_states", "decoder_hidden_states", "encoder_attentions", "decoder_attentions",
                "cross_attentions"):
        assert len(ours[key]) == len(theirs[key]) == layers + key.endswith("hidden_states")
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-4, rtol=1e-4, msg=key)


def right_padded_ids(low: int, high: int, length: int, short: int, pad: int, eos: int, seed: int = 1):
    """Two rows of `length` random ids in [low, high), each ending in `eos`, the second right-padded with `pad` after
    `short` tokens: (ids, attention_mask)."""
    ids = torch.randint(low, high, (2, length), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    ids[:, -1], ids[1, short - 1] = eos, eos
    ids[1, short:], mask[1, short:] = pad, 0
    return ids, mask


def bart_head_inputs(head: str, ids, mask, decoder_ids) -> dict:
    """A BART-like head's inputs: a causal LM's labels (the ids, padding ignored), a seq2seq LM's labels (whose shift
    right the model makes its decoder's inputs), or the base model's `decoder_ids`."""
    if head.endswith("ForCausalLM"):
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}
    if head.endswith("ForConditionalGeneration"):
        return {"input_ids": ids, "attention_mask": mask, "labels": ids[:, :5].roll(1, 1)}
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder_ids}


def t5_head_inputs(head: str, vocab_size: int) -> dict:
    """Two rows, the second right-padded (as T5 tokenizers pad), each ending in EOS (id 1), with the labels of the
    T5-like head named by `head` (the class name after the family prefix)."""
    ids, mask = right_padded_ids(2, vocab_size, 9, 6, pad=0, eos=1)
    batch = {"input_ids": ids, "attention_mask": mask}
    if head == "ForConditionalGeneration":
        labels = torch.randint(2, vocab_size, (2, 5), generator=torch.Generator().manual_seed(2))
        labels[1, 3:] = -100
        batch["labels"] = labels
    elif head == "ForSequenceClassification":
        batch["labels"] = torch.tensor([2, 0])
    elif head == "ForTokenClassification":
        batch["labels"] = (ids % 3).masked_fill(mask == 0, -100)
    elif head == "ForQuestionAnswering":
        batch.update(start_positions=torch.tensor([2, 11]), end_positions=torch.tensor([4, 6]))
    elif head == "Model":
        batch["decoder_input_ids"] = ids[:, :4]
    return batch
