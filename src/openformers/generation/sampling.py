"""The sampler: how every decoding loop turns a step's logits into the next tokens.

The processors and warpers that `build_processors` makes from the options (processors.py) turn the logits into
scores; the token is their argmax, or a draw from their softmax with the sampler's random generator. `generate`
and the server both choose through a `Sampler`, so one request gets the same tokens from either.
"""

import torch

from .processors import apply_processors, sample_next_token


class Sampler:
    """The processors chain and the choice: argmax, or a draw with `generator` (torch's global one when None)."""

    def __init__(self, processors: list, do_sample: bool, generator: torch.Generator | None = None):
        self.processors = processors
        self.do_sample = do_sample
        self.generator = generator

    @property
    def takes_argmax_of_logits(self) -> bool:
        """True when the token is the argmax of the raw logits: a batch can take it for many rows at once."""
        return not self.do_sample and not self.processors

    def scores(self, input_ids: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """The (R, V) float scores of the next token, after the processors; `input_ids` are the rows so far."""
        return apply_processors(self.processors, input_ids, logits.float())

    def choose(self, scores: torch.Tensor) -> torch.Tensor:
        """The (R,) next tokens from the processed scores."""
        return sample_next_token(scores, self.do_sample, self.generator)
