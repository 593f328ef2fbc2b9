"""Seq2SeqTrainer and Seq2SeqTrainingArguments side by side with the reference's on a tiny BART: a short run that
evaluates and predicts with generate gives the reference's metric keys, loss, generated ids (padded as the
reference pads them) and labels; DataCollatorForSeq2Seq makes the model's decoder inputs as the reference's."""

import dataclasses

import numpy as np
import pytest
import torch

import openformers
from openformers.training_args_seq2seq import Seq2SeqTrainingArguments

from seq2seq_models import TEXTS, tiny_bart_folder

transformers = pytest.importorskip("transformers")

SUMMARIES = ["cat on mat", "fox and dog", "short", "How old?", "world", "numbers"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tiny_bart_folder(tmp_path_factory.mktemp("tiny_bart"))


def _rows(tokenizer) -> list[dict]:
    return [{**tokenizer(text), "labels": tokenizer(text_target=summary)["input_ids"]}
            for text, summary in zip(TEXTS, SUMMARIES)]


def _generated_lengths(prediction) -> dict:
    """A metric that reads the generated ids: how many are not padding, on average."""
    predictions = prediction.predictions
    return {"generated_tokens": float((predictions != 1).sum(axis=-1).mean()), "width": predictions.shape[-1]}


def _run(library, folder, output_dir, train=True, **overrides):
    tokenizer = library.AutoTokenizer.from_pretrained(folder)
    model = library.AutoModelForSeq2SeqLM.from_pretrained(folder)
    options = dict(output_dir=str(output_dir), per_device_train_batch_size=2, per_device_eval_batch_size=4,
                   max_steps=3, learning_rate=1e-3, logging_steps=1, save_strategy="no", use_cpu=True,
                   disable_tqdm=True, report_to="none", predict_with_generate=True, generation_max_length=12)
    args = library.Seq2SeqTrainingArguments(**{**options, **overrides})
    rows = _rows(tokenizer)
    trainer = library.Seq2SeqTrainer(
        model=model, args=args, train_dataset=rows, eval_dataset=rows,
        data_collator=library.DataCollatorForSeq2Seq(tokenizer, model=model), processing_class=tokenizer,
        compute_metrics=_generated_lengths,
    )
    if train:
        trainer.train()
    return trainer, rows


@pytest.mark.parametrize("train", [False, True], ids=["untrained", "after-three-steps"])
def test_evaluate_and_predict_with_generate_match_the_reference(folder, tmp_path, train):
    results = {}
    for library in (transformers, openformers):
        trainer, rows = _run(library, folder, tmp_path / library.__name__, train=train)
        metrics = trainer.evaluate()
        predicted = trainer.predict(rows, num_beams=2, max_new_tokens=6)
        results[library] = metrics, predicted
    (metrics, predicted), (expected_metrics, expected) = results[openformers], results[transformers]
    assert set(metrics) == set(expected_metrics)
    assert metrics["eval_loss"] == pytest.approx(expected_metrics["eval_loss"], rel=1e-4)
    assert metrics["eval_width"] == expected_metrics["eval_width"] == 20  # padded to the generation default length
    assert metrics["eval_generated_tokens"] == expected_metrics["eval_generated_tokens"]
    assert set(predicted.metrics) == set(expected.metrics)
    assert predicted.predictions.shape == expected.predictions.shape
    np.testing.assert_array_equal(predicted.predictions, expected.predictions)
    np.testing.assert_array_equal(predicted.label_ids, expected.label_ids)


def test_generation_arguments_and_call_options_reach_generate(folder, tmp_path):
    seen = []
    trainer, rows = _run(openformers, folder, tmp_path, train=False, generation_num_beams=3)
    generate = trainer.model.generate

    def recording_generate(**kwargs):
        seen.append({k: v for k, v in kwargs.items() if not isinstance(v, torch.Tensor)})
        assert "labels" not in kwargs and "decoder_input_ids" not in kwargs  # generation starts afresh
        return generate(**kwargs)

    trainer.model.generate = recording_generate
    trainer.evaluate()
    assert seen[-1] == {"max_length": 12, "num_beams": 3}
    trainer.evaluate(max_new_tokens=4, num_beams=1)
    assert seen[-1] == {"max_new_tokens": 4, "num_beams": 1}
    trainer.args.predict_with_generate = False
    logits = trainer.predict(rows).predictions
    assert logits.shape[-1] == trainer.model.config.vocab_size  # without generate: the logits, as Trainer gives


def test_arguments_have_the_references_fields_and_write_a_generation_config_as_json(tmp_path):
    ours = {f.name: f.default for f in dataclasses.fields(Seq2SeqTrainingArguments)}
    theirs = {f.name: f.default for f in dataclasses.fields(transformers.Seq2SeqTrainingArguments)}
    for name in ("sortish_sampler", "predict_with_generate", "generation_max_length", "generation_num_beams",
                 "generation_config"):
        assert ours[name] == theirs[name], name
    assert openformers.Seq2SeqTrainingArguments is Seq2SeqTrainingArguments
    args = Seq2SeqTrainingArguments(str(tmp_path), generation_config=openformers.GenerationConfig(num_beams=2))
    assert args.to_dict()["generation_config"]["num_beams"] == 2
    assert '"num_beams": 2' in args.to_json_string()


def test_generation_config_is_loaded_from_a_folder_a_file_or_an_object(folder, tmp_path):
    config = openformers.GenerationConfig(num_beams=3, max_new_tokens=7)
    config.save_pretrained(tmp_path / "gen")
    for given in (tmp_path / "gen", str(tmp_path / "gen" / "generation_config.json"), config):
        trainer, _ = _run(openformers, folder, tmp_path / "out", train=False, generation_config=given)
        assert (trainer.model.generation_config.num_beams, trainer.model.generation_config.max_new_tokens) == (3, 7)
    with pytest.warns(UserWarning, match="ignores temperature"):
        ignored = openformers.GenerationConfig(temperature=0.5)
    with pytest.raises(ValueError, match="Fix these issues"):  # an option its strategy ignores: refused, as there
        openformers.Seq2SeqTrainer.load_generation_config(ignored)


def test_the_collator_makes_the_models_decoder_inputs_as_the_references(folder):
    batches = {}
    for library in (transformers, openformers):
        tokenizer = library.AutoTokenizer.from_pretrained(folder)
        model = library.AutoModelForSeq2SeqLM.from_pretrained(folder)
        collator = library.DataCollatorForSeq2Seq(tokenizer, model=model, pad_to_multiple_of=4)
        batches[library] = collator(_rows(tokenizer)[:3])
    ours, theirs = batches[openformers], batches[transformers]
    assert set(ours) == set(theirs) == {"input_ids", "attention_mask", "labels", "decoder_input_ids"}
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key
    assert (ours["labels"] == -100).any() and not (ours["decoder_input_ids"] == -100).any()


def test_reference_module_paths_serve_the_seq2seq_names():
    from openformers.trainer_seq2seq import Seq2SeqTrainer

    assert Seq2SeqTrainer is openformers.Seq2SeqTrainer and issubclass(Seq2SeqTrainer, openformers.Trainer)


def test_plain_training_arguments_and_sortish_sampler(folder, tmp_path):
    """With TrainingArguments, Seq2SeqTrainer evaluates as Trainer does; sortish_sampler is said to be unused."""
    tokenizer = openformers.AutoTokenizer.from_pretrained(folder)
    model = openformers.AutoModelForSeq2SeqLM.from_pretrained(folder)
    rows = _rows(tokenizer)
    plain = openformers.TrainingArguments(str(tmp_path), use_cpu=True, report_to="none", disable_tqdm=True)
    trainer = openformers.Seq2SeqTrainer(model=model, args=plain, eval_dataset=rows,
                                         data_collator=openformers.DataCollatorForSeq2Seq(tokenizer, model=model))
    assert trainer.predict(rows).predictions[0].shape[-1] == model.config.vocab_size  # logits: no generation
    with pytest.warns(UserWarning, match="sortish_sampler"):
        openformers.Seq2SeqTrainer(model=model, args=Seq2SeqTrainingArguments(str(tmp_path), sortish_sampler=True,
                                                                                use_cpu=True, report_to="none"))
