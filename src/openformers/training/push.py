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


def _as_list(value) -> list:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def model_card(args, log_history: list[dict], model_name: str, language=None, license=None, tags=None,
               finetuned_from: str | None = None, tasks=None, dataset_tags=None, dataset=None) -> str:
    """A README.md for the trained model's folder: the Hub's metadata header (base model, datasets, tags, language,
    license, tasks), what it was fine-tuned from, its last evaluation and the training's hyperparameters."""
    import torch

    header = {"library_name": "transformers", "license": license, "base_model": finetuned_from,
              "language": _as_list(language) or None, "tags": ["generated_from_trainer", *_as_list(tags)],
              "datasets": _as_list(dataset_tags) or None, "pipeline_tag": (_as_list(tasks) or [None])[0]}
    lines = ["---"]
    for key, value in header.items():
        if isinstance(value, list):
            lines += [f"{key}:"] + [f"- {item}" for item in value]
        elif value is not None:
            lines.append(f"{key}: {value}")
    lines += ["---", "", f"# {model_name}", ""]
    source = f"[{finetuned_from}](https://huggingface.co/{finetuned_from})" if finetuned_from else "a model"
    datasets = f"the {', '.join(_as_list(dataset))} dataset" if dataset else "an unknown dataset"
    lines += [f"This model is a fine-tuned version of {source} on {datasets}."]
    evaluation = next((entry for entry in reversed(log_history) if any(k.startswith("eval_") for k in entry)), None)
    if evaluation:
        lines += ["It achieves the following results on the evaluation set:"]
        lines += [f"- {k[len('eval_'):].replace('_', ' ').title()}: {v:.4f}" if isinstance(v, float) else
                  f"- {k[len('eval_'):].replace('_', ' ').title()}: {v}" for k, v in evaluation.items()
                  if k.startswith("eval_") and not k.endswith(("_runtime", "_per_second"))]
    lines += ["", "## Training procedure", "", "### Training hyperparameters", "",
              "The following hyperparameters were used during training:"]
    hyperparameters = {"learning_rate": args.learning_rate, "train_batch_size": args.per_device_train_batch_size,
                       "eval_batch_size": args.per_device_eval_batch_size, "seed": args.seed,
                       "gradient_accumulation_steps": args.gradient_accumulation_steps, "optimizer": args.optim,
                       "lr_scheduler_type": args.lr_scheduler_type,
                       "training_steps" if args.max_steps > 0 else "num_epochs":
                           args.max_steps if args.max_steps > 0 else args.num_train_epochs}
    if args.warmup_steps:
        hyperparameters["lr_scheduler_warmup_steps"] = args.warmup_steps
    lines += [f"- {name}: {value}" for name, value in hyperparameters.items()]
    lines += ["", "### Framework versions", "", f"- PyTorch {torch.__version__}", ""]
    return "\n".join(lines)
