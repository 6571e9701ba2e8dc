"""task.pooling: cls / pooler / mean on the classification heads, `auto` per catalogue entry, runs that keep it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from testkit import make_tiny, train_and_reload, write_head_recipe

from peftkit.config.sections import ModelSection, QuantizationSection
from peftkit.data.catalog import MODELS
from peftkit.errors import PeftkitError
from peftkit.export import export_run
from peftkit.export.onnx import export_onnx
from peftkit.heads.classification import ClassificationConfig, ClassificationHead
from peftkit.heads.sentiment import SentimentConfig, SentimentHead
from peftkit.model.loading import load_base_model
from peftkit.rundir.inference import predict
from peftkit.rundir.layout import RECIPE_FILE

TEXTS = ["the film was really wonderful", "a boring and clumsy plot that went on and on", "fine"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_tiny(tmp_path_factory.mktemp("tiny"))


def _model(path: Path | str, pooling: str, name: str | None = None) -> tuple[torch.nn.Module, ClassificationHead]:
    head = ClassificationHead(ClassificationConfig(pooling=pooling))
    model, _ = load_base_model(ModelSection(name=name or str(path)), QuantizationSection(), head, ["a", "b"])
    return model.eval(), head


@torch.no_grad()
def _inputs(tiny_bert: Path, texts: list[str]) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    return dict(AutoTokenizer.from_pretrained(tiny_bert)(texts, padding=True, return_tensors="pt"))


@torch.no_grad()
@pytest.mark.parametrize("pooling", ["mean", "cls", "pooler"])
def test_pooled_logits_are_the_classifier_on_the_pooled_vector_padding_or_not(tiny_bert: Path, pooling: str) -> None:
    model, _ = _model(tiny_bert, pooling)
    batch = _inputs(tiny_bert, TEXTS)
    assert (batch["attention_mask"] == 0).any(), "the batch must hold padding"
    logits = model(**batch).logits
    hidden = model.bert(**batch).last_hidden_state  # the token vectors (pooling leaves them as they are)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    pooled = {"mean": (hidden * mask).sum(1) / mask.sum(1), "cls": hidden[:, 0],
              "pooler": torch.tanh(model.bert.pooler.dense(hidden[:, 0]))}[pooling]
    torch.testing.assert_close(logits, model.classifier(pooled))
    for i, text in enumerate(TEXTS):  # each text alone, unpadded: the same logits
        torch.testing.assert_close(model(**_inputs(tiny_bert, [text])).logits[0], logits[i])
    if pooling != "pooler":  # pooling changes what the classifier reads
        assert not torch.allclose(logits, _model(tiny_bert, "pooler")[0](**batch).logits)


@torch.no_grad()
def test_mean_pooling_survives_peft_wrapping_and_merging(tiny_bert: Path) -> None:
    from peft import LoraConfig, TaskType, get_peft_model

    model, _ = _model(tiny_bert, "mean")
    batch = _inputs(tiny_bert, TEXTS)
    native = _model(tiny_bert, "pooler")[0]
    wrapped = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_CLS, r=2, init_lora_weights=False)).eval()
    adapted = wrapped(**batch).logits
    assert not torch.allclose(adapted, model.classifier.original_module(
        native.bert(**batch).pooler_output)), "the adapter must count"
    merged = wrapped.merge_and_unload()
    torch.testing.assert_close(merged(**batch).logits, adapted)
    hidden, mask = merged.bert(**batch).last_hidden_state, batch["attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(adapted, merged.classifier((hidden * mask).sum(1) / mask.sum(1)))


def test_auto_resolves_per_catalogue_entry(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {name: MODELS[name].pooling for name in MODELS} == {
        "minilm-l6": "mean", "mpnet-base": "mean", "m3e-small": "mean", "smollm2-135m": ""}
    import peftkit.model.loading as loading

    monkeypatch.setattr(loading, "resolve_model_path", lambda name: str(tiny_bert))
    monkeypatch.setattr(loading, "load_tokenizer", lambda model, path=None: type("T", (), {"pad_token_id": 0}))
    for name, expected in (("m3e-small", "mean"), ("minilm-l6", "mean"), (str(tiny_bert), "pooler")):
        _, head = _model(tiny_bert, "auto", name)
        assert head.config.pooling == expected, name
    sentiment = SentimentHead(SentimentConfig())  # the sentiment head has the option too
    load_base_model(ModelSection(name="m3e-small"), QuantizationSection(), sentiment, ["negative", "positive"])
    assert sentiment.config.pooling == "mean"
    saved = SentimentHead(SentimentConfig())  # a run saved before the option: the architecture's own
    load_base_model(ModelSection(name="m3e-small"), QuantizationSection(), saved, ["a", "b"], saved_run=True)
    assert saved.config.pooling == "pooler"


def test_pooling_that_does_not_apply_is_one_line(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(PeftkitError, match=r"^'task.pooling': last does not apply to BertForSequenceClassification "
                       r"\(its head reads the pooler output\); it supports pooler, cls, mean or auto$"):
        _model(tiny_models["bert"], "last")
    with pytest.raises(PeftkitError, match=r"^'task.pooling': mean does not apply to LlamaForSequenceClassification "
                       r"\(its head reads the last non-padding token\); it supports last or auto$"):
        _model(tiny_models["llama"], "mean")
    _, head = _model(tiny_models["llama"], "auto")
    assert head.config.pooling == "last"


def test_a_mean_pooled_run_keeps_its_pooling_in_reload_predict_and_exports(tiny: dict[str, Path],
                                                                           tmp_path: Path) -> None:
    default = train_and_reload(write_head_recipe(tiny, "sentiment", tiny["root"] / "auto"), TEXTS)
    assert yaml.safe_load((default["result"].output_dir / RECIPE_FILE).read_text())["task"]["pooling"] == "pooler"
    assert default["result"].metrics["resolved"]["task.pooling"] == "pooler"
    mean = train_and_reload(write_head_recipe(tiny, "sentiment", tiny["root"] / "mean", **{"task.pooling": "mean"}),
                            TEXTS)
    run_dir = mean["result"].output_dir
    assert yaml.safe_load((run_dir / RECIPE_FILE).read_text())["task"]["pooling"] == "mean"
    assert mean["run"].head.config.pooling == "mean"
    expected = mean["reloaded"]
    assert [p["label"] for p in predict(run_dir, TEXTS)] == [
        mean["run"].recipe.task.labels[i] for i in expected.argmax(-1)]
    report = export_run(run_dir, tmp_path / "merged")
    assert report["parity"]["checked"] and report["parity"]["max_abs_logit_diff"] < 1e-4
    onnx = export_onnx(run_dir, tmp_path / "onnx")
    assert onnx["parity"]["checked"] and onnx["parity"]["max_abs_logit_diff"] < 1e-4


@torch.no_grad()
def test_mean_pooling_of_a_first_token_head_feeds_the_mean_where_the_head_reads(tiny_bert: Path) -> None:
    from transformers import MPNetConfig, MPNetForSequenceClassification

    from peftkit.heads.pooling import apply_pooling

    config = MPNetConfig(vocab_size=200, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, num_labels=2)
    torch.manual_seed(0)
    model = MPNetForSequenceClassification(config).eval()
    batch = {k: v.clamp(max=199) for k, v in _inputs(tiny_bert, TEXTS).items() if k != "token_type_ids"}
    hidden, mask = model.mpnet(**batch).last_hidden_state, batch["attention_mask"].unsqueeze(-1).float()
    with pytest.raises(PeftkitError, match=r"pooler does not apply to MPNetForSequenceClassification \(its head "
                       r"reads the first token and it has no pooler\); it supports cls, mean or auto"):
        apply_pooling(model, "pooler")
    apply_pooling(model, "mean")
    mean = (hidden * mask).sum(1) / mask.sum(1)
    torch.testing.assert_close(model(**batch).logits, model.classifier(mean.unsqueeze(1)))
