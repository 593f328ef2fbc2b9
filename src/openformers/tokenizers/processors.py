"""Post-processors: the fourth slot, adding the special tokens a model expects around its input
(a BOS in front, an EOS after, separators between a pair). They run only with add_special_tokens=True.

Each has `process(sequences) -> sequences`, over the ids of one sequence or of a pair; the tokenizer
joins what comes out.
"""

# A template is a list of items: "A" (the first sequence), "B" (the second) or a list of special token ids.
Template = list[str | list[int]]


class TemplateProcessing:
    """Lay the sequences out by a template, like `<s> $A </s>` for one sequence and `<s> $A </s> $B </s>` for two."""

    def __init__(self, single: Template, pair: Template | None = None):
        self.single = single
        self.pair = pair

    def process(self, sequences: list[list[int]]) -> list[list[int]]:
        if len(sequences) == 2 and self.pair is None:
            raise ValueError("This tokenizer's post-processor has no template for a pair of sequences.")
        template = self.single if len(sequences) == 1 else self.pair
        out = []
        for item in template:
            if item == "A":
                out.extend(sequences[0])
            elif item == "B":
                out.extend(sequences[1])
            else:
                out.extend(item)
        return [out]


class ByteLevel:
    """GPT-2's post-processor. It only trims offsets, so the ids pass through."""

    def process(self, sequences: list[list[int]]) -> list[list[int]]:
        return sequences


class Sequence:
    def __init__(self, processors: list):
        self.processors = list(processors)

    def process(self, sequences: list[list[int]]) -> list[list[int]]:
        for processor in self.processors:
            sequences = processor.process(sequences)
        return sequences
