"""Named-entity recognition (token classification): BIO tags per word, entity-level seqeval metrics."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from peftkit.config.schema import HeadConfig, option
from peftkit.errors import PeftkitError
from peftkit.heads.base import Head, column_values, logits_only, require_columns, softmax, tokenizing_label
from peftkit.registry import HEADS

if TYPE_CHECKING:
    import torch
    from datasets import Dataset
    from transformers import PreTrainedTokenizerBase

IGNORE = -100  # label id the loss and the metrics skip: special tokens and every sub-token after a word's first
TAG = re.compile(r"O|[BI]-\S+")
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
WORD_SPLITS = {
    "auto": re.compile(rf"[{CJK}]|(?:(?![{CJK}])\w)+|[^\w\s]"),
    "chars": re.compile(r"\S"),
    "whitespace": re.compile(r"\S+"),
}


class NerConfig(HeadConfig):
    head: str = option("ner", "task head (`peftkit heads` lists them)")
    labels: list[str] = option(
        [], "BIO tag names in id order; empty = read them from the training data ('O' first)"
    )
    word_split: Literal["auto", "chars", "whitespace"] = option(
        "auto",
        "how `peftkit predict` cuts text into words: auto = each CJK character, other words and punctuation; "
        "chars = every non-space character; whitespace = at spaces",
    )


def split_words(text: str, mode: str = "auto") -> list[tuple[str, int, int]]:
    """Words of a raw text with their character spans ``(word, start, end)``."""
    return [(m.group(), m.start(), m.end()) for m in WORD_SPLITS[mode].finditer(text)]


def align_labels(word_ids: list[int | None], word_labels: list[int]) -> list[int]:
    """One label per token: a word's first sub-token gets the word's label; later sub-tokens and specials -100."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORE if word is None or word == previous else word_labels[word])
        previous = word
    return labels


def entities(words: list[tuple[str, int, int]], tags: list[str], text: str,
             scores: list[float] | None = None) -> list[dict[str, Any]]:
    """Entities from BIO tags over words, with character spans into ``text``.

    An I- tag that does not continue an entity of its own type starts one (seqeval's lenient reading).
    """
    found: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for i, ((_, start, end), tag) in enumerate(zip(words, tags, strict=True)):
        prefix, _, kind = tag.partition("-")
        if tag == "O" or not kind:
            current = None
            continue
        if prefix == "B" or current is None or current["type"] != kind:
            current = {"type": kind, "start": start, "end": end, "_scores": []}
            found.append(current)
        current["end"] = end
        current["_scores"].append(1.0 if scores is None else scores[i])
    import numpy as np

    for entity in found:
        entity["text"] = text[entity["start"]:entity["end"]]
        entity["score"] = float(np.mean(entity.pop("_scores")))
    return found


def argmax_ids(logits: Any, labels: torch.Tensor) -> torch.Tensor:
    """Keep only the predicted tag id per token during evaluation (not tokens × tags logits)."""
    return logits_only(logits).argmax(dim=-1)


@HEADS.register("ner")
class NerHead(Head):
    description = "named entities: BIO tags per word (first sub-token labelled); entity P/R/F1 via seqeval"
    kind = "token_classification"
    main_metric = "f1"
    label_field = "tags"
    config: NerConfig

    def read_labels(self, dataset: Dataset, column: str) -> list[str]:
        tags = {tag for row in column_values(dataset, column) for tag in row} - {"O"}
        return ["O", *sorted(tags, key=lambda t: (t[2:], t[0]))]

    def check_training_labels(self, train: Dataset, data_cfg: Any, source: str) -> None:
        found = sorted({tag for row in column_values(train, self.label_field) for tag in row})
        if len(found) < 2:
            raise PeftkitError(
                f"data '{source}' (train split): every tag in column '{data_cfg.tags_column}' is "
                f"{', '.join(map(repr, found)) or '(none)'}; a token classifier needs at least two tags "
                "(entities tagged B-TYPE / I-TYPE besides O)"
            )

    def standardize(self, dataset: Dataset, data_cfg: Any, split: str) -> Dataset:
        tokens_col, tags_col = data_cfg.tokens_column, data_cfg.tags_column
        require_columns(dataset, split, ((tokens_col, "data.tokens_column"), (tags_col, "data.tags_column")))
        names = getattr(getattr(dataset.features[tags_col], "feature", None), "names", None) or self.config.labels
        declared = set(self.config.labels)
        all_tokens, all_tags = column_values(dataset, tokens_col), column_values(dataset, tags_col)
        for row, (tokens, tags) in enumerate(zip(all_tokens, all_tags, strict=True), start=1):
            where = f"data ({split} split) row {row}"
            if not isinstance(tokens, list) or not tokens:
                raise PeftkitError(f"{where}: empty or missing word list in column '{tokens_col}'")
            if not isinstance(tags, list) or len(tags) != len(tokens):
                count = len(tags) if isinstance(tags, list) else 0
                raise PeftkitError(
                    f"{where}: {len(tokens)} words in '{tokens_col}' but {count} tags in '{tags_col}'; "
                    "need one tag per word"
                )
            for position, (token, tag) in enumerate(zip(tokens, tags, strict=True), start=1):
                if not isinstance(token, str) or not token.strip():
                    raise PeftkitError(f"{where}: word {position} is empty")
                if isinstance(tag, int) and names:
                    if not 0 <= tag < len(names):
                        raise PeftkitError(f"{where}: tag id {tag} of word {position} is not below {len(names)}")
                    tags[position - 1] = tag = names[tag]
                if not isinstance(tag, str) or not TAG.fullmatch(tag):
                    raise PeftkitError(
                        f"{where}: tag {tag!r} of word {position} is not a BIO tag (O, B-TYPE or I-TYPE)"
                    )
                if declared and tag not in declared:
                    raise PeftkitError(
                        f"{where}: tag '{tag}' of word {position} is not one of task.labels ({', '.join(declared)})"
                    )
            all_tags[row - 1] = tags
        from datasets import Dataset

        return Dataset.from_dict({"tokens": all_tokens, "tags": all_tags})

    def tokenize(self, dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int,
                 label2id: dict[str, int]) -> Dataset:
        if not tokenizer.is_fast:
            raise PeftkitError(f"task.head ner needs a fast tokenizer (word ids); {tokenizer.name_or_path} has none")
        unknown = sorted({tag for row in column_values(dataset, "tags") for tag in row} - set(label2id))
        if unknown:
            raise PeftkitError(
                f"data: tag '{unknown[0]}' is not one of the training tags ({', '.join(label2id)}); "
                "list every tag in task.labels"
            )

        def encode(batch: dict[str, list]) -> dict[str, list]:
            encoded = tokenizer(batch["tokens"], is_split_into_words=True, truncation=True, max_length=max_length)
            encoded["labels"] = [
                align_labels(encoded.word_ids(i), [label2id[tag] for tag in tags])
                for i, tags in enumerate(batch["tags"])
            ]
            return encoded

        return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=tokenizing_label())

    def collator(self, tokenizer: PreTrainedTokenizerBase) -> Callable:
        from transformers import DataCollatorForTokenClassification

        return DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE)

    def trainer_kwargs(self) -> dict[str, Any]:
        return {"preprocess_logits_for_metrics": argmax_ids}

    def compute_metrics(self, label_names: list[str]) -> Callable[[Any], dict[str, Any]]:
        import numpy as np

        def metrics(prediction: Any) -> dict[str, Any]:
            predicted, gold = np.asarray(prediction.predictions), np.asarray(prediction.label_ids)
            keep = gold != IGNORE
            true_tags = [[label_names[t] for t in row[mask]] for row, mask in zip(gold, keep, strict=True)]
            pred_tags = [[label_names[p] for p in row[mask]] for row, mask in zip(predicted, keep, strict=True)]
            return entity_metrics(true_tags, pred_tags)

        return metrics

    def predict_batch(self, model: Any, tokenizer: PreTrainedTokenizerBase, texts: list[str],
                      label_names: list[str], max_length: int, device: torch.device) -> list[dict[str, Any]]:
        words = [split_words(text, self.config.word_split) for text in texts]
        inputs = tokenizer([[w for w, _, _ in row] for row in words], is_split_into_words=True,
                           truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        probs = softmax(model(**inputs.to(device)).logits.float().cpu().numpy())
        results: list[dict[str, Any]] = []
        for i, (text, row) in enumerate(zip(texts, words, strict=True)):
            first: dict[int, int] = {}
            for position, word in enumerate(inputs.word_ids(i)):
                if word is not None:
                    first.setdefault(word, position)
            best = [int(probs[i, first[w]].argmax()) if w in first else 0 for w in range(len(row))]
            tags = [label_names[b] for b in best]
            scores = [float(probs[i, first[w], b]) if w in first else 0.0 for w, b in enumerate(best)]
            results.append({
                "text": text,
                "entities": entities(row, tags, text, scores),
                "words": [w for w, _, _ in row],
                "tags": tags,
            })
        return results

    def format_prediction(self, prediction: dict[str, Any]) -> str:
        shown = "; ".join(
            f"{e['type']} {e['start']}-{e['end']} {e['text']} ({e['score']:.2f})" for e in prediction["entities"]
        )
        return f"{shown or '-'}\t{prediction['text']}"


def entity_metrics(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, Any]:
    """Entity-level micro precision / recall / F1 (seqeval, exact span and type), per type, token accuracy."""
    from seqeval.metrics import classification_report

    report = classification_report(true_tags, pred_tags, output_dict=True, zero_division=0)
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0})
    tokens = sum(len(row) for row in true_tags)
    correct = sum(t == p for trow, prow in zip(true_tags, pred_tags, strict=True) for t, p in zip(trow, prow,
                                                                                              strict=True))
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "token_accuracy": correct / max(tokens, 1),
        "per_type": {
            kind: {"precision": float(v["precision"]), "recall": float(v["recall"]), "f1": float(v["f1-score"]),
                   "support": int(v["support"])}
            for kind, v in report.items() if not kind.endswith(" avg")
        },
    }
