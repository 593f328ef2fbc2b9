"""DynamicCache on small hand-made tensors: growth, crop, reorder, and the batch operations of continuous batching;
HybridCache, a DynamicCache that also holds a MambaCache for models whose layers mix attention and states, and the
cache DynamicCache(config=...) makes of each kind of config against the reference's layers for it."""

import pytest
import torch

import openformers
from openformers.generation.cache import DynamicCache, HybridCache, MambaCache, cut_back


def filled(rows: int, length: int, start: float = 0.0, layers: int = 2) -> DynamicCache:
    """A cache whose key at (row, position) holds start + 100 * row + position, and whose value is its negative."""
    cache = DynamicCache()
    keys = start + 100 * torch.arange(rows)[:, None] + torch.arange(length)[None]  # (B, T)
    keys = keys.float()[:, None, :, None].expand(rows, 2, length, 3)  # (B, n_kv, T, hs)
    for layer in range(layers):
        cache.update(layer, keys, -keys)
    return cache


def positions(cache: DynamicCache, layer: int = 0) -> list[list[float]]:
    keys, values = cache.keys[layer][:, 0, : cache.lengths[layer], 0], cache.values[layer][:, 0, : cache.lengths[layer], 0]
    assert torch.equal(values, -keys)
    return keys.tolist()


def test_update_appends_and_grows_in_blocks():
    cache = filled(1, 3)
    assert cache.seq_len == 3 and cache.keys[0].shape[2] == 256
    keys, values = cache.update(0, torch.full((1, 2, 1, 3), 7.0), torch.full((1, 2, 1, 3), -7.0))
    assert keys.shape == (1, 2, 4, 3) and keys[0, 0, :, 0].tolist() == [0, 1, 2, 7]
    assert cache.get_seq_length(0) == 4 and cache.get_seq_length(1) == 3


def test_reserve_all_reserves_every_layer_as_reserve_does_and_grows_them():
    cache, each = filled(1, 255, layers=3), filled(1, 255, layers=3)
    keys, values, start = cache.reserve_all(1)
    assert start == 255 and keys is cache.keys and values is cache.values and cache.lengths == [256] * 3
    assert [each.reserve(layer, 1)[2] for layer in range(3)] == [255] * 3 and each.lengths == cache.lengths
    keys, _, start = cache.reserve_all(2)  # past the first block: every layer's buffers grow, keeping what they held
    assert start == 256 and cache.lengths == [258] * 3
    assert all(k.shape[2] == 512 and torch.equal(k[:, :, :255], e[:, :, :255]) for k, e in zip(keys, each.keys))


def test_reserve_all_refuses_layers_of_different_lengths():
    cache = filled(1, 3)
    cache.update(0, torch.zeros(1, 2, 1, 3), torch.zeros(1, 2, 1, 3))
    with pytest.raises(ValueError, match=r"one length.*\[4, 3\]"):
        cache.reserve_all(1)


def test_crop_keeps_the_first_positions_or_removes_from_the_end():
    cache = filled(1, 5)
    cache.crop(4)
    assert positions(cache) == [[0, 1, 2, 3]]
    cache.crop(-1)
    assert positions(cache) == [[0, 1, 2]]


def test_reorder_keeps_the_named_rows():
    cache = filled(3, 2)
    cache.reorder(torch.tensor([2, 0]))
    assert positions(cache) == [[200, 201], [0, 1]]


def test_left_pad_puts_empty_positions_in_front():
    cache = filled(2, 2)
    cache.left_pad(2)
    assert positions(cache, 1) == [[0, 0, 0, 1], [0, 0, 100, 101]]
    assert cache.lengths == [4, 4]
    cache.update(0, torch.full((2, 2, 1, 3), 9.0), torch.full((2, 2, 1, 3), -9.0))  # it still grows
    assert positions(cache) == [[0, 0, 0, 1, 9], [0, 0, 100, 101, 9]]


def test_append_rows_joins_caches_of_one_length():
    cache, other = filled(1, 3), filled(2, 3, start=1000)
    cache.append_rows(other)
    assert positions(cache, 1) == [[0, 1, 2], [1000, 1001, 1002], [1100, 1101, 1102]]
    with pytest.raises(ValueError, match="left_pad the shorter"):
        cache.append_rows(filled(1, 2))


def test_drop_front_forgets_padding_no_row_needs():
    cache = filled(2, 4)
    cache.drop_front(3)
    assert positions(cache) == [[3], [103]] and cache.seq_len == 1


def hybrid(rows: int, length: int, start: float = 0.0) -> HybridCache:
    """Layers attention, state, attention, convolution-only state: keys as `filled` makes them, each state layer's
    states holding start + 100 * row (its ssm None for the convolution-only layer)."""
    cache = HybridCache([True, False, True, False])
    keys = filled(rows, length, start, layers=1).keys[0][:, :, :length]
    row_values = start + 100 * torch.arange(rows).float()
    for layer in range(4):
        if layer % 2 == 0:
            cache.update(layer, keys, -keys)
        else:
            conv = row_values[:, None, None].expand(rows, 3, 2).clone()
            cache.store(layer, conv, conv[:, :1].clone() if layer == 1 else None, length)
    return cache


def test_hybrid_cache_sends_each_layer_to_its_part():
    cache = hybrid(2, 3)
    assert len(cache.keys) == 2 and len(cache.states.conv_states) == 2 and len(cache) == 4
    assert cache.seq_len == cache.get_seq_length() == 3 and cache.batch_size == 2
    keys, _ = cache.update(2, torch.full((2, 2, 1, 3), 7.0), torch.full((2, 2, 1, 3), -7.0))
    assert keys[0, 0, :, 0].tolist() == [0, 1, 2, 7] and cache.lengths == [3, 4]
    conv, ssm = cache.state(1)
    assert conv[:, 0, 0].tolist() == [0, 100] and ssm.shape == (2, 1, 2) and cache.state(3)[1] is None
    with pytest.raises(TypeError, match="Layer 1 keeps no keys and values in this HybridCache, but was used as an "
                                        "attention layer"):
        cache.update(1, keys, keys)
    with pytest.raises(TypeError, match="Layer 0 keeps no state in this HybridCache, but was used as a state layer"):
        cache.state(0)


def test_hybrid_cache_layers_may_hold_keys_and_a_state_both():
    """Falcon-H1's layers attend and keep a Mamba state side by side: each part counts only its own layers."""
    cache = HybridCache([True, True, False], states=[True, False, True])
    keys = torch.arange(6.0).reshape(1, 1, 2, 3)
    cache.update(0, keys, -keys)
    cache.update(1, keys + 1, -keys)
    cache.store(0, torch.zeros(1, 3, 2), torch.ones(1, 1, 2), 2)
    cache.store(2, torch.ones(1, 3, 2), None, 2)
    assert len(cache.keys) == 2 and len(cache.states.conv_states) == 2 and cache.seq_len == 2
    assert cache.state(0)[1].sum() == 2 and cache.state(2)[1] is None and cache.keys[1][0, 0, 0, 0] == 1
    assert repr(cache).startswith("HybridCache(attention_layers=2, state_layers=2,")
    with pytest.raises(TypeError, match="Layer 1 keeps no state"):
        cache.state(1)
    with pytest.raises(ValueError, match="3 layers in attends but 2 in states"):
        HybridCache([True, True, False], states=[True, False])


def test_hybrid_cache_row_operations_reach_both_parts():
    cache = hybrid(2, 3)
    cache.reorder(torch.tensor([1, 1, 0]))
    assert positions(cache)[0] == [100, 101, 102] and cache.batch_size == 3
    assert cache.state(1)[0][:, 0, 0].tolist() == [100, 100, 0] and cache.state(1)[1][:, 0, 0].tolist() == [100, 100, 0]
    cache = hybrid(1, 2)
    cache.left_pad(1)
    assert cache.seq_len == 3 and cache.states.lengths == [3, 3]
    cache.append_rows(hybrid(1, 3, start=1000))
    assert cache.batch_size == 2 and cache.state(3)[0][:, 0, 0].tolist() == [0, 1000] and cache.state(3)[1] is None
    assert positions(cache) == [[0, 0, 1], [1000, 1001, 1002]]
    cache.drop_front(1)
    assert cache.seq_len == 2 and positions(cache, 1) == [[0, 1], [1001, 1002]]


def test_hybrid_cache_cannot_go_back_but_can_start_over():
    cache = hybrid(1, 3)
    assert not cache.croppable
    cache.crop(3)  # keeps every position: nothing to forget
    with pytest.raises(ValueError, match="cannot be cropped to 2 of its 3 positions"):
        cache.crop(-1)
    assert cache.seq_len == 3
    cache.reset()
    assert cache.seq_len == 0 and cache.lengths == [0, 0] and not cache.states.conv_states



def test_a_snapshot_restores_keys_and_states_and_cut_back_crops_or_restores():
    """What assisted decoding does with a cache that keeps states: a snapshot before feeding, restored after (the keys
    fed since dropped, the states as they were), where a DynamicCache is cropped instead."""
    cache = hybrid(1, 3)
    snapshot = cache.snapshot()
    cache.update(0, torch.full((1, 2, 2, 3), 7.0), torch.full((1, 2, 2, 3), -7.0))
    cache.update(2, torch.full((1, 2, 2, 3), 7.0), torch.full((1, 2, 2, 3), -7.0))
    cache.store(1, torch.full((1, 3, 2), 9.0), torch.full((1, 1, 2), 9.0), 2)
    cache.store(3, torch.full((1, 3, 2), 9.0), None, 2)
    assert cache.seq_len == 5
    assert cut_back(cache, 4, snapshot) == 3  # back to the snapshot: the caller feeds positions 3 and 4 again
    assert cache.lengths == [3, 3] and cache.states.lengths == [3, 3] and positions(cache) == [[0, 1, 2]]
    assert cache.state(1)[0].unique().tolist() == [0] and cache.state(1)[1].unique().tolist() == [0]
    assert cut_back(cache, 3, snapshot) == 3 and cache.state(3)[1] is None  # holding no more: left as it is
    assert cut_back(cache, 1, snapshot) == 0 and cache.seq_len == 0  # before the snapshot: starts over
    keys = filled(1, 5)
    assert cut_back(keys, 2, None) == 2 and positions(keys) == [[0, 1]]


def test_copies_hold_the_positions_and_states_asked_for():
    cache = hybrid(1, 3)
    copy = cache.copy()
    assert type(copy) is HybridCache and copy.attends == cache.attends and copy.seq_len == 3
    assert positions(copy) == [[0, 1, 2]] and copy.keys[0].shape[2] == 3  # buffers of the positions' size
    assert copy.state(1)[0] is not cache.state(1)[0] and torch.equal(copy.state(1)[0], cache.state(1)[0])
    assert copy.nbytes == cache.nbytes == 2 * 2 * (1 * 2 * 3 * 3) * 4 + (3 * 2 + 1 * 2) * 4 + 3 * 2 * 4
    copy.update(0, torch.full((1, 2, 1, 3), 7.0), torch.full((1, 2, 1, 3), -7.0))
    assert positions(cache) == [[0, 1, 2]]  # the copy grows on its own
    with pytest.raises(ValueError, match="holds only the states after its 3 positions, so it cannot be copied with 2"):
        cache.copy(2)
    keys = filled(2, 5)
    start = keys.copy(2)
    assert type(start) is DynamicCache and positions(start) == [[0, 1], [100, 101]] and start.seq_len == 2
    assert start.nbytes == keys.nbytes * 2 // 5
    with pytest.raises(ValueError, match=r"copy\(positions\) takes 0 to the 5 positions held, got 6"):
        keys.copy(6)
    states = MambaCache()
    states.store(0, torch.ones(1, 3, 2), torch.ones(1, 3, 4), 5)
    assert states.copy().nbytes == states.nbytes == (6 + 12) * 4 and states.copy(5).seq_len == 5

# Per family, a small config: DynamicCache(config=...) holds keys and values for the layers that attend and states for
# the others, as the reference's DynamicCache(config=...) gives them its DynamicLayer and LinearAttentionLayer.
CONFIGS = {
    "LlamaConfig": dict(num_hidden_layers=2),
    "Gemma2Config": dict(num_hidden_layers=3),
    "Lfm2Config": dict(num_hidden_layers=3, layer_types=["conv", "full_attention", "conv"]),
    "GraniteMoeHybridConfig": dict(num_hidden_layers=3, layer_types=["mamba", "attention", "mamba"]),
    "BambaConfig": dict(num_hidden_layers=3, attn_layer_indices=[0]),
    "JambaConfig": dict(num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1),
    "FalconH1Config": dict(num_hidden_layers=2),
    "MambaConfig": dict(num_hidden_layers=2),
    "Mamba2Config": dict(num_hidden_layers=2),
}


@pytest.mark.parametrize("name", CONFIGS)
def test_a_dynamic_cache_of_a_config_holds_what_the_references_layers_hold(name):
    transformers = pytest.importorskip("transformers")
    from transformers.cache_utils import LinearAttentionCacheLayerMixin

    values = CONFIGS[name]
    theirs = transformers.DynamicCache(config=getattr(transformers, name)(**values))
    attends = [not isinstance(layer, LinearAttentionCacheLayerMixin) or hasattr(layer, "keys")
               for layer in theirs.layers]
    states = [isinstance(layer, LinearAttentionCacheLayerMixin) for layer in theirs.layers]
    config = getattr(openformers, name)(**values)
    cache = DynamicCache(config=config)
    if not any(states):
        assert type(cache) is DynamicCache
    elif not any(attends):
        assert type(cache) is MambaCache
    else:
        assert type(cache) is HybridCache and isinstance(cache, DynamicCache)
        assert (cache.attends, cache.keeps_state) == (attends, states)
        for same in (HybridCache(config=config), DynamicCache(config)):
            assert (same.attends, same.keeps_state) == (attends, states)


def test_a_hybrid_cache_wants_its_layers_once():
    with pytest.raises(TypeError, match=r"HybridCache\(attends, states\) or HybridCache\(config=model.config\)"):
        HybridCache()
    with pytest.raises(TypeError, match="not both"):
        HybridCache([True], config=openformers.Lfm2Config(num_hidden_layers=1, layer_types=["conv"]))
