"""Checkpoints `output_dir/checkpoint-N/`: written atomically, read back for an exact resume.

A checkpoint is written into a temporary folder that is renamed to `checkpoint-N` only once every file
is complete, so a crash mid-write never leaves a folder that looks like a checkpoint. A checkpoint-N that
is saved again (after a rewind) or rotated out is first renamed aside and only then deleted, so a crash
never leaves a half-deleted one for a resume to pick; the next save or resume removes what a crash left
behind, and puts back a replaced checkpoint whose successor never landed. It holds the
weights (safetensors, as `save_pretrained` writes them), the optimizer and scheduler states, the random
number generator states and `trainer_state.json`; resuming from it continues the same run. Under torchrun
every process writes its own random states (`rng_state_{rank}.pth`, as the reference names them) and, with
FSDP, its shards of the model and optimizer (`fsdp_state/`, a torch.distributed.checkpoint folder) into the
temporary folder before the first process completes it.
"""

import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from ..models import lora
from ..weights import find_weights, load_weights, save_safetensors
from . import distributed
from .callbacks import TrainerState

PREFIX = "checkpoint"
_TEMPORARY = ".tmp-"
_REPLACED = f"{_TEMPORARY}replaced-"  # a checkpoint-N renamed aside while its successor is renamed in


def checkpoint_folders(output_dir) -> list[Path]:
    """The complete checkpoints in output_dir, oldest (lowest step) first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := re.fullmatch(rf"{PREFIX}-(\d+)", p.name))]
    return [p for _, p in sorted(found) if (p / "trainer_state.json").is_file()]


def get_last_checkpoint(folder) -> str | None:
    """The checkpoint-N folder with the highest N in `folder` (as a string, as the reference returns it), or None."""
    found = [(int(m.group(1)), name) for name in os.listdir(folder)
             if (m := re.fullmatch(rf"{PREFIX}-(\d+)", name)) and os.path.isdir(os.path.join(folder, name))]
    return os.path.join(folder, max(found)[1]) if found else None


def latest_checkpoint(output_dir) -> Path | None:
    folders = checkpoint_folders(output_dir)
    return folders[-1] if folders else None


def save_model(model, folder: Path, state_dict: dict | None = None) -> None:
    """Weights (and config) the way from_pretrained reads them back; `state_dict` instead of the model's own (the
    full weights gathered from a sharded model)."""
    folder.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(folder, state_dict=state_dict)
    else:
        state_dict = model.state_dict() if state_dict is None else state_dict
        save_safetensors({k: v.contiguous() for k, v in state_dict.items()}, folder)


def load_model_weights(model, folder: Path) -> None:
    """Load a checkpoint's weights into `model` in place; tied weights stored once are tied again."""
    if getattr(model, "_hf_peft_config_loaded", False):  # save_pretrained wrote only the adapter
        lora.load_adapter_weights(model, folder)
        return
    state_dict = load_weights(find_weights(Path(folder)))
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    tied = set(getattr(model, "tied_weights", {})) if getattr(getattr(model, "config", None), "tie_word_embeddings", False) else set()
    missing = [k for k in missing if k not in tied]
    if missing or unexpected:
        raise ValueError(
            f"The weights in {folder} do not fit {type(model).__name__}: missing {missing[:10]}, unexpected "
            f"{unexpected[:10]}. Resume with the model the checkpoint was trained from."
        )
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def rng_states() -> dict:
    kind, keys, position, has_gauss, gauss = np.random.get_state()
    states = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(output_dir, step: int, model, optimizer, scheduler, state: TrainerState, args,
                    scaler=None, extra: dict[str, dict] | None = None, processing_class=None) -> Path:
    """Write checkpoint-{step} atomically and return its path; `extra` maps file names to small dicts to keep.

    The tokenizer (processing_class) is saved beside the weights, as the reference does, so a checkpoint
    folder loads on its own with from_pretrained.
    """
    temporary = begin_checkpoint(output_dir, step)
    if not args.save_only_model:
        torch.save(rng_states(), temporary / "rng_state.pth")
    write_checkpoint(temporary, model, optimizer, scheduler, args, scaler, extra, processing_class)
    return finish_checkpoint(temporary, output_dir, step, state)


def begin_checkpoint(output_dir, step: int) -> Path:
    """The temporary folder checkpoint-{step} is written into (after removing what crashed saves left)."""
    output_dir = Path(output_dir)
    remove_leftovers(output_dir)
    temporary = output_dir / f"{_TEMPORARY}{PREFIX}-{step}-{os.getpid()}"
    temporary.mkdir(parents=True, exist_ok=True)
    return temporary


def write_checkpoint(temporary: Path, model, optimizer, scheduler, args, scaler=None, extra: dict | None = None,
                     processing_class=None, state_dict: dict | None = None, write_model: bool = True) -> None:
    """The first process's files: the weights (`state_dict` when given; none with write_model=False), the
    tokenizer, the optimizer (None: it is in the sharded state), scheduler, scaler and `extra` files."""
    if write_model:
        save_model(model, temporary, state_dict)
    if processing_class is not None and hasattr(processing_class, "save_pretrained"):
        processing_class.save_pretrained(temporary)
    if not args.save_only_model:
        if optimizer is not None:
            torch.save(optimizer.state_dict(), temporary / "optimizer.pt")
        torch.save(scheduler.state_dict(), temporary / "scheduler.pt")
        if scaler is not None:
            torch.save(scaler.state_dict(), temporary / "scaler.pt")
        for name, values in (extra or {}).items():
            torch.save(values, temporary / name)
    (temporary / "training_args.json").write_text(args.to_json_string() + "\n")


def finish_checkpoint(temporary: Path, output_dir, step: int, state: TrainerState) -> Path:
    """Mark the temporary folder complete and rename it to checkpoint-{step}, replacing one of that name."""
    output_dir = Path(output_dir)
    final = output_dir / f"{PREFIX}-{step}"
    state.save_to_json(temporary / "trainer_state.json")  # written last: its presence marks a complete checkpoint
    _sync_folder(temporary)
    replaced = output_dir / f"{_REPLACED}{PREFIX}-{step}-{os.getpid()}"
    if final.exists():
        os.replace(final, replaced)
    os.replace(temporary, final)
    _sync_folder(output_dir)
    shutil.rmtree(replaced, ignore_errors=True)
    return final


def remove_leftovers(output_dir) -> None:
    """Delete the temporary folders a crashed save or deletion left in output_dir; a checkpoint renamed aside
    whose successor never landed goes back to its name. Run by the process that saves, before it saves or resumes."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return
    for path in sorted(folder.iterdir()):
        if not path.name.startswith(_TEMPORARY) or not path.is_dir():
            continue
        replaced = re.fullmatch(rf"{re.escape(_REPLACED)}({PREFIX}-\d+)-\d+", path.name)
        original = folder / replaced.group(1) if replaced else None
        if original is not None and not original.exists() and (path / "trainer_state.json").is_file():
            os.replace(path, original)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _sync_folder(folder: Path) -> None:
    """Flush the files and the folder entry to disk, so the rename never lands before the data."""
    for path in [*folder.iterdir(), folder] if folder.is_dir() else [folder]:
        if path.is_file() or path == folder:
            try:
                descriptor = os.open(path, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(descriptor)
            except OSError:
                pass  # some file systems cannot sync a folder; the rename is still atomic
            finally:
                os.close(descriptor)


def load_checkpoint(folder, model, optimizer, scheduler, scaler=None, sharded: bool = False) -> TrainerState:
    """Restore weights, optimizer, scheduler and scaler from a checkpoint; return its TrainerState.

    sharded=True (an FSDP run, every process calling) reads the model and optimizer from the checkpoint's
    distributed checkpoint instead of its weights and optimizer.pt. The random number generator states are
    left for `load_rng_states`: the Trainer sets them just before the next step, after building the data iterator.
    """
    folder = Path(folder)
    if not (folder / "trainer_state.json").is_file():
        raise FileNotFoundError(
            f"{folder} is not a complete checkpoint (no trainer_state.json). Pass a checkpoint-N folder written "
            "by the Trainer, or resume_from_checkpoint=True to pick the latest one in output_dir."
        )
    missing = [name for name in ("scheduler.pt",) + (() if sharded else ("optimizer.pt",))
               if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} has no {', '.join(missing)}: it was saved with save_only_model=True and cannot be resumed "
            "from. Load its weights with from_pretrained and start a new run instead."
        )
    if sharded:
        distributed.load_sharded(model, optimizer, folder / distributed.SHARDED_FOLDER)
    else:
        load_model_weights(model, folder)
        device = next(model.parameters()).device
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    if scaler is not None and (folder / "scaler.pt").is_file():
        scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    return TrainerState.load_from_json(folder / "trainer_state.json")


def load_extra(folder, name: str) -> dict | None:
    path = Path(folder) / name
    return torch.load(path, weights_only=True) if path.is_file() else None


def rng_file(rank: int, world_size: int) -> str:
    """The file of a process's random states: one per process in a distributed run, as the reference names them."""
    return f"rng_state_{rank}.pth" if world_size > 1 else "rng_state.pth"


def load_rng_states(folder, rank: int = 0, world_size: int = 1) -> dict | None:
    """This process's random states; a checkpoint of another number of processes gives its first process's."""
    for name in (rng_file(rank, world_size), "rng_state.pth", "rng_state_0.pth"):
        path = Path(folder) / name
        if path.is_file():
            return torch.load(path, weights_only=True)
    return None


def rotate_checkpoints(output_dir, limit: int | None, keep: str | None = None) -> None:
    """Delete the oldest checkpoints beyond `limit`, never the one named `keep` (the best model)."""
    if limit is None:
        return
    folders = checkpoint_folders(output_dir)
    best = [p for p in folders if str(p) == str(keep)]
    if best and best[0] is not folders[-1]:
        folders.remove(best[0])
        folders.append(best[0])  # the best one counts as the newest, so it is never deleted
        limit = max(limit, 2)  # and the latest stays too, so training can still resume
    for folder in folders[: max(len(folders) - limit, 0)]:
        deleted = folder.with_name(f"{_TEMPORARY}deleted-{folder.name}")
        os.replace(folder, deleted)  # out of the checkpoints' names at once; a crash mid-deletion leaves a leftover
        shutil.rmtree(deleted, ignore_errors=True)
