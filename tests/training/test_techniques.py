"""Recipe techniques: layer-wise LR decay, L1, dropout, label smoothing, schedules, preprocessing, augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from datasets import Dataset, DatasetDict
from transformers import LlamaConfig

from peftkit.config.load import load_recipe
from peftkit.config.sections import AugmentSection, PreprocessSection
from peftkit.data import augment, preprocess
from peftkit.data.augment import AugmentContext
from peftkit.data.preprocess import Preprocessor
from peftkit.errors import PeftkitError
from peftkit.model.dropout import dropout_overrides
from peftkit.registry import AUGMENTERS
from peftkit.training.build import build_trainer

LR = 1e-3


def _prepared(write_recipe, tmp_path: Path, **overrides):
    recipe = load_recipe(write_recipe({"train.learning_rate": LR, **overrides}))
    return build_trainer(recipe, tmp_path / "out")


def _group_lr(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): group["lr"] for group in optimizer.param_groups for p in group["params"]}


@pytest.mark.parametrize("method", ["full", "lora"])
def test_layerwise_lr_decay_gives_each_layer_its_rate(write_recipe, tmp_path: Path, method: str) -> None:
    prepared = _prepared(write_recipe, tmp_path, **{"method": {"name": method, "target_modules": ["query", "value"]}
                                                    if method == "lora" else {"name": "full"},
                                                    "train.layerwise_lr_decay": 0.5})
    model = prepared.trainer.model
    rates = _group_lr(prepared.trainer.create_optimizer())
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(rates) == {id(p) for p in trainable.values()}  # every trainable weight, once
    n = model.config.num_hidden_layers
    exponents = set()
    for name, parameter in trainable.items():
        if ".layer." in name:
            exponent = n - int(name.split(".layer.")[1].split(".")[0])
        elif "embeddings" in name:
            exponent = n + 1
        else:
            exponent = 0  # pooler and classification head
        assert rates[id(parameter)] == pytest.approx(LR * 0.5**exponent), name
        exponents.add(exponent)
    assert exponents == set(range(n + 2) if method == "full" else range(n + 1))
    # weight decay stays off biases and LayerNorm in every depth's groups
    groups = prepared.trainer.optimizer.param_groups
    assert {g["weight_decay"] for g in groups} == {0.0, 0.01}


def test_without_layerwise_decay_every_group_has_the_base_rate(write_recipe, tmp_path: Path) -> None:
    rates = _group_lr(_prepared(write_recipe, tmp_path).trainer.create_optimizer())
    assert set(rates.values()) == {LR}


@pytest.mark.parametrize("layer_decay", [None, 0.5])
def test_loraplus_trains_the_b_matrices_at_the_ratio(write_recipe, tmp_path: Path, layer_decay) -> None:
    """LoRA+: every lora_B at lr × ratio (× its layer's decay under LLRD), lora_A and the head at the base rate."""
    prepared = _prepared(write_recipe, tmp_path, **{
        "method": {"name": "lora", "target_modules": ["query", "value"], "loraplus_lr_ratio": 16},
        "train.layerwise_lr_decay": layer_decay})
    rates = _group_lr(prepared.trainer.create_optimizer())
    n = prepared.trainer.model.config.num_hidden_layers
    trainable = {name: p for name, p in prepared.trainer.model.named_parameters() if p.requires_grad}
    assert set(rates) == {id(p) for p in trainable.values()}
    for name, parameter in trainable.items():
        layer = n - int(name.split(".layer.")[1].split(".")[0]) if ".layer." in name else 0
        expected = LR * (16 if ".lora_B." in name else 1) * (layer_decay or 1) ** layer
        assert rates[id(parameter)] == pytest.approx(expected), name
    assert any(".lora_B." in name for name in trainable) and any(".lora_A." in name for name in trainable)


def test_loraplus_ratio_is_checked_and_saved_with_the_run(write_recipe, tmp_path: Path) -> None:
    from peftkit.cli import main

    with pytest.raises(PeftkitError, match=r"method\.loraplus_lr_ratio"):
        load_recipe(write_recipe({"method": {"name": "lora", "loraplus_lr_ratio": 0}}))
    assert main(["train", str(write_recipe({"method": {"name": "lora", "target_modules": ["query", "value"],
                                                       "loraplus_lr_ratio": 16},
                                            "output_dir": str(tmp_path / "run")}))]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "recipe.yaml").read_text(encoding="utf-8"))
    assert saved["method"]["loraplus_lr_ratio"] == 16


def test_l1_adds_its_penalty_to_the_training_loss(write_recipe, tmp_path: Path) -> None:
    plain = _prepared(write_recipe, tmp_path).trainer
    penalised = _prepared(write_recipe, tmp_path, **{"train.l1": 1e-4}).trainer
    batch = plain.data_collator([plain.train_dataset[i] for i in range(8)])
    plain.model.train()
    penalised.model.train()
    torch.manual_seed(0)
    base = plain.compute_loss(plain.model, dict(batch))
    torch.manual_seed(0)
    with_l1 = penalised.compute_loss(penalised.model, dict(batch))
    weights = [p for p in penalised.model.parameters() if p.requires_grad and p.dim() >= 2]
    expected = 1e-4 * sum(p.abs().sum() for p in weights)
    assert with_l1.item() > base.item()
    assert (with_l1 - base).item() == pytest.approx(expected.item(), rel=1e-4)
    penalised.model.eval()  # evaluation losses stay comparable: no penalty there
    plain.model.eval()
    assert penalised.compute_loss(penalised.model, dict(batch)).item() == pytest.approx(
        plain.compute_loss(plain.model, dict(batch)).item(), rel=1e-5)


def test_dropout_overrides_reach_the_model(write_recipe, tmp_path: Path) -> None:
    model = _prepared(write_recipe, tmp_path, **{
        "model.hidden_dropout": 0.3, "model.attention_dropout": 0.2, "model.classifier_dropout": 0.4,
        "method": {"name": "full"},
    }).trainer.model
    assert (model.config.hidden_dropout_prob, model.config.attention_probs_dropout_prob,
            model.config.classifier_dropout) == (0.3, 0.2, 0.4)
    assert model.dropout.p == 0.4
    assert model.bert.encoder.layer[0].output.dropout.p == 0.3


def test_dropout_override_the_architecture_lacks_is_named() -> None:
    with pytest.raises(PeftkitError, match=r"'model.hidden_dropout': the llama config has no such dropout"):
        dropout_overrides(LlamaConfig(), {"hidden_dropout": 0.1})
    assert dropout_overrides(LlamaConfig(), {"attention_dropout": 0.1, "hidden_dropout": None}) == {
        "attention_dropout": 0.1}


def test_label_smoothing_changes_the_loss(write_recipe, tmp_path: Path) -> None:
    plain = _prepared(write_recipe, tmp_path).trainer
    smoothed = _prepared(write_recipe, tmp_path, **{"train.label_smoothing": 0.2}).trainer
    assert smoothed.args.label_smoothing_factor == 0.2 and smoothed.label_smoother is not None
    batch = plain.data_collator([plain.train_dataset[i] for i in range(8)])
    for trainer in (plain, smoothed):
        trainer.model.eval()
        with torch.no_grad():  # confident logits, so smoothing visibly changes the loss
            for name, parameter in trainer.model.named_parameters():
                if "classifier" in name and parameter.requires_grad:
                    parameter.mul_(100)
    logits = plain.model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    expected = torch.nn.functional.cross_entropy(logits, batch["labels"], label_smoothing=0.2)
    assert smoothed.compute_loss(smoothed.model, dict(batch)).item() == pytest.approx(expected.item(), rel=1e-5)
    unsmoothed = torch.nn.functional.cross_entropy(logits, batch["labels"])
    assert plain.compute_loss(plain.model, dict(batch)).item() == pytest.approx(unsmoothed.item(), rel=1e-5)
    assert abs(expected.item() - unsmoothed.item()) > 1e-3


def test_label_smoothing_refused_with_class_weights(write_recipe) -> None:
    path = write_recipe({"train.label_smoothing": 0.1, "task": {"head": "classification", "class_weights": "balanced"}})
    with pytest.raises(PeftkitError, match=r"'train.label_smoothing' works with the single-label cross-entropy only"):
        load_recipe(path)


def _lr_curve(write_recipe, tmp_path: Path, steps: int = 20, **overrides) -> list[float]:
    trainer = _prepared(write_recipe, tmp_path, **overrides).trainer
    trainer.create_optimizer_and_scheduler(num_training_steps=steps)
    curve = []
    for _ in range(steps):
        curve.append(trainer.lr_scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    return curve


def test_schedules_with_warmup_and_options(write_recipe, tmp_path: Path) -> None:
    restarts = _lr_curve(write_recipe, tmp_path, **{
        "train.scheduler": "cosine_with_restarts", "train.scheduler_options": {"num_cycles": 2}, "train.warmup": 4})
    assert restarts[:5] == pytest.approx([0, LR / 4, LR / 2, 3 * LR / 4, LR])  # 4 warm-up steps
    rises = [i for i in range(1, 20) if restarts[i] > restarts[i - 1] and i > 4]
    assert rises == [12]  # the second cosine cycle restarts half-way through the 16 decay steps
    constant = _lr_curve(write_recipe, tmp_path, **{"train.scheduler": "constant_with_warmup", "train.warmup": 0.1})
    assert constant[:2] == pytest.approx([0, LR / 2]) and set(constant[2:]) == {LR}
    poly = _lr_curve(write_recipe, tmp_path, **{
        "train.scheduler": "polynomial", "train.scheduler_options": {"power": 2.0, "lr_end": 0.0}, "train.warmup": 0})
    assert poly[10] == pytest.approx(LR * (1 - 10 / 20) ** 2)


def test_scheduler_option_the_schedule_does_not_take_is_refused(write_recipe) -> None:
    path = write_recipe({"train.scheduler": "linear", "train.scheduler_options": {"power": 2}})
    with pytest.raises(PeftkitError, match=r"'train.scheduler_options.power': scheduler linear takes none"):
        load_recipe(path)


def test_preprocess_steps_transform_text() -> None:
    def run(steps: list[str], text: str, **kwargs) -> str:
        return Preprocessor(PreprocessSection(steps=steps, **kwargs))(text)

    assert run(["strip_html"], "<p>Great&nbsp;<b>film</b></p><script>x()</script>!") == "Great film !"
    assert run(["fullwidth_to_halfwidth"], "ＡＢＣ１２３，好！\u3000ok") == "ABC123,好! ok"
    assert run(["nfkc"], "ﬁlm ①") == "film 1"
    assert run(["lowercase"], "GREAT Film") == "great film"
    assert run(["mask_urls"], "see https://x.org/a?b=1. now") == "see [URL]. now"
    assert run(["mask_emails"], "mail me: a.b+c@mail.example.com") == "mail me: [EMAIL]"
    assert run(["remove_stopwords"], "The film is a joy.") == "film joy."
    assert run(["remove_stopwords"], "the film is fun", stopwords=["fun"]) == "the film is"
    assert run(["strip_html", "lowercase", "mask_urls"], "<i>SEE</i> www.A.com") == "see [URL]"


def test_segment_zh_splits_chinese_words() -> None:
    pytest.importorskip("jieba")
    segmented = Preprocessor(PreprocessSection(steps=["segment_zh"]))("我喜欢这部电影")
    assert " " in segmented and segmented.replace(" ", "") == "我喜欢这部电影"
    cleaned = Preprocessor(PreprocessSection(steps=["segment_zh", "remove_stopwords"]))("我们喜欢这部电影")
    assert "我们" not in cleaned.split()


def test_preprocess_maps_text_and_word_columns_but_not_labels() -> None:
    section = PreprocessSection(steps=["lowercase"])
    splits = DatasetDict({"train": Dataset.from_dict({"text": ["GOOD Film"], "label": ["POS"]})})
    out = preprocess.apply(splits, section, skip=("label",))
    assert out["train"][0] == {"text": "good film", "label": "POS"}
    words = DatasetDict({"train": Dataset.from_dict({"tokens": [["ALICE", "Runs"]], "tags": [["B-PER", "O"]]})})
    assert preprocess.apply(words, section, skip=("tags",))["train"][0] == {
        "tokens": ["alice", "runs"], "tags": ["B-PER", "O"]}
    with pytest.raises(PeftkitError, match="remove_stopwords adds or drops words, which would misalign"):
        preprocess.apply(words, PreprocessSection(steps=["remove_stopwords"]), skip=("tags",))


def test_unknown_preprocess_step_is_named(write_recipe) -> None:
    with pytest.raises(PeftkitError, match=r"'preprocess.steps.0': input should be 'strip_html'"):
        load_recipe(write_recipe({"preprocess": ["lowercse"]}))


def test_preprocessing_is_saved_with_the_run_and_applied_at_predict_time(write_recipe, tmp_path: Path) -> None:
    from peftkit.rundir.inference import predict
    from peftkit.training.run import train

    stopwords = tmp_path / "stop.txt"
    stopwords.write_text("really\nquite\n", encoding="utf-8")
    path = write_recipe({"preprocess": {"steps": ["strip_html", "lowercase", "remove_stopwords"],
                                        "stopwords": str(stopwords)}, "train.max_steps": 10})
    result = train(path)
    saved = yaml.safe_load((result.output_dir / "recipe.yaml").read_text(encoding="utf-8"))
    assert saved["preprocess"]["stopwords"] == ["really", "quite"]  # inline: the run needs no other file
    stopwords.unlink()
    raw = predict(result.output_dir, ["<b>The PLOT was really GREAT</b>", "The acting was QUITE awful"])
    clean = predict(result.output_dir, ["the plot was great", "the acting was awful"])
    assert raw == clean  # same cleaned text, same probability
    assert raw[0]["text"] == "the plot was great"


def test_augment_adds_seeded_copies(tmp_path: Path) -> None:
    synonyms = tmp_path / "syn.txt"
    synonyms.write_text("good, great, fine\nfilm movie\n很好 不错\n", encoding="utf-8")
    rows = Dataset.from_dict({"text": ["a good film with a fine cast", "电影很好看", "dull"],
                              "label": ["pos", "pos", "neg"]})
    section = AugmentSection(copies=3, prob=0.3, synonyms=str(synonyms))
    out = augment.augment(rows, section, seed=1, column="text")
    assert len(out) == 3 * 4
    assert out["text"][:3] == rows["text"]  # originals kept
    assert sorted(out["label"]) == sorted(["pos"] * 8 + ["neg"] * 4)
    assert out["text"] == augment.augment(rows, section, seed=1, column="text")["text"]  # reproducible
    assert out["text"] != augment.augment(rows, section, seed=2, column="text")["text"]
    assert len(set(out["text"])) > 3
    alone = AugmentSection(copies=1, ops=["synonym"])
    with pytest.raises(PeftkitError, match=r"'augment.ops': synonym alone needs augment.synonyms"):
        augment.augment(rows, alone, seed=1, column="text")
    no_list = augment.augment(rows, AugmentSection(copies=2, ops=["synonym", "swap"]), seed=1, column="text")
    assert all(t not in rows["text"] for t in no_list["text"][3:5])  # swap drawn every time, never a plain copy


def test_augment_operations() -> None:
    import random

    table = augment.read_synonyms(None) | {"good": ["great"], "great": ["good"], "很好": ["不错"]}

    def ctx(prob: float = 0.5) -> AugmentContext:
        return AugmentContext(random.Random(0), prob, table)

    assert augment.synonym("a good film", ctx(1.0)) == "a great film"
    assert augment.synonym("Good, fine.", ctx(1.0)) == "great, fine."
    assert augment.synonym("电影很好看", ctx(1.0)) == "电影不错看"  # substrings of unsegmented Chinese
    assert augment.synonym("goodness", ctx(1.0)) == "goodness"  # whole words only
    swapped = augment.swap("one two three four", ctx())
    assert sorted(swapped.split()) == ["four", "one", "three", "two"] and swapped != "one two three four"
    six = "one two three four five six"
    assert 1 <= len(augment.delete(six, ctx()).split()) < 6
    assert augment.delete("alone", ctx(0.99)) == "alone"
    inserted = augment.insert("a good film", ctx())
    assert len(inserted.split()) == 5 and "great" in inserted.split()
    chars = augment.swap("我喜欢这部电影", ctx())
    assert " " not in chars and sorted(chars) == sorted("我喜欢这部电影")  # characters of Chinese text


def test_augmentation_touches_the_training_split_only(write_recipe, tmp_path: Path) -> None:
    plain = _prepared(write_recipe, tmp_path).tokenized
    augmented = _prepared(write_recipe, tmp_path, **{"augment": {"copies": 2, "ops": ["swap", "delete"]}}).tokenized
    assert len(augmented["train"]) == 3 * len(plain["train"])
    for split in ("validation", "test"):
        assert augmented[split]["input_ids"] == plain[split]["input_ids"]


def test_augmenter_plugin_point(write_recipe) -> None:
    def shout(text: str, ctx: AugmentContext) -> str:
        return text.upper()

    AUGMENTERS.register("test-shout", origin="test")(shout)
    try:
        rows = Dataset.from_dict({"text": ["quiet words"], "label": ["x"]})
        out = augment.augment(rows, AugmentSection(copies=1, ops=["test-shout"]), seed=0, column="text")
        assert out["text"] == ["quiet words", "QUIET WORDS"]
    finally:
        AUGMENTERS._items.pop("test-shout")
    with pytest.raises(PeftkitError, match=r"'augment.ops': unknown augmenter 'swp'; did you mean 'swap'"):
        load_recipe(write_recipe({"augment": {"copies": 1, "ops": ["swp"]}}))


def test_augment_refused_for_word_list_heads() -> None:
    words = Dataset.from_dict({"tokens": [["a"]], "tags": [["O"]]})
    with pytest.raises(PeftkitError, match=r"task.head 'ner' has no free-text column to augment"):
        augment.text_column(words, "ner")


def test_options_are_documented() -> None:
    from peftkit.config.options import describe_options

    keys = {key for key, _, _ in describe_options()}
    assert {"train.layerwise_lr_decay", "train.l1", "train.label_smoothing", "model.hidden_dropout",
            "preprocess.steps", "augment.copies", "augment.prob"} <= keys
    assert json.loads(dict((k, d) for k, d, _ in describe_options())["augment.copies"]) == 0


def test_torch_compile_is_opt_in_and_tf32_follows_the_device(write_recipe, tmp_path: Path) -> None:
    """Resolved on this CPU: fused AdamW, no TF32, no compile; `train.torch_compile: true` reaches the Trainer."""
    from peftkit.hardware import auto
    from peftkit.hardware.device import Device
    from peftkit.registry import build_head
    from peftkit.training.build import training_arguments

    cpu = Device("cpu", "cpu", 8 * 2**30)
    for compile_, expected in ((None, False), (True, True)):
        recipe = load_recipe(write_recipe({} if compile_ is None else {"train.torch_compile": compile_}))
        auto.resolve_settings(recipe, cpu)
        args = training_arguments(recipe, build_head(recipe.task), tmp_path, has_validation=True)
        assert (args.torch_compile, args.optim, args.tf32) == (expected, "adamw_torch_fused", False)


def test_tf32_and_liger_are_refused_where_the_machine_lacks_them(write_recipe, monkeypatch) -> None:
    import peftkit

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(PeftkitError, match=r"^'train.tf32': TF32 needs a CUDA GPU of compute capability 8.0"):
        peftkit.train(write_recipe({"train.tf32": True}))
    with pytest.raises(PeftkitError, match=r"^'train.lm_loss': liger needs a CUDA GPU and the liger-kernel"):
        peftkit.train(write_recipe({"train.lm_loss": "liger"}))


def test_unquantized_weights_load_straight_onto_the_gpu(tiny_bert: Path, monkeypatch) -> None:
    """On CUDA a training process reads the base weights onto its own GPU (under torchrun LOCAL_RANK's), not into
    CPU memory first; FSDP / DeepSpeed place them themselves."""
    from transformers import AutoModelForSequenceClassification

    from peftkit.config.sections import ModelSection, QuantizationSection
    from peftkit.heads.sentiment import SentimentConfig, SentimentHead
    from peftkit.model import loading

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loading.training_device(sharded=False) is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert loading.training_device(sharded=False) == 1 and loading.training_device(sharded=True) is None
    seen: dict = {}

    class Loaded(Exception):
        pass

    def from_pretrained(source, **kwargs):
        seen.update(kwargs)
        raise Loaded

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", from_pretrained)
    with pytest.raises(Loaded):
        loading.load_base_model(ModelSection(name=str(tiny_bert)), QuantizationSection(), SentimentHead(
            SentimentConfig()), ["negative", "positive"], device=1)
    assert seen["device_map"] == {"": 1}


def test_an_explicit_chunked_loss_is_refused_where_it_would_be_wrong() -> None:
    """AdaLoRA's penalty lives in the model's loss, FSDP gathers the output layer in forward only, and a model
    without logits_to_keep cannot skip its own output layer: each is named."""
    from peftkit.registry import plugins
    from peftkit.training.build import check_lm_loss

    def check(*overrides: str, model: object = None) -> None:
        recipe = load_recipe("causal-lm-lora", ["train.lm_loss=chunked", *overrides])
        check_lm_loss(recipe, *plugins(recipe), model or torch.nn.Linear(2, 2))

    with pytest.raises(PeftkitError, match=r"^'train.lm_loss': chunked leaves out what method adalora adds"):
        check("method={name: adalora}")
    with pytest.raises(PeftkitError, match=r"^'train.lm_loss': chunked runs the output layer outside the model's"):
        check("distributed.fsdp=true")
    with pytest.raises(PeftkitError, match=r"logits_to_keep and has a decoder; Linear has not, use full$"):
        check()
