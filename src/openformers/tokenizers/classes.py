"""The reference's tokenizer class names, as thin subclasses of the one tokenizer in `base.py`.

Each sets a family's defaults (special tokens, lowercasing, the layout of special tokens around a
sequence, the inputs its models take) for when it is built from vocabulary files:

    BertTokenizer("vocab.txt", do_lower_case=False)
    GPT2Tokenizer("vocab.json", "merges.txt", add_prefix_space=True)
    T5Tokenizer("spiece.model")                       # "</s>" after each sequence, 100 sentinels
    PreTrainedTokenizerFast(tokenizer_file="tokenizer.json")

`from_pretrained` on a class loads a folder as that class; `AutoTokenizer.from_pretrained` picks the
class the reference picks (tokenizer_config.json's `tokenizer_class`, else config.json's `model_type`).
As in the reference 5.x, each `...Fast` name is the same class as the name without it.
"""

import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

from .. import hub
from . import decoders, loaders, processors
from .base import PreTrainedTokenizerBase, _checked_overrides, _write_json, in_subfolder
from .pipeline import AddedToken, AddedVocabulary, Pipeline


class TokenizersBackend(PreTrainedTokenizerBase):
    """A tokenizer from a tokenizer.json (`tokenizer_file=`), a `tokenizers.Tokenizer` or one of our
    pipelines (`tokenizer_object=`), or vocabulary files; the reference's `PreTrainedTokenizerFast`."""

    def __init__(
        self,
        vocab_file: str | os.PathLike | dict | Pipeline | None = None,
        merges_file: str | os.PathLike | list | None = None,
        *,
        pipeline: Pipeline | None = None,
        tokenizer_file: str | os.PathLike | None = None,
        tokenizer_object=None,
        **kwargs,
    ):
        if isinstance(vocab_file, Pipeline):  # PreTrainedTokenizerBase's own first argument
            pipeline, vocab_file = vocab_file, None
        vocab_file = kwargs.pop("vocab", None) if vocab_file is None else vocab_file  # the reference 5.x's names
        merges_file = kwargs.pop("merges", None) if merges_file is None else merges_file
        if pipeline is None:
            config = {"tokenizer_class": self.family or "", **kwargs, "_explicit": dict(kwargs)}
            settings = _settings_from_arguments(type(self).__name__, vocab_file, merges_file, tokenizer_file,
                                                tokenizer_object, config)  # fmt: skip
            pipeline = settings.pop("pipeline")
            kwargs = {**kwargs, **settings}
        super().__init__(pipeline, **kwargs)


def _settings_from_arguments(name, vocab_file, merges_file, tokenizer_file, tokenizer_object, config) -> dict:
    """The settings of a tokenizer built from the files (or objects) given to its constructor."""
    if tokenizer_object is not None:
        if isinstance(tokenizer_object, Pipeline):
            return {"pipeline": tokenizer_object, **loaders.settings_from_config(config)}
        if not hasattr(tokenizer_object, "to_str"):
            raise TypeError(
                f"tokenizer_object must be a tokenizers.Tokenizer (anything with .to_str() giving its JSON) or a "
                f"Pipeline, got {type(tokenizer_object).__name__}."
            )
        return loaders.settings_from_tokenizer_json(json.loads(tokenizer_object.to_str()), config)
    if tokenizer_file is not None:
        return loaders.settings_from_tokenizer_json(_existing(tokenizer_file, "tokenizer_file"), config)
    if vocab_file is None:
        raise ValueError(
            f"{name} needs a vocabulary: pass vocab_file (and merges_file for byte-level BPE), tokenizer_file=, "
            f"tokenizer_object=, or load a folder with {name}.from_pretrained(path)."
        )
    if isinstance(vocab_file, (str, os.PathLike)):
        vocab_file = _existing(vocab_file, "vocab_file")
        if vocab_file.suffix == ".model":
            return loaders.settings_from_sentencepiece(vocab_file, config)
        if vocab_file.name == "tokenizer.json":
            return loaders.settings_from_tokenizer_json(vocab_file, config)
    if merges_file is not None:
        if isinstance(merges_file, (str, os.PathLike)):
            merges_file = _existing(merges_file, "merges_file")
        return loaders.settings_from_vocab_and_merges(vocab_file, merges_file, config)
    if isinstance(vocab_file, dict) or vocab_file.suffix != ".json":
        return loaders.settings_from_vocab_txt(vocab_file, config)
    raise ValueError(f"{name}: {vocab_file} is a vocab.json, which needs its merges_file (merges.txt) beside it.")


def _existing(path, name: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{name}={os.fspath(path)!r} is not a file.")
    return path


PreTrainedTokenizerFast = TokenizersBackend  # the reference 5.x's name for the same class


class BertTokenizer(TokenizersBackend):
    """BERT's WordPiece: lowercased (and accents stripped) unless `do_lower_case=False`, `[CLS] A [SEP] B [SEP]`."""

    family = "BertTokenizer"
    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]

    def __init__(
        self, vocab_file=None, do_lower_case=True, unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
        cls_token="[CLS]", mask_token="[MASK]", tokenize_chinese_chars=True, strip_accents=None, **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, do_lower_case=do_lower_case, unk_token=unk_token, sep_token=sep_token, pad_token=pad_token,
            cls_token=cls_token, mask_token=mask_token, tokenize_chinese_chars=tokenize_chinese_chars,
            strip_accents=strip_accents, **kwargs,
        )  # fmt: skip


class DistilBertTokenizer(BertTokenizer):
    """BERT's tokenizer for DistilBERT, whose models take no token_type_ids."""

    family = "DistilBertTokenizer"
    model_input_names = ["input_ids", "attention_mask"]


class GPT2Tokenizer(TokenizersBackend):
    """GPT-2's byte-level BPE from vocab.json and merges.txt; `<|endoftext|>` is BOS, EOS and unknown."""

    family = "GPT2Tokenizer"

    def __init__(
        self, vocab_file=None, merges_file=None, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
        eos_token="<|endoftext|>", pad_token=None, add_prefix_space=False, **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, merges_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
            pad_token=pad_token, add_prefix_space=add_prefix_space, **kwargs,
        )  # fmt: skip


class RobertaTokenizer(TokenizersBackend):
    """RoBERTa's byte-level BPE: `<s> A </s>` and `<s> A </s></s> B </s>`."""

    family = "RobertaTokenizer"

    def __init__(
        self, vocab_file=None, merges_file=None, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", add_prefix_space=False,
        trim_offsets=True, **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, merges_file, bos_token=bos_token, eos_token=eos_token, sep_token=sep_token,
            cls_token=cls_token, unk_token=unk_token, pad_token=pad_token, mask_token=mask_token,
            add_prefix_space=add_prefix_space, trim_offsets=trim_offsets, **kwargs,
        )  # fmt: skip


class DebertaTokenizer(TokenizersBackend):
    """DeBERTa (v1)'s byte-level BPE (GPT-2's pieces): `[CLS] A [SEP]` and `[CLS] A [SEP] [SEP] B [SEP]`, every
    token of type 0."""

    family = "DebertaTokenizer"
    model_input_names = ["input_ids", "attention_mask", "token_type_ids"]

    def __init__(
        self, vocab_file=None, merges_file=None, bos_token="[CLS]", eos_token="[SEP]", sep_token="[SEP]",
        cls_token="[CLS]", unk_token="[UNK]", pad_token="[PAD]", mask_token="[MASK]", add_prefix_space=False,
        **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, merges_file, bos_token=bos_token, eos_token=eos_token, sep_token=sep_token,
            cls_token=cls_token, unk_token=unk_token, pad_token=pad_token, mask_token=mask_token,
            add_prefix_space=add_prefix_space, **kwargs,
        )  # fmt: skip


class BlenderbotTokenizer(RobertaTokenizer):
    """Blenderbot's byte-level BPE: RoBERTa's special tokens and a space added in front of the text; from vocab.json
    and merges.txt nothing is added around a text, as the reference 5.x reads them (a tokenizer.json keeps its own
    post-processor: the Hub's puts `</s>` after the text). The mask token takes the space before it."""

    family = "BlenderbotTokenizer"

    def __init__(self, vocab_file=None, merges_file=None, add_prefix_space=True, **kwargs):
        super().__init__(vocab_file, merges_file, add_prefix_space=add_prefix_space, **kwargs)
        _mask_takes_the_space_before(self)


class Qwen2Tokenizer(TokenizersBackend):
    """Qwen2's byte-level BPE: NFC, digits one by one, `<|endoftext|>` for EOS, unknown and padding; no BOS."""

    family = "Qwen2Tokenizer"

    def __init__(
        self, vocab_file=None, merges_file=None, unk_token="<|endoftext|>", bos_token=None,
        eos_token="<|endoftext|>", pad_token="<|endoftext|>", add_prefix_space=False, **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, merges_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
            pad_token=pad_token, add_prefix_space=add_prefix_space, **kwargs,
        )  # fmt: skip


class LlamaTokenizer(TokenizersBackend):
    """Llama's SentencePiece BPE: BOS in front; with `legacy=False` (the default) no "▁" after special tokens."""

    family = "LlamaTokenizer"

    def __init__(
        self, vocab_file=None, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token=None,
        legacy=False, **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
            legacy=legacy, **kwargs,
        )  # fmt: skip


class GemmaTokenizer(TokenizersBackend):
    """Every Gemma's SentencePiece BPE: `<bos>` in front, and padding on the left, as the reference's class pads
    unless the folder's tokenizer_config.json says otherwise."""

    family = "GemmaTokenizer"

    def __init__(
        self, vocab_file=None, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        mask_token="<mask>", padding_side="left", **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token, pad_token=pad_token,
            mask_token=mask_token, padding_side=padding_side, **kwargs,
        )  # fmt: skip


class T5Tokenizer(TokenizersBackend):
    """T5's SentencePiece Unigram: `</s>` after each sequence, and `extra_ids` sentinels `<extra_id_N>`."""

    family = "T5Tokenizer"

    def __init__(
        self, vocab_file=None, eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_ids=100, **kwargs
    ):
        super().__init__(
            vocab_file, eos_token=eos_token, unk_token=unk_token, pad_token=pad_token, extra_ids=extra_ids, **kwargs
        )

    def get_sentinel_tokens(self) -> list[str]:
        return [token for token in self.extra_special_tokens if token.startswith("<extra_id_")]

    def get_sentinel_token_ids(self) -> list[int]:
        return self.convert_tokens_to_ids(self.get_sentinel_tokens())


class GPTNeoXTokenizer(TokenizersBackend):
    """GPT-NeoX's (and Pythia's) byte-level BPE: NFC, then GPT-2's byte-level split; `<|endoftext|>` is BOS, EOS and
    unknown, `<|padding|>` pads. Like the reference, it keeps only the vocabulary, merges and added tokens of a
    tokenizer.json and builds the rest itself: offsets keep the spaces in front of words, and BOS or EOS are added
    only with add_bos_token or add_eos_token."""

    family = "GPTNeoXTokenizer"

    def __init__(
        self, vocab_file=None, merges_file=None, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
        eos_token="<|endoftext|>", pad_token="<|padding|>", add_prefix_space=False, trim_offsets=True,
        add_bos_token=False, add_eos_token=False, **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, merges_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
            pad_token=pad_token, add_prefix_space=add_prefix_space, trim_offsets=trim_offsets,
            add_bos_token=add_bos_token, add_eos_token=add_eos_token, **kwargs,
        )  # fmt: skip
        byte_level = {"type": "ByteLevel", "add_prefix_space": bool(add_prefix_space),
                      "trim_offsets": bool(trim_offsets), "use_regex": True}  # fmt: skip
        decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        self._rebuild_parts({"normalizer": {"type": "NFC"}, "pre_tokenizer": byte_level, "decoder": decoder})


class CohereTokenizer(TokenizersBackend):
    """Command R's and Aya's byte-level BPE: NFC, digits one by one, then GPT-2's byte-level split; padding on the
    left. Like the reference, it keeps a tokenizer.json's vocabulary, merges, added tokens and post-processor and
    builds the rest itself, with its own special tokens (`<BOS_TOKEN>`, `<|END_OF_TURN_TOKEN|>`, `<PAD>`...) unless
    the folder names others."""

    family = "CohereTokenizer"

    def __init__(
        self, vocab_file=None, merges_file=None, unk_token="<UNK>", bos_token="<BOS_TOKEN>",
        eos_token="<|END_OF_TURN_TOKEN|>", pad_token="<PAD>", cls_token="<CLS>", sep_token="<SEP>",
        mask_token="<MASK_TOKEN>", add_prefix_space=False, padding_side="left", **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, merges_file, unk_token=unk_token, bos_token=bos_token, eos_token=eos_token,
            pad_token=pad_token, cls_token=cls_token, sep_token=sep_token, mask_token=mask_token,
            add_prefix_space=add_prefix_space, padding_side=padding_side, **kwargs,
        )  # fmt: skip
        byte_level = {"type": "ByteLevel", "add_prefix_space": bool(add_prefix_space), "trim_offsets": True,
                      "use_regex": True}  # fmt: skip
        digits = {"type": "Digits", "individual_digits": True}
        self._rebuild_parts({"normalizer": {"type": "NFC"},
                             "pre_tokenizer": {"type": "Sequence", "pretokenizers": [digits, byte_level]},
                             "decoder": byte_level})

    def apply_tool_use_template(self, conversation, tools: list[dict], **options):
        """The conversation rendered with the folder's chat template named "tool_use" (Command R's), given `tools`."""
        return self.apply_chat_template(conversation, chat_template="tool_use", tools=tools, **options)

    def apply_grounded_generation_template(self, conversation, documents: list[dict], citation_mode: str = "accurate",
                                           **options):
        """The conversation rendered with the folder's chat template named "rag" (Command R's grounded generation),
        given `documents` and `citation_mode` ("accurate" or "fast")."""
        return self.apply_chat_template(conversation, chat_template="rag", documents=documents,
                                        citation_mode=citation_mode, **options)


class CodeGenTokenizer(GPT2Tokenizer):
    """CodeGen's and Phi's byte-level BPE: `<|endoftext|>` is BOS, EOS and unknown, no padding token. Like the
    reference, it keeps a tokenizer.json's vocabulary, merges, added tokens and post-processor and builds the rest
    itself: no normalizer, GPT-2's byte-level split (a space in front only with add_prefix_space) and decoder.
    `decode(..., truncate_before_pattern=[...])` cuts a generated completion short as the reference does."""

    family = "CodeGenTokenizer"

    def __init__(self, vocab_file=None, merges_file=None, add_prefix_space=False, return_token_type_ids=False,
                 **kwargs):  # GPT-2's special tokens; with return_token_type_ids, token_type_ids (all 0) come back too
        if return_token_type_ids:
            kwargs.setdefault("model_input_names", ["input_ids", "attention_mask", "token_type_ids"])
        super().__init__(vocab_file, merges_file, add_prefix_space=add_prefix_space,
                         return_token_type_ids=return_token_type_ids, **kwargs)
        byte_level = {"type": "ByteLevel", "add_prefix_space": bool(add_prefix_space), "trim_offsets": True,
                      "use_regex": True}  # fmt: skip
        decoder = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
        self._rebuild_parts({"normalizer": None, "pre_tokenizer": byte_level, "decoder": decoder})

    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
               truncate_before_pattern: list[str] | None = None, **kwargs):
        """As every tokenizer's decode; `truncate_before_pattern` (regular expressions, matched per line) ends the
        text before the first match of any, after cutting it before a second top-level `print` or `def`."""
        text = super().decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces)
        if not truncate_before_pattern or not isinstance(text, str):
            return text
        return truncate_completion(text, truncate_before_pattern)


def truncate_completion(text: str, patterns: list[str]) -> str:
    """A generated program cut before its second top-level `print`, then its second `def`, then before the first
    match of any of `patterns` (multi-line regular expressions), as CodeGen's tokenizer cuts it."""
    for statement in ("^print", "^def"):
        starts = [match.start() for match in re.finditer(statement, text, re.MULTILINE)]
        if len(starts) > 1:
            text = text[: starts[1]]
    ends = [match.start() for pattern in patterns if (match := re.compile(pattern, re.MULTILINE).search(text))]
    return text[: min(ends)] if ends else text


class DebertaV2Tokenizer(TokenizersBackend):
    """DeBERTa-v2/v3's SentencePiece Unigram (spm.model or tokenizer.json), laid out `[CLS] A [SEP] B [SEP]`.

    Like the reference, it keeps a tokenizer.json's vocabulary, added tokens and layout and builds the rest itself:
    lowercased with `do_lower_case`, punctuation split off with `split_by_punct`, "▁" before every word (before the
    first only with add_prefix_space=False).
    """

    family = "DebertaV2Tokenizer"
    model_input_names = ["input_ids", "attention_mask", "token_type_ids"]

    def __init__(
        self, vocab_file=None, do_lower_case=False, split_by_punct=False, bos_token="[CLS]", eos_token="[SEP]",
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
        add_prefix_space=True, **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, do_lower_case=do_lower_case, split_by_punct=split_by_punct, bos_token=bos_token,
            eos_token=eos_token, unk_token=unk_token, sep_token=sep_token, pad_token=pad_token, cls_token=cls_token,
            mask_token=mask_token, add_prefix_space=add_prefix_space, **kwargs,
        )  # fmt: skip
        source = self._pipeline.source
        if source is not None and source.get("model", {}).get("type") == "Unigram":
            self._rebuild_parts(loaders.deberta_v2_parts(source, do_lower_case, split_by_punct, add_prefix_space))


class AlbertTokenizer(TokenizersBackend):
    """ALBERT's SentencePiece Unigram (spiece.model or tokenizer.json), laid out `[CLS] A [SEP] B [SEP]`.

    Like the reference, it keeps a tokenizer.json's vocabulary, added tokens and layout (and its SentencePiece
    normalization rules) and builds the rest itself: `` and '' read as ", accents stripped unless `keep_accents`,
    lowercased with `do_lower_case`, split at whitespace with "▁" before every word (none with add_prefix_space=False).
    """

    family = "AlbertTokenizer"
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self, vocab_file=None, do_lower_case=True, keep_accents=False, bos_token="[CLS]", eos_token="[SEP]",
        unk_token="<unk>", sep_token="[SEP]", pad_token="<pad>", cls_token="[CLS]", mask_token="[MASK]",
        add_prefix_space=True, trim_offsets=True, **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, do_lower_case=do_lower_case, keep_accents=keep_accents, bos_token=bos_token,
            eos_token=eos_token, unk_token=unk_token, sep_token=sep_token, pad_token=pad_token, cls_token=cls_token,
            mask_token=mask_token, add_prefix_space=add_prefix_space, trim_offsets=trim_offsets, **kwargs,
        )  # fmt: skip
        source = self._pipeline.source
        if source is not None and source.get("model", {}).get("type") == "Unigram":
            self._rebuild_parts(loaders.albert_parts(source, do_lower_case, keep_accents, add_prefix_space))


class MPNetTokenizer(TokenizersBackend):
    """MPNet's WordPiece (vocab.txt or tokenizer.json) with BERT's normalization, laid out as RoBERTa:
    `<s> A </s>` and `<s> A </s></s> B </s>`. Its `<mask>` takes the space before it, as the reference's does."""

    family = "MPNetTokenizer"
    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self, vocab_file=None, do_lower_case=True, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="[UNK]", pad_token="<pad>", mask_token="<mask>", tokenize_chinese_chars=True,
        strip_accents=None, **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, do_lower_case=do_lower_case, bos_token=bos_token, eos_token=eos_token, sep_token=sep_token,
            cls_token=cls_token, unk_token=unk_token, pad_token=pad_token, mask_token=mask_token,
            tokenize_chinese_chars=tokenize_chinese_chars, strip_accents=strip_accents, **kwargs,
        )  # fmt: skip
        source = self._pipeline.source
        if source is not None and source.get("model", {}).get("type") == "WordPiece":
            cls, sep = self.cls_token, self.sep_token
            parts = loaders.mpnet_parts((cls, self.convert_tokens_to_ids(cls)), (sep, self.convert_tokens_to_ids(sep)),
                                        do_lower_case, tokenize_chinese_chars, strip_accents)
            self._rebuild_parts(parts)
        _mask_takes_the_space_before(self)


def _mask_takes_the_space_before(tokenizer: TokenizersBackend) -> None:
    """Make the mask token strip the whitespace before it (`lstrip`), as the reference's MPNet and mBART masks do."""
    mask_id = tokenizer.convert_tokens_to_ids(tokenizer.mask_token) if tokenizer.mask_token is not None else None
    added = dict(tokenizer._pipeline.added.tokens)
    if mask_id in added and not added[mask_id].lstrip:
        added[mask_id] = replace(added[mask_id], lstrip=True)
        tokenizer._pipeline.added = AddedVocabulary(added)


class XLMRobertaTokenizer(TokenizersBackend):
    """XLM-RoBERTa's SentencePiece model with fairseq's ids, laid out `<s> A </s></s> B </s>`."""

    family = "XLMRobertaTokenizer"

    def __init__(
        self, vocab_file=None, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, bos_token=bos_token, eos_token=eos_token, sep_token=sep_token, cls_token=cls_token,
            unk_token=unk_token, pad_token=pad_token, mask_token=mask_token, **kwargs,
        )  # fmt: skip


class TranslationLanguages:
    """What NLLB's, M2M100's and mBART's tokenizers share: a language's code token around each sequence,
    `[code] A </s>` (`A </s> [code]` with `legacy_behaviour`, which is also mbart-large-cc25's layout), src_lang's for
    texts and tgt_lang's for targets (`text_target=`); setting `src_lang` changes the layout, as in the reference. The
    translation pipeline passes src_lang and tgt_lang, and generates with the target's code forced first
    (`forced_bos_token_id`)."""

    legacy_behaviour = False

    def _language_token(self, language: str) -> str:
        """The token of a language (NLLB's "fra_Latn" is its own; M2M100's "fr" is "__fr__")."""
        if self._pipeline.added.ids.get(language) is None:
            raise ValueError(f"{language!r} is not one of this tokenizer's language codes; pass one of "
                             f"{', '.join(self.extra_special_tokens[:6])}, ...")
        return language

    @property
    def src_lang(self) -> str:
        return self._src_lang

    @src_lang.setter
    def src_lang(self, language: str) -> None:
        self._src_lang = language
        self._lay_out_with(language)

    def _lay_out_with(self, language: str) -> None:
        code, eos = self._language_token(language), self.eos_token
        before, after = ([], [eos, code]) if self.legacy_behaviour else ([code], [eos])

        def layout(*sequences):
            items = [{"SpecialToken": {"id": token, "type_id": 0}} for token in before]
            items += [{"Sequence": {"id": name, "type_id": 0}} for name in sequences]
            return items + [{"SpecialToken": {"id": token, "type_id": 0}} for token in after]

        ids = {code: self.convert_tokens_to_ids(code), eos: self.eos_token_id}
        self._rebuild_parts({"post_processor": {
            "type": "TemplateProcessing", "single": layout("A"), "pair": layout("A", "B"),
            "special_tokens": {token: {"id": token, "ids": [i], "tokens": [token]} for token, i in ids.items()},
        }})

    def _encode_targets(self, text_target, text_pair_target, options: dict):
        """Targets are laid out with tgt_lang's code (src_lang's when there is no tgt_lang)."""
        self._lay_out_with(self.tgt_lang if self.tgt_lang is not None else self.src_lang)
        try:
            return super()._encode_targets(text_target, text_pair_target, options)
        finally:
            self._lay_out_with(self.src_lang)

    def _build_translation_inputs(self, raw_inputs, return_tensors=None, src_lang=None, tgt_lang=None, **options):
        """The translation pipeline's inputs: the text laid out with `src_lang` (which stays set), and the target
        language's code as `forced_bos_token_id`."""
        if src_lang is None or tgt_lang is None:
            raise ValueError("Translation requires a `src_lang` and a `tgt_lang` for this model: pass both to the "
                             "pipeline, e.g. pipeline('translation', model=..., src_lang=..., tgt_lang=...).")
        self.src_lang = src_lang
        inputs = self(raw_inputs, add_special_tokens=True, return_tensors=return_tensors, **options)
        inputs["forced_bos_token_id"] = self.convert_tokens_to_ids(self._language_token(tgt_lang))
        return inputs


class NllbTokenizer(TranslationLanguages, TokenizersBackend):
    """NLLB's tokenizer: its tokenizer.json (a SentencePiece BPE with fairseq's ids, the language codes such as
    `fra_Latn` added after the vocabulary), with the layout of `TranslationLanguages` (src_lang eng_Latn unless
    given).

        tokenizer = NllbTokenizer.from_pretrained("facebook/nllb-200-distilled-600M", src_lang="eng_Latn")
        ids = model.generate(**tokenizer(text, return_tensors="pt"),
                             forced_bos_token_id=tokenizer.convert_tokens_to_ids("fra_Latn"))
    """

    family = "NllbTokenizer"
    OPTIONS = ("src_lang", "tgt_lang", "legacy_behaviour")

    def __init__(
        self, vocab_file=None, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", src_lang=None, tgt_lang=None,
        legacy_behaviour=False, **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, bos_token=bos_token, eos_token=eos_token, sep_token=sep_token, cls_token=cls_token,
            unk_token=unk_token, pad_token=pad_token, mask_token=mask_token, **kwargs,
        )  # fmt: skip
        self.legacy_behaviour, self.tgt_lang = bool(legacy_behaviour), tgt_lang
        self.src_lang = "eng_Latn" if src_lang is None else src_lang


class CamembertTokenizer(XLMRobertaTokenizer):
    """CamemBERT's SentencePiece model with fairseq's ids (`<s>NOTUSED <pad> </s>NOTUSED <unk> <unk>NOTUSED` first,
    then the model's pieces, `<mask>` last), laid out `<s> A </s></s> B </s>` as XLM-RoBERTa's, with its special
    tokens."""

    family = "CamembertTokenizer"


class MBartTokenizer(TranslationLanguages, TokenizersBackend):
    """mBART's SentencePiece model (sentencepiece.bpe.model, or a tokenizer.json) with fairseq's ids and the language
    codes of mbart-large-cc25 (`en_XX`, `ro_RO`...) as special tokens. A text is laid out `A </s> src_lang` and a
    target (`text_target=`) `A </s> tgt_lang`: NLLB's legacy layout of `TranslationLanguages` (src_lang en_XX unless
    given). Its `<mask>` takes the space before it.

        tokenizer = MBartTokenizer.from_pretrained("facebook/mbart-large-en-ro", src_lang="en_XX", tgt_lang="ro_RO")
        batch = tokenizer("UN Chief Says", text_target="Şeful ONU declară", return_tensors="pt")
    """

    family = "MBartTokenizer"
    OPTIONS = ("src_lang", "tgt_lang")
    legacy_behaviour = True  # the code after `</s>`; mBART-50's goes first

    def __init__(
        self, vocab_file=None, src_lang=None, tgt_lang=None, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        cls_token="<s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", **kwargs,
    ):  # fmt: skip
        super().__init__(
            vocab_file, bos_token=bos_token, eos_token=eos_token, sep_token=sep_token, cls_token=cls_token,
            unk_token=unk_token, pad_token=pad_token, mask_token=mask_token, **kwargs,
        )  # fmt: skip
        codes = loaders.FAIRSEQ_LANGUAGE_CODES[self.family]  # special tokens; a vocabulary without them gets them
        self._pipeline.add_tokens([AddedToken(code, special=True) for code in codes])
        self.extra_special_tokens = list(dict.fromkeys([*codes, *self.extra_special_tokens]))
        _mask_takes_the_space_before(self)
        self.tgt_lang = tgt_lang
        self.src_lang = "en_XX" if src_lang is None else src_lang

    @property
    def lang_code_to_id(self) -> dict[str, int]:
        """Each language code's id, e.g. for `generate(..., forced_bos_token_id=tokenizer.lang_code_to_id["ro_RO"])`."""
        return {code: self.convert_tokens_to_ids(code) for code in loaders.FAIRSEQ_LANGUAGE_CODES[self.family]}

    def _language_token(self, language: str) -> str:
        if language not in loaders.FAIRSEQ_LANGUAGE_CODES[self.family]:
            raise ValueError(f"{language!r} is not one of {type(self).__name__}'s language codes: "
                             f"{', '.join(loaders.FAIRSEQ_LANGUAGE_CODES[self.family])}.")
        return language


class MBart50Tokenizer(MBartTokenizer):
    """mBART-50's SentencePiece model with its 52 language codes; a text is laid out `src_lang A </s>` and a target
    `tgt_lang A </s>` (NLLB's layout). Otherwise as MBartTokenizer.

        tokenizer = MBart50Tokenizer.from_pretrained("facebook/mbart-large-50-many-to-many-mmt", src_lang="en_XX")
    """

    family = "MBart50Tokenizer"
    legacy_behaviour = False


class PegasusTokenizer(TokenizersBackend):
    """Pegasus's SentencePiece model (spiece.model, or a tokenizer.json): `<pad>` and `</s>` first, then the masks
    `<mask_1>` (sentences, `mask_token_sent`) and `<mask_2>` (tokens) and the reserved `<unk_2>` to `<unk_102>`
    (`offset` tokens in all) as special tokens, then the pieces; `</s>` ends each sequence (a pair is `A B </s>`).

        tokenizer = PegasusTokenizer.from_pretrained("google/pegasus-xsum")
    """

    family = "PegasusTokenizer"

    def __init__(self, vocab_file=None, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", mask_token="<mask_2>",
                 mask_token_sent="<mask_1>", offset=103, **kwargs):  # fmt: skip
        super().__init__(vocab_file, pad_token=pad_token, eos_token=eos_token, unk_token=unk_token,
                         mask_token=mask_token, mask_token_sent=mask_token_sent, offset=offset, **kwargs)
        self.mask_token_sent, self.offset = mask_token_sent, int(offset)
        sentence_mask, reserved = loaders.pegasus_reserved_tokens(mask_token_sent, self.offset)
        own = [sentence_mask, *reserved]  # special tokens whatever the files say, as the reference's class makes them
        self._pipeline.add_tokens([AddedToken(token, special=True) for token in own])
        self.extra_special_tokens = list(dict.fromkeys([*own, *self.extra_special_tokens]))
        eos = [self.eos_token_id]
        self._pipeline.post_processor = processors.TemplateProcessing([("A", 0), (eos, 0)],
                                                                      [("A", 0), ("B", 0), (eos, 0)])

    def _saved_config(self) -> dict:
        return {**super()._saved_config(), "mask_token_sent": self.mask_token_sent, "offset": self.offset}


class MarianTokenizer(PreTrainedTokenizerBase):
    """Marian's (opus-mt's) tokenizer: the source language's SentencePiece model (source.spm) segments the texts,
    the target language's (target.spm) the targets (`text_target=`), and vocab.json, which both share, gives the ids
    (with `separate_vocabs`, target_vocab.json gives the targets'); `</s>` ends each sequence. A text that starts with
    a language code such as `>>fra<<` (the multilingual models' target language) keeps it as one token.

    Decoding maps ids back to pieces and joins them with the source model unless the vocabularies are separate (then
    with the target's), or as `use_source_tokenizer` says, as the reference does; special tokens are written with a
    space after them.

        tokenizer = MarianTokenizer.from_pretrained("Helsinki-NLP/opus-mt-en-de")
        batch = tokenizer(["I am a small frog."], text_target=["Ich bin ein kleiner Frosch."], return_tensors="pt")
    """

    family = "MarianTokenizer"
    FILES = {"source_spm": "source.spm", "target_spm": "target.spm", "vocab": "vocab.json",
             "target_vocab_file": "target_vocab.json"}  # fmt: skip
    OPTIONS = ("source_lang", "target_lang", "separate_vocabs")  # tokenizer_config.json's, besides the common ones

    def __init__(
        self, source_spm, target_spm, vocab, target_vocab_file=None, source_lang=None, target_lang=None,
        unk_token="<unk>", eos_token="</s>", pad_token="<pad>", model_max_length=512, sp_model_kwargs=None,
        separate_vocabs=False, **kwargs,
    ):  # fmt: skip
        if sp_model_kwargs:
            raise ValueError(
                f"sp_model_kwargs={sp_model_kwargs!r}: SentencePiece's sampling options are not supported; Marian "
                "tokenizers here always take the best segmentation. Leave sp_model_kwargs out."
            )
        if separate_vocabs and target_vocab_file is None:
            raise ValueError("separate_vocabs=True needs target_vocab_file (target_vocab.json), the targets' ids.")
        self.spm_files = [Path(source_spm), Path(target_spm)]
        self.vocab_files = [Path(vocab)] + ([Path(target_vocab_file)] if separate_vocabs else [])
        source_vocab = loaders.read_marian_vocab(vocab, "vocab")
        target_vocab = loaders.read_marian_vocab(target_vocab_file, "target_vocab_file") if separate_vocabs \
            else source_vocab
        unk = str(getattr(unk_token, "content", unk_token))
        self._source = loaders.marian_pipeline(source_spm, source_vocab, unk)
        self._target = loaders.marian_pipeline(target_spm, target_vocab, unk)
        super().__init__(self._source, unk_token=unk_token, eos_token=eos_token, pad_token=pad_token,
                         model_max_length=model_max_length, **kwargs)
        self.source_lang, self.target_lang, self.separate_vocabs = source_lang, target_lang, bool(separate_vocabs)
        self.supported_language_codes = [] if separate_vocabs else [
            token for token in source_vocab if token.startswith(">>") and token.endswith("<<")]
        # `A </s>`; a pair (which Marian never trains on) is `A B </s>`, as the reference lays it out.
        eos = [self.eos_token_id]
        layout = processors.TemplateProcessing([("A", 0), (eos, 0)], [("A", 0), ("B", 0), (eos, 0)])
        self._source.post_processor = self._target.post_processor = layout

    @classmethod
    def _from_files(cls, files, name_or_path: str, prefer_gguf: bool, kwargs: dict, chosen: bool) -> "MarianTokenizer":
        own = {key: kwargs.pop(key) for key in cls.OPTIONS if key in kwargs}
        config = {**loaders.read_tokenizer_config(files), **_checked_overrides(kwargs, cls.__name__), **own}
        paths = {name: files.file(filename) for name, filename in cls.FILES.items()}
        missing = [cls.FILES[name] for name in ("source_spm", "target_spm", "vocab") if paths[name] is None]
        if missing:
            raise FileNotFoundError(f"{files.folder} has no {', '.join(missing)}, which a MarianTokenizer reads.")
        settings = loaders.settings_from_config(config)
        options = {key: config[key] for key in cls.OPTIONS if key in config}
        return cls(**paths, **options, **settings, name_or_path=name_or_path)

    @contextmanager
    def _using(self, pipeline: Pipeline):
        """Run with `pipeline` in place of the source side's, with the same added tokens."""
        kept = self._pipeline
        pipeline.added, pipeline.split_special_tokens = self._source.added, self._source.split_special_tokens
        self._pipeline = pipeline
        try:
            yield
        finally:
            self._pipeline = kept

    def _encode_targets(self, text_target, text_pair_target, options: dict):
        with self._using(self._target):
            return super()._encode_targets(text_target, text_pair_target, options)

    def _decoding_pipeline(self, use_source_tokenizer: bool | None) -> Pipeline:
        """The ids' pieces (the targets' vocabulary when it is separate), joined by one side's SentencePiece model."""
        use_source = not self.separate_vocabs if use_source_tokenizer is None else use_source_tokenizer
        pieces = (self._source if use_source else self._target).decoder
        vocabulary = self._target if self.separate_vocabs else self._source
        return Pipeline(vocabulary.model,
                        decoder=decoders.SpecialTokensApart(pieces, frozenset(self.all_special_tokens)))

    def decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None,
               use_source_tokenizer: bool | None = None, **kwargs):
        """As every tokenizer's decode; `use_source_tokenizer` joins the pieces with the source model (True) or the
        target's (False); by default the source's, unless the vocabularies are separate."""
        with self._using(self._decoding_pipeline(use_source_tokenizer)):
            return super().decode(token_ids, skip_special_tokens, clean_up_tokenization_spaces)

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None, use_source_tokenizer: bool | None = None,
                     **kwargs) -> list[str]:
        with self._using(self._decoding_pipeline(use_source_tokenizer)):
            return super().batch_decode(sequences, skip_special_tokens, clean_up_tokenization_spaces)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._decoding_pipeline(None).decoder.decode(list(tokens))

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens: bool = False):
        """1 for `</s>` and the other special tokens, 0 for the rest; `<unk>` counts as text, as in the reference."""
        if not already_has_special_tokens:
            return super().get_special_tokens_mask(token_ids_0, token_ids_1)
        special = set(self.all_special_ids) - {self.unk_token_id}
        return [int(token_id in special) for token_id in token_ids_0 + (token_ids_1 or [])]

    def _save(self, folder: Path, prefix: str) -> tuple[str, ...]:
        """source.spm, target.spm and vocab.json (target_vocab.json too with separate vocabularies), as the reference
        writes them, and the configs."""
        if folder.is_file():
            raise ValueError(f"save_directory {folder} is a file; pass a folder to save the tokenizer in.")
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for source, name in zip(self.spm_files, ("source.spm", "target.spm")):
            if source.resolve() != (folder / f"{prefix}{name}").resolve():
                shutil.copyfile(source, folder / f"{prefix}{name}")
            written.append(str(folder / f"{prefix}{name}"))
        vocabularies = [self._source.model.vocab] + ([self._target.model.vocab] if self.separate_vocabs else [])
        for vocab, name in zip(vocabularies, ("vocab.json", "target_vocab.json")):
            written.append(_write_json(folder / f"{prefix}{name}", vocab))
        return (*written, *self._write_configs(folder, self._saved_config()))  # OPTIONS included


# The languages of M2M100's checkpoints (language_codes="m2m100") and of WMT21's ("wmt21"), in their tokens' order.
M2M100_LANGUAGE_CODES = {
    "m2m100": (
        "af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd gl gu ha he hi hr ht hu "
        "hy id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg mk ml mn mr ms my ne nl no ns oc or pa pl ps pt "
        "ro ru sd si sk sl so sq sr ss su sv sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu"
    ).split(),
    "wmt21": "en ha is ja cs ru zh de".split(),
}


class M2M100Tokenizer(TranslationLanguages, PreTrainedTokenizerBase):
    """M2M100's tokenizer: a SentencePiece model (sentencepiece.bpe.model) segments the text and vocab.json gives
    the pieces' ids (a piece it lacks is <unk>); each language is a token `__fr__` after the vocabulary, in the order
    of `language_codes` ("m2m100", or "wmt21" for WMT21's models). Texts and targets are laid out as
    `TranslationLanguages` says, with src_lang ("en" unless given) and tgt_lang.

        tokenizer = M2M100Tokenizer.from_pretrained("facebook/m2m100_418M", src_lang="en")
        ids = model.generate(**tokenizer(text, return_tensors="pt"), forced_bos_token_id=tokenizer.get_lang_id("fr"))
    """

    family = "M2M100Tokenizer"
    FILES = {"vocab_file": "vocab.json", "spm_file": "sentencepiece.bpe.model"}
    OPTIONS = ("src_lang", "tgt_lang", "language_codes", "num_madeup_words")

    def __init__(
        self, vocab_file, spm_file, src_lang=None, tgt_lang=None, bos_token="<s>", eos_token="</s>", sep_token="</s>",
        pad_token="<pad>", unk_token="<unk>", language_codes="m2m100", sp_model_kwargs=None, num_madeup_words=8,
        **kwargs,
    ):  # fmt: skip
        if sp_model_kwargs:
            raise ValueError(
                f"sp_model_kwargs={sp_model_kwargs!r}: SentencePiece's sampling options are not supported; this "
                "tokenizer always takes the best segmentation. Leave sp_model_kwargs out."
            )
        if language_codes not in M2M100_LANGUAGE_CODES:
            raise ValueError(f"language_codes={language_codes!r}; expected one of {sorted(M2M100_LANGUAGE_CODES)}.")
        self.vocab_file, self.spm_file = Path(vocab_file), Path(spm_file)
        vocab = loaders.read_marian_vocab(vocab_file, "vocab_file")
        pipeline = loaders.marian_pipeline(spm_file, vocab, str(getattr(unk_token, "content", unk_token)), Pipeline)
        self.language_codes, self.num_madeup_words = language_codes, num_madeup_words
        self.lang_code_to_token = {code: f"__{code}__" for code in M2M100_LANGUAGE_CODES[language_codes]}
        extra = list(kwargs.pop("extra_special_tokens", None) or kwargs.pop("additional_special_tokens", None) or [])
        extra += [token for token in self.lang_code_to_token.values() if token not in extra]
        super().__init__(pipeline, bos_token=bos_token, eos_token=eos_token, sep_token=sep_token, pad_token=pad_token,
                         unk_token=unk_token, extra_special_tokens=extra, **kwargs)
        self.lang_code_to_id = {code: self.convert_tokens_to_ids(token)
                                for code, token in self.lang_code_to_token.items()}
        # Decoding joins the pieces between special tokens with the SentencePiece model, as the reference does.
        pipeline.decoder = decoders.SpecialTokensApart(pipeline.decoder, frozenset(self.all_special_tokens), "")
        self.tgt_lang = tgt_lang
        self.src_lang = "en" if src_lang is None else src_lang

    @classmethod
    def _from_files(cls, files, name_or_path: str, prefer_gguf: bool, kwargs: dict, chosen: bool) -> "M2M100Tokenizer":
        own = cls._own_options(files, kwargs)
        config = {**loaders.read_tokenizer_config(files), **_checked_overrides(kwargs, cls.__name__)}
        paths = {name: files.file(filename) for name, filename in cls.FILES.items()}
        missing = [cls.FILES[name] for name, path in paths.items() if path is None]
        if missing:
            raise FileNotFoundError(f"{files.folder} has no {', '.join(missing)}, which an M2M100Tokenizer reads.")
        return cls(**paths, **own, **loaders.settings_from_config(config), name_or_path=name_or_path)

    def _language_token(self, language: str) -> str:
        if language not in self.lang_code_to_token:
            raise ValueError(f"{language!r} is not one of this tokenizer's languages ({self.language_codes}: "
                             f"{', '.join(list(self.lang_code_to_token)[:6])}, ...); pass a code such as 'en' or 'fr'.")
        return self.lang_code_to_token[language]

    def get_lang_token(self, language: str) -> str:
        return self._language_token(language)

    def get_lang_id(self, language: str) -> int:
        return self.lang_code_to_id[language] if language in self.lang_code_to_id else \
            self.convert_tokens_to_ids(self._language_token(language))

    def _save(self, folder: Path, prefix: str) -> tuple[str, ...]:
        """vocab.json and sentencepiece.bpe.model, as the reference writes them, and the configs."""
        if folder.is_file():
            raise ValueError(f"save_directory {folder} is a file; pass a folder to save the tokenizer in.")
        folder.mkdir(parents=True, exist_ok=True)
        spm = folder / f"{prefix}sentencepiece.bpe.model"
        if self.spm_file.resolve() != spm.resolve():
            shutil.copyfile(self.spm_file, spm)
        vocab = _write_json(folder / f"{prefix}vocab.json", self._pipeline.model.vocab)
        return (vocab, str(spm), *self._write_configs(folder, self._saved_config()))


BertTokenizerFast = BertTokenizer
DistilBertTokenizerFast = DistilBertTokenizer
GPT2TokenizerFast = GPT2Tokenizer
RobertaTokenizerFast = RobertaTokenizer
Qwen2TokenizerFast = Qwen2Tokenizer
LlamaTokenizerFast = LlamaTokenizer
GemmaTokenizerFast = GemmaTokenizer
T5TokenizerFast = T5Tokenizer
XLMRobertaTokenizerFast = XLMRobertaTokenizer
CamembertTokenizerFast = CamembertTokenizer
AlbertTokenizerFast = AlbertTokenizer
MPNetTokenizerFast = MPNetTokenizer
ElectraTokenizer = ElectraTokenizerFast = BertTokenizer  # the reference 5.x's ELECTRA names for BERT's tokenizer
MobileBertTokenizer = MobileBertTokenizerFast = BertTokenizer  # and MobileBERT's
DebertaV2TokenizerFast = DebertaV2Tokenizer
DebertaTokenizerFast = DebertaTokenizer
GPTNeoXTokenizerFast = GPTNeoXTokenizer
CohereTokenizerFast = CohereTokenizer
CodeGenTokenizerFast = CodeGenTokenizer
NllbTokenizerFast = NllbTokenizer
MBartTokenizerFast = MBartTokenizer
MBart50TokenizerFast = MBart50Tokenizer
PegasusTokenizerFast = PegasusTokenizer
BlenderbotTokenizerFast = BlenderbotTokenizer
BartTokenizer = BartTokenizerFast = RobertaTokenizer  # the reference's BART names for RoBERTa's tokenizer

TOKENIZER_CLASSES = {
    cls.__name__: cls
    for cls in (
        TokenizersBackend, BertTokenizer, DistilBertTokenizer, GPT2Tokenizer, RobertaTokenizer, Qwen2Tokenizer,
        LlamaTokenizer, GemmaTokenizer, T5Tokenizer, XLMRobertaTokenizer, GPTNeoXTokenizer, DebertaV2Tokenizer,
        AlbertTokenizer, MPNetTokenizer, CodeGenTokenizer, MarianTokenizer, NllbTokenizer, M2M100Tokenizer,
        CohereTokenizer, CamembertTokenizer, MBartTokenizer, MBart50Tokenizer, PegasusTokenizer,
        BlenderbotTokenizer, DebertaTokenizer,
    )
}  # fmt: skip
TOKENIZER_CLASSES["ElectraTokenizer"] = TOKENIZER_CLASSES["MobileBertTokenizer"] = BertTokenizer
TOKENIZER_CLASSES["PreTrainedTokenizerFast"] = TokenizersBackend
TOKENIZER_CLASSES["BartTokenizer"] = RobertaTokenizer
# The reference 5.x removed BLOOM's class and reads the BloomTokenizerFast its checkpoints name as its backend.
TOKENIZER_CLASSES["BloomTokenizer"] = TokenizersBackend

# config.json's model_type -> the class the reference registers for it (distilbert shares BERT's).
_CLASS_OF_MODEL_TYPE = {
    "bert": "BertTokenizer", "distilbert": "BertTokenizer", "gpt2": "GPT2Tokenizer", "roberta": "RobertaTokenizer",
    "qwen2": "Qwen2Tokenizer", "t5": "T5Tokenizer", "xlm-roberta": "XLMRobertaTokenizer",
    "camembert": "CamembertTokenizer", "roberta-prelayernorm": "RobertaTokenizer",
    "xlm-roberta-xl": "TokenizersBackend",  # whatever class its folders name (XLMRobertaTokenizer)
    "gpt_neox": "GPTNeoXTokenizer", "gptj": "GPT2Tokenizer", "gpt_neo": "GPT2Tokenizer",
    "codegen": "GPT2Tokenizer",  # CodeGen checkpoints name CodeGenTokenizer in tokenizer_config.json
    "opt": "GPT2Tokenizer",
    "mamba": "GPTNeoXTokenizer", "falcon_mamba": "GPTNeoXTokenizer", "mamba2": "GPTNeoXTokenizer",
    "phi": "GPT2Tokenizer",  # Phi checkpoints name CodeGenTokenizer in tokenizer_config.json
    "bart": "RobertaTokenizer", "marian": "MarianTokenizer", "m2m_100": "M2M100Tokenizer", "mbart": "MBartTokenizer",
    "pegasus": "PegasusTokenizer",
    "blenderbot": "BlenderbotTokenizer", "blenderbot-small": "BlenderbotSmallTokenizer",
    "umt5": "TokenizersBackend",  # whatever class its folders name (T5Tokenizer)
    "modernbert": "TokenizersBackend",
    "stablelm": "TokenizersBackend",  # StableLM checkpoints name GPT2TokenizerFast or GPTNeoXTokenizerFast
    "gpt_bigcode": "TokenizersBackend",  # StarCoder's folders name GPT2Tokenizer, which the generic class overrides
    "deberta-v2": "DebertaV2Tokenizer", "deberta": "DebertaTokenizer",
    "albert": "AlbertTokenizer", "electra": "BertTokenizer", "roformer": "RoFormerTokenizer",
    "mobilebert": "BertTokenizer", "mpnet": "MPNetTokenizer", "ernie": "BertTokenizer",
    "megatron-bert": "BertTokenizer", "nomic_bert": "BertTokenizer", "gte": "XLMRobertaTokenizer",
    "jina_embeddings_v3": "XLMRobertaTokenizer",
    "gemma": "GemmaTokenizer", "gemma2": "GemmaTokenizer", "gemma3_text": "GemmaTokenizer",
    "granite": "TokenizersBackend",  # whatever class its folders name (GPT2Tokenizer)
    "granitemoe": "TokenizersBackend", "granitemoeshared": "TokenizersBackend",  # as Granite's
    "granitemoehybrid": "TokenizersBackend",  # Granite 4's folders name GPT2Tokenizer
    "jamba": "TokenizersBackend",  # Jamba's folders name LlamaTokenizer, which the reference overrides
    "cohere": "CohereTokenizer", "cohere2": "CohereTokenizer",
    "nemotron": "TokenizersBackend",  # Nemotron's folders name LlamaTokenizer or PreTrainedTokenizerFast
    "ernie4_5": "TokenizersBackend", "ernie4_5_moe": "TokenizersBackend",  # over the remote-code class they name
}  # fmt: skip
# Model types whose Hub configs often name the wrong tokenizer class: the registered class wins. So does a registered
# TokenizersBackend over any other class a folder names, as in the reference.
_REGISTERED_CLASS_WINS = frozenset({"qwen2"})
# Slow-only classes of the reference whose text rules no part here implements: a folder that names one (or whose
# model_type registers one) without a tokenizer.json is refused, where the generic byte-level BPE would give other ids.
_NOT_BUILT = {
    "BlenderbotSmallTokenizer": "Blenderbot-Small's BPE (lowercased text, punctuation split off, '@@' continuations, "
                                "__newln__)",
    "RoFormerTokenizer": "WordPiece over Chinese text the jieba segmenter (rjieba) splits into words first",
}


def tokenizer_class_for(
    files: hub.ModelFiles, prefer_gguf: bool, model_type: str | None = None
) -> type[TokenizersBackend]:
    """The class the reference's AutoTokenizer picks for these files (`model_type`: a config's, passed in)."""
    if files.gguf_file is not None and (prefer_gguf or files.file("tokenizer.json") is None):
        return TokenizersBackend
    declared = loaders.family_of(loaders.read_tokenizer_config(files))
    config_path = files.file("config.json")
    model_config = loaders.read_json_file(config_path) if config_path else {}
    declared = declared or str(model_config.get("tokenizer_class") or "").removesuffix("Fast")
    model_type = model_type or model_config.get("model_type")
    registered = _CLASS_OF_MODEL_TYPE.get(model_type)
    if declared and registered and declared != registered and (
            model_type in _REGISTERED_CLASS_WINS or registered == "TokenizersBackend"):
        declared = registered
    unbuilt = _NOT_BUILT.get(declared or registered)
    if unbuilt is not None and files.file("tokenizer.json") is None:
        raise ValueError(
            f"The tokenizer of {files.folder} is {declared or registered}, {unbuilt}, which openformers does not implement, and has no "
            "tokenizer.json to build it from: tokenize with the reference's tokenizer and pass the ids to the model."
        )
    if declared == "LlamaTokenizer" and _is_byte_level(files):  # Llama-3 style folders that say "Llama"
        return TokenizersBackend
    if declared:
        return TOKENIZER_CLASSES.get(declared, TokenizersBackend)
    return TOKENIZER_CLASSES.get(registered, TokenizersBackend)


def _is_byte_level(files: hub.ModelFiles) -> bool:
    path = files.file("tokenizer.json")
    if path is None:
        return False
    data = loaders.read_json_file(path)
    kinds = [part.get("type") for part in loaders.parts_of(data.get("pre_tokenizer"), "pretokenizers")]
    return "ByteLevel" in kinds


class AutoTokenizer:
    """`AutoTokenizer.from_pretrained(path_or_id)` returns the tokenizer class the reference would."""

    def __init__(self):
        raise TypeError("AutoTokenizer is not built directly; use AutoTokenizer.from_pretrained(path_or_id).")

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        gguf_file: str | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        subfolder: str = "",
        **kwargs,
    ) -> TokenizersBackend:
        """Load from a folder, a .gguf file or a Hub id, as the class the files name (see the module docstring).
        Keyword arguments override the loaded settings, e.g. `padding_side="left"` or `add_prefix_space=True`."""
        files = hub.resolve(
            name_or_path,
            gguf_file=gguf_file,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
        )
        files = in_subfolder(files, subfolder)
        tokenizer_type, config = kwargs.pop("tokenizer_type", None), kwargs.pop("config", None)
        if tokenizer_type is not None:  # the reference's way to name the class by model type
            if tokenizer_type not in _CLASS_OF_MODEL_TYPE:
                raise ValueError(
                    f"tokenizer_type={tokenizer_type!r} is not one of {sorted(_CLASS_OF_MODEL_TYPE)}; leave it out to "
                    "take the class the files name."
                )
            tokenizer_class = TOKENIZER_CLASSES[_CLASS_OF_MODEL_TYPE[tokenizer_type]]
        else:
            model_type = getattr(config, "model_type", None)
            tokenizer_class = tokenizer_class_for(files, gguf_file is not None, model_type)
        return tokenizer_class._from_files(files, os.fspath(name_or_path), gguf_file is not None, kwargs, chosen=True)
