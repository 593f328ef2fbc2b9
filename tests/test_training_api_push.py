"""push_to_hub=True: the Hub calls the reference's Trainer makes (through huggingface_hub's HfApi, recorded here
instead of sent), and a clear error offline."""

from concurrent.futures import Future
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch

import openformers
import transformers
from tests.test_training_api_trainer import TinyDropoutModel, _args, _rows


@pytest.fixture
def hub_calls(monkeypatch):
    calls = []

    def create_repo(self, repo_id, token=None, private=None, exist_ok=False, **kwargs):
        calls.append(("create_repo", repo_id, private, exist_ok))
        return SimpleNamespace(repo_id=repo_id if "/" in repo_id else f"someone/{repo_id}")

    def upload_folder(self, *, repo_id, folder_path, commit_message=None, path_in_repo=None, run_as_future=False,
                      ignore_patterns=None, revision=None, **kwargs):
        calls.append(("upload_folder", repo_id, commit_message, path_in_repo, tuple(ignore_patterns or ()), revision))
        if run_as_future:  # the reference waits on these
            done = Future()
            done.set_result(None)
            return done
        return None

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    return calls


@pytest.mark.parametrize("strategy", ["every_save", "checkpoint", "all_checkpoints", "end"])
def test_push_to_hub_makes_the_references_calls(tmp_path, hub_calls, strategy):
    recorded = {}
    for library in (transformers, openformers):
        hub_calls.clear()
        torch.manual_seed(0)
        args = _args(library, tmp_path / "run", push_to_hub=True, hub_model_id="me/tiny", hub_strategy=strategy,
                     save_strategy="steps", save_steps=2, max_steps=4, hub_private_repo=True)
        trainer = library.Trainer(model=TinyDropoutModel(), args=args, train_dataset=_rows())
        trainer.train()
        trainer.push_to_hub(commit_message="done")
        recorded[library] = list(hub_calls)
    assert recorded[openformers] == recorded[transformers]


def test_push_to_hub_uses_the_output_folder_name_without_hub_model_id(tmp_path, hub_calls):
    args = _args(openformers, tmp_path / "my-run", push_to_hub=True, save_strategy="no", max_steps=1)
    trainer = openformers.Trainer(model=TinyDropoutModel(), args=args, train_dataset=_rows())
    assert trainer.hub_model_id == "someone/my-run"
    assert hub_calls[0] == ("create_repo", "my-run", None, True)


def test_push_to_hub_fails_clearly_offline(tmp_path, hub_calls, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    args = _args(openformers, tmp_path, push_to_hub=True)
    with pytest.raises(RuntimeError, match="HF_HUB_OFFLINE"):
        openformers.Trainer(model=TinyDropoutModel(), args=args, train_dataset=_rows())
    assert hub_calls == []
