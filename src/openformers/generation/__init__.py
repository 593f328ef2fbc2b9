"""Generation: the config, logits processors, stopping criteria, caches, streamers and the decoding loop.

Names are imported lazily from the submodules below, so importing one of them does not import all.
"""

import importlib

_SUBMODULE_OF = {}


def _public(module: str, *names: str) -> None:
    for name in names:
        _SUBMODULE_OF[name] = module


_public(
    "config",
    "GenerationConfig", "GenerationMode", "CompileConfig",
)
_public(
    "processors",
    "LogitsProcessor", "LogitsWarper", "LogitsProcessorList",
    "TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper", "MinPLogitsWarper", "TypicalLogitsWarper",
    "EpsilonLogitsWarper", "EtaLogitsWarper", "TopHLogitsWarper",
    "RepetitionPenaltyLogitsProcessor", "EncoderRepetitionPenaltyLogitsProcessor",
    "NoRepeatNGramLogitsProcessor", "EncoderNoRepeatNGramLogitsProcessor", "NoBadWordsLogitsProcessor",
    "SequenceBiasLogitsProcessor", "MinLengthLogitsProcessor", "MinNewTokensLengthLogitsProcessor",
    "SuppressTokensLogitsProcessor", "SuppressTokensAtBeginLogitsProcessor",
    "ForcedBOSTokenLogitsProcessor", "ForcedEOSTokenLogitsProcessor", "InfNanRemoveLogitsProcessor",
    "LogitNormalization", "PrefixConstrainedLogitsProcessor", "ExponentialDecayLengthPenalty",
    "ClassifierFreeGuidanceLogitsProcessor", "UnbatchedClassifierFreeGuidanceLogitsProcessor",
)
_public(
    "watermarking",
    "BaseWatermarkingConfig", "WatermarkingConfig", "WatermarkLogitsProcessor", "WatermarkDetector",
    "WatermarkDetectorOutput", "SynthIDTextWatermarkingConfig", "SynthIDTextWatermarkLogitsProcessor",
    "SynthIDTextWatermarkDetector",
)
_public(
    "stopping_criteria",
    "StoppingCriteria", "StoppingCriteriaList", "MaxLengthCriteria", "MaxTimeCriteria", "EosTokenCriteria",
    "StopStringCriteria", "ConfidenceCriteria", "validate_stopping_criteria",
)
_public(
    "candidates",
    "CandidateGenerator", "AssistedCandidateGenerator", "PromptLookupCandidateGenerator",
)
_public("cache", "Cache", "DynamicCache", "EncoderDecoderCache", "HybridCache", "MambaCache")
_public("static_cache", "StaticCache")
_public("streamers", "BaseStreamer", "TextStreamer", "TextIteratorStreamer", "AsyncTextIteratorStreamer")
_public(
    "decoding",
    "GenerationMixin", "GenerateDecoderOnlyOutput", "GenerateBeamDecoderOnlyOutput", "GenerateEncoderDecoderOutput",
    "GenerateBeamEncoderDecoderOutput", "GenerateNonBeamOutput", "GenerateBeamOutput", "GenerateOutput",
)

__all__ = sorted(_SUBMODULE_OF)


def __getattr__(name):
    module = _SUBMODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'openformers.generation' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
