"""The decoding step's team of threads (decode.cpp's Team): rows claimed in chunks, a barrier whose waiters sleep.
Each output row is summed by one thread in one fixed order, whichever thread claims it, so any team gives the
one-thread results bit for bit; a team of more threads than the machine has cores is descheduled mid-product
and sleeps at barriers, the case of a CPU shared with other work, where the teams that follow leave threads out
and later try them again."""

import os
import threading

import pytest
import torch

from openformers import kernels
from openformers.configs import MistralConfig
from test_kernels import accelerated, step_logits, tiny_model


@pytest.mark.parametrize("quantization", [None, "int4"])
def test_more_threads_than_cores_give_the_one_thread_results_exactly(quantization, monkeypatch):
    kernels.build()
    torch.ops.openformers.crowd_team(0, 0, 0.0)
    model = tiny_model(MistralConfig, sliding_window=6, intermediate_size=192)
    if quantization:
        model = kernels.quantize(model, quantization)
    accelerated(model)
    tokens = torch.randint(0, 96, (24,), generator=torch.Generator().manual_seed(5)).tolist()
    sizes = team_sizes(monkeypatch)
    threads, crowd_size = torch.get_num_threads(), 2 * (os.cpu_count() or 1) + 1
    try:
        torch.set_num_threads(1)
        alone = step_logits(model, tokens, True, monkeypatch)
        torch.set_num_threads(crowd_size)
        crowd = step_logits(model, tokens, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
        torch.ops.openformers.crowd_team(0, 0, 0.0)
    assert len(sizes) == 2 * (len(tokens) - 3)
    assert torch.equal(crowd, alone)
    # At most os.cpu_count() of the crowd run at once, so the rest of its time is lost: the teams shrink.
    crowded = sizes[len(tokens) - 3:]
    assert crowded[0] == crowd_size and min(crowded) < crowd_size, crowded


def team_sizes(monkeypatch) -> list[int]:
    """A list that gets the number of threads of each compiled decoding step from here on."""
    sizes, decode_step = [], torch.ops.openformers.decode_step

    def recorded(*args):
        logits = decode_step(*args)
        sizes.append(torch.ops.openformers.team_threads())
        return logits

    monkeypatch.setattr(torch.ops.openformers, "decode_step", recorded)
    return sizes


@pytest.mark.parametrize("quantization", [None, "int8"])
def test_a_shrunk_team_grows_back_with_the_same_results(quantization, monkeypatch):
    model = tiny_model(MistralConfig, sliding_window=6, intermediate_size=192)
    if quantization:
        model = kernels.quantize(model, quantization)
    accelerated(model)
    monkeypatch.setattr(kernels.llama, "PROMPT_ROWS", {})  # the prompt through its layers: no team before the steps'
    tokens = torch.randint(0, 96, (40,), generator=torch.Generator().manual_seed(6)).tolist()
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = step_logits(model, tokens, True, monkeypatch)
        torch.set_num_threads(3)
        # One thread for a team (a step with its head), then a try with two.
        torch.ops.openformers.crowd_team(2, 2, 60.0)
        sizes = team_sizes(monkeypatch)
        shrunk = step_logits(model, tokens, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
        torch.ops.openformers.crowd_team(0, 0, 0.0)
    assert torch.equal(shrunk, alone)
    # What follows the try depends on how busy the machine is: shrinking back, or growing to three threads.
    assert sizes[:2] == [1, 2], sizes


def one_row_product():
    """A kernel Linear with the shape of a small language model head, and one input row: one team a call."""
    torch.manual_seed(0)
    layer = kernels.Linear.from_linear(torch.nn.Linear(64, 1000, bias=False))
    assert kernels.build()
    return layer, torch.randn(1, 64)


def test_the_language_model_head_claimed_by_a_crowd_matches_one_thread():
    layer, x = one_row_product()
    threads = torch.get_num_threads()
    try:
        with torch.inference_mode():
            torch.set_num_threads(1)
            alone = layer(x)
            torch.set_num_threads(2 * (os.cpu_count() or 1) + 1)
            crowd = layer(x)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(crowd, alone)


def test_a_shrunk_team_tries_again_once_its_patience_passes_in_wall_time():
    # A long team (a padded batch's prompt: ~0.1 s) would hold a shrunk size for seconds if the patience were
    # counted in teams alone: the next team tries one thread more once the time has passed, whatever the count.
    layer, x = one_row_product()
    threads = torch.get_num_threads()
    sizes = []
    try:
        torch.set_num_threads(2)
        with torch.inference_mode():
            alone = layer(x)
            for seconds in (60.0, 0.0):  # 1000 teams to go either way
                torch.ops.openformers.crowd_team(1, 1000, seconds)
                assert torch.equal(layer(x), alone)
                sizes.append(torch.ops.openformers.team_threads())
    finally:
        torch.set_num_threads(threads)
        torch.ops.openformers.crowd_team(0, 0, 0.0)
    assert sizes == [1, 2], sizes


def test_one_crowded_team_leaves_the_next_its_threads(monkeypatch):
    # One thread descheduled once crowds a single long team on a quiet machine; only a second crowded team in a
    # row makes the next ones smaller. A crowd's decoding steps, which meet at barriers, are crowded nearly always.
    model = tiny_model(MistralConfig, sliding_window=6, intermediate_size=192)
    accelerated(model)
    monkeypatch.setattr(kernels.llama, "PROMPT_ROWS", {})  # the prompt through its layers, as the sizes below assume
    tokens = torch.randint(0, 96, (24,), generator=torch.Generator().manual_seed(5)).tolist()
    sizes = []  # every team's in turn: each step's and its head's (a product of one input runs as a team)
    for op in ("decode_step", "matvec"):
        def recorded(*args, run=getattr(torch.ops.openformers, op)):
            result = run(*args)
            if args[0].dim() == 1 or args[0].shape[0] == 1:
                sizes.append(torch.ops.openformers.team_threads())
            return result
        monkeypatch.setattr(torch.ops.openformers, op, recorded)
    threads, crowd_size = torch.get_num_threads(), 2 * (os.cpu_count() or 1) + 1
    try:
        torch.ops.openformers.crowd_team(0, 0, 0.0)
        torch.set_num_threads(crowd_size)
        step_logits(model, tokens, True, monkeypatch)
    finally:
        torch.set_num_threads(threads)
        torch.ops.openformers.crowd_team(0, 0, 0.0)
    assert sizes[:2] == [crowd_size, crowd_size] and min(sizes) < crowd_size, sizes


# generate's torch threads beside the team ----------------------------------------------------------------------


class ThreadsSeen:
    """A logits processor that notes torch's thread count at each step and can fail at a given step."""

    def __init__(self, fail_at: int | None = None):
        self.threads, self.fail_at = [], fail_at

    def __call__(self, input_ids, scores):
        self.threads.append(torch.get_num_threads())
        if len(self.threads) == self.fail_at:
            raise RuntimeError("a processor's failure")
        return scores


def generate_crowded(model, threads: int, crowded_teams: int, prompt=(5, 9, 14), **options):
    """generate with torch set to `threads` and the team crowded down to one thread for `crowded_teams` teams
    (then it tries more, and keeps them on a quiet machine); returns (ids, threads seen at each step, threads
    set after generate)."""
    seen = ThreadsSeen(options.pop("fail_at", None))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        torch.ops.openformers.crowd_team(threads - 1, crowded_teams, 60.0)
        try:
            ids = model.generate(torch.tensor([prompt]), logits_processor=[seen], do_sample=False, **options)
        except RuntimeError:
            ids = None
        return ids, seen.threads, torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
        torch.ops.openformers.crowd_team(0, 0, 0.0)


def test_generate_runs_torch_at_the_crowded_teams_size_and_restores_the_callers_threads():
    model = accelerated(kernels.quantize(tiny_model(MistralConfig, sliding_window=6, intermediate_size=192), "int4"))
    with torch.inference_mode():
        plain = model.generate(torch.tensor([[5, 9, 14]]), max_new_tokens=12, do_sample=False)
    # Crowded for the whole call: torch at one thread from the prompt's step on (decode_prompt's team), the caller's
    # three after generate.
    ids, seen, after = generate_crowded(model, 3, crowded_teams=1000, max_new_tokens=12)
    assert torch.equal(ids, plain)
    assert set(seen) == {1}, seen
    assert after == 3
    # An early stop (an EOS id among the tokens) and a failing processor restore them too.
    eos = int(plain[0, 6])
    ids, seen, after = generate_crowded(model, 3, 1000, max_new_tokens=12, eos_token_id=eos, pad_token_id=0)
    assert ids.shape[1] <= 7 and int(ids[0, -1]) == eos and after == 3
    ids, seen, after = generate_crowded(model, 3, 1000, max_new_tokens=12, fail_at=5)
    assert ids is None and len(seen) == 5 and seen[-1] == 1 and after == 3
    before = torch.get_num_threads()
    try:  # the teams ask for torch's setting again
        torch.set_num_threads(2)
        assert torch.ops.openformers.settled_team_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_a_crowded_team_tries_the_callers_threads_while_torch_runs_on_fewer(monkeypatch):
    model = accelerated(tiny_model(MistralConfig, sliding_window=6, intermediate_size=192))
    # The prompt through its layers, longer than kernels.KERNEL_ROWS: only the head of its forward runs a team.
    monkeypatch.setattr(kernels.llama, "PROMPT_ROWS", {})
    prompt = list(range(10, 20))
    with torch.inference_mode():
        plain = model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False)
    sizes = team_sizes(monkeypatch)
    # One thread for two teams (the prompt's head, the first step, which runs its head since the call above fed the
    # head its steps), then the next step's team tries two threads, the caller's setting, although torch is at one
    # since the first step.
    ids, seen, after = generate_crowded(model, 2, crowded_teams=3, prompt=prompt, max_new_tokens=10)
    assert torch.equal(ids, plain)
    assert seen[:2] == [2, 1] and sizes[:2] == [1, 2] and after == 2, (seen, sizes)


def test_a_model_without_the_step_keeps_torchs_threads():
    assert kernels.build()  # the library loaded (crowd_team), as when another test of this process loaded it
    model = tiny_model(MistralConfig, sliding_window=6, intermediate_size=192)
    ids, seen, after = generate_crowded(model, 2, crowded_teams=1000, max_new_tokens=5)
    assert set(seen) == {2} and after == 2


def test_generate_in_two_threads_at_once_sets_each_threads_own_setting_back():
    # Torch's setting is each thread's own: a generate that starts while another thread's runs is no inner loop of
    # it, and must set its own thread's threads back after following the crowded teams down to one.
    model = accelerated(kernels.quantize(tiny_model(MistralConfig, sliding_window=6, intermediate_size=192), "int4"))
    prompt = torch.tensor([[5, 9, 14]])
    with torch.inference_mode():
        plain = model.generate(prompt, max_new_tokens=8, do_sample=False)
    inside, release, other = threading.Event(), threading.Event(), {}

    def held(input_ids, scores):  # keeps the other thread's generate in its loop until released
        inside.set()
        release.wait(timeout=60)
        return scores

    def generate_beside():
        torch.set_num_threads(3)
        other["ids"] = model.generate(prompt, max_new_tokens=4, logits_processor=[held], do_sample=False)
        other["threads"] = torch.get_num_threads()

    beside = threading.Thread(target=generate_beside)
    ids, seen, after = None, [], None
    try:
        beside.start()
        assert inside.wait(timeout=60)
        ids, seen, after = generate_crowded(model, 3, crowded_teams=1000, max_new_tokens=8)
    finally:
        release.set()
        beside.join()
    assert torch.equal(ids, plain) and torch.equal(other["ids"], plain[:, :7])
    assert set(seen) == {1}, seen  # from the prompt's step on, as above
    assert after == 3 and other["threads"] == 3
