"""The documentation's chat-template examples (chat_templating, chat_extras, conversations, llm_tutorial), run with
`transformers` and with `openformers`: the same rendered text, ids, masks and generated replies.

The checkpoint is a tiny random Llama with SmolLM2's tokenizer and chat template; the examples that need a template
feature SmolLM2's does not use (tools, documents, `{% generation %}` blocks, extra variables) set one, as the guide
does.
"""

import pytest
from docs_examples import assert_same, run_both, tiny

CHAT = [
    {"role": "user", "content": "Hello, how are you?"},
    {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
    {"role": "user", "content": "I'd like to show off how chat templating works!"},
]
MESSAGES = [
    {"role": "system", "content": "You are a friendly chatbot who always responds in the style of a pirate"},
    {"role": "user", "content": "How many helicopters can a human eat in one sitting?"},
]

# A template in the style of the guide's examples, using the features SmolLM2's own template leaves out.
FEATURES_TEMPLATE = (
    "{%- if tools %}{{- 'Tools: ' + (tools | tojson) + '\\n' }}{%- endif %}"
    "{%- if documents %}{%- for doc in documents %}{{- 'Document ' + doc['title'] + ': ' + doc['text'] + '\\n' }}"
    "{%- endfor %}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}{{- '<|im_start|>assistant\\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and not enable_thinking %}{{- '<think></think>' }}{%- endif %}{%- endif %}"
)


@pytest.fixture(scope="module")
def llama(request):
    return tiny("llama", request)


def load(lib, folder, **tokenizer_options):
    return (lib.AutoTokenizer.from_pretrained(folder, **tokenizer_options),
            lib.AutoModelForCausalLM.from_pretrained(folder))


def test_render_without_tokenizing(llama):
    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(llama)
        return (tokenizer.apply_chat_template(CHAT, tokenize=False),
                tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True))

    assert_same(*run_both(example))


def test_tokenize_then_generate(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        tokenized_chat = tokenizer.apply_chat_template(MESSAGES, tokenize=True, add_generation_prompt=True,
                                                       return_tensors="pt")
        outputs = model.generate(**tokenized_chat, max_new_tokens=16)
        return (sorted(tokenized_chat.keys()), tokenized_chat["input_ids"],
                tokenizer.decode(tokenized_chat["input_ids"][0]),
                tokenizer.decode(outputs[0]))

    assert_same(*run_both(example))


def test_tokenize_to_a_tensor_of_ids_then_generate(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        input_ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_dict=False,
                                                  return_tensors="pt")
        outputs = model.generate(input_ids, max_new_tokens=10)
        return input_ids, tokenizer.decode(outputs[0][input_ids.shape[1]:], skip_special_tokens=True)

    assert_same(*run_both(example))


def test_tokenize_to_a_list_of_ids(llama):
    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(llama)
        return tokenizer.apply_chat_template(CHAT, return_dict=False), tokenizer.apply_chat_template(CHAT)["input_ids"]

    assert_same(*run_both(example))


def test_continue_final_message(llama):
    def example(lib):
        tokenizer, model = load(lib, llama)
        chat = [
            {"role": "user", "content": "Can you format the answer in JSON?"},
            {"role": "assistant", "content": '{"name": "'},
        ]
        formatted_chat = tokenizer.apply_chat_template(chat, tokenize=False, continue_final_message=True)
        inputs = tokenizer.apply_chat_template(chat, continue_final_message=True, return_tensors="pt")
        outputs = model.generate(**inputs, max_new_tokens=6)
        return formatted_chat, outputs

    got, expected = run_both(example)
    assert_same(got, expected)
    assert got[0].endswith('{"name": "')


def test_batched_chats_left_padded(llama):
    def example(lib):
        tokenizer, model = load(lib, llama, padding_side="left")
        chats = [MESSAGES, CHAT]
        inputs = tokenizer.apply_chat_template(chats, add_generation_prompt=True, padding=True, return_tensors="pt")
        outputs = model.generate(**inputs, max_new_tokens=8)
        return inputs["attention_mask"], tokenizer.batch_decode(outputs[:, inputs["input_ids"].shape[1]:],
                                                                skip_special_tokens=True)

    assert_same(*run_both(example))


def test_text_generation_pipeline_with_chat(llama):
    def example(lib):
        pipe = lib.pipeline("text-generation", model=str(llama), dtype="auto", device_map="auto")
        response = pipe(MESSAGES, max_new_tokens=12, do_sample=False)
        continued = pipe(response[0]["generated_text"] + [{"role": "user", "content": "And a dog?"}],
                         max_new_tokens=6, do_sample=False)
        return response, response[0]["generated_text"][-1]["content"], continued

    assert_same(*run_both(example))


def test_assistant_tokens_mask_from_generation_blocks(llama):
    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(llama)
        tokenizer.chat_template = FEATURES_TEMPLATE
        out = tokenizer.apply_chat_template(CHAT, return_dict=True, return_assistant_tokens_mask=True)
        masked = [token for token, keep in zip(out["input_ids"], out["assistant_masks"]) if keep]
        return out["input_ids"], out["assistant_masks"], tokenizer.decode(masked)

    got, expected = run_both(example)
    assert_same(got, expected)
    assert got[2] == CHAT[1]["content"] + "<|im_end|>"


def get_current_temperature(location: str, unit: str):
    """
    Get the current temperature at a location.

    Args:
        location: The location to get the temperature for, in the format "City, Country"
        unit: The unit to return the temperature in. (choices: ["celsius", "fahrenheit"])
    """
    return 22.0


def get_current_wind_speed(location: str) -> float:
    """
    Get the current wind speed in km/h at a given location.

    Args:
        location: The location to get the wind speed for, in the format "City, Country"
    """
    return 6.0


def test_tools_as_python_functions(llama):
    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(llama)
        tokenizer.chat_template = FEATURES_TEMPLATE
        messages = [{"role": "user", "content": "Hey, what's the temperature in Paris right now?"}]
        return tokenizer.apply_chat_template(messages, tools=[get_current_temperature, get_current_wind_speed],
                                             add_generation_prompt=True, tokenize=False)

    assert_same(*run_both(example))


def test_tools_as_json_schemas_and_tool_call_messages(llama):
    schema = {"type": "function", "function": {
        "name": "multiply", "description": "A function that multiplies two numbers",
        "parameters": {"type": "object", "properties": {
            "a": {"type": "number", "description": "The first number to multiply"},
            "b": {"type": "number", "description": "The second number to multiply"}}, "required": ["a", "b"]}}}
    template = FEATURES_TEMPLATE.replace(
        "{%- for message in messages %}",
        "{%- for message in messages %}{%- if message.tool_calls %}{%- for call in message.tool_calls %}"
        "{{- 'Call ' + call.function.name + ' ' + (call.function.arguments | tojson) + '\\n' }}{%- endfor %}"
        "{%- endif %}",
    )

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(llama)
        messages = [
            {"role": "user", "content": "What is 3 times 4?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"type": "function", "function": {"name": "multiply", "arguments": {"a": 3, "b": 4}}}]},
            {"role": "tool", "content": "12"},
        ]
        return tokenizer.apply_chat_template(messages, tools=[schema], chat_template=template, tokenize=False,
                                             add_generation_prompt=True)

    assert_same(*run_both(example))


def test_documents_for_retrieval_augmented_generation(llama):
    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(llama)
        documents = [
            {"title": "The Moon: Our Age-Old Foe", "text": "Man has always dreamed of destroying the moon."},
            {"title": "The Sun: Our Age-Old Friend", "text": "Although often underappreciated, the sun is ok."},
        ]
        messages = [{"role": "user", "content": "What has Man always dreamed of?"}]
        return tokenizer.apply_chat_template(messages, documents=documents, chat_template=FEATURES_TEMPLATE,
                                             add_generation_prompt=True, tokenize=False)

    assert_same(*run_both(example))


def test_extra_template_variables(llama):
    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(llama)
        tokenizer.chat_template = FEATURES_TEMPLATE
        return (tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, enable_thinking=False,
                                              tokenize=False),
                tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False))

    assert_same(*run_both(example))


def test_chat_template_saved_and_reloaded(llama, tmp_path):
    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(llama)
        tokenizer.chat_template = FEATURES_TEMPLATE
        tokenizer.save_pretrained(tmp_path / lib.__name__)
        reloaded = lib.AutoTokenizer.from_pretrained(tmp_path / lib.__name__)
        return reloaded.chat_template, reloaded.apply_chat_template(CHAT, tokenize=False)

    assert_same(*run_both(example))
