"""The names the reference's example scripts import (run_clm.py, run_glue.py) behave as the reference's.

Each name is run beside the reference's on the same inputs: HfArgumentParser parses the same argv into the same
dataclass values, the task mappings hold the same model types and classes, and so on.
"""

import dataclasses
import enum
import json
import sys
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

transformers = pytest.importorskip("transformers")

import openformers  # noqa: E402

LIBRARIES = {"reference": transformers, "openformers": openformers}


# -- HfArgumentParser -----------------------------------------------------------------------------------------------

class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@dataclass
class ScriptArguments:
    name: str = field(metadata={"help": "The name of the run."})
    count: int = 3
    ratio: Optional[float] = None
    flag: bool = False
    on: bool = field(default=True, metadata={"help": "Keep it on."})
    maybe: Optional[bool] = None
    color: Color = Color.RED
    letter: Literal["a", "b"] = "a"
    sizes: list[int] = field(default_factory=lambda: [1, 2])
    tags: Optional[list[str]] = None
    dtype: Optional[str] = field(default=None, metadata={"choices": ["auto", "bfloat16", "float32"]})


@dataclass
class MoreArguments:
    _argument_group_name = "more"
    extra_flag: bool = False
    path: str = "out"


ARGVS = [
    ["--name", "x"],
    ["--name", "y", "--count", "5", "--ratio", "0.5", "--flag", "--no_on", "--maybe", "false", "--color", "blue",
     "--letter", "b", "--sizes", "4", "5", "--tags", "p", "q", "--dtype", "bfloat16", "--extra-flag", "--path", "p"],
    ["--name=z", "--flag", "no", "--on", "0", "--no-on", "--maybe", "YES", "--extra_flag", "true"],
    ["--name", "w", "--on", "false", "--on", "t", "--flag", "1"],
]


def _parse(library, argv, dataclass_types=(ScriptArguments, MoreArguments)):
    return library.HfArgumentParser(dataclass_types).parse_args_into_dataclasses(argv, look_for_args_file=False)


@pytest.mark.parametrize("argv", ARGVS, ids=range(len(ARGVS)))
def test_hf_argument_parser_parses_argv_into_the_references_values(argv):
    ours, reference = _parse(openformers, argv), _parse(transformers, argv)
    assert [dataclasses.asdict(d) for d in ours] == [dataclasses.asdict(d) for d in reference]


@pytest.mark.parametrize("argv", [["--count", "3"], ["--name", "x", "--count", "many"], ["--name", "x", "--flag", "maybe"],
                                  ["--name", "x", "--color", "green"], ["--name", "x", "--dtype", "float64"]])
def test_hf_argument_parser_refuses_what_the_reference_refuses(argv, capsys):
    for library in LIBRARIES.values():
        with pytest.raises(SystemExit):
            _parse(library, argv)
    assert "error" in capsys.readouterr().err


def test_hf_argument_parser_help_is_the_references():
    helps = [library.HfArgumentParser((ScriptArguments, MoreArguments), prog="script").format_help()
             for library in LIBRARIES.values()]
    assert helps[0] == helps[1]
    assert "The name of the run." in helps[0] and "--no_on" in helps[0] and "{red,blue}" in helps[0]


TRAINING_ARGV = [
    "--output_dir", "out", "--do_train", "--do_eval", "--learning_rate", "3e-5", "--eval_strategy", "steps",
    "--eval_steps", "10", "--optim", "adamw_torch", "--report_to", "none", "--no_remove_unused_columns",
    "--lr_scheduler_type", "cosine", "--label_names", "a", "b", "--per_device_train_batch_size", "4",
    "--gradient_accumulation_steps", "2", "--logging_steps", "5", "--seed", "7", "--save_strategy", "no",
    "--warmup_steps", "0.1", "--weight_decay", "0.01", "--max_steps", "100", "--bf16", "false",
    "--lr_scheduler_kwargs", '{"num_cycles": 2}', "--include_num_input_tokens_seen", "--dataloader_pin_memory", "0",
]


def test_hf_argument_parser_reads_training_arguments_as_the_reference_does():
    ours, = _parse(openformers, TRAINING_ARGV, openformers.TrainingArguments)
    reference, = _parse(transformers, TRAINING_ARGV, transformers.TrainingArguments)
    assert isinstance(ours, openformers.TrainingArguments)
    for name in ("output_dir", "do_train", "do_eval", "learning_rate", "eval_strategy", "eval_steps", "optim",
                 "report_to", "remove_unused_columns", "lr_scheduler_type", "label_names", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "logging_steps", "seed", "save_strategy", "warmup_steps", "weight_decay",
                 "max_steps", "bf16", "lr_scheduler_kwargs", "include_num_input_tokens_seen", "dataloader_pin_memory"):
        mine, theirs = getattr(ours, name), getattr(reference, name)
        assert getattr(mine, "value", mine) == getattr(theirs, "value", theirs), name


def test_hf_argument_parser_the_script_pattern_of_three_dataclasses_and_a_json_file(tmp_path):
    values = {"name": "j", "count": 9, "sizes": [7], "color": "blue", "extra_flag": True, "output_dir": str(tmp_path),
              "learning_rate": 1e-4, "do_train": True}
    path = tmp_path / "args.json"
    path.write_text(json.dumps(values))
    results = {}
    for key, library in LIBRARIES.items():
        script, more, training = library.HfArgumentParser(
            (ScriptArguments, MoreArguments, library.TrainingArguments)).parse_json_file(json_file=str(path))
        results[key] = (dataclasses.asdict(script), dataclasses.asdict(more), training.learning_rate, training.do_train)
    assert results["openformers"] == results["reference"]
    assert results["openformers"][0]["color"] == "blue"  # as given: parse_dict does not convert, in either library


def test_hf_argument_parser_parse_dict_refuses_unknown_keys_unless_allowed():
    values = {"name": "d", "unknown": 1}
    for library in LIBRARIES.values():
        with pytest.raises(ValueError, match="unknown"):
            library.HfArgumentParser(ScriptArguments).parse_dict(values)
    ours, = openformers.HfArgumentParser(ScriptArguments).parse_dict(values, allow_extra_keys=True)
    reference, = transformers.HfArgumentParser(ScriptArguments).parse_dict(values, allow_extra_keys=True)
    assert ours == reference


def test_hf_argument_parser_parse_yaml_file(tmp_path, monkeypatch):
    path = tmp_path / "args.yaml"
    path.write_text("name: y\ncount: 4\ntags: [a, b]\n")
    pytest.importorskip("yaml")
    assert openformers.HfArgumentParser(ScriptArguments).parse_yaml_file(path) == \
        transformers.HfArgumentParser(ScriptArguments).parse_yaml_file(path)
    monkeypatch.setitem(sys.modules, "yaml", None)  # PyYAML is not a dependency of openformers: a clear error
    with pytest.raises(ImportError, match="pip install pyyaml"):
        openformers.HfArgumentParser(ScriptArguments).parse_yaml_file(path)


def test_hf_argument_parser_extra_options_remaining_strings_and_args_files(tmp_path):
    args_file = tmp_path / "run.args"
    args_file.write_text("--name from_file --count 2")
    flag_file = tmp_path / "flag.args"
    flag_file.write_text("--count 8")
    results = {}
    for key, library in LIBRARIES.items():
        parser = library.HfArgumentParser(ScriptArguments)
        parser.add_argument("--by_hand", type=int, default=1)
        script, namespace, remaining = parser.parse_args_into_dataclasses(
            ["--by_hand", "5", "--other", "--args_file", str(flag_file)], return_remaining_strings=True,
            args_filename=str(args_file), args_file_flag="--args_file")
        results[key] = (dataclasses.asdict(script), vars(namespace), remaining)
        with pytest.raises(ValueError, match="--other"):
            parser.parse_args_into_dataclasses(["--name", "x", "--other"], look_for_args_file=False)
    assert results["openformers"] == results["reference"]
    assert results["openformers"][0]["count"] == 8 and results["openformers"][1] == {"by_hand": 5}


def test_hf_argument_parser_names_the_field_it_cannot_type():
    @dataclass
    class TwoTypes:
        size: int | float = 1

    with pytest.raises(TypeError, match="'size'"):
        openformers.HfArgumentParser(TwoTypes)
    with pytest.raises(TypeError, match="dataclass"):
        openformers.HfArgumentParser([dict])


def test_hf_argument_parser_from_the_reference_module_path():
    from openformers.hf_argparser import HfArg, HfArgumentParser, string_to_bool

    @dataclass
    class WithAliases:
        level: int = HfArg(default=1, aliases=["-l"], help="How deep.")

    assert HfArgumentParser is openformers.HfArgumentParser
    assert HfArgumentParser(WithAliases).parse_args_into_dataclasses(["-l", "3"], look_for_args_file=False) == \
        transformers.HfArgumentParser(WithAliases).parse_args_into_dataclasses(["-l", "3"], look_for_args_file=False)
    assert [string_to_bool(v) for v in ("Yes", "0", "t", True)] == [True, False, True, True]


# -- CONFIG_MAPPING and the task mappings ---------------------------------------------------------------------------

TASK_MAPPINGS = ["MODEL", "MODEL_FOR_CAUSAL_LM", "MODEL_FOR_MASKED_LM", "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM",
                 "MODEL_FOR_SEQUENCE_CLASSIFICATION", "MODEL_FOR_TOKEN_CLASSIFICATION", "MODEL_FOR_QUESTION_ANSWERING",
                 "MODEL_FOR_MULTIPLE_CHOICE", "MODEL_FOR_NEXT_SENTENCE_PREDICTION", "MODEL_FOR_PRETRAINING"]


@pytest.mark.parametrize("prefix", TASK_MAPPINGS)
def test_task_mappings_hold_the_references_classes_for_the_families_shipped(prefix):
    from openformers.models import auto
    from transformers.models.auto import modeling_auto

    ours_by_type = getattr(openformers, f"{prefix}_MAPPING_NAMES")
    shipped = set(auto.MODEL_CLASSES)  # the model types with models (CONFIG_MAPPING also reads Gemma 3's text part)
    reference_by_type = {t: name for t, name in getattr(modeling_auto, f"{prefix}_MAPPING_NAMES").items() if t in shipped}
    assert dict(ours_by_type) == reference_by_type
    mapping = getattr(openformers, f"{prefix}_MAPPING")
    assert len(mapping) == len(ours_by_type) and bool(mapping) == bool(ours_by_type)
    for config_class, model_class in mapping.items():  # keyed by config class, as the reference's
        assert model_class.__name__ == ours_by_type[config_class.model_type]
        assert openformers.CONFIG_MAPPING[config_class.model_type] is config_class
        assert config_class in mapping and mapping.get(config_class) is model_class


def test_run_clm_lists_model_types_and_builds_a_config_from_scratch():
    """run_clm.py: MODEL_TYPES from the causal-LM mapping's keys, and CONFIG_MAPPING[model_type]() for --model_type."""
    model_types = tuple(conf.model_type for conf in list(openformers.MODEL_FOR_CAUSAL_LM_MAPPING.keys()))
    reference_types = {conf.model_type for conf in transformers.MODEL_FOR_CAUSAL_LM_MAPPING.keys()}
    assert {"gpt2", "llama", "qwen2", "mistral"} <= set(model_types) <= reference_types
    assert "t5" not in model_types and "bert" in model_types  # BertLMHeadModel, as the reference's
    config = openformers.CONFIG_MAPPING["gpt2"]()
    assert type(config) is openformers.GPT2Config
    assert config.to_dict()["n_embd"] == transformers.CONFIG_MAPPING["gpt2"]().n_embd
    model = openformers.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    assert model is openformers.GPT2LMHeadModel


def test_config_mapping_matches_the_reference_and_refuses_unknown_types():
    for model_type, config_class in openformers.CONFIG_MAPPING.items():
        assert config_class.__name__ == transformers.CONFIG_MAPPING[model_type].__name__
        assert config_class.model_type == model_type
    with pytest.raises(KeyError, match="no_such_model"):
        openformers.CONFIG_MAPPING["no_such_model"]
    assert "no_such_model" not in openformers.CONFIG_MAPPING
    assert openformers.BertConfig not in openformers.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING
    with pytest.raises(KeyError):
        openformers.MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING[openformers.BertConfig]
    assert openformers.MODEL_FOR_CAUSAL_LM_MAPPING.get(dict, "absent") == "absent"


def test_config_mapping_register_is_auto_config_register():
    class TinyConfig(openformers.LlamaConfig):
        model_type = "tiny_registered_llama"

    openformers.CONFIG_MAPPING.register("tiny_registered_llama", TinyConfig)
    try:
        assert openformers.CONFIG_MAPPING["tiny_registered_llama"] is TinyConfig
        with pytest.raises(ValueError, match="already registered"):
            openformers.CONFIG_MAPPING.register("tiny_registered_llama", type("Other", (TinyConfig,), {}))
    finally:
        from openformers.configs import CONFIG_CLASSES

        del CONFIG_CLASSES["tiny_registered_llama"]


# -- trainer_utils and training_args --------------------------------------------------------------------------------

def test_optimizer_names_are_the_references_and_training_arguments_take_ours():
    from openformers.training_args import OptimizerNames
    from transformers.training_args import OptimizerNames as ReferenceNames

    assert [(m.name, m.value) for m in OptimizerNames] == [(m.name, m.value) for m in ReferenceNames]
    for name in ("adamw_torch", "adamw_torch_fused", "adafactor", "sgd", "adagrad", "rmsprop"):
        ours = openformers.TrainingArguments(optim=OptimizerNames(name)).optim
        assert ours == name == transformers.TrainingArguments(optim=ReferenceNames(name)).optim.value
        assert openformers.TrainingArguments(optim=name).optim == name
    for refused in (OptimizerNames.ADAMW_BNB, "galore_adamw", "lion_32bit"):
        with pytest.raises(ValueError, match=r"optim must be one of 'adamw_torch'.*'rmsprop'; got '.*outside torch"):
            openformers.TrainingArguments(optim=refused)
    with pytest.raises(ValueError, match="got 'adam_from_the_future'.$"):
        openformers.TrainingArguments(optim="adam_from_the_future")
    with pytest.raises(ValueError, match="'adamw_8bit'"):
        openformers.TrainingArguments().set_optimizer("adamw_8bit")


def test_the_parser_offers_the_references_optimizer_choices_and_refuses_the_unbuilt_by_name():
    def choices(library):
        parser = library.HfArgumentParser(library.TrainingArguments)
        return next(a.choices for a in parser._actions if a.dest == "optim")

    assert choices(openformers) == choices(transformers)
    with pytest.raises(ValueError, match="'paged_adamw_8bit'"):
        _parse(openformers, ["--optim", "paged_adamw_8bit"], openformers.TrainingArguments)


def test_parallel_mode(monkeypatch):
    from openformers.training_args import ParallelMode
    from transformers.training_args import ParallelMode as ReferenceMode

    assert [(m.name, m.value) for m in ParallelMode] == [(m.name, m.value) for m in ReferenceMode]
    args = openformers.TrainingArguments(use_cpu=True)
    assert args.parallel_mode.value == transformers.TrainingArguments(use_cpu=True).parallel_mode.value
    assert args.parallel_mode is ParallelMode.NOT_PARALLEL
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    assert args.parallel_mode is ParallelMode.DISTRIBUTED


def test_trainer_utils_names_behave_as_the_references():
    import time

    import numpy as np
    import torch

    from openformers import trainer_utils as ours
    from transformers import trainer_utils as reference

    assert ours.EvalLoopOutput._fields == reference.EvalLoopOutput._fields
    assert [ours.is_main_process(r) for r in (-1, 0, 1, 3)] == [reference.is_main_process(r) for r in (-1, 0, 1, 3)]
    metrics = {"a": np.float32(1.5), "b": [torch.tensor(2.0), (np.int64(3), "x")], "c": {"d": torch.tensor([4.0])},
               "e": np.array([1.0, 2.0]), "f": torch.tensor([1.0, 2.0])}
    mine, theirs = ours.denumpify_detensorize(metrics), reference.denumpify_detensorize(metrics)
    assert {k: v for k, v in mine.items() if k not in "ef"} == {k: v for k, v in theirs.items() if k not in "ef"}
    assert type(mine["b"][1]) is tuple and type(mine["a"]) is float and type(mine["c"]["d"]) is float
    assert mine["e"] is metrics["e"] and mine["f"] is metrics["f"]
    start = time.time() - 2.0
    mine = ours.speed_metrics("eval", start, num_samples=10, num_steps=4, num_tokens=100)
    theirs = reference.speed_metrics("eval", start, num_samples=10, num_steps=4, num_tokens=100)
    assert list(mine) == list(theirs) and all(v == pytest.approx(theirs[k], rel=0.05) for k, v in mine.items())
    assert list(ours.speed_metrics("train", start)) == ["train_runtime"]


def test_seed_worker_seeds_as_the_references():
    import random

    import numpy as np
    import torch

    from openformers.trainer_utils import seed_worker
    from transformers.trainer_utils import seed_worker as reference_seed_worker

    draws = []
    for seeder in (seed_worker, reference_seed_worker):
        torch.manual_seed(11)
        seeder(0, num_workers=2, rank=1)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


# -- the data collators' base, generate's output union, utils, pytorch_utils, activations ---------------------------

def test_data_collator_mixin_dispatches_as_the_references():
    import numpy as np
    import torch

    from openformers.data.data_collator import DataCollatorMixin
    from transformers.data.data_collator import DataCollatorMixin as ReferenceMixin

    class Lengths:  # a user's collator, written for the reference: torch_call and numpy_call
        return_tensors = "pt"

        def torch_call(self, features):
            return {"lengths": torch.tensor([len(f["input_ids"]) for f in features])}

        def numpy_call(self, features):
            return {"lengths": np.array([len(f["input_ids"]) for f in features])}

    ours, theirs = type("Ours", (Lengths, DataCollatorMixin), {})(), type("Theirs", (Lengths, ReferenceMixin), {})()
    features = [{"input_ids": [1, 2, 3]}, {"input_ids": [4]}]
    for return_tensors in (None, "pt", "np"):
        mine, reference = ours(features, return_tensors), theirs(features, return_tensors)
        assert type(mine["lengths"]) is type(reference["lengths"]) and mine["lengths"].tolist() == [3, 1]
    with pytest.raises(ValueError, match="return_tensors"):
        ours(features, "tf")
    only_torch = type("OnlyTorch", (DataCollatorMixin,), {"torch_call": Lengths.torch_call})()
    with pytest.raises(TypeError, match="numpy_call"):
        only_torch(features, "np")
    for name in ("DefaultDataCollator", "DataCollatorForTokenClassification", "DataCollatorForMultipleChoice",
                 "DataCollatorForLanguageModeling", "DataCollatorWithFlattening"):
        assert issubclass(getattr(openformers, name), DataCollatorMixin) == \
            issubclass(getattr(transformers, name), ReferenceMixin), name
    collator = openformers.DefaultDataCollator()
    assert collator.numpy_call([{"input_ids": [1, 2], "label": 1}])["labels"].tolist() == [1]
    assert collator.torch_call([{"input_ids": [1, 2], "label": 1}])["input_ids"].dtype == torch.int64


def test_generate_output_is_the_union_of_generates_outputs():
    from openformers.generation import (
        GenerateBeamDecoderOnlyOutput, GenerateBeamEncoderDecoderOutput, GenerateDecoderOnlyOutput,
        GenerateEncoderDecoderOutput,
    )
    from openformers.generation.utils import GenerateBeamOutput, GenerateNonBeamOutput, GenerateOutput
    from transformers.generation import utils as reference

    def names(union):
        return sorted(cls.__name__ for cls in union.__args__)

    assert names(GenerateOutput) == names(reference.GenerateOutput)
    assert names(GenerateBeamOutput) == names(reference.GenerateBeamOutput)
    assert names(GenerateNonBeamOutput) == names(reference.GenerateNonBeamOutput)
    import torch

    for cls in (GenerateDecoderOnlyOutput, GenerateEncoderDecoderOutput, GenerateBeamDecoderOnlyOutput,
                GenerateBeamEncoderDecoderOutput):
        assert isinstance(cls(sequences=torch.zeros(1, 1)), GenerateOutput)


def test_utils_names_of_the_example_scripts(tmp_path, monkeypatch):
    import importlib.metadata

    from packaging.version import Version

    from openformers.utils import check_min_version
    from openformers.utils.versions import require_version
    from transformers.utils.versions import require_version as reference_require_version

    check_min_version("4.57.0.dev0")  # run_clm.py's
    check_min_version("4.20.0.dev0")  # run_glue.py's
    with pytest.raises(ImportError, match="99.0"):
        check_min_version("99.0")
    assert Version(openformers.utils.API_VERSION).major == Version(transformers.__version__).major
    for requirement in ("datasets>=2.14.0", "numpy", "python>=3.9", "torch>=1.3,<100"):
        require_version(requirement, "To fix: pip install it")
        reference_require_version(requirement)
    for requirement, error in (("numpy>=999", ImportError), ("no-such-distribution-xyz", importlib.metadata.
                                                             PackageNotFoundError)):
        for check in (require_version, reference_require_version):
            with pytest.raises(error, match="To fix"):
                check(requirement, "To fix: upgrade")
    with pytest.raises(ValueError, match="pip's format"):
        require_version("numpy>>1")
    assert openformers.utils.logging is openformers.logging  # transformers.utils.logging.set_verbosity_info()
    from openformers.utils.logging import get_logger  # noqa: F401

    from openformers.utils import ModelOutput, is_accelerate_available, is_flash_attn_2_available

    assert ModelOutput is openformers.ModelOutput
    assert is_accelerate_available() == transformers.utils.is_accelerate_available()
    assert is_flash_attn_2_available() == transformers.utils.is_flash_attn_2_available()


def test_capture_logger_captures_what_the_reference_captures():
    from openformers.testing_utils import CaptureLogger
    from transformers.testing_utils import CaptureLogger as ReferenceCapture

    logger = openformers.logging.get_logger("openformers.tokenization_test")
    captured = []
    for capture in (CaptureLogger, ReferenceCapture):
        with capture(logger) as cl:
            logger.warning("Token indices sequence length is longer than the maximum")
        captured.append(cl.out)
    assert captured[0] == captured[1] == "Token indices sequence length is longer than the maximum\n"


def test_cached_file_finds_folder_and_cache_files_offline(tmp_path, monkeypatch):
    from openformers.utils import cached_file
    from transformers.utils import cached_file as reference_cached_file

    folder = tmp_path / "model"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "tokenizer.json").write_text("{}")
    for find in (cached_file, reference_cached_file):
        assert find(str(folder), "config.json") == str(folder / "config.json")
        assert find(str(folder), "tokenizer.json", subfolder="sub") == str(folder / "sub" / "tokenizer.json")
        assert find(str(folder), "missing.json", _raise_exceptions_for_missing_entries=False) is None
        with pytest.raises(OSError, match="missing.json"):
            find(str(folder), "missing.json")
    cache = tmp_path / "cache"
    repo = cache / "models--org--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    found = cached_file("org/tiny", "config.json", cache_dir=cache)
    assert found == str(repo / "snapshots" / "abc123" / "config.json")
    assert cached_file("org/tiny", "weights.bin", cache_dir=cache, _raise_exceptions_for_missing_entries=False) is None
    with pytest.raises(OSError, match="weights.bin.*not in the Hugging Face cache"):
        cached_file("org/tiny", "weights.bin", cache_dir=cache)


def test_conv1d_and_chunking_compute_as_the_references():
    import torch

    from openformers.pytorch_utils import Conv1D, apply_chunking_to_forward
    from transformers.pytorch_utils import Conv1D as ReferenceConv1D
    from transformers.pytorch_utils import apply_chunking_to_forward as reference_chunking

    ours, theirs = Conv1D(6, 4), ReferenceConv1D(6, 4)
    assert ours.weight.shape == theirs.weight.shape == (4, 6) and ours.bias.shape == theirs.bias.shape
    theirs.load_state_dict(ours.state_dict())
    with torch.no_grad():
        ours.bias.normal_()
        theirs.bias.copy_(ours.bias)
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(ours(x), theirs(x))
    assert ours(x).shape == (2, 3, 6)
    layer = torch.nn.Linear(4, 4)
    mine = apply_chunking_to_forward(layer, 2, 1, torch.randn(2, 6, 4).requires_grad_())
    torch.manual_seed(0)
    a, b = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    torch.testing.assert_close(apply_chunking_to_forward(lambda p, q: layer(p) * q, 3, 1, a, b),
                               reference_chunking(lambda p, q: layer(p) * q, 3, 1, a, b))
    assert mine.shape == (2, 6, 4)
    with pytest.raises(ValueError, match="multiple of chunk_size=4"):
        apply_chunking_to_forward(layer, 4, 1, a)


def test_act2fn_computes_the_references_activations():
    import torch

    from openformers.activations import ACT2FN, get_activation
    from transformers.activations import ACT2FN as REFERENCE_ACT2FN

    x = torch.linspace(-6, 6, 101)
    shared = sorted(set(ACT2FN) & set(REFERENCE_ACT2FN))
    assert {"gelu", "gelu_new", "relu", "silu", "swish", "tanh", "sigmoid", "quick_gelu", "linear", "mish"} <= \
        set(shared)
    for name in shared:
        module = ACT2FN[name]
        assert isinstance(module, torch.nn.Module)
        torch.testing.assert_close(module(x), REFERENCE_ACT2FN[name](x), msg=name)
    assert type(get_activation("gelu")) is type(ACT2FN["silu"])
    with pytest.raises(KeyError, match="no_such_act.*silu"):
        get_activation("no_such_act")


# -- what run_clm.py calls beside its imports -----------------------------------------------------------------------

def test_update_from_string_sets_fields_as_the_references():
    overrides = "n_embd=10,resid_pdrop=0.2,scale_attn_weights=false,n_layer=3"
    ours, reference = openformers.GPT2Config(), transformers.GPT2Config()
    ours.update_from_string(overrides)
    reference.update_from_string(overrides)
    for name in ("n_embd", "resid_pdrop", "scale_attn_weights", "n_layer"):
        assert getattr(ours, name) == getattr(reference, name) and type(getattr(ours, name)) is \
            type(getattr(reference, name)), name
    for bad, error in (("no_such_field=1", ValueError), ("scale_attn_weights=maybe", ValueError),
                       ("n_layer=two", ValueError)):
        for config in (openformers.GPT2Config(), transformers.GPT2Config()):
            with pytest.raises(error):
                config.update_from_string(bad)
    with pytest.raises(ValueError, match="no_such_field"):
        openformers.GPT2Config().update_from_string("no_such_field=1")


def test_create_model_card_writes_the_readme_run_clm_ends_with(tmp_path):
    import torch

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(2, 2)

        def forward(self, x, labels=None):
            return {"loss": self.linear(x).sum()}

    args = openformers.TrainingArguments(output_dir=str(tmp_path / "clm"), learning_rate=3e-4, seed=5, report_to=[])
    trainer = openformers.Trainer(model=Tiny(), args=args)
    trainer.state.log_history.append({"eval_loss": 1.25, "eval_accuracy": 0.5, "eval_runtime": 1.0, "step": 3})
    trainer.create_model_card(finetuned_from="gpt2", tasks="text-generation", dataset_tags="wikitext",
                              dataset="wikitext wikitext-2-raw-v1", dataset_args="wikitext-2-raw-v1")
    card = (tmp_path / "clm" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers\n")
    for line in ("base_model: gpt2", "- generated_from_trainer", "datasets:\n- wikitext", "pipeline_tag: text-generation",
                 "# clm", "This model is a fine-tuned version of [gpt2](https://huggingface.co/gpt2) on the wikitext "
                 "wikitext-2-raw-v1 dataset.", "- Loss: 1.2500", "- Accuracy: 0.5000", "- learning_rate: 0.0003",
                 "- seed: 5", "- num_epochs: 3.0"):
        assert line in card, line
    assert "Runtime" not in card


def test_run_clm_from_scratch_runs_on_openformers(tmp_path):
    """run_clm.py's path for --model_type without a checkpoint, its imports from openformers: parse the three
    dataclasses, build the config from CONFIG_MAPPING with --config_overrides, train with default_data_collator,
    save the metrics and state, and end with the model card."""
    import torch

    from openformers import (
        CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING, AutoModelForCausalLM, HfArgumentParser, Trainer,
        TrainingArguments, default_data_collator, is_torch_xla_available, set_seed,
    )
    from openformers.testing_utils import CaptureLogger  # noqa: F401
    from openformers.utils import check_min_version
    from openformers.utils.versions import require_version

    check_min_version("4.57.0.dev0")
    require_version("torch>=1.3", "To fix: pip install torch")
    model_types = tuple(conf.model_type for conf in list(MODEL_FOR_CAUSAL_LM_MAPPING.keys()))

    @dataclass
    class ModelArguments:
        model_type: Optional[str] = field(default=None, metadata={"help": "One of: " + ", ".join(model_types)})
        config_overrides: Optional[str] = None

    @dataclass
    class DataTrainingArguments:
        block_size: Optional[int] = None

    argv = ["--model_type", "gpt2", "--config_overrides", "n_embd=16,n_layer=1,n_head=2,vocab_size=40,n_positions=16",
            "--block_size", "8", "--output_dir", str(tmp_path / "clm"), "--do_train", "--max_steps", "2",
            "--per_device_train_batch_size", "2", "--report_to", "none", "--save_strategy", "no", "--optim", "sgd",
            "--use_cpu"]
    model_args, data_args, training_args = HfArgumentParser(
        (ModelArguments, DataTrainingArguments, TrainingArguments)).parse_args_into_dataclasses(argv)
    assert training_args.parallel_mode.value != "distributed"
    set_seed(training_args.seed)
    config = CONFIG_MAPPING[model_args.model_type]()
    config.update_from_string(model_args.config_overrides)
    model = AutoModelForCausalLM.from_config(config)
    assert type(model) is MODEL_FOR_CAUSAL_LM_MAPPING[type(config)]
    ids = torch.randint(0, 40, (8, data_args.block_size)).tolist()
    train_dataset = [{"input_ids": row, "attention_mask": [1] * len(row), "labels": row} for row in ids]
    trainer = Trainer(model=model, args=training_args, train_dataset=train_dataset, data_collator=default_data_collator,
                      compute_metrics=None if is_torch_xla_available() else None)
    with training_args.main_process_first(desc="grouping texts together"):
        metrics = trainer.train().metrics
    trainer.save_model()
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    trainer.create_model_card(tasks="text-generation")
    folder = tmp_path / "clm"
    assert {"README.md", "train_results.json", "trainer_state.json", "config.json"} <= {p.name for p in folder.iterdir()}
    assert set(metrics) >= {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss"}
