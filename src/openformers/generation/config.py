"""GenerationConfig: the decoding options, with the reference's precedence.

`generate(**kwargs)` overrides `generation_config.json`, which overrides the model's `config.json`, which
overrides the library defaults below.
"""

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path


@dataclass
class GenerationConfig:
    max_length: int = 20
    max_new_tokens: int | None = None
    do_sample: bool = False
    num_beams: int = 1
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    min_p: float | None = None
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: list[list[int]] | None = None
    min_length: int = 0
    min_new_tokens: int | None = None
    suppress_tokens: list[int] | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    extra: dict = field(default_factory=dict, repr=False)  # keys we do not use, kept so the file round-trips

    @classmethod
    def from_dict(cls, values: dict) -> "GenerationConfig":
        known = {f.name for f in fields(cls)} - {"extra"}
        config = cls(**{k: v for k, v in values.items() if k in known})
        config.extra = {k: v for k, v in values.items() if k not in known}
        return config

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "GenerationConfig":
        try:
            values = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from error
        return cls.from_dict(values)

    def to_dict(self) -> dict:
        values = asdict(self)
        values.update(values.pop("extra"))
        return values

    def update(self, **kwargs) -> dict:
        """Set the known options among `kwargs`; return the ones that are not generation options."""
        known = {f.name for f in fields(self)} - {"extra"}
        for key in kwargs.keys() & known:
            setattr(self, key, kwargs[key])
        return {k: v for k, v in kwargs.items() if k not in known}

    @property
    def eos_token_ids(self) -> list[int]:
        if self.eos_token_id is None:
            return []
        return [self.eos_token_id] if isinstance(self.eos_token_id, int) else list(self.eos_token_id)
