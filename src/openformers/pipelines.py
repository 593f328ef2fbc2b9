"""`pipeline(task, model=...)`: a model and its tokenizer behind one call, returning the reference's structures.

    generator = pipeline("text-generation", model="HuggingFaceTB/SmolLM2-135M-Instruct")
    generator("Once upon a time", max_new_tokens=20)        # [{"generated_text": "Once upon a time..."}]
    generator([{"role": "user", "content": "Hi!"}])         # [{"generated_text": [user, {"role": "assistant", ...}]}]

Tasks: text-generation (strings or chats), text-classification (alias sentiment-analysis), zero-shot-classification
(NLI models), feature-extraction, fill-mask, token-classification (alias ner), question-answering, and for
encoder-decoders text2text-generation, summarization and translation (translation_xx_to_yy). A string
gives that input's result, a list of inputs a list of results, one per input, and a generator or a dataset an
iterator over the results.

The loading options (dtype, device, device_map, revision, token, model_kwargs...) are used when the model and
tokenizer are loaded; every other keyword argument is a default for each call, checked when the pipeline is
built, so a misspelt option fails at pipeline() rather than at the first call.
"""

import inspect
import itertools
import numbers
import os
import types
import warnings
from collections.abc import Mapping, MutableMapping

import torch

from . import logging as library_logging
from .generation.config import GenerationConfig
from .generation.options import OPTION_NAMES, OPTIONS, Kind, names_of_kind

# task -> (the Auto class that loads its model, the pipeline class, defined below)
TASKS = {
    "text-generation": ("AutoModelForCausalLM", "TextGenerationPipeline"),
    "text-classification": ("AutoModelForSequenceClassification", "TextClassificationPipeline"),
    "sentiment-analysis": ("AutoModelForSequenceClassification", "TextClassificationPipeline"),
    "zero-shot-classification": ("AutoModelForSequenceClassification", "ZeroShotClassificationPipeline"),
    "feature-extraction": ("AutoModel", "FeatureExtractionPipeline"),
    "fill-mask": ("AutoModelForMaskedLM", "FillMaskPipeline"),
    "token-classification": ("AutoModelForTokenClassification", "TokenClassificationPipeline"),
    "ner": ("AutoModelForTokenClassification", "TokenClassificationPipeline"),
    "question-answering": ("AutoModelForQuestionAnswering", "QuestionAnsweringPipeline"),
    "text2text-generation": ("AutoModelForSeq2SeqLM", "Text2TextGenerationPipeline"),
    "summarization": ("AutoModelForSeq2SeqLM", "SummarizationPipeline"),
    "translation": ("AutoModelForSeq2SeqLM", "TranslationPipeline"),  # also "translation_xx_to_yy"
}
# The end of a config's architecture name -> the task a model of that class does, for pipeline(model=...) alone.
_TASK_OF_ARCHITECTURE = {
    "ForCausalLM": "text-generation", "LMHeadModel": "text-generation",
    "ForSequenceClassification": "text-classification", "ForTokenClassification": "token-classification",
    "ForQuestionAnswering": "question-answering", "ForMaskedLM": "fill-mask", "Model": "feature-extraction",
    "ForConditionalGeneration": "text2text-generation",
}


def get_supported_tasks() -> list[str]:
    """The task names pipeline() takes, aliases included."""
    return sorted(TASKS)


def pipeline(
    task: str | None = None,
    model=None,
    tokenizer=None,
    *,
    revision: str | None = None,
    use_fast: bool = True,
    token: str | bool | None = None,
    device: str | torch.device | int | None = None,
    device_map: str | torch.device | int | None = None,
    dtype: torch.dtype | str | None = "auto",
    trust_remote_code: bool | None = None,
    model_kwargs: dict | None = None,
    pipeline_class: type | None = None,
    framework: str | None = None,
    **kwargs,
):
    """Build the pipeline for `task`. `model` is a model object, or a folder, GGUF file or Hub id to load.

    Loading: `dtype` ("auto", the default, keeps the checkpoint's dtype; `torch_dtype` is its older name),
    `device_map`, `revision`, `token`, `trust_remote_code` and `model_kwargs` (more from_pretrained options,
    e.g. {"gguf_file": ...}) go to the model's from_pretrained; `tokenizer` defaults to the one stored with the
    model. `device` (an index, -1 for the CPU, or a device) is where the model runs; by default the first GPU
    if there is one, as in the reference. Other keyword arguments are defaults for every call (generation
    options such as max_new_tokens, and the pipeline's own options, plus batch_size).
    """
    if framework not in (None, "pt"):
        raise ValueError(f"framework={framework!r}: openformers runs PyTorch models only; leave it unset or pass 'pt'.")
    if kwargs.get("config") is not None:
        raise ValueError("pipeline(config=...): openformers reads the config stored with the model; pass model= (a "
                         "folder, a file or a Hub id), with config overrides in model_kwargs, e.g. {'num_labels': 3}.")
    for name in ("feature_extractor", "image_processor", "video_processor", "processor"):
        if kwargs.get(name) is not None:
            raise ValueError(f"pipeline({name}=...): openformers' pipelines read text only, through the tokenizer.")
    for name in ("config", "feature_extractor", "image_processor", "video_processor", "processor"):
        kwargs.pop(name, None)  # None: as if not given
    model_kwargs = dict(model_kwargs or {})
    dtype = _loading_dtype(dtype, kwargs.pop("torch_dtype", None), model_kwargs)
    if device_map is not None:
        if "device_map" in model_kwargs:
            raise ValueError("device_map is given both as pipeline(device_map=...) and in model_kwargs; pass it once.")
        model_kwargs["device_map"] = device_map
    if task is None:
        if model is None:
            raise ValueError("pipeline() needs a task, a model, or both: e.g. pipeline('text-generation', model=...).")
        task = _task_of(model, model_kwargs)
    auto_class, class_name = _task_entry(task)
    pipeline_class = pipeline_class or globals()[class_name]
    pipeline_class.check_options(kwargs, "pipeline()")  # before the (slow) loading, so a typo fails at once

    if model is None:
        if task != "text-generation":
            raise ValueError(f"pipeline({task!r}) needs model=: a folder, a Hub id or a model object.")
        if tokenizer is not None:
            raise ValueError("pipeline() was given a tokenizer but no model: pass the model it belongs to as well.")
        from .hub import DEFAULT_MODEL

        model = DEFAULT_MODEL
    hub_options = {"revision": revision, "token": token}
    if isinstance(model, (str, os.PathLike)):
        from .models import auto

        if tokenizer is None:
            tokenizer = model
        loading = {**hub_options, **model_kwargs}
        if trust_remote_code:
            loading["trust_remote_code"] = trust_remote_code  # refused, with the reason, by from_pretrained
        if dtype is not None:
            loading["dtype"] = dtype
        model = getattr(auto, auto_class).from_pretrained(model, **loading)
        if device is None and "device_map" in model_kwargs:
            device = _model_device(model)  # placed by device_map: leave it there
    if tokenizer is None:
        raise ValueError("pipeline() was given a model object but no tokenizer: pass tokenizer=... too.")
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _load_tokenizer(tokenizer, hub_options, model_kwargs)
    elif isinstance(tokenizer, tuple):  # the reference's (name, {from_pretrained options}) form
        name, options = tokenizer
        tokenizer = _load_tokenizer(name, hub_options, model_kwargs, **options)
    if task == "translation":
        task = _translation_task(model)
    return pipeline_class(model, tokenizer, task=task, device=device, **kwargs)


def _loading_dtype(dtype, torch_dtype, model_kwargs: dict):
    """The loading dtype, from dtype=, its older name torch_dtype= and model_kwargs, as the reference merges them."""
    if torch_dtype is not None and dtype == "auto":
        dtype = torch_dtype
    for name in ("dtype", "torch_dtype"):
        if name in model_kwargs:
            if dtype != "auto":
                raise ValueError(f"The dtype is given both as pipeline(dtype=...) and as model_kwargs[{name!r}]; "
                                 "pass it once.")
            dtype = model_kwargs.pop(name)
    if isinstance(dtype, str) and dtype != "auto":
        if not isinstance(getattr(torch, dtype, None), torch.dtype):
            raise ValueError(f"dtype={dtype!r} is not a torch dtype; pass e.g. torch.float16, 'bfloat16' or 'auto'.")
        dtype = getattr(torch, dtype)
    return dtype


def _load_tokenizer(name, hub_options: dict, model_kwargs: dict, **options):
    from .tokenizers import AutoTokenizer

    if "gguf_file" in model_kwargs and "gguf_file" not in options:
        options["gguf_file"] = model_kwargs["gguf_file"]  # the tokenizer is in the same GGUF file as the weights
    return AutoTokenizer.from_pretrained(name, **hub_options, **options)


def _task_of(model, model_kwargs: dict) -> str:
    """The task of a model given without one, from its class or its config's architectures."""
    if isinstance(model, (str, os.PathLike)):
        from .models.auto import AutoConfig

        gguf = {"gguf_file": model_kwargs["gguf_file"]} if "gguf_file" in model_kwargs else {}
        architectures = getattr(AutoConfig.from_pretrained(model, **gguf), "architectures", None) or []
    else:
        architectures = [type(model).__name__]
    for architecture in architectures:
        for ending, task in _TASK_OF_ARCHITECTURE.items():
            if architecture.endswith(ending):
                return task
    raise ValueError(f"Cannot tell the task of {model!r:.80} (architectures {architectures}); pass it: "
                     f"pipeline('text-generation', model=...), one of {', '.join(TASKS)}.")


def _model_device(model) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _pipeline_device(device) -> torch.device:
    """The reference's device argument: None or an index >= 0 means that GPU if there is one, -1 the CPU."""
    if isinstance(device, torch.device):
        return device
    if isinstance(device, str):
        return torch.device(device)
    if device is None:
        device = 0
    if not isinstance(device, int):
        raise TypeError(f"device must be an int, a string such as 'cuda:0' or a torch.device; got {device!r}.")
    if device < 0 or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(f"cuda:{device}")


def _to_device(value, device: torch.device):
    """Tensors, and tensors in dicts, model outputs, lists and tuples, moved to `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, Mapping):
        if isinstance(value, MutableMapping):  # keeps the type: a ModelOutput or a BatchEncoding
            for key in list(value.keys()):
                value[key] = _to_device(value[key], device)
            return value
        return {key: _to_device(item, device) for key, item in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_to_device(item, device) for item in value)
    return value


def _is_stream(inputs) -> bool:
    """A generator, an iterator or a dataset: its results are produced lazily, as the reference does."""
    if isinstance(inputs, (str, list, tuple, dict)):
        return False
    if isinstance(inputs, (types.GeneratorType, torch.utils.data.Dataset)) or hasattr(inputs, "__next__"):
        return True
    return type(inputs).__module__.split(".")[0] == "datasets"


class Pipeline:
    """What every pipeline shares: the model and tokenizer, the device, option checking and the call forms.

    A call takes one input (its result), a list of inputs (a list of results), or a generator or dataset (an
    iterator over the results). Keyword arguments given when the pipeline is built are defaults for each call.
    `batch_size` (given when building or calling) makes text generation and text classification run that
    many inputs at once, padded as the reference pads them; the other tasks run their inputs one at a time,
    which gives the results of the reference's batches without their padding. `num_workers` is accepted and
    unused (there is no DataLoader here).

    A subclass of one's own may follow the reference's protocol instead: `_sanitize_parameters(**options)`
    splits the options into those of `preprocess(input)`, `_forward(model_inputs)` (run without gradients, its
    tensors moved to the pipeline's device and back) and `postprocess(model_outputs)`. Text generation, text
    classification, feature extraction and fill-mask run those steps themselves, so a subclass of theirs may
    override one.
    """

    task = ""
    framework = "pt"  # the reference's; custom pipelines pass it as return_tensors=self.framework

    def __init__(self, model, tokenizer=None, task: str = "", device=None, batch_size: int | None = None,
                 num_workers: int | None = None, binary_output: bool = False, dtype=None, torch_dtype=None,
                 **defaults):
        # dtype and torch_dtype are the loading options the reference also hands its pipeline classes: unused here.
        self.model = model.eval()
        self.tokenizer = tokenizer
        if task:
            self.task = task
        self.device = _model_device(model) if getattr(model, "hf_device_map", None) else _pipeline_device(device)
        if _model_device(model) != self.device:
            self.model.to(self.device)
        self._batch_size, self._num_workers, self.binary_output = batch_size, num_workers, binary_output
        self.call_count = 0
        if self._follows_reference_steps():
            self._step_defaults = self._sanitize_parameters(**defaults)
            self.defaults = {}
        else:
            self.defaults = self.check_options(defaults, f"{type(self).__name__}()")

    # -- options ----------------------------------------------------------------------------------------------

    @classmethod
    def accepted_options(cls) -> set[str]:
        """The keyword arguments a call takes: those of `_run_one` after the input."""
        parameters = list(inspect.signature(cls._run_one).parameters.values())[2:]
        return {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}

    @classmethod
    def check_options(cls, options: dict, where: str) -> dict:
        if cls._follows_reference_steps():
            return options  # its own _sanitize_parameters says what it takes
        unknown = set(options) - cls.accepted_options() - {"batch_size", "num_workers"}
        if unknown:
            raise TypeError(f"{where} got unexpected keyword arguments {sorted(unknown)} for {cls.__name__}; it takes "
                            f"{', '.join(sorted(cls.accepted_options()))} (and batch_size, num_workers).")
        return options

    # -- calls ------------------------------------------------------------------------------------------------

    def __call__(self, inputs, *args, num_workers: int | None = None, batch_size: int | None = None, **options):
        if self._follows_reference_steps():
            return self._call_steps(inputs, args, options)
        if args:
            raise TypeError(f"{type(self).__name__} takes one input (or a list of them) and keyword options; got "
                            f"{len(args)} more positional arguments: {args!r:.80}.")
        options = {**self.defaults, **self.check_options(options, f"{type(self).__name__}(...)")}
        options.pop("batch_size", None), options.pop("num_workers", None)
        self.call_count += 1
        if _is_stream(inputs):
            return (self._run_item(item, options) for item in inputs)
        return self._run(inputs, options, batch_size or self._batch_size or 1)

    def _run_item(self, item, options: dict):
        """The result of one item of a generator or dataset: what it would get as one item of a list."""
        return self._run_one(item, **options)

    def _run(self, inputs, options: dict, batch_size: int = 1):
        """One input's result, or a list of results for a list of inputs."""
        if self._is_input(inputs):
            return self._run_one(inputs, **options)
        if isinstance(inputs, (list, tuple)) and inputs and all(self._is_input(item) for item in inputs):
            return [self._run_one(item, **options) for item in inputs]
        raise TypeError(f"{self.task} inputs must be {self._input_description}, or a non-empty list of them; got "
                        f"{type(inputs).__name__} ({inputs!r:.80}).")

    _input_description = "a string"

    def _is_input(self, value) -> bool:
        return isinstance(value, str)

    def _run_one(self, inputs, **options):
        raise TypeError(f"{type(self).__name__} is a base class: use pipeline(task, ...) or one of its subclasses.")

    # -- the reference's protocol, for pipelines written for it -------------------------------------------------

    @classmethod
    def _follows_reference_steps(cls) -> bool:
        """Whether a class of the user's supplies one of the reference's steps (a pipeline written for them)."""
        for name in ("_sanitize_parameters", "preprocess", "_forward", "postprocess"):
            owner = next((klass for klass in cls.__mro__ if name in vars(klass)), None)
            if owner is not None and owner.__module__ != __name__:
                return True
        return False

    def _sanitize_parameters(self, **options) -> tuple[dict, dict, dict]:
        """(preprocess options, _forward options, postprocess options); by default all go to preprocess."""
        return options, {}, {}

    def preprocess(self, inputs, **preprocess_params):
        """The model's inputs for one input: by default, the tokenized text as tensors."""
        return self.tokenizer(inputs, return_tensors="pt", **preprocess_params)

    def _forward(self, model_inputs, **forward_params):
        return self.model(**model_inputs, **forward_params)

    def postprocess(self, model_outputs, **postprocess_params):
        """The result for one input: by default, the model's outputs as they are."""
        return model_outputs

    def _call_steps(self, inputs, args: tuple, options: dict):
        if args:
            warnings.warn(f"{type(self).__name__} ignores the extra positional arguments {args!r:.80}, as the "
                          "reference's pipelines do.", UserWarning, stacklevel=3)
        given = self._sanitize_parameters(**options)
        steps = [{**default, **step} for default, step in zip(self._step_defaults, given)]
        self.call_count += 1
        if _is_stream(inputs):
            return (self.run_single(item, *steps) for item in inputs)
        if isinstance(inputs, list) and not self._is_input(inputs):  # a list of inputs (a chat is one input)
            return [self.run_single(item, *steps) for item in inputs]
        return self.run_single(inputs, *steps)

    def run_single(self, inputs, preprocess_params: dict, forward_params: dict, postprocess_params: dict):
        model_inputs = self.preprocess(inputs, **preprocess_params)
        return self.postprocess(self.forward(model_inputs, **forward_params), **postprocess_params)

    def forward(self, model_inputs, **forward_params):
        """`_forward` without gradients, on the pipeline's device; its outputs come back to the CPU."""
        with torch.no_grad():
            outputs = self._forward(_to_device(model_inputs, self.device), **forward_params)
        return _to_device(outputs, torch.device("cpu"))

    def check_model_type(self, supported_models) -> None:
        """Warn when the model's class is not among `supported_models` (class names, or a mapping to them)."""
        names = supported_models.values() if isinstance(supported_models, dict) else supported_models
        names = {getattr(name, "__name__", name) for name in names}
        if type(self.model).__name__ not in names:
            warnings.warn(f"The model {type(self.model).__name__} is not supported for {self.task}; the supported "
                          f"models are {sorted(names)}.", UserWarning, stacklevel=2)

    # -- the reference's conveniences ---------------------------------------------------------------------------

    def predict(self, inputs):
        return self(inputs)

    def transform(self, inputs):
        return self(inputs)

    @property
    def dtype(self) -> torch.dtype | None:
        return getattr(self.model, "dtype", None)

    @property
    def torch_dtype(self) -> torch.dtype | None:
        return self.dtype

    def save_pretrained(self, folder: str | os.PathLike, **kwargs) -> None:
        """Write the model and its tokenizer to `folder`, so that pipeline(task, model=folder) loads them back."""
        if os.path.isfile(folder):
            raise ValueError(f"save_pretrained needs a folder; {folder} is a file.")
        self.model.save_pretrained(folder, **kwargs)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)

    def __repr__(self):
        return f"{type(self).__name__}(task={self.task!r}, model={type(self.model).__name__}, device={self.device})"


# The text-generation pipeline's own options; every other accepted keyword argument goes to generate().
_PIPELINE_OPTIONS = {
    "return_full_text", "return_tensors", "return_text", "return_type", "skip_special_tokens",
    "clean_up_tokenization_spaces", "prefix", "add_special_tokens", "continue_final_message", "stop_sequence",
    "truncation", "padding", "handle_long_generation", "tokenizer_encode_kwargs", "tools", "documents",
}
# What the reference's text-generation pipeline uses for options neither the caller nor the model sets.
_PIPELINE_DEFAULTS = {option.name: option.pipeline_default for option in OPTIONS if option.pipeline_default is not None}
_SAMPLING_OPTIONS = set(names_of_kind(Kind.SAMPLING))
_RETURN_TYPES = {"tensors": 0, "new_text": 1, "full_text": 2}  # the reference's ReturnType values
# Which of the pipeline's own options each step takes (the rest of the options go to generate()).
_PREPROCESS_OPTIONS = ("prefix", "handle_long_generation", "add_special_tokens", "truncation", "padding", "max_length",
                       "continue_final_message", "tokenizer_encode_kwargs", "tools", "documents")
_POSTPROCESS_OPTIONS = ("return_type", "clean_up_tokenization_spaces", "continue_final_message", "skip_special_tokens")
# generate()'s keyword arguments that are neither in its signature nor options of GenerationConfig.
_GENERATE_KEYWORDS = {"tokenizer", "assistant_tokenizer", "generator", "past_key_values", "use_model_defaults"}


class TextGenerationPipeline(Pipeline):
    """Continue texts, or answer chats with the model's chat template, as the reference's pipeline does."""

    task = "text-generation"
    _input_description = "a string or a chat (a list of {'role': ..., 'content': ...} messages)"

    def __init__(self, model, tokenizer, **defaults):
        super().__init__(model, tokenizer, **defaults)
        self.defaults = _with_return_type(self.defaults)  # also fails early on options that cannot go together
        self.assistant_model, self.assistant_tokenizer = self._assistant(
            self.defaults.pop("assistant_model", None), self.defaults.pop("assistant_tokenizer", None)
        )

    def _assistant(self, assistant_model, assistant_tokenizer) -> tuple:
        """The draft model for assisted decoding (loaded like the model when given by name), and its tokenizer
        when it needs one: only a draft with another vocabulary or other special tokens does."""
        if assistant_model is None:
            return None, None
        if isinstance(assistant_model, (str, os.PathLike)):
            from .models import auto

            name = assistant_model
            assistant_model = auto.AutoModelForCausalLM.from_pretrained(name).to(self.device, self.model.dtype)
            assistant_tokenizer = _load_tokenizer(name, {}, {})
        ours, theirs = self.model.config, assistant_model.config
        names = ("vocab_size", "eos_token_id", "pad_token_id", "bos_token_id")
        if all(getattr(ours, name, None) == getattr(theirs, name, None) for name in names):
            return assistant_model, None
        if assistant_tokenizer is None:
            raise ValueError("The assistant model has another vocabulary or other special tokens than the model: "
                             "pass its tokenizer too, as assistant_tokenizer=...")
        return assistant_model, assistant_tokenizer

    def __call__(self, inputs, *args, **options):
        # A call's return options replace the pipeline's (return_tensors=True beats a default return_full_text).
        return super().__call__(inputs, *args, **_with_return_type(options))

    @classmethod
    def accepted_options(cls) -> set[str]:
        from .generation import GenerationMixin

        generate = inspect.signature(GenerationMixin.generate).parameters.values()
        generate_names = {p.name for p in generate if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
        generate_names |= _GENERATE_KEYWORDS
        generate_names -= {"self", "inputs", "input_ids", "attention_mask"}  # the pipeline makes those
        return _PIPELINE_OPTIONS | set(OPTION_NAMES) | generate_names

    def _is_input(self, value) -> bool:
        return isinstance(value, str) or _is_chat(value)

    def _run(self, inputs, options: dict, batch_size: int = 1):
        if _is_chat(inputs) or isinstance(inputs, str):
            return self._run_one(inputs, **options)
        if batch_size > 1 and isinstance(inputs, (list, tuple)) and all(self._is_input(item) for item in inputs):
            batches = (inputs[start : start + batch_size] for start in range(0, len(inputs), batch_size))
            return [records for batch in batches for records in self._run_batch(list(batch), options)]
        return super()._run(inputs, options, batch_size)

    def _run_one(self, prompt, **options) -> list[dict]:
        return self._run_batch([prompt], options)[0]

    def _run_batch(self, prompts: list, options: dict) -> list[list[dict]]:
        """Each prompt's records; several prompts are padded into one batch and generated together."""
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**options)
        encoded = [self.preprocess(prompt, **preprocess_params) for prompt in prompts]
        if len(encoded) == 1:
            return [self.postprocess(self.forward(encoded[0], **forward_params), **postprocess_params)]
        input_ids, attention_mask = self._padded([row["input_ids"][0] for row in encoded])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "prompt_text": None}
        outputs = self.forward(batch, **forward_params)
        return [
            self.postprocess({"generated_sequence": outputs["generated_sequence"][i : i + 1],
                              "input_ids": outputs["input_ids"][i : i + 1], "prompt_text": row["prompt_text"]},
                             **postprocess_params)
            for i, row in enumerate(encoded)
        ]

    # The reference's steps, which a subclass written for the reference may override.

    def _sanitize_parameters(self, **options) -> tuple[dict, dict, dict]:
        own, generate_options = _split_options(options)
        preprocess_params = {k: own[k] for k in _PREPROCESS_OPTIONS if k in own}
        preprocess_params.update(generate_options)  # for handle_long_generation, which needs the lengths
        forward_params = dict(generate_options)
        if "max_length" in own:
            forward_params["max_length"] = own["max_length"]
        if own.get("prefix"):  # a total length counts the prefix too, which the caller did not write
            prefix = self.tokenizer(own["prefix"], add_special_tokens=own.get("add_special_tokens") or False)
            forward_params["prefix_length"] = len(prefix["input_ids"])
        if own.get("stop_sequence") is not None:
            stops = own["stop_sequence"]
            forward_params["stop_strings"] = [stops] if isinstance(stops, str) else list(stops)
            forward_params["tokenizer"] = self.tokenizer
        postprocess_params = {k: own[k] for k in _POSTPROCESS_OPTIONS if k in own}
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, prompt_text, prefix: str = "", handle_long_generation=None, add_special_tokens=None,
                   truncation=None, padding=None, max_length=None, continue_final_message=None,
                   tokenizer_encode_kwargs=None, tools=None, documents=None, **generate_kwargs) -> dict:
        """{"input_ids", "attention_mask", "prompt_text"} for one prompt (a text, or a chat through its template)."""
        options = {k: v for k, v in (("truncation", truncation), ("padding", padding), ("max_length", max_length))
                   if v is not None}
        options.update(tokenizer_encode_kwargs or {})
        if not _is_chat(prompt_text):
            if add_special_tokens is not None:
                options["add_special_tokens"] = add_special_tokens
            input_ids = self.tokenizer(prefix + prompt_text, return_tensors="pt", **options)["input_ids"]
        else:
            options.update({k: v for k, v in (("tools", tools), ("documents", documents)) if v is not None})
            input_ids = self._encode_chat(prompt_text, self._continues_final_message(prompt_text,
                                                                                     continue_final_message), options)
        if handle_long_generation == "hole":
            lengths = {"max_length": max_length} if max_length is not None else {}
            input_ids = self._leave_room(input_ids, self._with_defaults({**generate_kwargs, **lengths}))
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "prompt_text": prompt_text}

    def _forward(self, model_inputs: dict, prefix_length: int = 0, **generate_kwargs) -> dict:
        input_ids, attention_mask = model_inputs["input_ids"], model_inputs["attention_mask"]
        generate_kwargs = self._with_defaults(generate_kwargs)
        for total, new in (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens")):
            if prefix_length and total in generate_kwargs and new not in generate_kwargs:
                generate_kwargs[total] += prefix_length
        if self.assistant_model is not None and "assistant_model" not in generate_kwargs:
            generate_kwargs["assistant_model"] = self.assistant_model
            if self.assistant_tokenizer is not None:
                generate_kwargs.update(tokenizer=self.tokenizer, assistant_tokenizer=self.assistant_tokenizer)
        empty = input_ids.shape[1] == 0
        if empty:  # an empty prompt: generation starts from BOS, as the reference's does
            input_ids = self._bos_row(input_ids)[None].to(input_ids.device)
            attention_mask = torch.ones_like(input_ids)
        sequences = self.model.generate(input_ids, attention_mask=attention_mask, **generate_kwargs)
        if not isinstance(sequences, torch.Tensor):  # return_dict_in_generate=True
            sequences = sequences.sequences
        batch = input_ids.shape[0]  # (batch, num_return_sequences, T)
        return {"generated_sequence": sequences.reshape(batch, -1, sequences.shape[-1]),
                "input_ids": None if empty else input_ids, "prompt_text": model_inputs["prompt_text"]}

    def postprocess(self, model_outputs: dict, return_type: int = _RETURN_TYPES["full_text"],
                    clean_up_tokenization_spaces=None, continue_final_message=None, skip_special_tokens=None):
        """One prompt's records: {"generated_text": text or chat} or {"generated_token_ids": ids}."""
        prompt = model_outputs["prompt_text"]
        prompt_length = 0 if model_outputs["input_ids"] is None else model_outputs["input_ids"].shape[-1]
        continue_final = self._continues_final_message(prompt, continue_final_message)
        decode_options = {"skip_special_tokens": True if skip_special_tokens is None else skip_special_tokens}
        if clean_up_tokenization_spaces is not None:
            decode_options["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        records = []
        for sequence in model_outputs["generated_sequence"][0]:
            if return_type == _RETURN_TYPES["tensors"]:
                records.append({"generated_token_ids": sequence.tolist()})
                continue
            text = self.tokenizer.decode(sequence[prompt_length:], **decode_options)
            if return_type == _RETURN_TYPES["new_text"]:
                records.append({"generated_text": text})
            elif not _is_chat(prompt):
                records.append({"generated_text": prompt + text})
            else:
                messages = [dict(message) for message in prompt]
                if continue_final:
                    messages[-1]["content"] += text
                else:
                    messages.append({"role": "assistant", "content": text})
                records.append({"generated_text": messages})
        return records

    def _bos_row(self, empty: torch.Tensor) -> torch.Tensor:
        bos = self.model.generation_config.bos_token_id
        bos = bos if bos is not None else getattr(self.model.config, "bos_token_id", None)
        if bos is None:
            raise ValueError("The prompt is empty and the model has no bos_token_id to start from; give a prompt.")
        return torch.tensor([bos], dtype=empty.dtype)

    @staticmethod
    def _continues_final_message(prompt, continue_final_message: bool | None) -> bool:
        """Whether a chat's last message is continued (by default, when it is the assistant's) or answered."""
        if not _is_chat(prompt):
            return False
        if continue_final_message is not None:
            return continue_final_message
        return prompt[-1]["role"] == "assistant"

    def _padded(self, rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids, attention mask) of the prompts, padded on the tokenizer's padding side as the reference pads."""
        if len(rows) == 1:
            return rows[0][None], torch.ones_like(rows[0])[None]
        if self.tokenizer.pad_token_id is None:
            raise ValueError("batch_size > 1 pads the prompts, and this tokenizer has no pad token; set one "
                             "(pipe.tokenizer.pad_token = pipe.tokenizer.eos_token) or use batch_size=1.")
        width = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), width), self.tokenizer.pad_token_id, dtype=rows[0].dtype)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            columns = slice(width - len(row), width) if self.tokenizer.padding_side == "left" else slice(0, len(row))
            input_ids[i, columns], attention_mask[i, columns] = row, 1
        return input_ids, attention_mask

    def _encode_chat(self, chat, continue_final: bool, options: dict) -> torch.Tensor:
        if not continue_final:
            return self.tokenizer.apply_chat_template(
                list(chat), add_generation_prompt=True, return_tensors="pt", return_dict=True, **options
            )["input_ids"]
        # Continue the final message: render the chat, then cut the text right after that message's content.
        text = self.tokenizer.apply_chat_template(list(chat), tokenize=False, **options)
        content = chat[-1]["content"]
        start = text.rfind(content)
        if start == -1:
            raise ValueError("continue_final_message: the chat template does not write the final message's content.")
        return self.tokenizer(text[: start + len(content)], add_special_tokens=False, return_tensors="pt")["input_ids"]

    def _leave_room(self, input_ids: torch.Tensor, generate_options: dict) -> torch.Tensor:
        """handle_long_generation="hole": drop the prompt's first tokens so that the new ones fit the model."""
        new_tokens = generate_options.get("max_new_tokens")
        if new_tokens is None:
            new_tokens = generate_options.get("max_length", 20) - input_ids.shape[1]
            if new_tokens < 0:
                raise ValueError("handle_long_generation='hole' cannot tell how many new tokens are wanted: "
                                 "max_length is shorter than the prompt; pass max_new_tokens.")
        limit = self.tokenizer.model_max_length
        if input_ids.shape[1] + new_tokens <= limit:
            return input_ids
        keep = limit - new_tokens
        if keep <= 0:
            raise ValueError(f"handle_long_generation='hole': {new_tokens} new tokens do not fit the model's "
                             f"{limit} positions, even without the prompt; ask for fewer.")
        return input_ids[:, -keep:]

    def _with_defaults(self, generate_options: dict) -> dict:
        """The reference's pipeline defaults, for options that neither the caller nor the model's config sets."""
        passed = generate_options.get("generation_config")
        chosen = self.model.generation_config.set_options() | set(generate_options)
        if isinstance(passed, GenerationConfig):
            chosen |= passed.set_options()
        if "max_length" in chosen:
            chosen.add("max_new_tokens")  # a set max_length must not be overridden by the default max_new_tokens
        added = {k: v for k, v in _PIPELINE_DEFAULTS.items() if k not in chosen}
        model_sampling = {"do_sample": self.model.generation_config.do_sample}
        passed_sampling = {"do_sample": passed.do_sample} if getattr(passed, "do_sample", None) is not None else {}
        options = {**model_sampling, **passed_sampling, **added, **generate_options}
        if not options.get("do_sample"):
            added = {k: v for k, v in added.items() if k not in _SAMPLING_OPTIONS}
        if self.tokenizer.pad_token_id is not None and "pad_token_id" not in chosen:
            added["pad_token_id"] = self.tokenizer.pad_token_id
        return {**generate_options, **added}


def _is_chat(value) -> bool:
    return (
        isinstance(value, (list, tuple))
        and len(value) > 0
        and all(isinstance(message, dict) and "role" in message and "content" in message for message in value)
    )


_RETURN_OPTIONS = ("return_full_text", "return_tensors", "return_text", "return_type")


def _with_return_type(options: dict) -> dict:
    """The options with their return options (if any) resolved into one return_type."""
    if not options.keys() & set(_RETURN_OPTIONS):
        return options
    return_type = _split_options(options)[0].get("return_type")
    others = {k: v for k, v in options.items() if k not in _RETURN_OPTIONS}
    return others if return_type is None else {**others, "return_type": return_type}


def _split_options(options: dict) -> tuple[dict, dict]:
    """(the pipeline's own options, with the resolved return_type; the options for generate)."""
    own = {k: v for k, v in options.items() if k in _PIPELINE_OPTIONS or k == "max_length"}
    generate = {k: v for k, v in options.items() if k not in _PIPELINE_OPTIONS and k != "max_length"}
    return_type = own.get("return_type")
    if return_type is not None and not isinstance(return_type, int):
        return_type = getattr(return_type, "value", return_type)
    if return_type is None and own.get("return_full_text") is not None:
        if own.get("return_text") is not None:
            raise ValueError("return_text and return_full_text cannot go together; pass one.")
        if own.get("return_tensors"):
            raise ValueError("return_full_text and return_tensors cannot go together: tensors hold the whole sequence.")
        return_type = _RETURN_TYPES["full_text" if own["return_full_text"] else "new_text"]
    if return_type is None and own.get("return_tensors") is not None:  # even return_tensors=False, as the reference
        if own.get("return_text") is not None:
            raise ValueError("return_text and return_tensors cannot go together; pass one.")
        return_type = _RETURN_TYPES["tensors"]
    if return_type is not None:
        own["return_type"] = return_type
    if own.get("handle_long_generation") not in (None, "hole"):
        raise ValueError(f"handle_long_generation must be None or 'hole'; got {own['handle_long_generation']!r}.")
    return own, generate


# The encoder-decoder pipelines: text2text-generation, summarization and translation. The reference 5.x removed them;
# they follow the reference 4.x (the last with them), records, options and generation defaults alike.
_SEQ2SEQ_DEFAULTS = {"max_new_tokens": 256, "num_beams": 4}  # where neither the model nor the caller says otherwise
_SEQ2SEQ_OPTIONS = {"return_tensors", "return_text", "return_type", "clean_up_tokenization_spaces", "truncation",
                    "stop_sequence"}
_SEQ2SEQ_TENSORS, _SEQ2SEQ_TEXT = 0, 1  # the reference 4.x's ReturnType values for these pipelines
_LOGGER = library_logging.get_logger(__name__)  # the length advice goes where the reference's goes: the log


class Text2TextGenerationPipeline(Pipeline):
    """Generate a text from each text with an encoder-decoder (BART, T5): [{"generated_text": ...}] per input, one
    record per returned sequence (a list of strings gives one record each when one sequence is returned).

    Generation uses max_new_tokens=256 and num_beams=4, unless the model's generation config sets max_length or
    the options are given; other options the model's generation config sets are kept, and the model config's
    `task_specific_params` for the task (T5's "summarize: " prefix and lengths) are applied on top, as in the
    reference 4.x. Options given when the pipeline is built go into that generation config; options of a call go to
    generate() beside it (where max_new_tokens, if set, still wins over a call's max_length, as there).
    """

    task = "text2text-generation"
    return_name = "generated"  # records say f"{return_name}_text" and f"{return_name}_token_ids"

    def __init__(self, model, tokenizer, **defaults):
        generation = {k: defaults.pop(k) for k in list(defaults) if k in OPTION_NAMES}
        super().__init__(model, tokenizer, **defaults)
        from .models.auto import MODEL_CLASSES

        self.check_model_type([tasks["seq2seq-lm"] for _, tasks in MODEL_CLASSES.values() if "seq2seq-lm" in tasks])
        self.prefix = getattr(model.config, "prefix", None)
        self.generation_config = self._generation_config(generation)

    def _generation_config(self, options: dict) -> GenerationConfig:
        """The pipeline's generation config: the model's options that differ from the defaults, then the
        pipeline's defaults and the options given, then the task's params from the model config."""
        model_config, defaults = self.model.generation_config, GenerationConfig().resolved()
        kept = {name: getattr(model_config, name) for name in model_config.set_options()
                if getattr(model_config, name) != getattr(defaults, name)}
        config = GenerationConfig(**{**kept, **_SEQ2SEQ_DEFAULTS, **options})
        if config.max_new_tokens == _SEQ2SEQ_DEFAULTS["max_new_tokens"] and config.max_length not in (None, 20):
            config.max_new_tokens = None  # a max_length of the model's (or given) beats the default length
        task_params = dict((getattr(self.model.config, "task_specific_params", None) or {}).get(self.task) or {})
        if "prefix" in task_params:
            self.prefix = task_params.pop("prefix")
        config.update(**task_params)
        if config.pad_token_id is None and self.tokenizer.pad_token_id is not None:
            config.pad_token_id = self.tokenizer.pad_token_id
        return config

    @classmethod
    def accepted_options(cls) -> set[str]:
        return _SEQ2SEQ_OPTIONS | (TextGenerationPipeline.accepted_options() - _PIPELINE_OPTIONS)

    def _run(self, inputs, options: dict, batch_size: int = 1):
        results = super()._run(inputs, options, batch_size)
        if isinstance(inputs, (list, tuple)) and all(len(records) == 1 for records in results):
            return [records[0] for records in results]  # one sequence per text: one record per text
        return results

    def _run_one(self, text, **options) -> list[dict]:
        preprocess_params, forward_params, postprocess_params = self._sanitize_parameters(**options)
        return self.postprocess(self.forward(self.preprocess(text, **preprocess_params), **forward_params),
                                **postprocess_params)

    # The reference's steps, which a subclass written for the reference may override.

    def _sanitize_parameters(self, return_tensors=None, return_text=None, return_type=None,
                             clean_up_tokenization_spaces=None, truncation=None, stop_sequence=None,
                             **generate_kwargs) -> tuple[dict, dict, dict]:
        preprocess_params = {} if truncation is None else {"truncation": truncation}
        postprocess_params = {}
        if return_tensors is not None and return_type is None:
            return_type = _SEQ2SEQ_TENSORS if return_tensors else _SEQ2SEQ_TEXT
        if return_type is not None:
            postprocess_params["return_type"] = getattr(return_type, "value", return_type)
        if clean_up_tokenization_spaces is not None:
            postprocess_params["clean_up_tokenization_spaces"] = clean_up_tokenization_spaces
        if stop_sequence is not None:
            stop_ids = self.tokenizer.encode(stop_sequence, add_special_tokens=False)
            if len(stop_ids) > 1:
                warnings.warn(f"stop_sequence={stop_sequence!r} is {len(stop_ids)} tokens; generation stops at its "
                              "first token, as the reference's seq2seq pipelines do (pass stop_strings= to stop at "
                              "the whole text).", UserWarning, stacklevel=4)
            generate_kwargs["eos_token_id"] = stop_ids[0]
        return preprocess_params, generate_kwargs, postprocess_params

    def preprocess(self, text: str, truncation=False) -> dict:
        """The encoder's inputs: the model's prefix (T5's "summarize: ") and the text, tokenized."""
        encoded = self.tokenizer((self.prefix or "") + text, truncation=truncation, return_tensors="pt")
        return {k: encoded[k] for k in ("input_ids", "attention_mask") if k in encoded}

    def _forward(self, model_inputs: dict, **generate_kwargs) -> dict:
        """{"output_ids": (inputs, sequences per input, T)} from generate, with the pipeline's generation config."""
        rows, input_length = model_inputs["input_ids"].shape
        lengths = self.generation_config.resolved()
        self.check_inputs(input_length, generate_kwargs.get("min_length", lengths.min_length),
                          generate_kwargs.get("max_length", lengths.max_length))
        generate_kwargs.setdefault("generation_config", self.generation_config)
        output_ids = self.model.generate(**model_inputs, **generate_kwargs)
        return {"output_ids": output_ids.reshape(rows, -1, output_ids.shape[-1])}

    def check_inputs(self, input_length: int, min_length: int, max_length: int) -> None:
        """Say when the lengths look wrong for the task (summaries shorter, translations as long as the input)."""

    def postprocess(self, model_outputs: dict, return_type: int = _SEQ2SEQ_TEXT,
                    clean_up_tokenization_spaces: bool = False) -> list[dict]:
        records = []
        for output_ids in model_outputs["output_ids"][0]:
            if return_type == _SEQ2SEQ_TENSORS:
                records.append({f"{self.return_name}_token_ids": output_ids})
            else:
                text = self.tokenizer.decode(output_ids, skip_special_tokens=True,
                                             clean_up_tokenization_spaces=clean_up_tokenization_spaces)
                records.append({f"{self.return_name}_text": text})
        return records


class SummarizationPipeline(Text2TextGenerationPipeline):
    """Summarize each text: [{"summary_text": ...}] per input."""

    task = "summarization"
    return_name = "summary"

    def check_inputs(self, input_length: int, min_length: int, max_length: int) -> None:
        if max_length < min_length:
            _LOGGER.warning(f"Your min_length={min_length} must be smaller than your max_length={max_length}.")
        if input_length < max_length:
            _LOGGER.warning(f"Your max_length is set to {max_length}, but your input_length is only {input_length}. "
                            f"You might consider decreasing max_length, e.g. summarizer('...', "
                            f"max_length={input_length // 2}).")


class TranslationPipeline(Text2TextGenerationPipeline):
    """Translate each text: [{"translation_text": ...}] per input. The task "translation_xx_to_yy" names the
    languages (src_lang and tgt_lang also may), which multilingual tokenizers with a `_build_translation_inputs`
    read; a model trained on one pair of languages needs neither."""

    task = "translation"
    return_name = "translation"

    @classmethod
    def accepted_options(cls) -> set[str]:
        return super().accepted_options() | {"src_lang", "tgt_lang"}

    def check_inputs(self, input_length: int, min_length: int, max_length: int) -> None:
        if input_length > 0.9 * max_length:
            _LOGGER.warning(f"Your input_length: {input_length} is bigger than 0.9 * max_length: {max_length}. You "
                            "might consider increasing your max_length, e.g. translator('...', max_length=400).")

    def _sanitize_parameters(self, src_lang=None, tgt_lang=None, **options) -> tuple[dict, dict, dict]:
        preprocess_params, forward_params, postprocess_params = super()._sanitize_parameters(**options)
        if src_lang is None and tgt_lang is None:
            parts = self.task.split("_")
            if len(parts) == 4:  # translation, xx, to, yy
                src_lang, tgt_lang = parts[1], parts[3]
        preprocess_params.update({k: v for k, v in (("src_lang", src_lang), ("tgt_lang", tgt_lang)) if v is not None})
        return preprocess_params, forward_params, postprocess_params

    def preprocess(self, text: str, truncation=False, src_lang=None, tgt_lang=None) -> dict:
        build = getattr(self.tokenizer, "_build_translation_inputs", None)
        if build is None:
            return super().preprocess(text, truncation=truncation)
        return build(text, return_tensors="pt", truncation=truncation, src_lang=src_lang, tgt_lang=tgt_lang)


def _task_entry(task: str) -> tuple[str, str]:
    """(the Auto class, the pipeline class) of a task name; "translation_xx_to_yy" is a translation."""
    parts = task.split("_")
    if len(parts) == 4 and parts[0] == "translation" and parts[2] == "to":
        return TASKS["translation"]
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; openformers' pipeline supports: {', '.join(TASKS)} and "
                         "translation_xx_to_yy.")
    return TASKS[task]


def _translation_task(model) -> str:
    """The task "translation" stands for: the first translation_xx_to_yy of the model config's
    task_specific_params (T5's translation_en_to_de...), with a warning as the reference gives; else itself."""
    for key in getattr(model.config, "task_specific_params", None) or {}:
        if key.startswith("translation"):
            warnings.warn(f'"translation" task was used, instead of "translation_XX_to_YY", defaulting to "{key}"',
                          UserWarning, stacklevel=3)
            return key
    return "translation"


class _EncoderPipeline(Pipeline):
    """One forward pass per text; a string gives one result, a list of strings a list of results."""

    @torch.inference_mode()
    def _encode_and_run(self, text, text_pair=None, **tokenizer_options):
        encoded = self.tokenizer(text, text_pair, return_tensors="pt", **tokenizer_options)
        inputs = {k: encoded[k].to(self.device) for k in ("input_ids", "attention_mask", "token_type_ids")
                  if k in encoded}
        return encoded["input_ids"], self.model(**inputs)


class TextClassificationPipeline(_EncoderPipeline):
    """[{"label": ..., "score": ...}] per text: the best label, or every label sorted with top_k=None.

    A text is a string, or a {"text": ..., "text_pair": ...} dict for models that classify pairs. truncation,
    padding and max_length go to the tokenizer.
    """

    task = "text-classification"
    _input_description = 'a string or a {"text": ..., "text_pair": ...} dict'

    def _is_input(self, value) -> bool:
        return isinstance(value, str) or (isinstance(value, dict) and "text" in value)

    def __call__(self, inputs, *args, **options):
        results = super().__call__(inputs, *args, **options)
        # The reference's odd rule: a single string's result comes wrapped in a list unless this call passes top_k
        # (top_k given when the pipeline was built does not count).
        return [results] if isinstance(inputs, str) and "top_k" not in options else results

    def _run(self, inputs, options: dict, batch_size: int = 1):
        texts_only = isinstance(inputs, (list, tuple)) and inputs and all(isinstance(x, str) for x in inputs)
        if batch_size > 1 and texts_only and self.tokenizer.pad_token_id is not None:
            batches = (list(inputs[start : start + batch_size]) for start in range(0, len(inputs), batch_size))
            return [records for batch in batches for records in self._run_batch(batch, **options)]
        return super()._run(inputs, options, batch_size)

    def _run_one(self, text, **options):
        return self._run_batch([text], **options)[0]

    def _run_batch(self, texts: list, top_k: int | None = "", function_to_apply: str | None = None,
                   truncation=None, padding=None, max_length: int | None = None) -> list:
        """Each text's records: every label's with top_k=None, the best top_k, or without top_k the best alone."""
        tokenizer_options = {k: v for k, v in (("truncation", truncation), ("padding", padding),
                                               ("max_length", max_length)) if v is not None}
        if len(texts) > 1:
            tokenizer_options["padding"] = tokenizer_options.get("padding") or True
        if isinstance(texts[0], dict):  # one {"text", "text_pair"} dict
            pair = dict(texts[0])
            _, output = self._encode_and_run(pair.pop("text"), **pair, **tokenizer_options)
        else:
            _, output = self._encode_and_run(texts if len(texts) > 1 else texts[0], **tokenizer_options)
        _, _, ranking = self._sanitize_parameters(function_to_apply=function_to_apply, top_k=top_k)
        return [self.postprocess(type(output)(logits=logits[None]), **ranking) for logits in output.logits.cpu()]

    @classmethod
    def accepted_options(cls) -> set[str]:
        parameters = list(inspect.signature(cls._run_batch).parameters)[2:]  # after self and the texts
        return set(parameters)

    # The reference's steps, which a subclass written for the reference may override (postprocess, often).

    def _sanitize_parameters(self, function_to_apply=None, top_k="", **tokenizer_options):
        ranking = {} if top_k == "" else {"top_k": _checked_top_k(top_k), "_legacy": False}
        if function_to_apply is not None:
            ranking["function_to_apply"] = function_to_apply
        return tokenizer_options, {}, ranking

    def preprocess(self, inputs, **tokenizer_options):
        if isinstance(inputs, dict):  # {"text": ..., "text_pair": ...}
            return self.tokenizer(**inputs, return_tensors="pt", **tokenizer_options)
        return self.tokenizer(inputs, return_tensors="pt", **tokenizer_options)

    def postprocess(self, model_outputs, function_to_apply=None, top_k=1, _legacy=True):
        """The best record alone (the default, "legacy" form), or the best top_k records (every one with None)."""
        records = _ranked_labels(model_outputs["logits"][0].float(), self.model.config, None, function_to_apply)
        if top_k == 1 and _legacy:
            return records[0]
        return records if top_k is None else records[:top_k]


def _checked_top_k(top_k):
    """A pipeline's top_k: how many results to return (None: every one), else a TypeError naming it."""
    if top_k is not None and (not isinstance(top_k, numbers.Integral) or isinstance(top_k, bool)):
        raise TypeError(f"top_k must be a whole number of results (or None for all of them), got {top_k!r}.")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must not be negative, got {top_k}.")
    return top_k


def _ranked_labels(logits: torch.Tensor, config, top_k: int | None, function_to_apply: str | None) -> list[dict]:
    """The labels of one text's logits, most likely first, scored as the reference's text-classification does."""
    if function_to_apply is None:  # regression scores are the logits; one label or several at once, sigmoids
        if config.problem_type == "regression":
            function_to_apply = "none"
        elif config.problem_type == "multi_label_classification" or logits.shape[-1] == 1:
            function_to_apply = "sigmoid"
        else:
            function_to_apply = "softmax"
    function_to_apply = str(getattr(function_to_apply, "value", function_to_apply)).lower()
    functions = {"softmax": lambda x: x.softmax(-1), "sigmoid": torch.sigmoid, "none": lambda x: x}
    if function_to_apply not in functions:
        raise ValueError(f"function_to_apply must be one of {sorted(functions)}, got {function_to_apply!r}.")
    scores = functions[function_to_apply](logits.cpu())
    names = config.id2label or {}
    records = [{"label": names.get(i, f"LABEL_{i}"), "score": float(score)} for i, score in enumerate(scores)]
    records.sort(key=lambda record: record["score"], reverse=True)
    return records if top_k is None else records[:top_k]


class ZeroShotClassificationPipeline(_EncoderPipeline):
    """Classify texts into labels chosen at call time, with a model trained on NLI (natural language inference).

        classifier = pipeline("zero-shot-classification", model="facebook/bart-large-mnli")
        classifier("The match ended 2-1.", candidate_labels=["sports", "politics"])
        # {"sequence": "The match ended 2-1.", "labels": ["sports", "politics"], "scores": [0.97, 0.03]}

    Each label becomes a hypothesis (`hypothesis_template`, "This example is {}." by default) read after the
    text, and the model's entailment logit scores it: softmaxed over the labels, or with multi_label=True
    (and always for a single label) each label on its own, as entailment against contradiction. The
    entailment label is the one of config.label2id whose name starts with "entail".
    """

    task = "zero-shot-classification"

    def __init__(self, model, tokenizer, **defaults):
        super().__init__(model, tokenizer, **defaults)
        if self.entailment_id == -1:
            warnings.warn("No label of the model's config.label2id starts with 'entail', so the last label is taken "
                          "as entailment; zero-shot classification needs an NLI model.", UserWarning, stacklevel=3)

    @property
    def entailment_id(self) -> int:
        for label, index in (self.model.config.label2id or {}).items():
            if label.lower().startswith("entail"):
                return index
        return -1

    def __call__(self, inputs, *args, **options):
        if len(args) == 1 and "candidate_labels" not in options:
            options["candidate_labels"] = args[0]  # the reference's classifier(text, labels)
        elif args:
            raise TypeError(f"zero-shot-classification takes the texts and then the candidate labels; got {len(args)} "
                            "more positional arguments.")
        return super().__call__(inputs, **options)

    def _run_one(self, text: str, candidate_labels=None, hypothesis_template: str = "This example is {}.",
                 multi_label: bool = False):
        labels = _candidate_labels(candidate_labels)
        if hypothesis_template.format(labels[0]) == hypothesis_template:
            raise ValueError(f"hypothesis_template {hypothesis_template!r} has no {{}} for the label to go in; "
                             'write it like "This example is {}."')
        hypotheses = [hypothesis_template.format(label) for label in labels]
        # One (text, hypothesis) pair per label, the text cut first when too long; the pairs run as one padded batch.
        padding = self.tokenizer.pad_token_id is not None
        pairs = [([text] * len(labels), hypotheses)] if padding else [(text, hypothesis) for hypothesis in hypotheses]
        logits = torch.cat([self._encode_and_run(premise, hypothesis, truncation="only_first", padding=padding)[1]
                            .logits.float().cpu() for premise, hypothesis in pairs])  # (labels, classes)
        entailment = self.entailment_id
        if multi_label or len(labels) == 1:
            contradiction = -1 if entailment == 0 else 0
            scores = logits[:, [contradiction, entailment]].softmax(-1)[:, 1]
        else:
            scores = logits[:, entailment].softmax(-1)
        order = scores.argsort(stable=True).flip(0).tolist()  # best first; of equal scores the later label first
        return {"sequence": text, "labels": [labels[i] for i in order], "scores": [float(scores[i]) for i in order]}


def _candidate_labels(candidate_labels) -> list[str]:
    """A list of labels, or one string of comma-separated labels (as the reference accepts)."""
    if isinstance(candidate_labels, str):
        candidate_labels = [label.strip() for label in candidate_labels.split(",") if label.strip()]
    if not candidate_labels or not all(isinstance(label, str) for label in candidate_labels):
        raise ValueError("zero-shot-classification needs candidate_labels: a list of label strings, or one string "
                         f'of comma-separated labels, e.g. candidate_labels=["sports", "politics"]; got '
                         f"{candidate_labels!r:.80}.")
    return list(candidate_labels)


class FeatureExtractionPipeline(_EncoderPipeline):
    """The last hidden state of each text, as a (1, T, hidden) nested list (or a tensor with return_tensors).

    It runs the reference's steps, so a subclass may override one (a postprocess that pools, say).
    """

    task = "feature-extraction"

    def _run_one(self, text: str, return_tensors: bool = False, truncation: bool | str | None = None,
                 tokenize_kwargs: dict | None = None):
        steps = self._sanitize_parameters(truncation=truncation, tokenize_kwargs=tokenize_kwargs,
                                          return_tensors=return_tensors)
        return self.run_single(text, *steps)

    def _sanitize_parameters(self, truncation=None, tokenize_kwargs=None, return_tensors=None):
        tokenizer_options = dict(tokenize_kwargs or {})
        if truncation is not None:
            if "truncation" in tokenizer_options:
                raise ValueError("truncation is given both as an option and in tokenize_kwargs; pass it once.")
            tokenizer_options["truncation"] = truncation
        return tokenizer_options, {}, ({} if return_tensors is None else {"return_tensors": return_tensors})

    def postprocess(self, model_outputs, return_tensors=False):
        hidden = model_outputs[0]  # the last hidden state, (1, T, hidden)
        return hidden if return_tensors else hidden.tolist()


class FillMaskPipeline(_EncoderPipeline):
    """The top_k fillers of the mask token: [{"score", "token", "token_str", "sequence"}] (a list per mask).

    `targets` (a word or a list of words) limits the fillers to those words' tokens.
    """

    task = "fill-mask"

    def _run(self, inputs, options: dict, batch_size: int = 1):
        results = super()._run(inputs, options, batch_size)
        # As in the reference, a list holding one text gives that text's result, not a list of one.
        return results[0] if isinstance(inputs, (list, tuple)) and len(inputs) == 1 else results

    def _run_one(self, text: str, top_k: int = 5, targets=None, tokenizer_kwargs: dict | None = None):
        steps = self._sanitize_parameters(top_k=top_k, targets=targets, tokenizer_kwargs=tokenizer_kwargs)
        return self.run_single(text, *steps)

    # The reference's steps, which a subclass written for the reference may override.

    def _sanitize_parameters(self, top_k=None, targets=None, tokenizer_kwargs=None):
        ranking = {} if top_k is None else {"top_k": _checked_top_k(top_k)}
        if targets is not None:
            ranking["target_ids"] = self._target_ids(targets)
        return {"tokenizer_kwargs": tokenizer_kwargs or {}}, {}, ranking

    def preprocess(self, inputs, tokenizer_kwargs: dict | None = None):
        if self.tokenizer.mask_token_id is None:
            raise ValueError("fill-mask needs a tokenizer with a mask token; this one has none.")
        encoded = self.tokenizer(inputs, return_tensors="pt", **(tokenizer_kwargs or {}))
        if not (encoded["input_ids"] == self.tokenizer.mask_token_id).any():
            raise ValueError(f"No mask token ({self.tokenizer.mask_token}) in the input {inputs!r}; add one to fill.")
        return encoded

    def _forward(self, model_inputs):
        outputs = self.model(**model_inputs)
        outputs["input_ids"] = model_inputs["input_ids"]  # postprocess writes the filled sequences from them
        return outputs

    def postprocess(self, model_outputs, top_k: int = 5, target_ids: list[int] | None = None):
        input_ids = model_outputs["input_ids"][0]
        positions = (input_ids == self.tokenizer.mask_token_id).nonzero().flatten().tolist()
        per_mask = []
        for position in positions:
            probs = model_outputs["logits"][0, position].float().softmax(-1)
            candidates = torch.tensor(target_ids) if target_ids is not None else torch.arange(probs.shape[-1])
            values, picked = probs[candidates].topk(min(top_k, len(candidates)))
            records = []
            for score, token in zip(values.tolist(), candidates[picked].tolist()):
                filled = input_ids.clone()
                filled[position] = token
                # With several masks the others stay visible, so special tokens are kept (as in the reference).
                sequence = self.tokenizer.decode(filled, skip_special_tokens=len(positions) == 1)
                records.append(
                    {"score": score, "token": token, "token_str": self.tokenizer.decode([token]), "sequence": sequence}
                )
            per_mask.append(records)
        return per_mask[0] if len(per_mask) == 1 else per_mask

    def _target_ids(self, targets) -> list[int]:
        """The token of each target word: the word itself if it is in the vocabulary, else its first token."""
        targets = [targets] if isinstance(targets, str) else list(targets)
        vocabulary = self.tokenizer.get_vocab()
        ids = []
        for target in targets:
            token_id = vocabulary.get(target)
            if token_id is None:
                pieces = self.tokenizer(target, add_special_tokens=False)["input_ids"]
                if not pieces:
                    warnings.warn(f"The target {target!r} has no token; it is left out.", UserWarning, stacklevel=7)
                    continue
                warnings.warn(f"The target {target!r} is not one token of the vocabulary; its first token "
                              f"{self.tokenizer.convert_ids_to_tokens(pieces[0])!r} stands for it.", UserWarning,
                              stacklevel=7)  # the caller of the pipeline
                token_id = pieces[0]
            ids.append(token_id)
        ids = sorted(set(ids))
        if not ids:
            raise ValueError(f"None of the targets {targets!r} has a token to score; pass words of the vocabulary.")
        return ids


AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline(_EncoderPipeline):
    """Entities in each text, as the reference's pipeline finds them.

    aggregation_strategy="none" (the default) gives a record per token whose label is not ignored:
    {"entity", "score", "index", "word", "start", "end"}. The other strategies join adjacent tokens of one
    entity (B-/I- tags of the same type) into {"entity_group", "score", "word", "start", "end"}: "simple"
    joins tokens as they are tagged; "first", "average" and "max" first give every word one label, that of
    its first token, of its tokens' averaged scores, or of its most confident token. `stride` reads a text
    longer than the model's limit in overlapping windows (with a strategy other than "none").
    With is_split_into_words=True the inputs are lists of words (one list, or a list of them; either way the
    result is a list per input), read as one text joined by `delimiter`, which the characters count in.
    """

    task = "token-classification"

    @classmethod
    def accepted_options(cls) -> set[str]:
        return super().accepted_options() | {"is_split_into_words"}

    def _run_item(self, item, options: dict):
        return self._run([item], options)[0]

    def _run(self, inputs, options: dict, batch_size: int = 1):
        options = dict(options)
        if not options.pop("is_split_into_words", False):
            return super()._run(inputs, options, batch_size)
        delimiter = options.pop("delimiter", " ")
        texts = inputs if inputs and all(isinstance(row, (list, tuple)) for row in inputs) else [inputs]
        for words in texts:
            if not isinstance(words, (list, tuple)) or not words or not all(isinstance(w, str) for w in words):
                raise TypeError(
                    f"With is_split_into_words=True, an input is a non-empty list of words; got {words!r:.80}."
                )
        return [self._run_one(list(words), delimiter=delimiter, **options) for words in texts]

    def _run_one(self, text: str | list[str], ignore_labels=("O",), aggregation_strategy="none",
                 stride: int | None = None, delimiter: str = " "):
        strategy = str(getattr(aggregation_strategy, "value", aggregation_strategy) or "none").lower()
        if strategy not in AGGREGATION_STRATEGIES:
            raise ValueError(
                f"aggregation_strategy must be one of {AGGREGATION_STRATEGIES}; got {aggregation_strategy!r}."
            )
        encode_options = {}
        if stride is not None:
            if strategy == "none":
                raise ValueError(
                    'stride needs an aggregation_strategy other than "none", to join the entities of the windows.'
                )
            if stride >= self.tokenizer.model_max_length:
                raise ValueError(f"stride ({stride}) must be less than the tokenizer's model_max_length "
                                 f"({self.tokenizer.model_max_length}).")
            encode_options = dict(return_overflowing_tokens=True, padding=True, stride=stride)
        words, word_starts = None, None
        if isinstance(text, list):  # words: each token's characters count from the start of its word
            words, text = text, delimiter.join(text)
            word_starts = list(itertools.accumulate((len(w) + len(delimiter) for w in words[:-1]), initial=0))
            encode_options["is_split_into_words"] = True
        encoded = self.tokenizer([words or text], truncation=True, return_offsets_mapping=True,
                                 return_special_tokens_mask=True, **encode_options)  # a batch: one row per window
        entities = []
        for window in range(len(encoded["input_ids"])):
            tokens = self._tagged_tokens(text, encoded, window, strategy, word_starts)
            if strategy == "none":
                found = _per_token(tokens, self._label)
            else:
                found = _group_entities(self.tokenizer, _words(self.tokenizer, tokens, strategy, self._label))
            entities += [e for e in found if e.get("entity", e.get("entity_group")) not in ignore_labels]
        return _drop_overlapping(entities) if len(encoded["input_ids"]) > 1 else entities

    def _label(self, index: int) -> str:
        return (self.model.config.id2label or {}).get(index, f"LABEL_{index}")

    @torch.inference_mode()
    def _tagged_tokens(self, text: str, encoded, window: int, strategy: str, word_starts: list[int] | None):
        """The tokens of one window that come from the text, with their label probabilities and characters."""
        device = next(self.model.parameters()).device
        inputs = {k: torch.tensor([encoded[k][window]], device=device)
                  for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
        scores = self.model(**inputs).logits[0].float().softmax(-1).cpu()
        subword_prefix = _continuing_subword_prefix(self.tokenizer)
        if not subword_prefix and strategy in ("first", "average", "max"):
            warnings.warn("The tokenizer does not mark word pieces, so words are guessed from spaces in the text.",
                          UserWarning, stacklevel=5)
        word_ids = encoded.word_ids(window) if word_starts is not None else None
        tokens = []
        for index, (token_id, special, (start, end)) in enumerate(zip(
            encoded["input_ids"][window], encoded["special_tokens_mask"][window], encoded["offset_mapping"][window]
        )):
            if special:
                continue
            if word_ids is not None and word_ids[index] is not None:
                start, end = start + word_starts[word_ids[index]], end + word_starts[word_ids[index]]
            word = self.tokenizer.convert_ids_to_tokens(token_id)
            if token_id == self.tokenizer.unk_token_id:  # [UNK] is shown as the text it stands for, and starts a word
                word, is_subword = text[start:end], False
            elif subword_prefix:  # "##ing" is longer than "ing", the text it covers
                is_subword = len(word) != len(text[start:end])
            else:
                is_subword = start > 0 and " " not in text[start - 1 : start + 1]
            tokens.append({"word": word, "scores": scores[index], "start": start, "end": end, "index": index,
                           "is_subword": is_subword})
        return tokens


def _continuing_subword_prefix(tokenizer) -> str:
    """The mark of a word's later pieces ("##" for WordPiece), or "" when the tokenizer has none (BPE)."""
    model = getattr(getattr(tokenizer, "_pipeline", None), "model", None)
    return getattr(model, "prefix", "") or ""


def _per_token(tokens: list[dict], label) -> list[dict]:
    """Each token with its most likely label: {"entity", "score", "index", "word", "start", "end"}."""
    records = []
    for token in tokens:
        best = int(token["scores"].argmax())
        records.append({"entity": label(best), "score": float(token["scores"][best]), "index": token["index"],
                        "word": token["word"], "start": token["start"], "end": token["end"]})
    return records


def _words(tokenizer, tokens: list[dict], strategy: str, label) -> list[dict]:
    """For "first", "average" and "max": one record per word (a token and the pieces that follow it)."""
    if strategy in ("none", "simple"):
        return _per_token(tokens, label)
    words = []
    for token in tokens:
        if words and token["is_subword"]:
            words[-1].append(token)
        else:
            words.append([token])
    records = []
    for pieces in words:
        if strategy == "first":
            scores = pieces[0]["scores"]
        elif strategy == "max":
            scores = max(pieces, key=lambda piece: piece["scores"].max())["scores"]
        else:
            scores = torch.stack([piece["scores"] for piece in pieces]).mean(0)
        best = int(scores.argmax())
        records.append({"entity": label(best), "score": float(scores[best]), "start": pieces[0]["start"],
                        "end": pieces[-1]["end"],
                        "word": tokenizer.convert_tokens_to_string([piece["word"] for piece in pieces])})
    return records


def _group_entities(tokenizer, records: list[dict]) -> list[dict]:
    """Join adjacent records of one entity type; a B- tag starts a new entity, an I- tag (or none) continues one."""
    groups = []
    for record in records:
        begins, kind = _tag(record["entity"])
        if groups and not begins and _tag(groups[-1][-1]["entity"])[1] == kind:
            groups[-1].append(record)
        else:
            groups.append([record])
    return [
        {"entity_group": _tag(group[0]["entity"])[1], "score": sum(r["score"] for r in group) / len(group),
         "word": tokenizer.convert_tokens_to_string([r["word"] for r in group]), "start": group[0]["start"],
         "end": group[-1]["end"]}
        for group in groups
    ]


def _tag(label: str) -> tuple[bool, str]:
    """("B-PER") -> (True, "PER"); "I-PER" and "PER" -> (False, "PER")."""
    if label.startswith(("B-", "I-")):
        return label.startswith("B-"), label[2:]
    return False, label


def _drop_overlapping(entities: list[dict]) -> list[dict]:
    """Of entities that overlap (found in two windows of one text), keep the longest (then the most confident)."""
    kept = []
    for entity in sorted(entities, key=lambda e: e["start"]):
        if kept and kept[-1]["start"] <= entity["start"] < kept[-1]["end"]:
            previous = kept[-1]
            longer = entity["end"] - entity["start"] - (previous["end"] - previous["start"])
            if longer > 0 or (longer == 0 and entity["score"] > previous["score"]):
                kept[-1] = entity
        else:
            kept.append(entity)
    return kept


class QuestionAnsweringPipeline(Pipeline):
    """Extractive QA: the spans of the context most likely to answer the question, as the reference's pipeline
    (transformers 4.x; 5.x dropped it) finds them.

        qa = pipeline("question-answering", model="distilbert-base-cased-distilled-squad")
        qa(question="Where do I live?", context="My name is Wolfgang and I live in Berlin.")
        # {"score": 0.97, "start": 34, "end": 40, "answer": "Berlin"}

    Inputs: question= and context= (strings, or a list of questions for one context, or two lists of the
    same length), a {"question", "context"} dict, a list of them, or (question, context) as two strings.
    A context longer than `max_seq_len` tokens is read in windows that overlap by `doc_stride` tokens.
    Answers are spans of context tokens only (with a tokenizer that pads on the left, which puts the context
    first, the reference 4.x let the question's tokens be answers too).
    """

    task = "question-answering"

    @classmethod
    def accepted_options(cls) -> set[str]:
        return set(list(inspect.signature(cls._answer).parameters)[3:])  # after self, question and context

    def __call__(self, *args, question=None, context=None, batch_size=None, num_workers=None, **options):
        examples = _question_context_pairs(args, question, context)
        options = {**self.defaults, **self.check_options(options, f"{type(self).__name__}(...)")}
        options.pop("batch_size", None), options.pop("num_workers", None)
        results = [self._answer(q, c, **options) for q, c in examples]
        return results[0] if len(results) == 1 else results

    def _answer(
        self, question: str, context: str, top_k: int = 1, doc_stride: int | None = None,
        max_seq_len: int | None = None, max_answer_len: int = 15, handle_impossible_answer: bool = False,
        align_to_words: bool = True,
    ):
        if top_k < 1 or max_answer_len < 1:
            raise ValueError(f"top_k and max_answer_len must be at least 1; got {top_k} and {max_answer_len}.")
        max_seq_len = max_seq_len or min(self.tokenizer.model_max_length, 384)
        doc_stride = min(max_seq_len // 2, 128) if doc_stride is None else doc_stride
        if doc_stride > max_seq_len:
            raise ValueError(f"doc_stride ({doc_stride}) is larger than max_seq_len ({max_seq_len}).")
        # Tokenizers that pad on the left put the context first (as the reference does), so that it is cut last.
        question_first = self.tokenizer.padding_side == "right"
        context_index = 1 if question_first else 0
        encoded = self.tokenizer(
            question if question_first else context, context if question_first else question,
            truncation="only_second" if question_first else "only_first", max_length=max_seq_len, stride=doc_stride,
            return_overflowing_tokens=True, return_offsets_mapping=True,
        )
        answers, null_score = [], 1.0
        for window in range(len(encoded["input_ids"])):  # one forward per window of the context
            start, end = self._span_probabilities(encoded, window, context_index)
            null_score = min(null_score, float(start[0] * end[0]))  # position 0 ([CLS]) stands for "no answer"
            start[0] = end[0] = 0.0
            # Answers merge by their lowercased text, summing their scores; a few spare candidates allow for that.
            spare = top_k * 2 + 10 if align_to_words else top_k
            for score, first, last in _best_spans(start, end, max_answer_len, spare):
                chars = _answer_characters(encoded, window, first, last, context_index, align_to_words)
                text = context[chars[0] : chars[1]]
                same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
                if same is not None:
                    same["score"] += score
                else:
                    answers.append({"score": score, "start": chars[0], "end": chars[1], "answer": text})
        if handle_impossible_answer:
            answers.append({"score": null_score, "start": 0, "end": 0, "answer": ""})
        answers = sorted(answers, key=lambda answer: answer["score"], reverse=True)[:top_k]
        return answers[0] if len(answers) == 1 else answers

    @torch.no_grad()  # not inference_mode: the caller edits the probabilities in place
    def _span_probabilities(self, encoded, window: int, context_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The probability of each token starting and ending the answer, over the context tokens and position 0."""
        device = next(self.model.parameters()).device
        inputs = {k: torch.tensor([encoded[k][window]], device=device)
                  for k in ("input_ids", "attention_mask", "token_type_ids") if k in encoded}
        output = self.model(**inputs)
        in_context = torch.tensor([s == context_index for s in encoded.sequence_ids(window)], device=device)
        in_context[0] = True  # [CLS] keeps its share of the probability: it scores "no answer"
        start, end = (logits[0].float().masked_fill(~in_context, -10000.0).softmax(-1)
                      for logits in (output.start_logits, output.end_logits))
        return start.cpu(), end.cpu()


def _best_spans(start: torch.Tensor, end: torch.Tensor, max_answer_len: int, count: int) -> list[tuple]:
    """The `count` best (score, first token, last token) spans: score p(start) * p(end), at most max_answer_len long."""
    scores = (start[:, None] * end[None, :]).triu().tril(max_answer_len - 1)  # (T, T): first <= last < first + len
    values, flat = scores.flatten().topk(min(count, scores.numel()))
    T = scores.shape[1]
    return [(value, index // T, index % T) for value, index in zip(values.tolist(), flat.tolist()) if value > 0]


def _answer_characters(encoded, window: int, first: int, last: int, context_index: int, to_words: bool) -> tuple:
    """The characters of the context from token `first` to token `last`, widened to whole words when asked."""
    if to_words:
        first_word, last_word = encoded.token_to_word(window, first), encoded.token_to_word(window, last)
        if first_word is not None and last_word is not None:
            first_chars = encoded.word_to_chars(window, first_word, sequence_index=context_index)
            last_chars = encoded.word_to_chars(window, last_word, sequence_index=context_index)
            return first_chars[0], last_chars[1]
    offsets = encoded["offset_mapping"][window]
    return offsets[first][0], offsets[last][1]


def _question_context_pairs(args: tuple, question, context) -> list[tuple[str, str]]:
    """The (question, context) pairs of the reference's accepted call forms."""
    if args and (question is not None or context is not None):
        raise TypeError("Pass the inputs either positionally or as question= and context=, not both.")
    if len(args) == 2 and all(isinstance(a, str) for a in args):
        question, context = args
    elif len(args) == 1:
        items = args[0] if isinstance(args[0], (list, tuple)) else [args[0]]
        if not items or not all(isinstance(i, dict) and {"question", "context"} <= i.keys() for i in items):
            raise TypeError('question-answering takes {"question": ..., "context": ...} dicts (or a list of them), '
                            f"or question= and context=; got {args[0]!r:.80}.")
        pairs = [(item["question"], item["context"]) for item in items]
        return [_checked_pair(q, c) for q, c in pairs]
    elif args:
        raise TypeError(f"question-answering takes one dict, a list of dicts, or (question, context); got {len(args)} "
                        "positional arguments.")
    if isinstance(question, str) and isinstance(context, str):
        return [_checked_pair(question, context)]
    if isinstance(question, list) and isinstance(context, str):
        return [_checked_pair(q, context) for q in question]
    if isinstance(question, list) and isinstance(context, list):
        if len(question) != len(context):
            raise ValueError(f"Got {len(question)} questions and {len(context)} contexts: pass as many of each.")
        return [_checked_pair(q, c) for q, c in zip(question, context)]
    raise TypeError("question-answering needs question= (a string or a list) and context= (a string or a list); "
                    f"got question={question!r:.60} and context={context!r:.60}.")


def _checked_pair(question, context) -> tuple[str, str]:
    for name, value in (("question", question), ("context", context)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"The {name} must be a non-empty string; got {value!r:.60}.")
    return question, context


NerPipeline = TokenClassificationPipeline  # the reference's other name for it
