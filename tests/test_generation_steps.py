"""The decoding core (generation/steps.py): rows that join and leave a batch get the tokens they get alone."""

import pytest
import torch

from openformers.configs import GPT2Config, LlamaConfig
from openformers.generation.sampling import Sampler
from openformers.generation.steps import Batch, Decoder, Sequence, decode
from openformers.generation.stopping_criteria import EosTokenCriteria, MaxLengthCriteria, StoppingCriteriaList
from openformers.models.gpt2 import GPT2LMHeadModel
from openformers.models.llama import LlamaForCausalLM

VOCAB = 96


def models():
    torch.manual_seed(0)
    yield "llama", LlamaForCausalLM.from_config(LlamaConfig.from_dict(dict(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2)))
    yield "gpt2", GPT2LMHeadModel.from_config(GPT2Config.from_dict(dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4)))


MODELS = [pytest.param(model.eval(), id=name) for name, model in models()]


def prompt(length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, VOCAB, (1, length), generator=torch.Generator().manual_seed(seed))


def greedy(ids: torch.Tensor, new_tokens: int, criteria=None) -> Sequence:
    criteria = criteria or StoppingCriteriaList([MaxLengthCriteria(ids.shape[1] + new_tokens)])
    return Sequence(ids, ids.shape[1] + new_tokens, Sampler([], do_sample=False), criteria)


def alone(model, ids: torch.Tensor, new_tokens: int) -> list[int]:
    sequence = greedy(ids, new_tokens)
    return [int(token) for token in decode(Decoder(model, ids, None), sequence)]


@pytest.mark.parametrize("model", MODELS)
@torch.inference_mode()
def test_appended_rows_and_kept_rows_give_the_logits_of_each_prompt_alone(model):
    short, long = prompt(3, 1), prompt(9, 2)
    expected = {}
    for name, ids in (("short", short), ("long", long)):
        decoder = Decoder(model, ids, None)
        logits = [decoder.prefill()]
        for token in (5, 6, 7, 8):
            logits.append(decoder.step(torch.tensor([token])))
        expected[name] = torch.cat(logits)

    batch, other = Decoder(model, short, None), Decoder(model, long, None)
    both = [torch.cat([batch.prefill(), other.prefill()])]
    batch.append_rows(other)
    assert batch.attention_mask.tolist() == [[0] * 6 + [1] * 3, [1] * 9]
    both += [batch.step(torch.tensor([token, token])) for token in (5, 6)]
    close = dict(atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.stack(both, dim=1), torch.stack([expected["short"][:3], expected["long"][:3]]),
                               **close)
    batch.keep_rows(torch.tensor([0]))  # the short row alone: its padding goes, and with it the mask
    assert batch.attention_mask is None and batch.cache.seq_len == 5
    alone_again = torch.cat([batch.step(torch.tensor([token])) for token in (7, 8)])
    torch.testing.assert_close(alone_again, expected["short"][3:], **close)


@pytest.mark.parametrize("model", MODELS)
@torch.inference_mode()
def test_sequences_joining_and_leaving_a_batch_get_their_tokens_alone(model):
    prompts = [prompt(4, 3), prompt(11, 4), prompt(2, 5)]
    lengths = [6, 9, 5]
    expected = [alone(model, ids, n) for ids, n in zip(prompts, lengths)]

    batch, sequences, joined_at = Batch(), [], {0: 0, 1: 2, 2: 3}  # sequence -> the step it joins before
    step = 0
    while len(sequences) < len(prompts) or batch.sequences:
        for i, when in joined_at.items():
            if when == step:
                decoder = Decoder(model, prompts[i], None)
                sequences.append(greedy(prompts[i], lengths[i]))
                sequences[-1].choose(decoder.prefill())
                batch.join(sequences[-1], decoder)
        batch.leave([sequence for sequence in batch.sequences if sequence.done])
        if batch.sequences:
            batch.step()
        step += 1
    got = [sequence.ids[0, sequence.prompt_length : sequence.length].tolist() for sequence in sequences]
    assert got == expected


def test_a_sequence_pads_the_rows_that_stopped_and_says_why_they_stopped():
    criteria = StoppingCriteriaList([MaxLengthCriteria(5), EosTokenCriteria(2)])
    sequence = Sequence(torch.tensor([[7, 8], [7, 9]]), 5, Sampler([], do_sample=False), criteria, pad_id=0)
    sequence.append(torch.tensor([2, 4]))
    assert sequence.unfinished.tolist() == [False, True] and not sequence.done
    assert sequence.finish_reason(0) == "stop"
    assert sequence.append(torch.tensor([5, 6])).tolist() == [0, 6]  # the stopped row gets the pad id
    sequence.append(torch.tensor([5, 3]))
    assert sequence.done and sequence.ids.tolist() == [[7, 8, 2, 0, 0], [7, 9, 4, 6, 3]]
    assert sequence.finish_reason(1) == "length"


def test_one_row_stops_at_the_criteria_lists_answer_without_calling_it(monkeypatch):
    # One row with generate's own criteria is decided by OneRowStops; the list is still what finish_reason asks.
    called = []
    monkeypatch.setattr(StoppingCriteriaList, "__call__", lambda self, *a, **k: called.append(1) or torch.tensor([True]))
    criteria = StoppingCriteriaList([MaxLengthCriteria(6), EosTokenCriteria([2, 3])])
    sequence = Sequence(torch.tensor([[7, 8]]), 6, Sampler([], do_sample=False), criteria, pad_id=0)
    sequence.append(torch.tensor([4]))
    assert not sequence.done and not called
    assert sequence.append(torch.tensor([3])).tolist() == [3] and sequence.done and not called
    sequence = Sequence(torch.tensor([[7, 8]]), 6, Sampler([], do_sample=False), criteria)
    for token in (4, 5, 6):
        sequence.append(torch.tensor([token]))
    assert not sequence.done
    sequence.append(torch.tensor([7]))
    assert sequence.done and sequence.ids.tolist() == [[7, 8, 4, 5, 6, 7]] and not called


@torch.inference_mode()
def test_a_sequence_whose_choice_fails_ends_alone():
    model = MODELS[0].values[0]

    def broken(input_ids, scores):
        raise RuntimeError("simulated")

    failing = Sequence(prompt(3, 6), 10, Sampler([broken], do_sample=False), StoppingCriteriaList())
    fine = greedy(prompt(5, 7), 4)
    batch = Batch()
    for sequence in (failing, fine):
        decoder = Decoder(model, sequence.ids[:, : sequence.prompt_length], None)
        decoder.prefill()
        sequence.append(torch.tensor([4]))  # a first token, as if chosen from the prefill's logits
        batch.join(sequence, decoder)
    batch.step()
    assert isinstance(failing.error, RuntimeError) and failing.done
    assert fine.error is None and fine.length == fine.prompt_length + 2


def test_the_sampler_draws_with_its_own_generator():
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    draws = [Sampler([], True, torch.Generator().manual_seed(7)).choose(scores).tolist() for _ in range(2)]
    assert draws[0] == draws[1]
    assert Sampler([], do_sample=False).choose(scores).tolist() == scores.argmax(-1).tolist()
    assert Sampler([], do_sample=False).takes_argmax_of_logits
    assert not Sampler([], do_sample=True).takes_argmax_of_logits
