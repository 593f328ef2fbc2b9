"""BatchScheduler: requests decoded together give each the text `generate` gives it alone.

A tiny Llama with random weights (fast; its text is nonsense but exact) and the SmolLM2 tokenizer.
"""

import threading
import time

import pytest
import torch

from openformers import AutoModelForCausalLM, AutoTokenizer
from openformers.configs import GPT2Config, LlamaConfig
from openformers.serving import BatchScheduler, SamplingOptions

PROMPTS = [
    "Hello, I am a language model,",
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "用中文介绍一下你自己。",
    "A much longer prompt than the others, so that it joins a batch of shorter rows and pads them on the left.",
    "1, 2, 3,",
]


@pytest.fixture(scope="module")
def tokenizer(smollm2_gguf):
    return AutoTokenizer.from_pretrained(smollm2_gguf.parent, gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="module")
def model(tokenizer):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
    )
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture
def scheduler(model, tokenizer):
    scheduler = BatchScheduler(model, tokenizer, max_batch=8)
    yield scheduler
    scheduler.close()


def alone(model, tokenizer, prompt: str | list[int], max_tokens: int, eos_ids, **options) -> str:
    """The text `generate` gives for the prompt (a text or ids) alone, ended at the first EOS id; greedy unless
    `options` say otherwise."""
    ids = torch.tensor([tokenizer.encode(prompt) if isinstance(prompt, str) else prompt])
    new = model.generate(ids, max_new_tokens=max_tokens, **options)[0, ids.shape[1] :].tolist()
    ends = [i for i, token in enumerate(new) if token in eos_ids]
    return tokenizer.decode(new[: ends[0]] if ends else new, skip_special_tokens=True)


def run_in_threads(function, arguments) -> list:
    results = [None] * len(arguments)

    def run(i):
        results[i] = function(*arguments[i])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(arguments))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_requests_joining_a_running_batch_get_their_greedy_text_alone(model, tokenizer, scheduler):
    max_tokens = 24
    expected = [alone(model, tokenizer, p, max_tokens, scheduler.eos_token_ids) for p in PROMPTS]
    greedy = SamplingOptions(max_tokens=max_tokens, temperature=0)

    def staggered(i):
        # The first three start together; the others join while the batch is decoding.
        while i >= 3 and scheduler.decode_steps < 2 * (i - 2):
            time.sleep(0.001)
        return scheduler.complete(tokenizer.encode(PROMPTS[i]), greedy)

    results = run_in_threads(staggered, [(i,) for i in range(len(PROMPTS))])
    assert [r.text for r in results] == expected
    for result, text in zip(results, expected):
        assert result.finish_reason == "length"
        assert result.completion_tokens == max_tokens
    # Decoding was shared: far fewer batched steps than tokens generated.
    assert scheduler.decode_steps < len(PROMPTS) * max_tokens / 2
    assert scheduler.active == 0 and scheduler.waiting == 0


def test_a_gpt2_model_is_batched_the_same_way(tokenizer):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=256)
    gpt2 = AutoModelForCausalLM.from_config(config).eval()
    scheduler = BatchScheduler(gpt2, tokenizer)
    try:
        greedy = SamplingOptions(max_tokens=12, temperature=0)
        results = run_in_threads(lambda p: scheduler.complete(tokenizer.encode(p), greedy), [(p,) for p in PROMPTS])
        expected = [alone(gpt2, tokenizer, p, 12, scheduler.eos_token_ids) for p in PROMPTS]
        assert [r.text for r in results] == expected
    finally:
        scheduler.close()


def test_a_long_prompt_is_prefilled_in_chunks_while_the_batch_streams(model, tokenizer):
    scheduler = BatchScheduler(model, tokenizer, prefill_chunk=64)
    events, long_parts, long_done = [], [], threading.Event()

    def on_short_update(update):
        events.append(("short", update.finish_reason))

    def on_long_update(update):
        events.append(("long", update.finish_reason))
        long_parts.append(update.text)
        if update.finish_reason:
            long_done.set()

    try:
        scheduler.submit(tokenizer.encode(PROMPTS[1]), SamplingOptions(6, temperature=0), on_short_update)
        while not events:
            time.sleep(0.001)
        long_prompt = " ".join(PROMPTS) * 8
        long_ids = tokenizer.encode(long_prompt)
        assert len(long_ids) > 7 * 64
        scheduler.submit(long_ids, SamplingOptions(8, temperature=0), on_long_update)
        assert long_done.wait(60)
    finally:
        scheduler.close()
    # The short answer streamed to its end while the long prompt was prefilled, 64 tokens between two steps.
    first_long = next(i for i, (name, _) in enumerate(events) if name == "long")
    assert events.index(("short", "length")) < first_long
    assert "".join(long_parts) == alone(model, tokenizer, long_prompt, 8, scheduler.eos_token_ids)


def test_a_short_prompt_is_prefilled_before_long_ones_that_came_first(model, tokenizer):
    scheduler = BatchScheduler(model, tokenizer, prefill_chunk=64)
    events, done = [], threading.Event()
    long_ids = tokenizer.encode(" ".join(PROMPTS) * 8)

    def on_update(name):
        def record(update):
            events.append((name, update.finish_reason))
            if name == "short" and update.finish_reason:
                done.set()
        return record

    try:
        for name, ids in (("long1", long_ids), ("long2", long_ids[1:]), ("short", tokenizer.encode(PROMPTS[1]))):
            scheduler.submit(ids, SamplingOptions(2, temperature=0), on_update(name))
        assert done.wait(60)
    finally:
        scheduler.close()
    # Whether the long ones were admitted before it or with it, the short prompt's answer comes first.
    first_update = {name: next(i for i, (n, _) in enumerate(events) if n == name) for name in ("long1", "short")}
    assert first_update["short"] < first_update["long1"]


def test_a_prompt_that_starts_like_a_recent_one_prefills_only_the_rest(model, tokenizer, scheduler):
    first = tokenizer.encode(PROMPTS[4])
    second = first + tokenizer.encode(" Then it goes on with a question: what comes next?")
    greedy = SamplingOptions(max_tokens=10, temperature=0)
    inputs = []
    hook = model.register_forward_pre_hook(lambda module, args: inputs.append(tuple(args[0].shape)))
    try:
        scheduler.complete(first, greedy)
        inputs.clear()
        result = scheduler.complete(second, greedy)
    finally:
        hook.remove()
    assert inputs[0] == (1, len(second) - len(first))  # the prefill ran over the new tokens only
    assert result.text == alone(model, tokenizer, second, 10, scheduler.eos_token_ids)


def test_the_prefix_cache_keeps_at_most_its_size_in_bytes(model, tokenizer):
    bound = 60 * 2 * 2 * 2 * 16 * 4  # 60 positions: keys and values, 2 layers, 2 key/value heads of 16, float32
    scheduler = BatchScheduler(model, tokenizer, prefix_cache_bytes=bound)
    try:
        for prompt in PROMPTS:
            scheduler.complete(tokenizer.encode(prompt * 2), SamplingOptions(max_tokens=1))
        prefixes = scheduler._prefixes
        assert 0 < prefixes.bytes <= bound
        assert prefixes.bytes == sum(k.nbytes + v.nbytes for entry in prefixes.entries.values()
                                     for k, v in zip(entry.keys, entry.values))
        scheduler.complete(tokenizer.encode(" ".join(PROMPTS) * 2), SamplingOptions(max_tokens=1))
        assert max(map(len, prefixes.entries)) <= 60  # a prompt larger than the whole bound is not kept
    finally:
        scheduler.close()


def test_more_requests_than_max_batch_wait_their_turn(model, tokenizer):
    scheduler = BatchScheduler(model, tokenizer, max_batch=2)
    try:
        greedy = SamplingOptions(max_tokens=8, temperature=0)
        results = run_in_threads(lambda p: scheduler.complete(tokenizer.encode(p), greedy), [(p,) for p in PROMPTS])
        assert [r.text for r in results] == [alone(model, tokenizer, p, 8, scheduler.eos_token_ids) for p in PROMPTS]
    finally:
        scheduler.close()


def test_seeded_sampling_is_reproducible_alone_and_in_a_batch(tokenizer, scheduler):
    options = SamplingOptions(max_tokens=16, temperature=0.9, top_p=0.9, seed=1234)
    ids = tokenizer.encode(PROMPTS[0])
    first = scheduler.complete(ids, options).text
    together = run_in_threads(scheduler.complete, [(ids, options)] + [(tokenizer.encode(p), options) for p in PROMPTS])
    assert together[0].text == first
    other_seed = scheduler.complete(ids, SamplingOptions(max_tokens=16, temperature=0.9, seed=99)).text
    assert other_seed != first


def test_seeded_sampling_gives_the_text_generate_gives_with_that_seed(model, tokenizer, scheduler):
    for seed in (1234, 99):
        options = SamplingOptions(max_tokens=16, temperature=0.9, top_p=0.9, seed=seed)
        server = scheduler.complete(tokenizer.encode(PROMPTS[0]), options).text
        generator = torch.Generator().manual_seed(seed)
        assert server == alone(model, tokenizer, PROMPTS[0], 16, scheduler.eos_token_ids, do_sample=True,
                               temperature=0.9, top_p=0.9, top_k=0, generator=generator)


@pytest.mark.parametrize("temperature", [0, 0.9])
def test_a_stop_string_ends_the_text_where_generate_stops(model, tokenizer, scheduler, temperature):
    ids = tokenizer.encode(PROMPTS[2])
    sampling = dict(do_sample=True, temperature=temperature, top_k=0, generator=torch.Generator().manual_seed(5)) \
        if temperature else {}
    free = alone(model, tokenizer, ids, 24, scheduler.eos_token_ids, **sampling)
    stop = free[8:11]
    if sampling:
        sampling["generator"] = torch.Generator().manual_seed(5)
    stopped = model.generate(torch.tensor([ids]), max_new_tokens=24, stop_strings=[stop], tokenizer=tokenizer,
                             **sampling)[0, len(ids):]
    text = tokenizer.decode(stopped, skip_special_tokens=True)
    result = scheduler.complete(ids, SamplingOptions(24, temperature=temperature, stop=[stop], seed=5))
    assert result.text == text[: text.index(stop)] == free[: free.index(stop)]
    assert result.completion_tokens == len(stopped) < 24
    assert result.finish_reason == "stop"


def test_streamed_updates_add_up_to_the_text_and_end_before_a_stop_string(model, tokenizer, scheduler):
    expected = alone(model, tokenizer, PROMPTS[1], 24, scheduler.eos_token_ids)
    stop = expected[10:14]
    updates, done = [], threading.Event()

    def on_update(update):
        updates.append(update)
        if update.finish_reason:
            done.set()

    scheduler.submit(tokenizer.encode(PROMPTS[1]), SamplingOptions(24, temperature=0, stop=["\x00never", stop]),
                     on_update)
    assert done.wait(30)
    assert "".join(u.text for u in updates) == expected[: expected.index(stop)]
    assert updates[-1].finish_reason == "stop"
    assert all(u.finish_reason is None for u in updates[:-1])


def test_a_cancelled_request_leaves_the_batch_and_the_others_go_on(model, tokenizer, scheduler):
    started, finished = threading.Event(), threading.Event()
    last = []

    def on_update(update):
        started.set()
        if update.finish_reason:
            last.append(update)
            finished.set()

    request = scheduler.submit(tokenizer.encode(PROMPTS[0]), SamplingOptions(900, temperature=0), on_update)
    other = []
    thread = threading.Thread(target=lambda: other.append(
        scheduler.complete(tokenizer.encode(PROMPTS[1]), SamplingOptions(12, temperature=0))))
    thread.start()
    assert started.wait(30)
    request.cancel()
    assert finished.wait(30)
    thread.join()
    assert last[0].finish_reason == "cancelled" and last[0].completion_tokens < 900
    assert other[0].text == alone(model, tokenizer, PROMPTS[1], 12, scheduler.eos_token_ids)
    assert scheduler.active == 0


def test_a_failing_step_fails_its_requests_and_the_worker_keeps_serving(model, tokenizer, scheduler, monkeypatch):
    real_forward = type(model).forward

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(type(model), "forward", broken)
    with pytest.raises(RuntimeError, match="simulated failure"):
        scheduler.complete(tokenizer.encode(PROMPTS[0]), SamplingOptions(4, temperature=0))
    monkeypatch.setattr(type(model), "forward", real_forward)
    assert scheduler.complete(tokenizer.encode(PROMPTS[0]), SamplingOptions(4, temperature=0)).completion_tokens == 4


def test_a_request_whose_sampling_fails_fails_alone(model, tokenizer, scheduler):
    # A temperature this small turns the scores into inf, and the draw refuses them.
    broken = SamplingOptions(max_tokens=4, temperature=1e-45)

    def attempt(options):
        try:
            return scheduler.complete(tokenizer.encode(PROMPTS[0]), options).text
        except RuntimeError as error:
            return str(error)

    results = run_in_threads(attempt, [(broken,), (SamplingOptions(max_tokens=6, temperature=0),)])
    assert "Decoding failed: RuntimeError: probability tensor" in results[0]
    assert results[1] == alone(model, tokenizer, PROMPTS[0], 6, scheduler.eos_token_ids)


def test_close_cancels_what_is_left(tokenizer, model):
    scheduler = BatchScheduler(model, tokenizer, max_batch=1)
    reasons = []
    for prompt in PROMPTS[:3]:
        scheduler.submit(tokenizer.encode(prompt), SamplingOptions(1000, temperature=0),
                         lambda u: reasons.append(u.finish_reason) if u.finish_reason else None)
    scheduler.close()
    assert reasons == ["cancelled"] * 3
    with pytest.raises(RuntimeError, match="closed"):
        scheduler.submit([1], SamplingOptions(1), print)


def test_bad_requests_are_refused_at_submit(tokenizer, scheduler):
    with pytest.raises(ValueError, match="context of 1024 tokens"):
        scheduler.submit([1] * 1000, SamplingOptions(max_tokens=100), print)
    with pytest.raises(ValueError, match="empty"):
        scheduler.submit([], SamplingOptions(max_tokens=1), print)
    with pytest.raises(ValueError, match="max_tokens"):
        SamplingOptions(max_tokens=0)
    with pytest.raises(ValueError, match=r"top_p must be a number in \(0, 1\]"):  # the options table's words
        SamplingOptions(max_tokens=1, top_p=0)
    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        SamplingOptions(max_tokens=1, temperature=-0.5)
    with pytest.raises(ValueError, match="stop"):
        SamplingOptions(max_tokens=1, stop=[""])


def test_requests_past_the_cache_bound_wait_until_others_finish(model, tokenizer):
    per_token = 2 * 2 * 2 * 16 * 4  # keys and values, 2 layers, 2 key/value heads of 16, float32
    ids = tokenizer.encode(PROMPTS[0])
    options = SamplingOptions(max_tokens=8, temperature=0)
    scheduler = BatchScheduler(model, tokenizer, max_batch=8, max_cache_bytes=2 * (len(ids) + 8) * per_token)
    try:
        assert scheduler.cache_bytes_per_token == per_token
        batch_sizes = []
        step = scheduler._step

        def step_and_watch(group):
            batch_sizes.append(scheduler.active)
            step(group)

        scheduler._step = step_and_watch
        results = run_in_threads(lambda: scheduler.complete(ids, options), [()] * 5)
        assert [r.text for r in results] == [alone(model, tokenizer, ids, 8, scheduler.eos_token_ids)] * 5
        assert max(batch_sizes) == 2  # two fit the bound, never three; the others waited
        with pytest.raises(ValueError, match=r"needs up to \d+ bytes of key/value cache, more than max_cache_bytes"):
            scheduler.submit(ids * 4, options, lambda update: None)
    finally:
        scheduler.close()


# -- turns: light work every turn, heavy work within its share --------------------------------------------------


class Unit:
    def __init__(self, name):
        self.name, self.served = name, 0


def test_heavy_work_takes_at_most_its_share_of_time_while_light_work_waits():
    from openformers.serving.scheduler import TurnPolicy

    turns, units = TurnPolicy(heavy_share=0.25), [Unit("a"), Unit("b")]
    light_seconds, heavy_seconds, order = 0.0, 0.0, []
    for _ in range(120):
        turns.light_done(1.0)  # a light turn of 1 s, then heavy units of 3 s when the share allows
        light_seconds += 1.0
        unit = turns.heavy_unit(units, light_waiting=True)
        if unit is not None:
            turns.heavy_done(3.0, light_waiting=True)
            heavy_seconds += 3.0
            order.append(unit.name)
    assert heavy_seconds / (light_seconds + heavy_seconds) <= 0.25 + 3.0 / (light_seconds + heavy_seconds)
    assert heavy_seconds / (light_seconds + heavy_seconds) > 0.2  # and not much less: the heavy ones progress
    assert order == ["a", "b"] * (len(order) // 2) + ["a"] * (len(order) % 2)  # least recently served first


def test_without_light_work_heavy_work_has_every_turn():
    from openformers.serving.scheduler import TurnPolicy

    turns, units = TurnPolicy(heavy_share=0.25), [Unit("a"), Unit("b"), Unit("c")]
    order = []
    for _ in range(6):
        order.append(turns.heavy_unit(units, light_waiting=False).name)
        turns.heavy_done(10.0, light_waiting=False)
    assert order == ["a", "b", "c"] * 2
    assert turns.debt == 0  # time taken from no one is owed to no one
    assert turns.heavy_unit([], light_waiting=True) is None
    with pytest.raises(ValueError, match="heavy_share must be a number between 0 and 1"):
        TurnPolicy(heavy_share=1)


class Clock:
    """Every reading half a second after the one before: each turn's light work and each heavy unit take 0.5 s."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        self.now += 0.5
        return self.now


def test_a_short_request_decodes_every_turn_while_long_ones_share_a_quarter(model, tokenizer):
    long_ids = [tokenizer.encode(" ".join(PROMPTS) + f" Variant {i}.") for i in range(4)]
    short_ids = tokenizer.encode(PROMPTS[1])
    per_token = 2 * 2 * 2 * 16 * 4
    # Two long rows per heavy group, a prefill of 8 tokens per heavy unit while the short request runs.
    scheduler = BatchScheduler(model, tokenizer, short_prompt_tokens=len(short_ids), busy_prefill_chunk=8,
                               step_cache_bytes=2 * (len(long_ids[0]) + 20) * per_token, clock=Clock())
    steps, short_done = [], threading.Event()
    step = scheduler._step

    def step_and_record(group):
        steps.append(("light" if group.light else "heavy", len(group.rows)))
        step(group)

    scheduler._step = step_and_record
    try:
        greedy = SamplingOptions(max_tokens=12, temperature=0)
        long_results = [[] for _ in long_ids]
        for ids, parts in zip(long_ids, long_results):
            scheduler.submit(ids, greedy, lambda update, parts=parts: parts.append(update))
        while sum(1 for kind, _ in steps if kind == "heavy") < 2:
            time.sleep(0.001)
        short_parts, at_short_end = [], []

        def on_short(update):
            short_parts.append(update)
            if update.finish_reason:
                # Read in the worker, at once: heavy steps that run after the short request ended do not count.
                at_short_end.extend(steps)
                short_done.set()

        scheduler.submit(short_ids, SamplingOptions(max_tokens=9, temperature=0), on_short)
        assert short_done.wait(60)
        deadline = time.monotonic() + 60
        while any(not p or not p[-1].finish_reason for p in long_results) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        scheduler.close()
    light = [i for i, (kind, _) in enumerate(at_short_end) if kind == "light"]
    tokens = short_parts[-1].completion_tokens
    assert len(light) == tokens - 1  # the first token comes from its prefill, then one step a turn
    heavy_meanwhile = sum(kind == "heavy" for kind, _ in at_short_end[light[0]:])
    assert heavy_meanwhile <= len(light) / 3 + 1  # a heavy unit is paid back by 3 light turns as long
    assert max(rows for kind, rows in steps if kind == "heavy") == 2  # the step budget splits the long rows
    assert "".join(u.text for u in short_parts) == alone(model, tokenizer, short_ids, 9, scheduler.eos_token_ids)
    for ids, parts in zip(long_ids, long_results):
        assert "".join(u.text for u in parts) == alone(model, tokenizer, ids, 12, scheduler.eos_token_ids)


def four_seeded_choices(scheduler, ids) -> tuple[list[SamplingOptions], list[list[str]]]:
    """Submits `ids` four times with seeds 0-3 (sampled, 8 tokens) and waits: the options and each one's texts."""
    options = [SamplingOptions(max_tokens=8, temperature=0.8, seed=seed) for seed in range(4)]
    texts, finished = [[] for _ in options], []
    for option, parts in zip(options, texts):
        scheduler.submit(ids, option, lambda update, parts=parts: (
            parts.append(update.text), update.finish_reason and finished.append(update)))
    deadline = time.monotonic() + 60
    while len(finished) < len(options) and time.monotonic() < deadline:
        time.sleep(0.01)
    return options, texts


def test_the_choices_of_one_prompt_share_its_prefill(model, tokenizer):
    assert_the_choices_of_one_prompt_share_its_prefill(model, tokenizer)


def assert_the_choices_of_one_prompt_share_its_prefill(model, tokenizer):
    """Four seeded choices of one prompt: one prefill, each choice starting from a copy of its cache, and each the
    text generate gives with its seed."""
    ids = tokenizer.encode(" ".join(PROMPTS))
    # No reuse through the prefix cache; a prefill of several turns, so that all four are admitted meanwhile.
    scheduler = BatchScheduler(model, tokenizer, prefix_cache_bytes=0, prefill_chunk=8)
    prefilled = []
    hook = model.register_forward_pre_hook(
        lambda module, args: prefilled.append(args[0].shape[1]) if args[0].shape[0] == 1 else None)
    try:
        options, texts = four_seeded_choices(scheduler, ids)
    finally:
        hook.remove()
        scheduler.close()
    assert sum(prefilled[: len(ids) // 8 + 1]) == len(ids)  # one prefill for the four; then steps of 4 rows
    for parts, option in zip(texts, options):
        generator = torch.Generator().manual_seed(option.seed)
        assert "".join(parts) == alone(model, tokenizer, ids, 8, scheduler.eos_token_ids, do_sample=True,
                                       temperature=0.8, top_k=0, generator=generator)


def test_free_memory_is_handed_back_where_the_c_library_can():
    import ctypes.util
    import sys

    from openformers.serving.scheduler import _malloc_trim, release_free_memory

    release_free_memory()  # a no-op where there is no malloc_trim, never an error
    if sys.platform.startswith("linux") and "libc" in (ctypes.util.find_library("c") or ""):
        assert _malloc_trim() is not None


def test_a_long_prefill_is_chunked_by_the_measured_time_of_a_unit():
    from openformers.serving.scheduler import UNIT_LIGHT_TURNS, TurnPolicy

    assert UNIT_LIGHT_TURNS * 0.05 > 0.1  # so that the light turns below set the unit's time

    turns = TurnPolicy(heavy_share=0.25, unit_seconds=0.1)
    assert turns.prefill_chunk(False, 32, 512) == 32  # nothing timed yet: the smallest chunk
    turns.heavy_done(0.05, light_waiting=False, prefilled=32)  # 1/640 s a token: 64 tokens in 0.1 s
    assert turns.prefill_chunk(False, 32, 512) == 64
    assert turns.prefill_chunk(True, 32, 512) == 32  # light work waits: the smallest, whatever the speed
    turns.heavy_done(0.05, light_waiting=False, prefilled=96)  # faster: the estimate moves halfway to it
    assert turns.prefill_chunk(False, 32, 512) == int(0.1 / ((0.05 / 32 + 0.05 / 96) / 2))
    turns.light_done(0.05)  # light turns of 50 ms: a unit may take as long as UNIT_LIGHT_TURNS of them
    assert turns.prefill_chunk(False, 32, 512) == int(UNIT_LIGHT_TURNS * 0.05 / ((0.05 / 32 + 0.05 / 96) / 2))
    for _ in range(4):
        turns.heavy_done(0.001, light_waiting=False, prefilled=1000)
    assert turns.prefill_chunk(False, 32, 512) == 512  # never more than the largest
    turns.heavy_done(5.0, light_waiting=False, prefilled=8)
    assert turns.prefill_chunk(False, 32, 512) == 32  # nor fewer than the smallest
    with pytest.raises(ValueError, match="unit_seconds must be a positive number"):
        TurnPolicy(unit_seconds=0)


class ForwardClock:
    """Seconds that pass only in the model's forward passes: 10 ms a pass plus 1 ms a token of each row."""

    def __init__(self, model):
        self.now = 0.0
        self.hook = model.register_forward_pre_hook(self.advance)

    def advance(self, module, args):
        self.now += 0.010 + 0.001 * args[0].shape[1]

    def __call__(self):
        return self.now


def test_with_nothing_light_a_long_prefill_grows_its_chunks_only_up_to_the_unit_time(model, tokenizer):
    ids = tokenizer.encode(" ".join(PROMPTS * 3))
    clock = ForwardClock(model)
    chunks = []
    hook = model.register_forward_pre_hook(lambda module, args: chunks.append(args[0].shape[1]))
    # A pass of c tokens takes 10 + c ms: 20 tokens fill a unit of 30 ms.
    scheduler = BatchScheduler(model, tokenizer, short_prompt_tokens=8, busy_prefill_chunk=4, prefill_chunk=512,
                               heavy_unit_seconds=0.030, clock=clock)
    try:
        text = scheduler.complete(ids, SamplingOptions(max_tokens=6, temperature=0)).text
    finally:
        hook.remove()
        clock.hook.remove()
        scheduler.close()
    prefill = chunks[: chunks.index(1)] if 1 in chunks else chunks[:-5]
    assert sum(prefill) == len(ids) > 60
    assert prefill[0] == 4  # before any chunk was timed
    assert max(prefill) <= 20 < len(ids)  # no chunk takes more than the unit's 30 ms
    assert max(prefill) >= 15  # and they grow towards it from the smallest
    assert text == alone(model, tokenizer, ids, 6, scheduler.eos_token_ids)


def test_the_choices_of_a_long_prompt_join_one_per_unit_of_heavy_work(model, tokenizer):
    ids = tokenizer.encode(" ".join(PROMPTS))
    chunk = -(-len(ids) // 4)  # a prefill of four turns, so that all four are admitted meanwhile
    scheduler = BatchScheduler(model, tokenizer, short_prompt_tokens=8, busy_prefill_chunk=chunk,
                               prefill_chunk=chunk, heavy_unit_seconds=1e-9, prefix_cache_bytes=0)
    turns, started, prefilled = [0], [], []
    turn, start_sibling = scheduler._turn, scheduler._start_sibling

    def counted_turn():
        turns[0] += 1
        turn()

    def recorded_start(row):
        started.append(turns[0])
        start_sibling(row)

    scheduler._turn, scheduler._start_sibling = counted_turn, recorded_start
    hook = model.register_forward_pre_hook(
        lambda module, args: prefilled.append(args[0].shape[1]) if args[0].shape[1] > 1 else None)
    try:
        options, texts = four_seeded_choices(scheduler, ids)
    finally:
        hook.remove()
        scheduler.close()
    assert sum(prefilled) == len(ids)  # one prefill for the four
    assert len(started) == 3 and len(set(started)) == 3  # the other three start in three turns, one each
    for parts, option in zip(texts, options):
        generator = torch.Generator().manual_seed(option.seed)
        assert "".join(parts) == alone(model, tokenizer, ids, 8, scheduler.eos_token_ids, do_sample=True,
                                       temperature=0.8, top_k=0, generator=generator)


# -- models whose layers keep a state (a MambaCache, a HybridCache) --------------------------------------------------

STATE_MODELS = {
    "mamba": ("MambaConfig", dict(hidden_size=32, state_size=8, num_hidden_layers=2, conv_kernel=4, time_step_rank=8)),
    "lfm2": ("Lfm2Config", dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                num_key_value_heads=2, layer_types=["conv", "full_attention", "conv"],
                                max_position_embeddings=1024)),
}


@pytest.fixture(scope="module", params=list(STATE_MODELS))
def state_model(request, tokenizer, tmp_path_factory):
    """A tiny random Mamba, or an LFM2 (convolutions around an attention layer), made and saved by the reference."""
    transformers = pytest.importorskip("transformers")
    config_class, sizes = STATE_MODELS[request.param]
    torch.manual_seed(0)
    config = getattr(transformers, config_class)(vocab_size=len(tokenizer), initializer_range=0.2, **sizes)
    folder = tmp_path_factory.mktemp(request.param)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return AutoModelForCausalLM.from_pretrained(folder).eval()


def test_a_state_cache_model_batches_requests_as_they_come_and_go(state_model, tokenizer):
    """Requests joining and leaving a running batch (the states' rows appended and dropped) get generate's text."""
    scheduler = BatchScheduler(state_model, tokenizer, max_batch=8)
    try:
        greedy = SamplingOptions(max_tokens=16, temperature=0)

        def staggered(i):
            while i >= 2 and scheduler.decode_steps < 3 * (i - 1):
                time.sleep(0.001)
            return scheduler.complete(tokenizer.encode(PROMPTS[i]), greedy)

        results = run_in_threads(staggered, [(i,) for i in range(len(PROMPTS))])
        expected = [alone(state_model, tokenizer, p, 16, scheduler.eos_token_ids) for p in PROMPTS]
        assert [r.text for r in results] == expected
        assert scheduler.decode_steps < len(PROMPTS) * 16 / 2  # decoded together
        # float32: Mamba's two layers' convolution (64 channels, 4 taps) and scan (64 x 8) states; LFM2's attention
        # layer's keys and values (2 heads of 8) per position, and its two convolutions' last 3 inputs (32 channels).
        per_token, states = {"mamba": (0, 2 * (64 * 4 + 64 * 8) * 4), "lfm2": (2 * 2 * 8 * 4, 2 * 32 * 3 * 4)}[
            state_model.config.model_type]
        assert (scheduler.cache_bytes_per_token, scheduler.state_bytes) == (per_token, states)
        request = scheduler.submit([1] * 5, SamplingOptions(max_tokens=3), lambda update: None)
        assert scheduler.cache_bytes(request) == 8 * per_token + states
    finally:
        scheduler.close()
    for bound, most in ((states + 100 * per_token, 100 if per_token else None), (states - 1, 0)):
        bounded = BatchScheduler(state_model, tokenizer, max_cache_bytes=bound)
        try:
            assert bounded.max_request_tokens == most  # a cache of states alone bounds no length, where they fit
            if most == 0:
                with pytest.raises(ValueError, match="more than max_cache_bytes"):
                    bounded.submit([1] * 5, SamplingOptions(max_tokens=3), lambda update: None)
        finally:
            bounded.close()


def test_a_state_cache_model_reuses_only_a_whole_earlier_prompts_state(state_model, tokenizer):
    """A state after a prompt cannot be cropped: a prompt that starts with a whole earlier prompt prefills only the
    rest, one that shares only a start with it (16 tokens or more) prefills all of itself; both get generate's text."""
    scheduler = BatchScheduler(state_model, tokenizer)
    first = tokenizer.encode(PROMPTS[4])
    longer = first + tokenizer.encode(" Then it goes on with a question: what comes next?")
    sharing_a_start = first[:-4] + tokenizer.encode(" and then something else entirely.")
    greedy = SamplingOptions(max_tokens=10, temperature=0)
    inputs = []
    hook = state_model.register_forward_pre_hook(lambda module, args: inputs.append(tuple(args[0].shape)))
    try:
        scheduler.complete(first, greedy)
        for prompt, prefilled in ((longer, len(longer) - len(first)), (sharing_a_start, len(sharing_a_start))):
            inputs.clear()
            result = scheduler.complete(prompt, greedy)
            assert inputs[0] == (1, prefilled)
            assert result.text == alone(state_model, tokenizer, prompt, 10, scheduler.eos_token_ids)
    finally:
        hook.remove()
        scheduler.close()


def test_the_choices_of_a_state_cache_models_prompt_share_its_prefill(state_model, tokenizer):
    assert_the_choices_of_one_prompt_share_its_prefill(state_model, tokenizer)
