"""The accelerated model's weights on 2 MB pages (kernels.library.place_on_huge_pages): the same values, each
tensor in a storage of its own, ties kept, and the pages really huge where the system offers them."""

import re

import pytest
import safetensors.torch
import torch

from openformers import kernels
from openformers.kernels import library
from test_kernels import accelerated, tiny_model

needs_huge_pages = pytest.mark.skipif(not library._transparent_huge_pages(), reason="no transparent huge pages here")


def huge_bytes_at(address: int) -> int:
    """The bytes on huge pages (AnonHugePages) of the mapping that holds `address`, from /proc/self/smaps."""
    inside = False
    for line in open("/proc/self/smaps"):
        span = re.match(r"([0-9a-f]+)-([0-9a-f]+) ", line)
        if span:
            inside = int(span[1], 16) <= address < int(span[2], 16)
        elif inside and line.startswith("AnonHugePages:"):
            return int(line.split()[1]) * 1024
    return 0


@needs_huge_pages
def test_tensors_keep_their_values_in_storages_of_their_own_on_huge_pages():
    torch.manual_seed(0)
    weight = torch.nn.Parameter(torch.randn(2048, 576))  # 4.5 MB: at least one whole 2 MB page
    packed = torch.randint(-128, 128, (1536, 576), dtype=torch.int8)
    halves = torch.randn(1000, 576).bfloat16()
    before = [t.clone() for t in (weight, packed, halves)]
    assert library.place_on_huge_pages([weight, packed, halves, weight])  # a tied tensor listed twice moves once
    assert isinstance(weight, torch.nn.Parameter) and weight.requires_grad
    for tensor, old in zip((weight, packed, halves), before):
        assert tensor.dtype == old.dtype and torch.equal(tensor, old)
    storages = {t.untyped_storage().data_ptr() for t in (weight, packed, halves)}
    assert len(storages) == 3
    assert weight.data_ptr() % library.HUGE_PAGE == 0
    assert huge_bytes_at(weight.data_ptr()) >= library.HUGE_PAGE
    # A checkpoint writer that refuses tensors sharing memory takes them.
    saved = safetensors.torch.load(safetensors.torch.save({"w": weight.detach(), "p": packed, "h": halves}))
    assert torch.equal(saved["w"], before[0]) and torch.equal(saved["p"], packed)


def test_nothing_moves_without_room_to_copy(monkeypatch):
    weight = torch.randn(64, 64)
    address = weight.data_ptr()
    monkeypatch.setattr(library, "_available_memory", lambda: weight.numel() * 4)  # less than twice the copies
    assert not library.place_on_huge_pages([weight])
    assert weight.data_ptr() == address


@needs_huge_pages
def test_an_accelerated_model_keeps_its_tie_and_results_with_its_weights_moved_by_its_first_step(monkeypatch):
    model = tiny_model(tie_word_embeddings=True)
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    with torch.inference_mode():
        expected = model(ids).logits
        expected_tokens = model.generate(ids, max_new_tokens=4, do_sample=False)
    moved = []
    place = library.place_on_huge_pages
    monkeypatch.setattr(library, "place_on_huge_pages", lambda tensors: moved.extend(tensors) or place(tensors))
    accelerated(model)
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, expected)
    assert moved == []  # a prompt's forward (or training) takes no decoding step, so nothing is copied
    with torch.inference_mode():
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected_tokens)
    layer = model.model.layers[0]
    assert any(t is layer.mlp.down_proj.weight for t in moved) and any(t is model.lm_head.weight for t in moved)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    count = len(moved)
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, expected)
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected_tokens)
    assert len(moved) == count  # once per model
    assert kernels.loaded()


@needs_huge_pages
def test_placing_past_its_budget_puts_the_rest_on_ordinary_pages(monkeypatch):
    monkeypatch.setattr(library, "PLACING_ALLOWANCE", 0.0)
    monkeypatch.setattr(library, "PLACING_BUDGET", 0.0)  # spent once the first tensor is copied
    first, rest = torch.randn(2048, 576), torch.randn(2048, 576)
    before = rest.clone()
    assert library.place_on_huge_pages([first, rest])
    assert huge_bytes_at(first.data_ptr()) >= library.HUGE_PAGE
    assert huge_bytes_at(rest.data_ptr() + rest.numel() * 4 - 1) == 0
    assert torch.equal(rest, before)
