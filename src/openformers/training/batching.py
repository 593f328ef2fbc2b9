"""The Trainer's batches: row orders (shuffled, length-grouped), device moves, and gathering predictions."""

import numpy as np
import torch


def with_last_flag(batches):
    """(batch, is_last) pairs, one batch ahead, so a stream's last batch is known when it comes."""
    iterator = iter(batches)
    try:
        current = next(iterator)
    except StopIteration:
        return
    for following in iterator:
        yield current, False
        current = following
    yield current, True


def has_length(dataset) -> bool:
    try:
        return len(dataset) is not None
    except (TypeError, NotImplementedError):
        return False


def dataset_length(dataset) -> int:
    try:
        return len(dataset)
    except TypeError as error:
        raise TypeError(
            f"The Trainer needs a dataset with a length (a datasets.Dataset, a list of dicts or a map-style "
            f"torch Dataset); got {type(dataset).__name__}."
        ) from error


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def rows_in(batch: dict) -> int:
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return value.shape[0]
    return 1


class LazyBatches:
    """Batches made on the first iteration; len() and slicing (skipping batches on resume) need no draw."""

    def __init__(self, make, number: int, skip: int = 0):
        self.make, self.number, self.skip = make, number, skip

    def __len__(self) -> int:
        return max(self.number - self.skip, 0)

    def __getitem__(self, part: slice) -> "LazyBatches":
        if not isinstance(part, slice) or part.stop is not None or part.step is not None:
            raise TypeError("LazyBatches only skips leading batches: batches[n:].")
        return LazyBatches(self.make, self.number, self.skip + (part.start or 0))

    def __iter__(self):  # a generator: nothing is drawn before the first batch is asked for
        yield from self.make()[self.skip:]


def length_grouped_order(lengths: list[int], batch_size: int, generator=None) -> list[int]:
    """A shuffled order in which each batch holds rows of similar length: shuffle, cut into mega-batches of
    min(50, rows // (4 * batch_size)) batches, sort each by length (longest first), and put the longest row of
    all first, so that running out of memory happens at the first step."""
    multiple = max(min(len(lengths) // (batch_size * 4), 50), 1)
    shuffled = torch.randperm(len(lengths), generator=generator)
    size = multiple * batch_size
    groups = [sorted(shuffled[i:i + size].tolist(), key=lambda i: lengths[i], reverse=True)
              for i in range(0, len(lengths), size)]
    longest = int(torch.argmax(torch.tensor([lengths[group[0]] for group in groups])))
    groups[0][0], groups[longest][0] = groups[longest][0], groups[0][0]
    return [i for group in groups for i in group]


def predictions_of(outputs, ignore_keys=None, has_loss: bool = False):
    """The logits of a model's outputs: named logits of an output object, else every tensor but the loss."""
    if isinstance(outputs, torch.Tensor):
        return outputs.detach()
    for names in (("logits",), ("start_logits", "end_logits")):
        values = [getattr(outputs, n, None) for n in names]
        if all(isinstance(v, torch.Tensor) for v in values):
            return values[0].detach() if len(values) == 1 else tuple(v.detach() for v in values)
    if isinstance(outputs, dict):
        skipped = {"loss", "past_key_values", "cache", *(ignore_keys or [])}
        values = [v for k, v in outputs.items() if k not in skipped]
    elif isinstance(outputs, (tuple, list)):
        values = list(outputs[1:] if has_loss else outputs)
    else:
        values = []
    values = [v.detach() for v in values if isinstance(v, torch.Tensor)]
    if not values:
        raise ValueError(f"{type(outputs).__name__} has no logits to predict with; set prediction_loss_only=True.")
    return values[0] if len(values) == 1 else tuple(values)


def plain_number(value):
    """NumPy scalars and one-element tensors as Python numbers, so the metrics are JSON-serializable."""
    if isinstance(value, (np.generic, np.ndarray)) and np.size(value) == 1:
        return value.item()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def arrays_per_batch(parts: list) -> list:
    """eval_do_concat_batches=False: one NumPy array (or tuple of them) per batch."""
    return [concat_batches([part]) for part in parts]


def concat_batches(parts: list):
    """Join per-batch tensors into one NumPy array, padding the second axis with -100 where lengths differ."""
    if isinstance(parts[0], tuple):
        return tuple(concat_batches([part[i] for part in parts]) for i in range(len(parts[0])))
    parts = [p.float() if p.is_floating_point() else p for p in parts]
    if parts[0].dim() > 1 and len({p.shape[1] for p in parts}) > 1:
        width = max(p.shape[1] for p in parts)
        parts = [torch.nn.functional.pad(p, (0, 0) * (p.dim() - 2) + (0, width - p.shape[1]), value=-100) for p in parts]
    return torch.cat([p.cpu() for p in parts]).numpy()
