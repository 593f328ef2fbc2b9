"""Gather the tokenizer parity corpus (tests/data/tokenizer_corpus.json) from text already on the machine.

The tokenizer tests compare our ids, tokens, offsets and decode with the reference's on this corpus, so
it mixes what tokenizers get wrong: many scripts (the translations that Debian's shared-mime-info and
GnuPG ship: Chinese, Japanese, Arabic, Cyrillic, Greek, Hebrew, Devanagari...), emoji (rich's emoji
table), code (Python's standard library), prose with URLs and numbers (Debian copyright files and
READMEs), and hand-written whitespace and Unicode edge cases. Each document is a few lines joined with
"\\n" or "\\r\\n", so line breaks inside a text are tested too.

Run from the repository root (it only reads files; the output is committed):

    .venv/bin/python tests/data/gather_tokenizer_corpus.py [--megabytes 2.05]
"""

import argparse
import glob
import gzip
import json
import random
import re
import sys
import sysconfig
from pathlib import Path

OUTPUT = Path(__file__).with_name("tokenizer_corpus.json")

EDGE_CASES = [
    "",
    " ",
    "  ",
    "\t",
    "\n",
    "\r\n",
    "\r",
    " \t \n \r\n ",
    "a",
    "   leading and trailing   ",
    "tabs\tinside\t\tand\tat the end\t",
    "windows\r\nline\r\nbreaks\r\n",
    "old mac\rline\rbreaks",
    "many     spaces      between       words",
    "café naïve coöperate résumé",
    "combining e\u0301 a\u0308 o\u0302\u0323 n\u0303 and precomposed é ä ộ ñ",
    "zero\u200bwidth\u200c joiners\u200d and \ufeffBOM",
    "\u00a0nbsp \u2003em space \u3000ideographic space \u2028line separator",
    "ﬁ ﬂ ligatures, ① ② circled, Ⅻ roman, ½ ¾ fractions, x² superscripts, ＡＢＣ fullwidth, ｶﾀｶﾅ halfwidth",
    "emoji 🤗👍🏽 family 👨\u200d👩\u200d👧\u200d👦 flag 🏳️\u200d🌈 keycap 1️⃣ 🇯🇵",
    "中文测试：你好，世界！今天天气很好。",
    "日本語のテキストです。カタカナとひらがな、漢字。",
    "مرحبا بالعالم، هذا نص عربي. ١٢٣",
    "עברית משמאל לימין",
    "हिन्दी में लिखा गया पाठ ३४५",
    "한국어 텍스트입니다",
    "Ελληνικά κείμενα ΟΔΟΣ",
    "Русский текст, и ещё немного.",
    "numbers 1234567890 3.14159 -2.5e-10 1,000,000 0x1F 007",
    "https://example.com/path/to/page?query=1&x=%20y#frag user@mail.org ftp://host:21/",
    "def square(x):\n    return x ** 2  # comment\n\n\tpass\n",
    "if (a <= 10 && b != 0) { return a / b; } // C-like",
    "<s> </s> <unk> <pad> [CLS] [SEP] [MASK] <|endoftext|> <|im_start|> <|im_end|> tokens in text",
    "control \x00\x01\x07\x7f bytes and \ufffd replacement",
    "rare chars: ꙮ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 ᚠᚢᚦ ⅏ 𓀀",
    "don't can't won't we'll they're I'm you've she'd",
    "UPPER lower MiXeD İstanbul ß ẞ",
    "x" * 150,
    "a" + "\u0301" * 20,
]

_COMMENT = re.compile(r'<comment xml:lang="[^"]+">([^<]+)</comment>')
_XML_TEXT = re.compile(r"<(?:p|li|summary|name)(?: xml:lang=\"[^\"]+\")?>([^<]+)</")


def _read(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError):
        return ""


def translations() -> list[str]:
    lines = _COMMENT.findall(_read("/usr/share/mime/packages/freedesktop.org.xml"))
    for path in sorted(glob.glob("/usr/share/metainfo/*.xml")):
        lines += _XML_TEXT.findall(_read(path))
    for path in sorted(glob.glob("/usr/share/gnupg/help*.txt")):
        lines += [line for line in _read(path).splitlines() if not line.startswith("#")]
    return lines


def emoji() -> list[str]:
    try:
        from rich._emoji_codes import EMOJI
    except ImportError:
        return []
    return [f"{name.replace('_', ' ')}: {char}" for name, char in sorted(EMOJI.items())]


def code() -> list[str]:
    folder = Path(sysconfig.get_paths()["stdlib"])
    lines = []
    for name in ("json/decoder.py", "json/encoder.py", "textwrap.py", "shlex.py", "string.py", "base64.py"):
        lines += _read(str(folder / name)).splitlines()
    return lines


def prose() -> list[str]:
    paths = sorted(glob.glob("/usr/share/doc/*/copyright")) + sorted(glob.glob("/usr/share/doc/*/README*"))
    return [line for path in paths for line in _read(path).splitlines()]


def documents(lines: list[str], rng: random.Random) -> list[str]:
    """Consecutive lines, 1 to 12 at a time, joined with "\\n" (and now and then "\\r\\n")."""
    out, position = [], 0
    while position < len(lines):
        count = rng.randint(1, 12)
        separator = "\r\n" if rng.random() < 0.1 else "\n"
        out.append(separator.join(lines[position : position + count]))
        position += count
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megabytes", type=float, default=2.05)
    args = parser.parse_args()
    rng = random.Random(0)
    # Each source's share of the corpus, in bytes (as much of the other scripts as the machine has);
    # English prose, last, fills what the others leave.
    sources = [(translations(), 0.45), (emoji(), 0.05), (code(), 0.15), (prose(), 1.0)]
    corpus = EDGE_CASES * 2
    size = sum(len(doc.encode("utf-8")) for doc in corpus)
    for lines, share in sources:
        budget = min(size + share * args.megabytes * 1e6, args.megabytes * 1e6)
        docs = documents(lines, rng)
        rng.shuffle(docs)
        for doc in docs:
            if size >= budget:
                break
            corpus.append(doc)
            size += len(doc.encode("utf-8"))
    rng.shuffle(corpus)
    OUTPUT.write_text(json.dumps(corpus, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"{len(corpus)} documents, {size / 1e6:.2f} MB of text -> {OUTPUT}", file=sys.stderr)


if __name__ == "__main__":
    main()
