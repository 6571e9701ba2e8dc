"""classification / sentiment heads: class weights, multi-label, label ids, bad labels, reload, predict output."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datasets import Dataset
from testkit import make_sentiment_rows, train_and_reload, write_csv

from peftkit.config.sections import DataSection
from peftkit.data import load_splits
from peftkit.errors import PeftkitError
from peftkit.heads.classification import ClassificationConfig, ClassificationHead
from peftkit.rundir.inference import predict
from peftkit.rundir.load import load_run
from peftkit.training.run import train


def test_balanced_class_weights_and_weighted_loss() -> None:
    head = ClassificationHead(ClassificationConfig(class_weights="balanced"))
    train_split = Dataset.from_dict({"labels": [0, 0, 0, 1]})
    weights = head.class_weight_vector(["a", "b"], train_split)
    assert weights == pytest.approx([4 / (2 * 3), 4 / (2 * 1)])
    loss = head.loss_fn(["a", "b"], train_split)
    logits, labels = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([1, 1])
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=torch.tensor(weights))
    assert torch.allclose(loss(logits, labels), expected)
    explicit = ClassificationHead(ClassificationConfig(class_weights={"b": 5.0}))
    assert explicit.class_weight_vector(["a", "b"], train_split) == [1.0, 5.0]
    with pytest.raises(PeftkitError, match=r"task.class_weights: 'c' is not one of the labels \(a, b\)"):
        ClassificationHead(ClassificationConfig(class_weights={"c": 2.0})).class_weight_vector(["a", "b"], train_split)


def test_labels_not_in_declared_set_and_label_ids(tmp_path: Path) -> None:
    rows = [{"text": f"t {i}", "label": "pos" if i != 3 else "meh"} for i in range(10)]
    path = write_csv(tmp_path / "d.csv", rows)
    head = ClassificationHead(ClassificationConfig(labels=["neg", "pos"]))
    with pytest.raises(PeftkitError, match=r"\(train split\) row 4: label 'meh' is not one of task.labels"):
        load_splits(DataSection(source=str(path), test_size=2, validation_size=2), head, ["neg", "pos"])
    ids = write_csv(tmp_path / "ids.csv", [{"text": f"t {i}", "label": i % 2} for i in range(10)])
    splits, _ = load_splits(DataSection(source=str(ids), test_size=2, validation_size=2), head, ["neg", "pos"])
    assert head.label_ids(splits["train"], {"neg": 0, "pos": 1}) == [int(x) for x in splits["train"]["label"]]
    unseen = Dataset.from_dict({"text": ["fine", "so so, really not sure"], "label": ["pos", "mixed"]})
    with pytest.raises(PeftkitError, match=r"^data: label 'mixed' \(text 'so so, really not sure'\) is not one of the "
                                           r"training labels \(neg, pos\)"):
        head.label_ids(unseen, {"neg": 0, "pos": 1})


def test_class_weighted_training_and_sentiment_predict(write_recipe) -> None:
    result = train(write_recipe({"task": {"head": "sentiment", "class_weights": "balanced"},
                                 "train.max_steps": 120}))
    assert result.metrics["test"]["accuracy"] > 0.9
    texts = ["the film was really wonderful", "the plot was awful and boring"]
    out = predict(result.output_dir, texts)
    assert [o["label"] for o in out] == ["positive", "negative"]
    assert out[0]["polarity"] > 0.5 and out[1]["polarity"] < -0.5
    run = load_run(result.output_dir)
    assert run.head.format_prediction(out[0]).startswith("positive\t")


def test_multi_label_trains_reloads_to_the_trained_logits_and_predicts(write_recipe, tmp_path: Path) -> None:
    rows = []
    for i, row in enumerate(make_sentiment_rows(400, seed=1)):
        text, labels = row["text"], [row["label"]]
        if i % 3 == 0:
            text, labels = text + " with music", [*labels, "music"]
        rows.append({"text": text, "label": "|".join(labels)})
    data = write_csv(tmp_path / "multi.csv", rows)
    out = train_and_reload(write_recipe({"task": {"head": "classification", "multi_label": True},
                                         "data.source": str(data), "train.max_steps": 150}),
                           ["a great film with music", "the dull plot"])
    test = out["result"].metrics["test"]
    assert test["f1_micro"] > 0.85, test
    assert len(test["confusion_matrix"]) == 3  # one 2×2 matrix per label: music, negative, positive
    [pred] = predict(out["result"].output_dir, ["the acting was superb with music"])
    assert sorted(pred["labels"]) == ["music", "positive"]


def test_quantized_classification_reloads_to_the_trained_logits(write_recipe) -> None:
    out = train_and_reload(write_recipe({"quantization": {"mode": "4bit"}, "method.name": "qlora",
                                         "task": {"head": "classification"}}), ["a dull movie", "a superb film"])
    [pred] = predict(out["result"].output_dir, ["a dull movie"])
    assert pred["label"] in ("negative", "positive") and "probabilities" not in pred
