"""Write src/openformers/tokenizers/reference_unicode.py: the code points that the reference's Unicode
normalization and StripAccents (Unicode 9.0 tables) do not know, but Python's `unicodedata` may.

The reference normalizes (NFC, NFD, NFKC, NFKD) and strips accents with Unicode 9.0 data, while Python 3.11's
`unicodedata` is Unicode 14.0 (and newer Pythons newer still). A character assigned after 9.0 is unassigned to
the reference: it has no decomposition, combining class 0, composes with nothing and is no mark. Only the ones
that Unicode gives a decomposition, a nonzero combining class or a mark category, or that appear in another
character's decomposition, can make a difference, so only those are listed, from the newest Unicode data
available (so the table stays right when Python's own tables move on).

The reference splits text into graphemes (for its Precompiled normalizer) by Unicode 17, while the `regex`
module's `\X` may know a newer Unicode: the characters assigned since 17 that `\X` joins to a neighbour are
listed too (NEWER_THAN_REFERENCE_GRAPHEMES), as the reference sees them apart.

Needs packages that the library itself never imports, one of them twice:
    pip install unicodedataplus unicodedata2
    pip install --target /tmp/unicodedata2-17 unicodedata2==17.0.0
unicodedataplus gives each character's age (the version that assigned it), unicodedata2 the newest properties,
and unicodedata2 17.0 the characters Unicode 17 assigns. Run from the repository root:
    python scripts/generate_reference_unicode.py /tmp/unicodedata2-17
"""

import os
import subprocess
import sys
from pathlib import Path

import regex
import unicodedata2
import unicodedataplus

REFERENCE_VERSION = (9, 0)
TARGET = Path(__file__).resolve().parent.parent / "src/openformers/tokenizers/reference_unicode.py"


def newer_than_reference(char: str) -> bool:
    age = unicodedataplus.age(char)
    if age == "Unassigned":  # unassigned in unicodedataplus's Unicode, so newer than 9.0 whatever it becomes
        return True
    return tuple(int(part) for part in age.split(".")) > REFERENCE_VERSION


def decomposition_parts(char: str) -> list[int]:
    return [int(part, 16) for part in unicodedata2.decomposition(char).split() if not part.startswith("<")]


def assigned_by_unicodedata2_in(folder: str) -> tuple[str, set[int]]:
    """The Unicode version of the unicodedata2 installed in `folder` and the code points it assigns (run apart:
    one process cannot import two versions of the module)."""
    listing = (
        "import unicodedata2; print(unicodedata2.unidata_version); "
        "print(' '.join(str(code) for code in range(0x110000) if unicodedata2.category(chr(code)) != 'Cn'))"
    )
    environment = {**os.environ, "PYTHONPATH": folder}
    output = subprocess.run(
        [sys.executable, "-c", listing], env=environment, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    return output[0], {int(code) for code in output[1].split()}


def ranges_of(codes) -> list[list[int]]:
    ranges: list[list[int]] = []
    for code in sorted(codes):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return ranges


def table(ranges: list[list[int]]) -> str:
    cells = [f"(0x{first:X}, 0x{last:X})," for first, last in ranges]
    lines, line = [], "   "
    for cell in cells:
        if len(line) + 1 + len(cell) > 120:
            lines.append(line)
            line = "   "
        line += " " + cell
    lines.append(line)
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit(f"usage: {sys.argv[0]} FOLDER_WITH_UNICODEDATA2_17 (see this script's docstring)")
    grapheme_version, assigned_then = assigned_by_unicodedata2_in(sys.argv[1])
    if grapheme_version != "17.0.0":
        sys.exit(f"{sys.argv[1]} holds unicodedata2 {grapheme_version}; the reference's graphemes need 17.0.0")
    chars = [chr(code) for code in range(0x110000) if not 0xD800 <= code <= 0xDFFF]
    newer = {ord(char) for char in chars if newer_than_reference(char)}
    in_some_decomposition = {part for char in chars for part in decomposition_parts(char)}
    relevant = sorted(
        code
        for code in newer
        if unicodedata2.decomposition(chr(code))
        or unicodedata2.combining(chr(code))
        or unicodedata2.category(chr(code)).startswith("M")
        or code in in_some_decomposition
    )
    # Joined to the character before or after it by `\X`, and unassigned (a grapheme of its own) to Unicode 17.
    grapheme_joiners = [
        ord(char)
        for char in chars
        if unicodedata2.category(char) != "Cn"
        and ord(char) not in assigned_then
        and (len(regex.findall(r"\X", f"a{char}")) == 1 or len(regex.findall(r"\X", f"{char}a")) == 1)
    ]
    TARGET.write_text(
        f'''"""The reference's Unicode for its normalizers (NFC, NFD, NFKC, NFKD) and StripAccents: Unicode 9.0.

Generated by scripts/generate_reference_unicode.py from unicodedataplus {unicodedataplus.unidata_version} (ages) and
unicodedata2 {unicodedata2.unidata_version} (properties); edit that script, not this file.

A code point assigned after Unicode 9.0 is unassigned to the reference: no decomposition, combining class 0, no
composition, no mark. NEWER_THAN_REFERENCE lists the ones where that makes a difference (those with a
decomposition, a nonzero combining class or a mark category today, or part of another character's
decomposition), as (first, last) ranges.
"""

# fmt: off
NEWER_THAN_REFERENCE = (
{table(ranges_of(relevant))}
)
# fmt: on

# Characters assigned after Unicode 17, by whose grapheme rules the reference's Precompiled normalizer splits text,
# that the `regex` module's newer `\\X` joins to a neighbour: a grapheme of their own to the reference.
NEWER_THAN_REFERENCE_GRAPHEMES = (
{table(ranges_of(grapheme_joiners))}
)

# Characters whose category moved between a mark and another kind since Unicode 9.0 (the reference's StripAccents
# still removes the first two, Vedic signs that were spacing marks, and keeps the Sharada sign, then punctuation).
MARKS_THEN = (0x1CF2, 0x1CF3)
NOT_MARKS_THEN = (0x111C9,)
'''
    )
    print(f"{TARGET}: {len(relevant)} code points, and {len(grapheme_joiners)} for graphemes")


if __name__ == "__main__":
    main()
