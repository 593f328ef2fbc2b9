"""The `openformers` command, run in-process and as a real subprocess."""

import subprocess
import sys

import pytest

from openformers.cli import main


def test_generate_streams_a_continuation(smollm2_gguf, capsys):
    assert main(["generate", "--model", str(smollm2_gguf), "--max-new-tokens", "8", "The capital of France is"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("The capital of France is") and len(out) > len("The capital of France is\n")


def test_generate_with_int4_weights(smollm2_gguf, capsys):
    argv = ["generate", "--model", str(smollm2_gguf), "--quantization", "int4", "--max-new-tokens", "6", "Paris is"]
    assert main(argv) == 0
    assert capsys.readouterr().out.startswith("Paris is")


def test_default_model_from_the_package(smollm2_gguf, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache: the packaged GGUF must be used
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["generate", "--max-new-tokens", "4", "Hello, I am a language model,"]) == 0
    assert capsys.readouterr().out.startswith("Hello, I am a language model,")


def test_chat_answers_each_line_as_a_subprocess(smollm2_gguf):
    result = subprocess.run(
        [sys.executable, "-m", "openformers.cli", "chat", "--model", str(smollm2_gguf), "--max-new-tokens", "12"],
        input="Hi!\nWhat is 2+2?\n", capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) >= 2  # one answer per user line


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "   "], "prompt is empty"),
        (["generate", "--model", "no-such-org/no-such-model", "hi"], "not in the Hugging Face cache"),
        (["generate", "--model", "/no/such/folder", "hi"], "/no/such/folder"),
    ],
)
def test_errors_are_one_clear_line(argv, message, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("openformers: error:") and message in err and "Traceback" not in err


def test_help_lists_the_commands():
    result = subprocess.run([sys.executable, "-m", "openformers.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "generate" in result.stdout and "chat" in result.stdout
