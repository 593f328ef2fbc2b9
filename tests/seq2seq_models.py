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
