"""The accelerated model's weights on 2 MB pages (kernels.library.HugePagePlacement, place_on_huge_pages): the
same values, each tensor in a storage of its own, ties kept, the pages really huge where the system offers them,
and a part placed before each decoding step within its time budget."""

import os
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
    monkeypatch.setattr(library, "_available_memory", lambda: library._memory_reserve() + 4096)  # less than the copy
    assert not library.place_on_huge_pages([weight])
    assert weight.data_ptr() == address


@pytest.mark.skipif(not os.path.exists("/proc/self/maps"), reason="no /proc/self/maps (not Linux)")
def test_tensors_mapped_from_their_file_are_told_apart(tmp_path):
    safetensors.torch.save_file({"w": torch.randn(256, 256), "b": torch.randn(256)}, tmp_path / "model.safetensors")
    loaded = safetensors.torch.load_file(tmp_path / "model.safetensors")  # views of the file's mapping
    own = [torch.randn(256, 256), loaded["w"].clone()]
    assert library._file_mapped([*loaded.values(), *own]) == {id(loaded["w"]), id(loaded["b"])}


@needs_huge_pages
def test_weights_mapped_from_their_file_move_only_where_the_copies_leave_the_reserve(tmp_path, monkeypatch):
    # Their pages are cache the system counts as available: the copies must fit beside the reserve.
    safetensors.torch.save_file({"w": torch.randn(2048, 576)}, tmp_path / "model.safetensors")  # 4.5 MB
    weight = safetensors.torch.load_file(tmp_path / "model.safetensors")["w"]
    address, before = weight.data_ptr(), weight.clone()
    monkeypatch.setattr(library, "_memory_reserve", lambda: 1 << 20)
    monkeypatch.setattr(library, "_available_memory", lambda: (1 << 20) + weight.nbytes - 64)
    assert not library.place_on_huge_pages([weight])
    assert weight.data_ptr() == address
    monkeypatch.setattr(library, "_available_memory", lambda: (1 << 20) + weight.nbytes + 64)
    assert library.place_on_huge_pages([weight])
    assert weight.data_ptr() != address and torch.equal(weight, before)


@needs_huge_pages
def test_weights_in_memory_of_their_own_move_while_the_reserve_holds(monkeypatch):
    # Each old storage is freed once copied, so a model bigger than what is available less the reserve moves whole;
    # where the old storages are held elsewhere (here: the clones' references), what is available falls with each
    # copy, and the tensors that would cut into the reserve stay where they are.
    tensors = [torch.randn(2048, 576) for _ in range(3)]  # 4.5 MB each
    held = [t.data for t in tensors]  # keeps the old storages alive
    addresses = [t.data_ptr() for t in tensors]
    size = tensors[0].nbytes
    readings = iter([size, 2 * size + 64, size + 64, size - 64])  # at the start, then before each tensor
    monkeypatch.setattr(library, "_memory_reserve", lambda: 1 << 20)
    monkeypatch.setattr(library, "_available_memory", lambda: (1 << 20) + next(readings))
    placement = library.HugePagePlacement(tensors)
    placement.place()
    assert not placement.pending
    assert [t.data_ptr() != a for t, a in zip(tensors, addresses)] == [True, True, False]
    assert all(torch.equal(t, h) for t, h in zip(tensors, held))


class RecordedPlacement(library.HugePagePlacement):
    """HugePagePlacement that lists the tensors it was given and counts the steps it was called before."""

    made: list["RecordedPlacement"] = []

    def __init__(self, tensors):
        super().__init__(tensors)
        self.tensors, self.calls = list(tensors), 0
        RecordedPlacement.made.append(self)

    def __call__(self) -> bool:
        self.calls += 1
        return super().__call__()


@needs_huge_pages
def test_an_accelerated_model_keeps_its_tie_and_results_with_its_weights_moved_by_its_first_step(monkeypatch):
    model = tiny_model(tie_word_embeddings=True)
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    with torch.inference_mode():
        expected = model(ids).logits
        expected_tokens = model.generate(ids, max_new_tokens=4, do_sample=False)
    monkeypatch.setattr(RecordedPlacement, "made", [])
    monkeypatch.setattr(library, "HugePagePlacement", RecordedPlacement)
    accelerated(model)
    address = model.model.layers[0].mlp.down_proj.weight.data_ptr()
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, expected)
    assert RecordedPlacement.made == []  # a prompt's forward (or training) takes no decoding step, so nothing moves
    with torch.inference_mode():
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected_tokens)
    [placement] = RecordedPlacement.made
    layer = model.model.layers[0]
    moved = placement.tensors
    assert any(t is layer.mlp.down_proj.weight for t in moved) and any(t is model.lm_head.weight for t in moved)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert placement.calls == 1 and not placement.pending  # the first step's allowance places a small model whole
    assert layer.mlp.down_proj.weight.data_ptr() != address  # moved
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, expected)
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected_tokens)
    assert len(RecordedPlacement.made) == 1 and placement.calls == 1  # once per model, not called once done
    assert kernels.loaded()


class Clock:
    """A time.perf_counter that advances a millisecond each time it is read: each unit of placing work (a huge
    page written, or a tensor copied) reads it once, so a budget buys a fixed number of them."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1e-3
        return self.now


@needs_huge_pages
def test_placing_spends_its_allowance_at_the_first_step_then_a_share_of_the_time_between_steps(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(library, "time", clock)
    monkeypatch.setattr(library, "PLACING_ALLOWANCE", 0.0055)  # ~5 units of work: the first tensor's 3 pages, its copy
    monkeypatch.setattr(library, "PLACING_BUDGET", 0.0)
    monkeypatch.setattr(library, "PLACING_SHARE", 0.5)
    torch.manual_seed(0)
    tensors = [torch.randn(2048, 576) for _ in range(4)]  # 4.5 MB each: 3 huge pages (2.25 rounded up) and a copy
    before = [t.clone() for t in tensors]
    addresses = [t.data_ptr() for t in tensors]
    placement = library.HugePagePlacement(tensors)
    assert placement()  # tensors remain
    assert tensors[0].data_ptr() != addresses[0] and huge_bytes_at(tensors[0].data_ptr()) >= library.HUGE_PAGE
    assert [t.data_ptr() for t in tensors[1:]] == addresses[1:]
    assert placement()  # called again at once: the first step overran its allowance, so nothing more moves
    assert [t.data_ptr() for t in tensors[1:]] == addresses[1:]
    calls = 2
    while placement():  # a step of 10 ms between calls buys 5 ms of placing: about one tensor a call
        clock.now += 0.01
        calls += 1
        assert calls < 20
    assert calls >= 4  # the three other tensors took several steps
    for tensor, old in zip(tensors, before):
        assert torch.equal(tensor, old)
    assert len({t.untyped_storage().data_ptr() for t in tensors}) == 4
    assert all(huge_bytes_at(t.data_ptr()) >= library.HUGE_PAGE for t in tensors)
    assert not placement()


@needs_huge_pages
def test_place_weights_moves_them_all_at_once_and_the_steps_then_move_nothing(monkeypatch):
    model = tiny_model(tie_word_embeddings=True)
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    with torch.inference_mode():
        expected_tokens = model.generate(ids, max_new_tokens=4, do_sample=False)
    monkeypatch.setattr(RecordedPlacement, "made", [])
    monkeypatch.setattr(library, "HugePagePlacement", RecordedPlacement)
    assert not kernels.place_weights(model)  # not accelerated: nothing of the step's to move
    accelerated(model)
    addresses = [model.model.layers[0].mlp.down_proj.weight.data_ptr(), model.lm_head.weight.data_ptr()]
    assert kernels.place_weights(model)
    [placement] = RecordedPlacement.made
    assert placement.calls == 0 and not placement.pending  # placed whole, outside any step's budget
    moved = [model.model.layers[0].mlp.down_proj.weight.data_ptr(), model.lm_head.weight.data_ptr()]
    assert all(now != before for now, before in zip(moved, addresses))
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not kernels.place_weights(model)  # done once
    with torch.inference_mode():
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected_tokens)
    assert placement.calls == 0 and len(RecordedPlacement.made) == 1


@needs_huge_pages
def test_a_model_without_the_step_places_its_weights_before_its_first_decoding_forward(monkeypatch):
    # A bias on the MLP keeps the model off the decoding step; it generates, so its linear layers take the
    # kernel's products, and a forward of one new token places their weights as the step would.
    import copy

    model = tiny_model(tie_word_embeddings=True, mlp_bias=True)
    ids = torch.tensor([[3, 14, 15, 92, 65]])
    with torch.inference_mode():
        expected_tokens = model.generate(ids, max_new_tokens=4, do_sample=False)
    monkeypatch.setattr(RecordedPlacement, "made", [])
    monkeypatch.setattr(library, "HugePagePlacement", RecordedPlacement)
    spare = copy.deepcopy(model)
    assert not kernels.accelerate(model) and model.model.accelerated_step is None
    assert isinstance(model.model.layers[0].mlp.down_proj, kernels.Linear)
    copied = copy.deepcopy(model)  # places its own weights
    address = model.model.layers[0].mlp.down_proj.weight.data_ptr()
    with torch.inference_mode():
        model(ids)
    model.train()
    with torch.inference_mode():
        model(ids[:, :1])
    model.eval()
    model(ids[:, :1])  # with gradients: training's
    assert RecordedPlacement.made == []  # a prompt's forward, training and gradients place nothing
    with torch.inference_mode():
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected_tokens)
    [placement] = RecordedPlacement.made
    assert placement.calls == 1 and not placement.pending  # a small model placed whole before its first token
    assert model.model.layers[0].mlp.down_proj.weight.data_ptr() != address
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert not model._forward_pre_hooks  # the hook left once all were placed
    with torch.inference_mode():
        assert torch.equal(model.generate(ids, max_new_tokens=4, do_sample=False), expected_tokens)
    assert placement.calls == 1
    # place_weights moves the copy's all at once, and its hook leaves
    assert kernels.place_weights(copied) and not copied._forward_pre_hooks
    assert RecordedPlacement.made[-1].tensors[0] is not placement.tensors[0]
    assert not kernels.place_weights(copied) and not kernels.place_weights(spare)
    with torch.inference_mode():
        assert torch.equal(copied.generate(ids, max_new_tokens=4, do_sample=False), expected_tokens)


@needs_huge_pages
def test_an_encoder_decoder_places_its_weights_at_its_first_decoding_forward(monkeypatch):
    # generate runs the encoder apart and feeds the model one decoder id per sequence (decoder_input_ids).
    import copy

    import openformers
    from openformers.models.t5 import T5ForConditionalGeneration

    torch.manual_seed(0)
    config = openformers.T5Config(vocab_size=99, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                  decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    plain = T5ForConditionalGeneration.from_config(config).eval()
    model = copy.deepcopy(plain)
    monkeypatch.setattr(RecordedPlacement, "made", [])
    monkeypatch.setattr(library, "HugePagePlacement", RecordedPlacement)
    assert not kernels.accelerate(model) and model._forward_pre_hooks
    ids = torch.tensor([[3, 14, 15, 92]])
    with torch.inference_mode():
        tokens = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        assert torch.equal(tokens, plain.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False))
    [placement] = RecordedPlacement.made
    assert placement.calls == 1 and not placement.pending and not model._forward_pre_hooks
    assert any(t is model.lm_head.weight for t in placement.tensors)


@needs_huge_pages
@pytest.mark.parametrize("on_the_step", [True, False], ids=["step", "kernel-products"])
def test_weights_placed_while_generating_still_train(on_the_step):
    # generate runs in inference mode, where a new tensor is an inference tensor; the placed weights must not be,
    # or a training step after generating could not save them for its backward.
    model = tiny_model(mlp_bias=not on_the_step)
    assert kernels.accelerate(model) == on_the_step
    address = model.model.layers[0].mlp.down_proj.weight.data_ptr()
    model.generate(torch.tensor([[3, 14, 15]]), max_new_tokens=3, do_sample=False)
    weight = model.model.layers[0].mlp.down_proj.weight
    assert weight.data_ptr() != address and not weight.is_inference() and weight.requires_grad
    model.train()
    ids = torch.tensor([[3, 14, 15, 16]])
    model(ids, labels=ids).loss.backward()
    assert weight.grad is not None
