"""The classical reference row of a benchmark: TF-IDF features + logistic regression (scikit-learn).

It reads the same train / test split as the transformer cells (the recipe's data section and head) and reports
the head's own metrics, so a table answers "is fine-tuning worth it here?". Sequence classification only.
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

import numpy as np

from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError
from peftkit.heads.base import column_values
from peftkit.registry import build_head

#: Name a suite lists under ``baselines`` to get this row.
NAME = "tfidf"
METHOD = "tfidf-logreg"
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def is_cjk(texts: list[str]) -> bool:
    """Whether most non-space characters are CJK (then words are not space-separated: use character n-grams)."""
    sample = "".join(texts[:2000])
    letters = sum(not c.isspace() for c in sample)
    return letters > 0 and len(CJK.findall(sample)) / letters > 0.3


def vectorizer(texts: list[str]) -> Any:
    """Word 1-2-grams for space-separated text, character 1-2-grams for Chinese / Japanese."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if is_cjk(texts):
        return TfidfVectorizer(analyzer="char", ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
    return TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)


def run_tfidf(recipe: Recipe) -> dict[str, Any]:
    """Fit on the recipe's training split, score on its test split; metrics, sizes and seconds."""
    from sklearn.linear_model import LogisticRegression

    from peftkit.data.pipeline import build_splits

    head = build_head(recipe.task)
    if head.kind != "sequence_classification" or getattr(recipe.task, "multi_label", False):
        raise PeftkitError(
            f"baseline '{NAME}': needs a single-label sequence classification head, not task.head "
            f"'{recipe.task.head}'"
        )
    data = build_splits(recipe, head, tokenizer=None, parts=())  # the text as the adapters train on it
    splits, label_names = data.text, data.label_names
    label2id = {name: i for i, name in enumerate(label_names)}
    train, test = splits["train"], splits["test"]
    started = time.perf_counter()
    train_texts = column_values(train, "text")
    features = vectorizer(train_texts)
    x_train = features.fit_transform(train_texts)
    model = LogisticRegression(C=10.0, max_iter=2000, random_state=recipe.train.seed)
    model.fit(x_train, np.asarray(head.label_ids(train, label2id)))
    seconds = time.perf_counter() - started
    scores = np.zeros((len(test), len(label_names)))
    scores[:, model.classes_] = model.predict_proba(features.transform(column_values(test, "text")))
    gold = np.asarray(head.label_ids(test, label2id))
    metrics = head.compute_metrics(label_names)(SimpleNamespace(predictions=scores, label_ids=gold))
    weights = model.coef_.size + model.intercept_.size
    return {
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
        "parameters": {"trainable": weights, "total": weights},
        "train_seconds": seconds,
        "train_examples": len(train),
        "test_examples": len(test),
        "features": len(features.vocabulary_),
    }
