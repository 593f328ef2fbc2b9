"""Uploading a Trainer's output folder to the Hugging Face Hub, as the reference's Trainer does with push_to_hub=True.

The repository is created (or found) when the Trainer is built; each saved checkpoint then uploads the
output folder's model files (and, for hub_strategy "checkpoint"/"all_checkpoints", the checkpoint itself),
and `Trainer.push_to_hub()` uploads the final model. Everything goes through `huggingface_hub`'s HfApi:
create_repo and upload_folder. Offline (HF_HUB_OFFLINE=1) nothing is attempted and the error says so.
"""

import shutil
from pathlib import Path

from ..hub import is_offline

# The files of a checkpoint that make up the model itself, copied next to the tokenizer before an upload.
MODEL_FILES = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json",
               "pytorch_model.bin", "pytorch_model.bin.index.json")
# Never uploaded with the output folder: checkpoints go up only by hub_strategy, private files not at all.
IGNORE_PATTERNS = ["_*", "checkpoint-*"]


def _api():
    if is_offline():
        raise RuntimeError(
            "push_to_hub=True needs the network, but HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set. Unset it to "
            "upload to the Hub, or pass push_to_hub=False and upload the output folder later."
        )
    try:
        from huggingface_hub import HfApi
    except ImportError as error:
        raise ImportError("push_to_hub=True needs huggingface_hub: pip install huggingface_hub.") from error
    return HfApi()


def create_repo(output_dir: str, hub_model_id: str | None, token: str | None, private: bool | None) -> str:
    """Create the Hub repository (or find it) and return its full id, as in "user/name"."""
    name = hub_model_id if hub_model_id is not None else Path(output_dir).absolute().name
    api = _api()
    try:
        url = api.create_repo(name, token=token, private=private, exist_ok=True)
    except Exception as error:  # noqa: BLE001 - the Hub's errors vary; name the repository and the way out
        raise RuntimeError(
            f"push_to_hub=True: could not create or find the Hub repository {name!r} ({type(error).__name__}: "
            f"{error}). Log in (huggingface-cli login or hub_token=...), check hub_model_id, or set push_to_hub=False."
        ) from error
    return url.repo_id


def upload_output(repo_id: str, output_dir: str, commit_message: str, token: str | None, revision: str | None,
                  blocking: bool = True):
    return _api().upload_folder(
        repo_id=repo_id, folder_path=output_dir, commit_message=commit_message, token=token,
        run_as_future=not blocking, ignore_patterns=IGNORE_PATTERNS, revision=revision,
    )


def push_checkpoint(repo_id: str, checkpoint: Path, args, processing_class, commit_message: str) -> list:
    """Copy the checkpoint's model files to output_dir, upload that, and the checkpoint when hub_strategy asks."""
    output_dir = Path(args.output_dir)
    for name in MODEL_FILES:
        if (checkpoint / name).is_file():
            shutil.copy(checkpoint / name, output_dir / name)
    for shard in checkpoint.glob("model-*-of-*.safetensors"):
        shutil.copy(shard, output_dir / shard.name)
    if processing_class is not None and hasattr(processing_class, "save_pretrained"):
        processing_class.save_pretrained(output_dir)
    api = _api()
    uploads = [upload_output(repo_id, str(output_dir), commit_message, args.hub_token, args.hub_revision)]
    if args.hub_strategy in ("checkpoint", "all_checkpoints"):
        path_in_repo = "last-checkpoint" if args.hub_strategy == "checkpoint" else checkpoint.name
        uploads.append(api.upload_folder(
            repo_id=repo_id, folder_path=str(checkpoint), path_in_repo=path_in_repo,
            commit_message=f"{commit_message}, checkpoint", token=args.hub_token, revision=args.hub_revision,
        ))
    return uploads
