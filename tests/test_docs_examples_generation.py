"""The documentation's generation examples, run with `transformers` and with `openformers`: same ids, same text.

Sources: the guides generation_strategies, llm_tutorial and main_classes/text_generation, and the `Examples:`
blocks of the reference's generation/logits_process.py, stopping_criteria.py, streamers.py, watermarking.py and
configuration_utils.py. The checkpoints are swapped for a tiny random Llama (and GPT-2) with SmolLM2's tokenizer.
"""

import asyncio
import contextlib
import io
import threading

import pytest
import torch
from docs_examples import assert_same, run_both, tiny


@pytest.fixture(scope="module")
def llama(request):
    return tiny("llama", request)


@pytest.fixture(scope="module")
def gpt2(request):
    return tiny("gpt2", request)


def load(lib, folder, **tokenizer_options):
    return (lib.AutoTokenizer.from_pretrained(folder, **tokenizer_options),
            lib.AutoModelForCausalLM.from_pretrained(folder))


def generated(lib, folder, prompt, *, decode=True, **options):
    """The examples' common shape: tokenize a prompt, generate with `options`, batch-decode."""
    tokenizer, model = load(lib, folder)
    inputs = tokenizer(prompt, return_tensors="pt")
    outputs = model.generate(**inputs, **options)
    return outputs, tokenizer.batch_decode(outputs, skip_special_tokens=True) if decode else None


def test_tokenizer_folder_encodes_alike(llama):
    """The shared tokenizer.json means the same thing to both libraries (the other tests rely on it)."""
    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(llama)
        text = "Hugging Face is an open-source company 🤗, isn't it?\n  Yes."
        return tokenizer(text)["input_ids"], tokenizer.decode(tokenizer(text)["input_ids"]), len(tokenizer)

    assert_same(*run_both(example))


# --- generation_strategies.md -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_greedy_search(kind, request):
    folder = tiny(kind, request)
    assert_same(*run_both(generated, folder, "Hugging Face is an open-source company", max_new_tokens=20))


def test_greedy_search_default_length_is_twenty_new_tokens(llama):
    (got, _), (expected, _) = run_both(generated, llama, "I look forward to")
    assert_same(got, expected)
    assert expected.shape[-1] == 20 + 4


def test_multinomial_sampling(llama):
    def example(lib):
        lib.set_seed(0)
        return generated(lib, llama, "Today was an amazing day because", do_sample=True, num_beams=1,
                         max_new_tokens=30)

    assert_same(*run_both(example))


def test_beam_search(llama):
    assert_same(*run_both(generated, llama, "It is astonishing how one can", num_beams=5, max_new_tokens=12))


def test_beam_search_multinomial_sampling(llama):
    def example(lib):
        lib.set_seed(0)
        return generated(lib, llama, "translate English to German: The house is wonderful.", num_beams=5,
                         do_sample=True, max_new_tokens=10)

    assert_same(*run_both(example))


def test_prompt_lookup_decoding(llama):
    prompt = "The quick brown fox jumps over the lazy dog. The quick brown fox"
    got, expected = run_both(generated, llama, prompt, prompt_lookup_num_tokens=3, max_new_tokens=20)
    assert_same(got, expected)
    assert_same(got, run_both(generated, llama, prompt, max_new_tokens=20)[1])  # faster, never different


def test_speculative_decoding_with_an_assistant_model(llama, gpt2):
    def example(lib):
        tokenizer, model = load(lib, llama)
        assistant_model = lib.AutoModelForCausalLM.from_pretrained(gpt2)
        inputs = tokenizer("Alice and Bob", return_tensors="pt")
        outputs = model.generate(**inputs, assistant_model=assistant_model, max_new_tokens=15)
        return outputs, tokenizer.batch_decode(outputs, skip_special_tokens=True)

    got, expected = run_both(example)
    assert_same(got, expected)
    assert_same(got, run_both(generated, llama, "Alice and Bob", max_new_tokens=15)[1])


def test_streaming_with_text_streamer(llama):
    def example(lib):
        tok, model = load(lib, llama)
        inputs = tok(["An increasing sequence: one,"], return_tensors="pt")
        streamer = lib.TextStreamer(tok)
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            _ = model.generate(**inputs, streamer=streamer, max_new_tokens=20)
        return printed.getvalue()

    assert_same(*run_both(example))


def test_generation_config_saved_beside_the_model(llama, tmp_path):
    def example(lib):
        model = lib.AutoModelForCausalLM.from_pretrained(llama)
        generation_config = lib.GenerationConfig(
            max_new_tokens=50, do_sample=True, top_k=50, eos_token_id=model.config.eos_token_id
        )
        folder = tmp_path / lib.__name__
        generation_config.save_pretrained(folder, config_file_name="my_configuration.json")
        again = lib.GenerationConfig.from_pretrained(folder, "my_configuration.json")
        variant, unused_kwargs = lib.GenerationConfig.from_pretrained(
            folder, "my_configuration.json", top_k=1, foo=False, do_sample=True, return_unused_kwargs=True
        )
        return (again.max_new_tokens, again.do_sample, again.top_k, again.eos_token_id, variant.top_k,
                variant.do_sample, unused_kwargs)

    assert_same(*run_both(example))


def test_model_generation_config_shows_what_differs_from_the_defaults(llama):
    def example(lib):
        model = lib.AutoModelForCausalLM.from_pretrained(llama)
        shown = model.generation_config.to_diff_dict()
        shown.pop("transformers_version", None)
        return shown

    assert_same(*run_both(example))


# --- llm_tutorial.md ----------------------------------------------------------------------------------------------

def test_llm_tutorial_batched_and_left_padded(llama):
    def example(lib):
        model = lib.AutoModelForCausalLM.from_pretrained(llama, dtype=torch.float32)
        tokenizer = lib.AutoTokenizer.from_pretrained(llama, padding_side="left")
        tokenizer.pad_token = tokenizer.eos_token  # most LLMs don't have a pad token by default
        model_inputs = tokenizer(["A list of colors: red, blue", "Portugal is"], return_tensors="pt",
                                 padding=True).to(model.device)
        generated_ids = model.generate(**model_inputs, max_new_tokens=12)
        return model_inputs["attention_mask"], generated_ids, tokenizer.batch_decode(generated_ids,
                                                                                      skip_special_tokens=True)

    assert_same(*run_both(example))


def test_llm_tutorial_generation_config_object(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        generation_config = lib.GenerationConfig(max_new_tokens=20, do_sample=True, top_k=50,
                                                 eos_token_id=model.config.eos_token_id)
        lib.set_seed(3)
        inputs = tokenizer("A list of colors: red, blue", return_tensors="pt")
        return model.generate(**inputs, generation_config=generation_config)

    assert_same(*run_both(example))


# --- main_classes/text_generation.md: outputs and transition scores ------------------------------------------------

def test_return_dict_in_generate_with_scores_and_transition_scores(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer(["Today is"], return_tensors="pt")
        outputs = model.generate(**inputs, max_new_tokens=5, return_dict_in_generate=True, output_scores=True)
        transition_scores = model.compute_transition_scores(outputs.sequences, outputs.scores, normalize_logits=True)
        input_length = inputs.input_ids.shape[1]
        generated_tokens = outputs.sequences[:, input_length:]
        rows = [(int(tok), tokenizer.decode(tok), float(score), float(torch.exp(score)))
                for tok, score in zip(generated_tokens[0], transition_scores[0])]
        return outputs.sequences, outputs.scores, transition_scores, rows

    assert_same(*run_both(example))


def test_beam_transition_scores_recompute_the_sequence_scores(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer(["Today is"], return_tensors="pt")
        outputs = model.generate(**inputs, max_new_tokens=5, num_beams=4, num_return_sequences=4,
                                 return_dict_in_generate=True, output_scores=True)
        transition_scores = model.compute_transition_scores(outputs.sequences, outputs.scores, outputs.beam_indices,
                                                            normalize_logits=False)
        output_length = inputs.input_ids.shape[1] + (transition_scores.numpy() < 0).sum(axis=1)
        length_penalty = 1.0  # generate's default
        reconstructed_scores = transition_scores.sum(axis=1) / (output_length ** length_penalty)
        return outputs.sequences, outputs.sequences_scores, outputs.beam_indices, reconstructed_scores

    assert_same(*run_both(example))  # (in 5.x the guide's recipe no longer gives back sequences_scores exactly)


# --- logits_process.py docstrings: the generate() flags --------------------------------------------------------------

FLAG_EXAMPLES = {
    "min_length": ("A number:", dict(min_length=10)),
    "min_new_tokens": (["A number:"], dict(min_new_tokens=2)),
    "repetition_penalty": (["I'm not going to"], dict(repetition_penalty=1.1)),
    "encoder_repetition_penalty": (["Alice and Bob. The third member's name was"],
                                   dict(encoder_repetition_penalty=1.2)),
    "no_repeat_ngram_size": (["Today I"], dict(no_repeat_ngram_size=2)),
    "encoder_no_repeat_ngram_size": ("Alice: I love cats. What do you love?\nBob:",
                                     dict(encoder_no_repeat_ngram_size=2)),
    "forced_eos_token_id": ("A sequence: 1, 2, 3", dict(max_new_tokens=10, forced_eos_token_id=2)),
    "guidance_scale": (["Today, a dragon flew over Paris, France,"], dict(guidance_scale=1.5)),
    "renormalize_logits": ("A sequence: 1, 2, 3", dict(renormalize_logits=True)),
    # the Whisper and T5 docstrings' flags, on a decoder-only model
    "suppress_tokens": ("A sequence: 1, 2, 3", dict(max_new_tokens=6, suppress_tokens=[28, 30, 33])),
    "begin_suppress_tokens": ("A sequence: 1, 2, 3", dict(max_new_tokens=6, begin_suppress_tokens=[28, 30, 33])),
    "forced_bos_token_id": ("Translate from English to German: I love cats.", dict(max_new_tokens=6,
                                                                                   forced_bos_token_id=2)),
    "remove_invalid_values": ("A sequence: 1, 2, 3", dict(max_new_tokens=6, remove_invalid_values=True)),
}


@pytest.mark.parametrize("flag", FLAG_EXAMPLES)
def test_logits_processor_flag(llama, flag):
    prompt, options = FLAG_EXAMPLES[flag]

    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer(prompt, return_tensors="pt")
        outputs = model.generate(**inputs, **options)
        # the scores show the processor at work even where a tiny model's greedy pick does not change
        detailed = model.generate(**inputs, **options, return_dict_in_generate=True, output_scores=True)
        total = torch.sum(torch.exp(detailed.scores[-1]))
        return (outputs, tokenizer.batch_decode(outputs, skip_special_tokens=True), detailed.sequences, detailed.scores,
                bool(torch.allclose(total, torch.Tensor((1.000,)), rtol=1e-4)))

    assert_same(*run_both(example))


SAMPLING_EXAMPLES = {
    "plain": dict(),
    "top_p": dict(top_p=0.1),
    "top_k": dict(top_k=2),
    "min_p": dict(min_p=0.1),
    "typical_p": dict(typical_p=0.1, return_dict_in_generate=True, output_scores=True),
    "epsilon_cutoff": dict(epsilon_cutoff=0.1),
    "eta_cutoff": dict(eta_cutoff=0.1),
    "top_h": dict(top_h=0.4),
    "temperature": dict(max_new_tokens=10, temperature=0.0001, num_return_sequences=2),
    "exponential_decay_length_penalty": dict(temperature=0.9, max_length=30,
                                             exponential_decay_length_penalty=(15, 1.6)),
}


@pytest.mark.parametrize("warper", SAMPLING_EXAMPLES)
def test_sampling_warper_flag(llama, warper):
    def example(lib):
        lib.set_seed(1)
        tokenizer, model = load(lib, llama)
        model.config.pad_token_id = model.config.eos_token_id
        inputs = tokenizer("A sequence: 1, 2", return_tensors="pt")
        outputs = model.generate(**inputs, do_sample=True, **SAMPLING_EXAMPLES[warper])
        if isinstance(outputs, torch.Tensor):
            return outputs, tokenizer.batch_decode(outputs, skip_special_tokens=True)[0]
        return outputs.sequences, outputs.scores

    assert_same(*run_both(example))


def test_repetition_penalty_processor_passed_as_a_plain_list(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer(["I'm not going to"], return_tensors="pt")
        rep_pen_processor = lib.RepetitionPenaltyLogitsProcessor(
            penalty=1.1, prompt_ignore_length=inputs["input_ids"].shape[-1]
        )
        penalized_ids = model.generate(**inputs, logits_processor=[rep_pen_processor])
        return penalized_ids, tokenizer.batch_decode(penalized_ids, skip_special_tokens=True)[0]

    assert_same(*run_both(example))


def test_sequence_bias(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer(["The full name of Donald is Donald"], return_tensors="pt")
        plain = model.generate(inputs["input_ids"], max_new_tokens=4, do_sample=False)

        def get_tokens(word):
            return tokenizer([word], add_special_tokens=False).input_ids[0]

        # the example's point: bias the continuation the model would pick, with and without its leading space
        favourite = tokenizer.decode(plain[0, -4:-2])
        results = [plain]
        for sequence_bias, beams in (([[get_tokens(favourite.strip()), -10.0]], 1),
                                     ([[get_tokens(favourite), -10.0]], 1),
                                     ([[get_tokens(" Donald Duck"), 10.0]], 4)):
            results.append(model.generate(inputs["input_ids"], max_new_tokens=4, num_beams=beams, do_sample=False,
                                          sequence_bias=sequence_bias))
        return results

    assert_same(*run_both(example))


@pytest.mark.parametrize("kind", ["llama", "gpt2"])  # a plain tokenizer.json, and one declared a GPT2Tokenizer
def test_bad_words_ids_from_a_prefix_space_tokenizer(kind, request):
    checkpoint = tiny(kind, request)

    def example(lib):
        tokenizer, model = load(lib, checkpoint)
        inputs = tokenizer(["In a word, the cake is a"], return_tensors="pt")
        output_ids = model.generate(inputs["input_ids"], max_new_tokens=5, pad_token_id=tokenizer.eos_token_id)
        tokenizer_with_prefix_space = lib.AutoTokenizer.from_pretrained(checkpoint, add_prefix_space=True)

        def get_tokens_as_list(word_list):
            return [tokenizer_with_prefix_space([word], add_special_tokens=False).input_ids[0] for word in word_list]

        bad_words = tokenizer.decode(output_ids[0, -5:-3]).split()
        bad_words_ids = get_tokens_as_list(word_list=bad_words + ["mess"])
        banned = model.generate(inputs["input_ids"], max_new_tokens=5, bad_words_ids=bad_words_ids,
                                pad_token_id=tokenizer.eos_token_id)
        return output_ids, bad_words_ids, banned, tokenizer.batch_decode(banned, skip_special_tokens=True)[0]

    assert_same(*run_both(example))


def test_prefix_allowed_tokens_fn(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer("Alice and Bob", return_tensors="pt")
        outputs = model.generate(**inputs, max_new_tokens=5)
        entity = tokenizer(" Bob Marley", return_tensors="pt").input_ids[0]

        def prefix_allowed_tokens_fn(batch_id, input_ids):
            if input_ids[-1] == entity[0]:
                return [entity[1].item()]
            elif input_ids[-2] == entity[0] and input_ids[-1] == entity[1]:
                return [entity[2].item()]
            return list(range(tokenizer.vocab_size))

        constrained = model.generate(**inputs, max_new_tokens=5, prefix_allowed_tokens_fn=prefix_allowed_tokens_fn)
        return outputs, constrained, tokenizer.batch_decode(constrained, skip_special_tokens=True)[0]

    assert_same(*run_both(example))


def test_classifier_free_guidance_with_a_negative_prompt(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer(["Today, a dragon flew over Paris, France,"], return_tensors="pt")
        neg_inputs = tokenizer(["A very happy event happened,"], return_tensors="pt")
        return [model.generate(inputs["input_ids"], guidance_scale=scale, negative_prompt_ids=neg_inputs["input_ids"],
                               max_new_tokens=8) for scale in (2, 0)]

    assert_same(*run_both(example))


def test_custom_logits_processor_subclass(llama):
    def example(lib):
        class EvenTokensOnly(lib.LogitsProcessor):
            def __call__(self, input_ids, scores):
                scores = scores.clone()
                scores[:, 1::2] = -float("inf")
                return scores

        tokenizer, model = load(lib, llama)
        inputs = tokenizer("Once upon a time", return_tensors="pt")
        processors = lib.LogitsProcessorList([EvenTokensOnly(), lib.MinLengthLogitsProcessor(10, eos_token_id=2)])
        return model.generate(**inputs, logits_processor=processors, max_new_tokens=8)

    got, expected = run_both(example)
    assert_same(got, expected)
    assert (got[0, -8:] % 2 == 0).all()


# --- watermarking -------------------------------------------------------------------------------------------------

def test_watermarking_and_its_detector(llama):
    def example(lib):
        model = lib.AutoModelForCausalLM.from_pretrained(llama)
        tok = lib.AutoTokenizer.from_pretrained(llama)
        tok.pad_token_id = tok.eos_token_id
        tok.padding_side = "left"
        inputs = tok(["This is the beginning of a long story", "Alice and Bob are"], padding=True, return_tensors="pt")
        watermarking_config = lib.WatermarkingConfig(bias=2.5, seeding_scheme="selfhash")
        out_watermarked = model.generate(**inputs, watermarking_config=watermarking_config, do_sample=False,
                                         max_length=20)
        out = model.generate(**inputs, do_sample=False, max_length=20)
        detector = lib.WatermarkDetector(model_config=model.config, device="cpu",
                                         watermarking_config=watermarking_config)
        detection_out_watermarked = detector(out_watermarked, return_dict=True)
        detection_out = detector(out, return_dict=True)
        return (out_watermarked, out, detection_out_watermarked.prediction, detection_out.prediction,
                detection_out_watermarked.z_score, detection_out.green_fraction)

    assert_same(*run_both(example))


def test_watermarking_config_with_context_width(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer(["Alice and Bob are"], return_tensors="pt")
        watermarking_config = lib.WatermarkingConfig(bias=2.5, context_width=2, seeding_scheme="selfhash")
        out = model.generate(inputs["input_ids"], watermarking_config=watermarking_config, max_length=20,
                             do_sample=False)
        detector = lib.WatermarkDetector(model_config=model.config, device="cpu",
                                         watermarking_config=watermarking_config)
        return out, detector(out)

    assert_same(*run_both(example))


def test_synthid_text_watermarking(llama):
    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(llama, padding_side="left")
        model = lib.AutoModelForCausalLM.from_pretrained(llama)
        watermarking_config = lib.SynthIDTextWatermarkingConfig(keys=[654, 400, 836, 123, 340, 443, 597, 160, 57],
                                                                ngram_len=5)
        lib.set_seed(0)
        tokenized_prompts = tokenizer(["Once upon a time, "], return_tensors="pt", padding=True)
        output_sequences = model.generate(**tokenized_prompts, watermarking_config=watermarking_config, do_sample=True,
                                          max_new_tokens=10)
        return output_sequences, tokenizer.batch_decode(output_sequences, skip_special_tokens=True)

    assert_same(*run_both(example))


# --- stopping_criteria.py and streamers.py docstrings ---------------------------------------------------------------

def test_stop_strings(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer("The biggest states in the USA by land area:", return_tensors="pt")
        gen_out = model.generate(**inputs, max_new_tokens=20)
        text = tokenizer.batch_decode(gen_out[:, inputs.input_ids.shape[1]:], skip_special_tokens=True)[0]
        stop = text[len(text) // 2:len(text) // 2 + 3]  # a string the model is known to emit, in mid-stream
        stopped = model.generate(**inputs, stop_strings=[stop], tokenizer=tokenizer, max_new_tokens=20)
        return gen_out, stop, stopped, tokenizer.batch_decode(stopped, skip_special_tokens=True)[0]

    got, expected = run_both(example)
    assert_same(got, expected)
    assert got[2].shape[1] < got[0].shape[1]


def test_custom_stopping_criteria(llama):
    def example(lib):
        class StopAfterComma(lib.StoppingCriteria):
            def __init__(self, comma_ids):
                self.comma_ids = comma_ids

            def __call__(self, input_ids, scores, **kwargs):
                return torch.isin(input_ids[:, -1], torch.tensor(self.comma_ids))

        tokenizer, model = load(lib, llama)
        inputs = tokenizer(["Alice and Bob are", "Once upon"], return_tensors="pt", padding=True)
        criteria = lib.StoppingCriteriaList([StopAfterComma([11, 30]), lib.MaxLengthCriteria(max_length=16)])
        return model.generate(**inputs, stopping_criteria=criteria)

    assert_same(*run_both(example))


def test_text_iterator_streamer_in_a_thread(llama):
    def example(lib):
        tok, model = load(lib, llama)
        inputs = tok(["An increasing sequence: one,"], return_tensors="pt")
        streamer = lib.TextIteratorStreamer(tok, timeout=60)  # (so that a failing generate cannot hang the suite)
        generation_kwargs = dict(inputs, streamer=streamer, max_new_tokens=20)
        thread = threading.Thread(target=model.generate, kwargs=generation_kwargs)
        thread.start()
        pieces = [new_text for new_text in streamer]
        thread.join()
        return "".join(pieces)

    assert_same(*run_both(example))


def test_text_iterator_streamer_skipping_the_prompt(llama):
    def example(lib):
        tok, model = load(lib, llama)
        inputs = tok(["An increasing sequence: one,"], return_tensors="pt")
        streamer = lib.TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=60)
        thread = threading.Thread(target=model.generate, kwargs=dict(**inputs, streamer=streamer, max_new_tokens=20))
        thread.start()
        text = "".join(streamer)
        thread.join()
        return text

    assert_same(*run_both(example))


def test_async_text_iterator_streamer(llama):
    def example(lib):
        tok, model = load(lib, llama)
        inputs = tok(["An increasing sequence: one,"], return_tensors="pt")

        async def main():
            streamer = lib.AsyncTextIteratorStreamer(tok, timeout=60)
            generation_kwargs = dict(inputs, streamer=streamer, max_new_tokens=20)
            thread = threading.Thread(target=model.generate, kwargs=generation_kwargs)
            thread.start()
            generated_text = ""
            async for new_text in streamer:
                generated_text += new_text
            thread.join()
            return generated_text

        return asyncio.run(main())

    assert_same(*run_both(example))


def test_text_streamer_subclass_hook(llama):
    def example(lib):
        class Collect(lib.TextStreamer):
            def __init__(self, tokenizer):
                super().__init__(tokenizer, skip_prompt=True)
                self.pieces = []

            def on_finalized_text(self, text, stream_end=False):
                self.pieces.append((text, stream_end))

        tok, model = load(lib, llama)
        streamer = Collect(tok)
        model.generate(**tok(["An increasing sequence: one,"], return_tensors="pt"), streamer=streamer,
                       max_new_tokens=12)
        return streamer.pieces

    assert_same(*run_both(example))


# --- internal/generation_utils.md: what generate returns -------------------------------------------------------------

def test_generate_output_reads_as_attributes_keys_and_tuples(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer("Hello, my dog is cute and ", return_tensors="pt")
        generation_output = model.generate(**inputs, max_new_tokens=4, return_dict_in_generate=True,
                                           output_scores=True)
        return (type(generation_output).__name__, list(generation_output.keys()), generation_output.sequences,
                generation_output["scores"], generation_output[:2], generation_output.attentions is None,
                generation_output.to_tuple()[0], generation_output.get("hidden_states"))

    assert_same(*run_both(example))


# --- llm_tutorial.md: common pitfalls -------------------------------------------------------------------------------

def test_llm_tutorial_right_padding_pitfall(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)  # padding on the right, which the tutorial warns about
        model_inputs = tokenizer(["1, 2, 3", "A, B, C, D, E"], padding=True, return_tensors="pt")
        generated_ids = model.generate(**model_inputs, max_new_tokens=6)
        return generated_ids, tokenizer.batch_decode(generated_ids, skip_special_tokens=True)

    assert_same(*run_both(example))


def test_llm_tutorial_chat_prompt(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        messages = [
            {"role": "system", "content": "You are a friendly chatbot who always responds in the style of a thug"},
            {"role": "user", "content": "How many helicopters can a human eat in one sitting?"},
        ]
        model_inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
        input_length = model_inputs["input_ids"].shape[1]
        lib.set_seed(0)
        generated_ids = model.generate(**model_inputs, do_sample=True, max_new_tokens=12)
        return tokenizer.batch_decode(generated_ids[:, input_length:], skip_special_tokens=True)[0]

    assert_same(*run_both(example))


def test_stopping_criteria_classes_built_by_hand(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer(["The biggest states in the USA by land area:"], return_tensors="pt")
        free = model.generate(**inputs, max_new_tokens=16)
        text = tokenizer.decode(free[0, inputs["input_ids"].shape[1]:])
        stop = text[len(text) // 2:len(text) // 2 + 2]
        criteria = lib.StoppingCriteriaList([
            lib.StopStringCriteria(tokenizer=tokenizer, stop_strings=[stop]),
            lib.EosTokenCriteria(eos_token_id=tokenizer.eos_token_id),
        ])
        stopped = model.generate(**inputs, max_new_tokens=16, stopping_criteria=criteria, synced_gpus=False)
        scores = torch.zeros(1, model.config.vocab_size)
        return stop, stopped, criteria(stopped, scores), lib.MaxLengthCriteria(max_length=8)(stopped, scores)

    assert_same(*run_both(example))


def test_text_streamer_options_and_the_models_generation_config(llama):
    def example(lib):
        tok, model = load(lib, llama)
        model.generation_config.max_new_tokens = 7
        model.generation_config.pad_token_id = tok.eos_token_id
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            streamer = lib.TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
            out = model.generate(**tok(["<|im_start|>user\nHi<|im_end|>\n"], return_tensors="pt"), streamer=streamer)
        unused = model.generation_config.update(top_k=3, not_an_option=1)
        return out, printed.getvalue(), unused, model.generation_config.top_k

    assert_same(*run_both(example))


def test_generation_mode_of_a_config(llama, gpt2):
    def example(lib):
        assistant = lib.AutoModelForCausalLM.from_pretrained(gpt2)
        configs = [lib.GenerationConfig(), lib.GenerationConfig(do_sample=True), lib.GenerationConfig(num_beams=4),
                   lib.GenerationConfig(num_beams=4, do_sample=True), lib.GenerationConfig(prompt_lookup_num_tokens=3)]
        modes = [config.get_generation_mode() for config in configs]
        modes.append(lib.GenerationConfig().get_generation_mode(assistant_model=assistant))
        return [str(mode.value) for mode in modes], [type(mode).__name__ for mode in modes]

    assert_same(*run_both(example))


# --- cache_explanation.md and llm_optims.md: caches --------------------------------------------------------------

def test_generate_with_a_cache_object_and_a_static_cache(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer("I like rock music because", return_tensors="pt")
        past_key_values = lib.DynamicCache(config=model.config)
        with_cache = model.generate(**inputs, use_cache=True, past_key_values=past_key_values, max_new_tokens=10)
        static = model.generate(**inputs, do_sample=False, max_new_tokens=10, cache_implementation="static")
        return with_cache, static, past_key_values.get_seq_length()

    assert_same(*run_both(example))


def test_manual_decoding_loop_with_a_dynamic_cache(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        past_key_values = lib.DynamicCache(config=model.config)
        messages = [{"role": "user", "content": "Hello, what's your name."}]
        inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)
        generated_ids = inputs.input_ids
        cache_position = torch.arange(inputs.input_ids.shape[1], dtype=torch.int64)
        for _ in range(6):
            outputs = model(**inputs, cache_position=cache_position, past_key_values=past_key_values, use_cache=True)
            next_token_ids = outputs.logits[:, -1:].argmax(-1)
            generated_ids = torch.cat([generated_ids, next_token_ids], dim=-1)
            attention_mask = inputs["attention_mask"]
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((attention_mask.shape[0], 1))], dim=-1)
            inputs = {"input_ids": next_token_ids, "attention_mask": attention_mask}
            cache_position = cache_position[-1:] + 1
        return generated_ids, tokenizer.batch_decode(generated_ids, skip_special_tokens=True)[0]

    assert_same(*run_both(example))


def test_manual_decoding_loop_passing_past_key_values_back(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        input_ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
        outputs = model(input_ids, use_cache=True)
        generated, logits = input_ids, []
        for _ in range(5):
            next_token = outputs.logits[:, -1:].argmax(-1)
            logits.append(outputs.logits[:, -1])
            generated = torch.cat([generated, next_token], dim=-1)
            outputs = model(next_token, past_key_values=outputs.past_key_values, use_cache=True)
        return generated, logits

    assert_same(*run_both(example))


HUB_STRATEGIES = {
    "Contrastive Search": dict(penalty_alpha=0.6, top_k=4),
    "Dola Generation": dict(dola_layers="high"),
    "Group Beam Search": dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0),
    "Constrained Beam Search": dict(force_words_ids=[[11]], num_beams=2),
}


@pytest.mark.parametrize("strategy", HUB_STRATEGIES)
def test_strategies_moved_to_the_hub_are_refused_alike(llama, strategy):
    """The older guides' contrastive, DoLa, diverse and constrained beam search: 5.x refuses them and names them."""
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer("Hugging Face Company is", return_tensors="pt")
        with pytest.raises(ValueError, match=strategy) as refused:
            model.generate(**inputs, max_new_tokens=5, **HUB_STRATEGIES[strategy])
        return type(refused.value).__name__

    assert_same(*run_both(example))


def test_cache_position_must_continue_the_cache(llama):
    """openformers' caches append: a cache_position that skips slots is refused, naming the argument."""
    import openformers

    tokenizer, model = load(openformers, llama)
    past_key_values = openformers.DynamicCache(config=model.config)
    inputs = tokenizer("Hello", return_tensors="pt")
    length = inputs.input_ids.shape[1]
    model(**inputs, cache_position=torch.arange(length), past_key_values=past_key_values, use_cache=True)
    with pytest.raises(ValueError, match=f"cache_position starts at {length + 2}, but the cache holds {length}"):
        model(input_ids=inputs.input_ids[:, -1:], cache_position=torch.tensor([length + 2]),
              past_key_values=past_key_values, use_cache=True)


@pytest.mark.parametrize("options", [
    dict(max_new_tokens=5, do_sample=False),
    dict(max_new_tokens=5, num_beams=3),
    dict(max_length=9, min_length=8, do_sample=False),
    dict(max_new_tokens=4, do_sample=False, cache_implementation="static"),
    dict(max_new_tokens=3, do_sample=False, return_dict_in_generate=True, output_scores=True),
], ids=["greedy", "beams", "max-and-min-length", "static-cache", "scores"])
@pytest.mark.parametrize("with_ids", [False, True], ids=["embeddings-only", "with-ids"])
def test_generate_from_input_embeddings(llama, options, with_ids):
    """A decoder-only model's generate(inputs_embeds=...) on left-padded prompts (soft prompts, multimodal inputs):
    the embeddings are fed instead of ids; the output holds only the new tokens, or starts with input_ids given
    alongside, and max_length / min_length count the embedded positions as the reference's do."""
    def example(lib):
        tokenizer, model = load(lib, llama)
        inputs = tokenizer(["Hello, my name is", "The sky"], return_tensors="pt", padding=True, padding_side="left")
        embeds = model.get_input_embeddings()(inputs.input_ids)
        ids = dict(input_ids=inputs.input_ids) if with_ids else {}
        out = model.generate(inputs_embeds=embeds, attention_mask=inputs.attention_mask, pad_token_id=0, **ids,
                             **options)
        return out if isinstance(out, torch.Tensor) else (out.sequences, out.scores)

    assert_same(*run_both(example))


def test_input_embeddings_are_refused_where_they_cannot_go(llama):
    import openformers

    tokenizer, model = load(openformers, llama)
    ids = tokenizer("Hello there", return_tensors="pt").input_ids
    embeds = model.get_input_embeddings()(ids)
    with pytest.raises(ValueError, match="Assisted decoding .* inputs_embeds replace"):
        model.generate(inputs_embeds=embeds, max_new_tokens=3, prompt_lookup_num_tokens=2)
    with pytest.raises(ValueError, match=r"inputs_embeds must be a float tensor shaped \(batch, length, hidden_size\)"):
        model.generate(inputs_embeds=ids, max_new_tokens=3)
