"""Post-processors: the fourth slot, adding the special tokens a model expects around its input
(a BOS in front, an EOS after, separators between a pair). They run only with add_special_tokens=True.

Each says, through `template(is_pair)`, how to lay out one sequence or a pair: a list of
`(item, type_id)` where item is "A" (the first sequence), "B" (the second) or a list of special
token ids. `trims_offsets` says whether token offsets leave out the spaces a token starts or ends with.
"""

# (item, type_id): item is "A", "B" or a list of special token ids.
Template = list[tuple[str | list[int], int]]

# What no post-processor (or one that adds nothing) does: the sequences one after the other.
PLAIN_SINGLE: Template = [("A", 0)]
PLAIN_PAIR: Template = [("A", 0), ("B", 1)]


class TemplateProcessing:
    """Lay the sequences out by a template, like `<s> $A </s>` for one sequence and `<s> $A </s> $B </s>` for two."""

    trims_offsets = False

    def __init__(self, single: Template, pair: Template | None = None):
        self.single = single
        self.pair = pair

    def template(self, is_pair: bool) -> Template:
        if not is_pair:
            return self.single
        if self.pair is None:
            raise ValueError("This tokenizer's post-processor has no template for a pair of sequences.")
        return self.pair


class BertProcessing(TemplateProcessing):
    """`[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]`, the second sequence with token type 1."""

    def __init__(self, cls_id: int, sep_id: int):
        super().__init__(
            [([cls_id], 0), ("A", 0), ([sep_id], 0)],
            [([cls_id], 0), ("A", 0), ([sep_id], 0), ("B", 1), ([sep_id], 1)],
        )


class RobertaProcessing(TemplateProcessing):
    """`<s> A </s>` and `<s> A </s></s> B </s>`, all token type 0; offsets trimmed of spaces by default."""

    def __init__(self, cls_id: int, sep_id: int, trim_offsets: bool = True, add_prefix_space: bool = True):
        super().__init__(
            [([cls_id], 0), ("A", 0), ([sep_id], 0)],
            [([cls_id], 0), ("A", 0), ([sep_id, sep_id], 0), ("B", 0), ([sep_id], 0)],
        )
        self.trims_offsets = trim_offsets
        self.add_prefix_space = add_prefix_space  # trimming leaves the first token's one leading space


class ByteLevel:
    """GPT-2's post-processor: it adds no tokens, and may trim the spaces off offsets (with `add_prefix_space`, not
    the one space the first token starts with)."""

    def __init__(self, trim_offsets: bool = True, add_prefix_space: bool = True):
        self.trims_offsets = trim_offsets
        self.add_prefix_space = add_prefix_space

    def template(self, is_pair: bool) -> Template:
        return PLAIN_PAIR if is_pair else PLAIN_SINGLE


class Sequence:
    """Several post-processors: the last one that adds tokens gives the layout; any may trim offsets."""

    def __init__(self, processors: list):
        self.processors = list(processors)
        self.trims_offsets = any(processor.trims_offsets for processor in self.processors)

    def template(self, is_pair: bool) -> Template:
        layout = PLAIN_PAIR if is_pair else PLAIN_SINGLE
        for processor in self.processors:
            candidate = processor.template(is_pair)
            if candidate not in (PLAIN_SINGLE, PLAIN_PAIR):
                layout = candidate
        return layout
