"""The task guides' preprocessing and inference examples, run with `transformers` and with `openformers`.

Guides: tasks/sequence_classification, tasks/token_classification, tasks/question_answering,
tasks/masked_language_modeling and tasks/language_modeling, plus pipeline_tutorial. Each guide's dataset is replaced
by a few rows made in memory and its checkpoint by a tiny random model (BERT heads with the all-MiniLM-L6-v2
tokenizer; a Llama with SmolLM2's tokenizer for causal LM). The training halves of the guides are in
test_docs_examples_trainer.py.
"""

import pytest
import torch
from docs_examples import assert_same, run_both, tiny

datasets = pytest.importorskip("datasets")

REVIEW = "This was a masterpiece. Not completely faithful to the books, but enthralling from beginning to end."
NER_TEXT = "The Golden State Warriors are an American professional basketball team based in San Francisco."
QUESTION = "How many programming languages does BLOOM support?"
CONTEXT = ("BLOOM has 176 billion parameters and can generate text in 46 languages natural languages and 13 "
           "programming languages.")
EIFFEL = "The Eiffel Tower is a wrought-iron lattice tower in Paris, France."


def folder(kind, request):
    return tiny(kind, request)


# --- text classification ------------------------------------------------------------------------------------------

def imdb_like():
    return datasets.Dataset.from_dict({
        "text": ["I love sci-fi and am willing to put up with a lot.", "A dull, lifeless film.",
                 "Brilliant acting, a wonderful story!", "I walked out after twenty minutes."],
        "label": [1, 0, 1, 0],
    })


def test_text_classification_preprocess_and_collate(request):
    checkpoint = folder("bert-sequence-classification", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)

        def preprocess_function(examples):
            return tokenizer(examples["text"], truncation=True)

        tokenized_imdb = imdb_like().map(preprocess_function, batched=True)
        data_collator = lib.DataCollatorWithPadding(tokenizer=tokenizer)
        features = [{k: v for k, v in row.items() if k != "text"} for row in tokenized_imdb]
        batch = data_collator(features)
        return tokenized_imdb["input_ids"], dict(batch)

    assert_same(*run_both(example))


def test_text_classification_inference(request):
    checkpoint = folder("bert-sequence-classification", request)

    def example(lib):
        classifier = lib.pipeline("sentiment-analysis", model=str(checkpoint))
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        inputs = tokenizer(REVIEW, return_tensors="pt")
        model = lib.AutoModelForSequenceClassification.from_pretrained(checkpoint)
        with torch.no_grad():
            logits = model(**inputs).logits
        predicted_class_id = logits.argmax().item()
        return classifier(REVIEW), logits, model.config.id2label[predicted_class_id]

    assert_same(*run_both(example))


def test_text_classification_model_with_new_labels(request):
    """The guide loads a base checkpoint with `num_labels`, `id2label` and `label2id`; the head is new."""
    checkpoint = folder("bert-sequence-classification", request)

    def example(lib):
        id2label = {0: "NEG", 1: "NEU", 2: "POS"}
        label2id = {"NEG": 0, "NEU": 1, "POS": 2}
        model = lib.AutoModelForSequenceClassification.from_pretrained(
            checkpoint, num_labels=3, id2label=id2label, label2id=label2id, ignore_mismatched_sizes=True
        )
        return model.config.num_labels, model.config.id2label, model.config.label2id, model.classifier.out_features

    assert_same(*run_both(example))


# --- token classification -----------------------------------------------------------------------------------------

def wnut_like():
    return datasets.Dataset.from_dict({
        "id": ["0", "1"],
        "tokens": [["@paulwalk", "It", "'s", "the", "view", "from", "where", "I", "'m", "living", "for", "two",
                    "weeks", ".", "Empire", "State", "Building", "=", "ESB", "."],
                   ["Alice", "flew", "to", "San", "Francisco", "yesterday"]],
        "ner_tags": [[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 4, 0, 3, 0], [1, 0, 0, 3, 4, 0]],
    })


def tokenize_and_align_labels(tokenizer):
    def align(examples):
        tokenized_inputs = tokenizer(examples["tokens"], truncation=True, is_split_into_words=True)
        labels = []
        for i, label in enumerate(examples["ner_tags"]):
            word_ids = tokenized_inputs.word_ids(batch_index=i)  # Map tokens to their respective word.
            previous_word_idx = None
            label_ids = []
            for word_idx in word_ids:  # Set the special tokens to -100.
                if word_idx is None:
                    label_ids.append(-100)
                elif word_idx != previous_word_idx:  # Only label the first token of a given word.
                    label_ids.append(label[word_idx])
                else:
                    label_ids.append(-100)
                previous_word_idx = word_idx
            labels.append(label_ids)
        tokenized_inputs["labels"] = labels
        return tokenized_inputs

    return align


def test_token_classification_preprocess_and_collate(request):
    checkpoint = folder("bert-token-classification", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        example = wnut_like()[0]
        tokenized_input = tokenizer(example["tokens"], is_split_into_words=True)
        tokens = tokenizer.convert_ids_to_tokens(tokenized_input["input_ids"])
        tokenized_wnut = wnut_like().map(tokenize_and_align_labels(tokenizer), batched=True)
        data_collator = lib.DataCollatorForTokenClassification(tokenizer=tokenizer)
        features = [{k: row[k] for k in ("input_ids", "attention_mask", "labels")} for row in tokenized_wnut]
        batch = data_collator(features)
        return tokens, tokenized_input.word_ids(), tokenized_wnut["labels"], dict(batch)

    assert_same(*run_both(example))


def test_token_classification_inference(request):
    checkpoint = folder("bert-token-classification", request)

    def example(lib):
        classifier = lib.pipeline("ner", model=str(checkpoint))
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        inputs = tokenizer(NER_TEXT, return_tensors="pt")
        model = lib.AutoModelForTokenClassification.from_pretrained(checkpoint)
        with torch.no_grad():
            logits = model(**inputs).logits
        predictions = torch.argmax(logits, dim=2)
        predicted_token_class = [model.config.id2label[t.item()] for t in predictions[0]]
        grouped = lib.pipeline("token-classification", model=str(checkpoint), aggregation_strategy="simple")
        return classifier(NER_TEXT), logits, predicted_token_class, grouped(NER_TEXT)

    assert_same(*run_both(example))


# --- question answering -------------------------------------------------------------------------------------------

def squad_like():
    return datasets.Dataset.from_dict({
        "id": ["a", "b"],
        "question": [" What does BLOOM generate?", "Where is the Eiffel Tower? "],
        "context": [CONTEXT, EIFFEL],
        "answers": [{"text": ["text"], "answer_start": [CONTEXT.index("text")]},
                    {"text": ["Paris, France"], "answer_start": [EIFFEL.index("Paris")]}],
    })


def qa_preprocess_function(tokenizer, max_length=64):
    def preprocess_function(examples):
        questions = [q.strip() for q in examples["question"]]
        inputs = tokenizer(questions, examples["context"], max_length=max_length, truncation="only_second",
                           return_offsets_mapping=True, padding="max_length")
        offset_mapping = inputs.pop("offset_mapping")
        answers = examples["answers"]
        start_positions = []
        end_positions = []
        for i, offset in enumerate(offset_mapping):
            answer = answers[i]
            start_char = answer["answer_start"][0]
            end_char = answer["answer_start"][0] + len(answer["text"][0])
            sequence_ids = inputs.sequence_ids(i)
            # Find the start and end of the context
            idx = 0
            while sequence_ids[idx] != 1:
                idx += 1
            context_start = idx
            while sequence_ids[idx] == 1:
                idx += 1
            context_end = idx - 1
            # If the answer is not fully inside the context, label it (0, 0)
            if offset[context_start][0] > end_char or offset[context_end][1] < start_char:
                start_positions.append(0)
                end_positions.append(0)
            else:
                # Otherwise it's the start and end token positions
                idx = context_start
                while idx <= context_end and offset[idx][0] <= start_char:
                    idx += 1
                start_positions.append(idx - 1)
                idx = context_end
                while idx >= context_start and offset[idx][1] >= end_char:
                    idx -= 1
                end_positions.append(idx + 1)
        inputs["start_positions"] = start_positions
        inputs["end_positions"] = end_positions
        return inputs

    return preprocess_function


def test_question_answering_preprocess_and_collate(request):
    checkpoint = folder("bert-question-answering", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        squad = squad_like()
        tokenized_squad = squad.map(qa_preprocess_function(tokenizer), batched=True, remove_columns=squad.column_names)
        data_collator = lib.DefaultDataCollator()
        batch = data_collator([tokenized_squad[i] for i in range(len(tokenized_squad))])
        answers = [tokenizer.decode(row["input_ids"][row["start_positions"]:row["end_positions"] + 1])
                   for row in tokenized_squad]
        return tokenized_squad.to_dict(), dict(batch), answers

    got, expected = run_both(example)
    assert_same(got, expected)
    assert got[2] == ["text", "paris, france"]


def test_question_answering_inference(request):
    checkpoint = folder("bert-question-answering", request)

    def example(lib):
        # (the guide's pipeline("question-answering") is gone from the reference's 5.x)
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        inputs = tokenizer(QUESTION, CONTEXT, return_tensors="pt")
        model = lib.AutoModelForQuestionAnswering.from_pretrained(checkpoint)
        with torch.no_grad():
            outputs = model(**inputs)
        answer_start_index = outputs.start_logits.argmax()
        answer_end_index = outputs.end_logits.argmax()
        predict_answer_tokens = inputs.input_ids[0, answer_start_index: answer_end_index + 1]
        return outputs.start_logits, outputs.end_logits, tokenizer.decode(predict_answer_tokens)

    assert_same(*run_both(example))


# --- masked language modeling -------------------------------------------------------------------------------------

def eli5_like():
    return datasets.Dataset.from_dict({
        "q_id": ["1", "2", "3"],
        "answers.text": [["Stars are far away.", "They are suns, but very distant."],
                         ["Cats purr when content.", "Purring also helps them heal."],
                         ["The sky is blue because of Rayleigh scattering of sunlight in the atmosphere."]],
    })


def group_texts(block_size):
    def group(examples):
        # Concatenate all texts.
        concatenated_examples = {k: sum(examples[k], []) for k in examples.keys()}
        total_length = len(concatenated_examples[list(examples.keys())[0]])
        # We drop the small remainder, we could add padding if the model supported it instead of this drop.
        if total_length >= block_size:
            total_length = (total_length // block_size) * block_size
        # Split by chunks of block_size.
        return {k: [t[i: i + block_size] for i in range(0, total_length, block_size)]
                for k, t in concatenated_examples.items()}

    return group


def lm_dataset(tokenizer, block_size=8):
    eli5 = eli5_like()

    def preprocess_function(examples):
        return tokenizer([" ".join(x) for x in examples["answers.text"]])

    tokenized_eli5 = eli5.map(preprocess_function, batched=True, remove_columns=eli5.column_names)
    return tokenized_eli5.map(group_texts(block_size), batched=True)


def test_masked_lm_preprocess_and_collate(request):
    checkpoint = folder("bert-masked-lm", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        dataset = lm_dataset(tokenizer)
        data_collator = lib.DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=0.15)
        lib.set_seed(0)  # the collator masks with the global random stream
        batch = data_collator([dataset[i] for i in range(len(dataset))])
        seeded = lib.DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm_probability=0.5, seed=7)
        return dataset.to_dict(), dict(batch), dict(seeded([dataset[i] for i in range(len(dataset))]))

    assert_same(*run_both(example))


def test_masked_lm_inference(request):
    checkpoint = folder("bert-masked-lm", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        text = f"The Milky Way is a {tokenizer.mask_token} galaxy."
        mask_filler = lib.pipeline("fill-mask", model=str(checkpoint))
        filled = mask_filler(text, top_k=3)
        inputs = tokenizer(text, return_tensors="pt")
        mask_token_index = torch.where(inputs["input_ids"] == tokenizer.mask_token_id)[1]
        model = lib.AutoModelForMaskedLM.from_pretrained(checkpoint)
        logits = model(**inputs).logits
        mask_token_logits = logits[0, mask_token_index, :]
        top_3_tokens = torch.topk(mask_token_logits, 3, dim=1).indices[0].tolist()
        return filled, [text.replace(tokenizer.mask_token, tokenizer.decode([token])) for token in top_3_tokens]

    assert_same(*run_both(example))


# --- causal language modeling -------------------------------------------------------------------------------------

def test_causal_lm_preprocess_and_collate(request):
    checkpoint = folder("llama", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        tokenizer.pad_token = tokenizer.eos_token
        dataset = lm_dataset(tokenizer, block_size=16)
        data_collator = lib.DataCollatorForLanguageModeling(tokenizer=tokenizer, mlm=False)
        ragged = [{"input_ids": tokenizer("Short one.")["input_ids"]},
                  {"input_ids": tokenizer("A somewhat longer line of text.")["input_ids"]}]
        whole = data_collator([dataset[i] for i in range(len(dataset))])
        return dataset.to_dict(), dict(whole), dict(data_collator(ragged))

    assert_same(*run_both(example))


def test_causal_lm_inference(request):
    checkpoint = folder("llama", request)
    prompt = "Somatic hypermutation allows the immune system to"

    def example(lib):
        generator = lib.pipeline("text-generation", model=str(checkpoint))
        lib.set_seed(0)
        piped = generator(prompt, max_new_tokens=20)
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        inputs = tokenizer(prompt, return_tensors="pt").input_ids
        model = lib.AutoModelForCausalLM.from_pretrained(checkpoint)
        lib.set_seed(0)
        outputs = model.generate(inputs, max_new_tokens=30, do_sample=True, top_k=50, top_p=0.95)
        return piped, outputs, tokenizer.batch_decode(outputs, skip_special_tokens=True)

    assert_same(*run_both(example))


# --- pipeline_tutorial --------------------------------------------------------------------------------------------

def test_pipeline_batches_and_keyword_arguments(request):
    classification = folder("bert-sequence-classification", request)
    generation = folder("llama", request)

    def example(lib):
        classifier = lib.pipeline(task="text-classification", model=str(classification), dtype=torch.float32)
        scores = classifier(["I love it.", "I hate it.", "It is fine."], batch_size=2, top_k=None)
        generator = lib.pipeline("text-generation", model=str(generation), device_map="cpu",
                                 model_kwargs={"attn_implementation": "eager"})
        texts = generator(["Once upon a time", "The capital of France is"], max_new_tokens=5, do_sample=False,
                          return_full_text=False)
        return scores, texts

    assert_same(*run_both(example))


def test_pipeline_zero_shot_classification(request):
    checkpoint = folder("bert-sequence-classification", request)

    def example(lib):
        # any sequence classifier works mechanically; the pipeline needs an entailment label among its labels
        model = lib.AutoModelForSequenceClassification.from_pretrained(
            checkpoint, num_labels=3, id2label={0: "contradiction", 1: "neutral", 2: "entailment"},
            label2id={"contradiction": 0, "neutral": 1, "entailment": 2}, ignore_mismatched_sizes=True)
        torch.manual_seed(0)
        with torch.no_grad():
            model.classifier.weight.normal_()
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        classifier = lib.pipeline("zero-shot-classification", model=model, tokenizer=tokenizer)
        return classifier("I have a problem with my iphone that needs to be resolved asap!!",
                          candidate_labels=["urgent", "not urgent", "phone", "tablet", "computer"])

    assert_same(*run_both(example))


# --- quicktour.md, preprocessing.md and main_classes/output.md -----------------------------------------------------

def test_quicktour_tokenize_run_save_and_reload(request, tmp_path):
    checkpoint = folder("bert-sequence-classification", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        model = lib.AutoModelForSequenceClassification.from_pretrained(checkpoint)
        pt_batch = tokenizer(
            ["We are very happy to show you the 🤗 Transformers library.", "We hope you don't hate it."],
            padding=True, truncation=True, max_length=512, return_tensors="pt",
        )
        pt_outputs = model(**pt_batch)
        pt_predictions = torch.nn.functional.softmax(pt_outputs.logits, dim=-1)
        pt_save_directory = tmp_path / lib.__name__
        tokenizer.save_pretrained(pt_save_directory)
        model.save_pretrained(pt_save_directory)
        reloaded = lib.AutoModelForSequenceClassification.from_pretrained(pt_save_directory)
        my_config = lib.AutoConfig.from_pretrained(checkpoint, num_attention_heads=4)
        my_model = lib.AutoModel.from_config(my_config)
        return (dict(pt_batch), pt_predictions, reloaded(**pt_batch).logits, my_config.num_attention_heads,
                type(my_model).__name__, sum(p.numel() for p in my_model.parameters()))

    assert_same(*run_both(example))


def test_preprocessing_padding_truncation_and_decoding(request):
    checkpoint = folder("bert-sequence-classification", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        encoded_input = tokenizer("Do not meddle in the affairs of wizards, for they are subtle and quick to anger.")
        batch_sentences = ["But what about second breakfast?", "Don't think he knows about second breakfast, Pip.",
                           "What about elevensies?"]
        padded = tokenizer(batch_sentences, padding=True)
        truncated = tokenizer(batch_sentences, padding=True, truncation=True, max_length=8, return_tensors="pt")
        pairs = tokenizer(batch_sentences[:2], batch_sentences[1:], padding="max_length", max_length=24,
                          truncation="only_second", return_offsets_mapping=True)
        return (dict(encoded_input), tokenizer.decode(encoded_input["input_ids"]), dict(padded), dict(truncated),
                dict(pairs), [pairs.sequence_ids(i) for i in range(2)], pairs.word_ids(1))

    assert_same(*run_both(example))


def test_model_outputs_read_as_attributes_keys_and_tuples(request):
    checkpoint = folder("bert-sequence-classification", request)

    def example(lib):
        tokenizer = lib.AutoTokenizer.from_pretrained(checkpoint)
        # attention weights come from the eager attention (the reference's sdpa path returns none)
        model = lib.AutoModelForSequenceClassification.from_pretrained(checkpoint, attn_implementation="eager")
        inputs = tokenizer("Hello, my dog is cute", return_tensors="pt")
        labels = torch.tensor([1]).unsqueeze(0)  # Batch size 1
        outputs = model(**inputs, labels=labels, output_hidden_states=True, output_attentions=True)
        return (type(outputs).__name__, list(outputs.keys()), outputs.loss, outputs["logits"], outputs[:2],
                len(outputs.hidden_states), len(outputs.attentions), outputs.attentions[0].shape,
                len(outputs.to_tuple()))

    assert_same(*run_both(example))


def test_tokenizer_classes_built_from_their_files(request):
    """fast_tokenizers.md and the tokenizer pages: a tokenizer.json, or a vocabulary file, handed to the class."""
    bert = folder("bert-sequence-classification", request)
    llama = folder("llama", request)
    text = "Hello world, this is un-tokenized text: 42 Café!"

    def example(lib):
        fast_tokenizer = lib.PreTrainedTokenizerFast(tokenizer_file=str(llama / "tokenizer.json"))
        bert_tokenizer = lib.BertTokenizer(str(bert / "vocab.txt"))  # (5.x calls the argument vocab, not vocab_file)
        bert_fast = lib.BertTokenizerFast.from_pretrained(bert)
        return (fast_tokenizer(text)["input_ids"], fast_tokenizer.decode(fast_tokenizer(text)["input_ids"]),
                bert_tokenizer(text)["input_ids"], bert_tokenizer.tokenize(text),
                bert_fast(text, text)["token_type_ids"],
                bert_tokenizer.decode(bert_tokenizer(text)["input_ids"], skip_special_tokens=True))

    assert_same(*run_both(example))


def test_pipeline_over_a_generator_and_a_dataset_column(request):
    """pipeline_tutorial.md: large inputs are streamed through the pipeline from a generator or a dataset."""
    checkpoint = folder("bert-sequence-classification", request)

    def example(lib):
        pipe = lib.pipeline("text-classification", model=str(checkpoint))

        def data():
            for i in range(5):
                yield f"My example {i}"

        streamed = [out for out in pipe(data(), batch_size=2)]
        dataset = imdb_like()
        from_column = pipe(list(dataset["text"]), batch_size=3, truncation=True)
        return streamed, from_column

    assert_same(*run_both(example))
