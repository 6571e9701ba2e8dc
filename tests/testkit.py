"""The tests' kit: tiny random-init models with a word-level tokenizer, data they learn in a few steps, one recipe
builder, and the check that a saved run reloads to the trained model's logits.

Test modules import it by name (`from testkit import ...`: pytest puts tests/ on sys.path); conftest.py builds the
session's tiny models and fast recipe from it. Nothing heavy is imported at module level (torch, transformers and
peftkit load inside the functions), so conftest can import it before its thread settings take effect.
"""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import yaml

# -- vocabulary and learnable data ----------------------------------------------------------------------------

POSITIVE = ["good", "great", "wonderful", "superb", "moving", "delightful", "brilliant", "charming"]
NEGATIVE = ["bad", "awful", "dull", "boring", "terrible", "lifeless", "clumsy", "tedious"]
FILLER = ["the", "film", "movie", "plot", "acting", "story", "was", "is", "really", "quite", "a", "and"]
NAMES, CITIES = ["alice", "bob", "carol", "dave"], ["paris", "london", "berlin", "rome"]
COLOURS = {"banana": "yellow", "apple": "red", "lime": "green", "plum": "purple"}
#: Other words the tests type; anything else becomes [UNK].
EXTRA_WORDS = ["colour", "of", "saw", "in", "with", "music", "what", "instruction", "response", "###", "?", ":",
               "#", ".", ",", "!", "not", "very", "an", "it", "this", "that", "i", "loved", "hated", "ripe", "cherry",
               "kiwi", "went", "to", "today", "man", "see", "then", "left", "quickly"]


def make_sentiment_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Short texts whose label is decided by one sentiment word: learnable in a few dozen steps."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(FILLER, 4)
        words.insert(rng.randrange(5), rng.choice(POSITIVE if label == "positive" else NEGATIVE))
        rows.append({"text": " ".join(words), "label": label})
    return rows


def learnable_rows(kind: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows a tiny model learns in a dozen steps, for each kind of test data: ``text`` (sentiment decided by three
    of its four words), ``ner`` (a person and a city among filler words) or ``causal`` (a fruit's colour)."""
    rng = random.Random(seed)
    positive, negative = POSITIVE[:4], NEGATIVE[:4]
    filler = ["the", "film", "plot", "was", "really", "quite", "a", "and"]
    rows: list[dict[str, Any]] = []
    for i in range(n):
        if kind == "text":
            label = "positive" if i % 2 == 0 else "negative"
            words = rng.sample(positive if label == "positive" else negative, 3) + rng.sample(filler, 1)
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": label})
        elif kind == "ner":
            tagged = [(w, "O") for w in rng.sample(filler, 3)]
            tagged.insert(rng.randrange(4), (rng.choice(NAMES), "B-PER"))
            tagged.insert(rng.randrange(5), (rng.choice(CITIES), "B-LOC"))
            rows.append({"tokens": [w for w, _ in tagged], "tags": [t for _, t in tagged]})
        else:
            fruit = rng.choice(list(COLOURS))
            rows.append({"prompt": f"colour of {fruit}?", "response": f"{fruit} is {COLOURS[fruit]}"})
    return rows


#: The filler words of `write_ner_conll`'s sentences.
NER_FILLER = ["the", "man", "went", "to", "see", "today", "and", "then", "left", "quickly"]


def write_ner_conll(path: Path, n: int, seed: int = 0) -> Path:
    """A CoNLL file of ``n`` sentences where names are PER and cities LOC: learnable in a few dozen steps."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        words = [(w, "O") for w in rng.sample(NER_FILLER, 4)]
        words.insert(rng.randrange(5), (rng.choice(NAMES), "B-PER"))
        words.insert(rng.randrange(6), (rng.choice(CITIES), "B-LOC"))
        lines += [f"{w} {t}" for w, t in words] + [""]
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_json_lines(path: Path, rows: list[dict[str, Any]]) -> Path:
    """Rows as JSON Lines."""
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict[str, Any]], delimiter: str = ",") -> Path:
    """Rows as CSV (or TSV with ``delimiter="\\t"``), the header from the first row's keys."""
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_learnable_data(root: Path, kinds: Iterable[str], n: int) -> dict[str, Path]:
    """``learnable_rows(kind, n)`` as ``root/<kind>.jsonl`` for each kind; returns the paths by kind."""
    return {kind: write_json_lines(root / f"{kind}.jsonl", learnable_rows(kind, n)) for kind in kinds}


# -- tiny models ------------------------------------------------------------------------------------------------


def tiny_tokenizer(lowercase: bool = True) -> Any:
    """A word-level (WordPiece over whole words) tokenizer over the test vocabulary: tiny embeddings and LM heads.
    With ``lowercase=False`` it is case-sensitive: an upper-case word is [UNK] to it."""
    from transformers import BertTokenizerFast

    words = {w for ws in (POSITIVE, NEGATIVE, FILLER, NAMES, CITIES, list(COLOURS), list(COLOURS.values()),
                          EXTRA_WORDS) for w in ws}
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    cased = {} if lowercase else {"do_lower_case": False}
    return BertTokenizerFast(vocab={w: i for i, w in enumerate(specials + sorted(words))}, eos_token="[SEP]",
                             model_input_names=["input_ids", "attention_mask"], **cased)


def save_tiny_models(root: Path, width: int = 64, position_free: bool = False, llama: bool = False) -> dict[str, Path]:
    """A tiny random BERT (and with ``llama``, a tiny random Llama causal LM) of 2 layers of width ``width`` (4 heads,
    feed-forward 2 × width, no dropout), each saved with the tests' tokenizer to ``root/bert`` and ``root/llama``.
    ``position_free`` zeroes BERT's position embeddings: a word then decides its label wherever it stands.
    Seeded: the same arguments give the same weights."""
    import torch
    from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

    tokenizer = tiny_tokenizer()
    size = dict(vocab_size=tokenizer.vocab_size, hidden_size=width, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=2 * width, max_position_embeddings=64, hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0, initializer_range=0.2)
    torch.manual_seed(0)
    models: dict[str, Any] = {"bert": BertModel(BertConfig(**size))}
    if llama:  # built after the BERT, from the same seeded stream
        models["llama"] = LlamaForCausalLM(LlamaConfig(num_key_value_heads=2, pad_token_id=0,
                                                       eos_token_id=tokenizer.eos_token_id, **size))
    if position_free:
        with torch.no_grad():
            models["bert"].embeddings.position_embeddings.weight.zero_()
    paths = {}
    for name, model in models.items():
        model.save_pretrained(root / name)
        tokenizer.save_pretrained(root / name)
        paths[name] = root / name
    return paths


def tiny_bpe_tokenizer(split: str | None = None) -> Any:
    """A byte-level BPE tokenizer (GPT-2's kind: what a GGUF file can carry) trained on the test vocabulary; no
    text becomes [UNK]. ``<|endoftext|>`` ends a text and ``<|pad|>`` pads. With ``split`` (a regex), words are
    split by it before the byte-level step, as Qwen2's and Llama 3's tokenizers do."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for ws in (POSITIVE, NEGATIVE, FILLER, NAMES, CITIES, list(COLOURS), list(COLOURS.values()),
                                 EXTRA_WORDS) for w in ws})
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False) if split is None else (
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]))
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|pad|>", "<|endoftext|>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator([" ".join(words), *(f"{w}?" for w in words)] * 2, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   model_input_names=["input_ids", "attention_mask"])


def save_tiny_bpe_causal_lm(root: Path, width: int = 64, qwen2: bool = False) -> Path:
    """A tiny random Llama causal LM (2 layers, 4 heads, 2 key-value heads, untied head) with
    ``tiny_bpe_tokenizer``, saved to ``root``; with ``qwen2`` a Qwen2 of that size (biased q/k/v) with Qwen2's
    pre-tokenizer split. Seeded."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = tiny_bpe_tokenizer(PRETOKENIZE_REGEX if qwen2 else None)
    config, model_class = (Qwen2Config, Qwen2ForCausalLM) if qwen2 else (LlamaConfig, LlamaForCausalLM)
    torch.manual_seed(0)
    model = model_class(config(
        vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=2 * width, max_position_embeddings=128, initializer_range=0.2,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None))
    model.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def make_tiny(root: Path) -> dict[str, Path]:
    """A module's own tiny world under ``root`` (returned as ``root``, a place for its runs): a tiny random BERT of
    width 32 (``bert``) and 120 learnable rows each for the text and NER heads (``text``, ``ner``: JSON Lines)."""
    return {"root": root, **save_tiny_models(root, width=32), **write_learnable_data(root, ("text", "ner"), 120)}


# -- recipes ----------------------------------------------------------------------------------------------------


def tiny_recipe(model: Path | str, data: Path | str | None, *overrides: dict[str, Any]) -> dict[str, Any]:
    """A raw recipe for a fast run: LoRA (r 4, alpha 8) on ``model``, the sentiment head, ``data`` (no data section
    when None) split 16 / 8 / rest at 24 tokens, 8 steps of 16 at learning rate 1e-2 with no warm-up, evaluation or
    checkpoints. Each mapping in ``overrides`` is applied in turn: dotted keys (``train.max_steps``) set one value, a
    plain key (``method``) replaces its whole section."""
    from peftkit.config.overrides import apply_overrides

    recipe: dict[str, Any] = {
        "model": {"name": str(model)},
        "method": {"name": "lora", "r": 4, "alpha": 8},
        "task": {"head": "sentiment"},
        "data": {"source": str(data), "test_size": 16, "validation_size": 8, "max_length": 24},
        "train": {"max_steps": 8, "batch_size": 16, "learning_rate": 1e-2, "eval_strategy": "no",
                  "save_strategy": "no", "logging_steps": 2, "warmup": 0, "group_by_length": False},
    }
    if data is None:
        del recipe["data"]
    for dotted in overrides:
        recipe = apply_overrides(recipe, dotted)
    return recipe


def write_recipe_file(path: Path, recipe: dict[str, Any]) -> Path:
    """``recipe`` as YAML at ``path`` (its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def write_head_recipe(tiny: dict[str, Path], head: str, output_dir: Path, **dotted: Any) -> Path:
    """A LoRA recipe on ``make_tiny``'s BERT for ``head`` (sentiment, classification or ner) and its data, written
    beside the run as ``<output_dir>.yaml``."""
    task: dict[str, Any] = {"head": head}
    if head == "ner":
        task["word_split"] = "whitespace"
    recipe = tiny_recipe(tiny["bert"], tiny["ner" if head == "ner" else "text"],
                         {"method.dropout": 0.0, "task": task, "output_dir": str(output_dir)}, dotted)
    return write_recipe_file(output_dir.parent / f"{output_dir.name}.yaml", recipe)


# -- logits and the reload check --------------------------------------------------------------------------------


def logits_of(model: Any, tokenizer: Any, texts: list[str], eval_mode: bool = True, precision: str = "fp32") -> Any:
    """The model's logits for ``texts``, in evaluation mode unless ``eval_mode`` is False (the mode it had is
    restored), under autocast for ``precision`` bf16 / fp16. bitsandbytes repacks 4-bit weights for inference on a
    CPU on the first eval-mode call, after which they cannot be trained: a model about to train is probed in
    training mode."""
    import torch

    was_training = model.training
    model.train(not eval_mode and was_training)
    device = next(model.parameters()).device
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        inputs = tokenizer(texts, padding=True, return_tensors="pt").to(device)
        logits = model(**inputs).logits.float().cpu()
    model.train(was_training)
    return logits


#: Tests that launch torchrun: pytest-xdist (`--dist loadgroup`) runs them one after another on one worker (two
#: launches of two processes each would share a 2-core machine four ways).
TORCHRUN = pytest.mark.xdist_group("torchrun")

#: Methods whose reload matches the trained logits under bf16 / fp16 autocast to that dtype's rounding, not bit for
#: bit: AdaLoRA's reload drops the pruned (zeroed) ranks, which reorders sums; P-tuning saves its prompt encoder's
#: output computed at save time, outside the autocast its training forward ran the encoder under.
ROUNDED_RELOAD = ("adalora", "p_tuning")


def logits_probe(texts: list[str]) -> Any:
    """A Trainer callback that keeps the model's logits for ``texts`` before and right after training
    (``.untrained``, ``.trained``): what a reloaded run must reproduce, and what it must differ from."""
    from transformers import TrainerCallback

    class LogitsProbe(TrainerCallback):
        untrained: Any = None
        trained: Any = None

        def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                           processing_class: Any = None, **kwargs: Any) -> None:
            self.untrained = logits_of(model, processing_class, texts, eval_mode=False)

        def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None,
                         processing_class: Any = None, **kwargs: Any) -> None:
            self.trained = logits_of(model, processing_class, texts)

    return LogitsProbe()


def train_and_reload(recipe: Path, texts: list[str], **overrides: Any) -> dict[str, Any]:
    """`peftkit.train` with a logits probe, then `load_run`: asserts the reloaded run gives the trained model's
    logits bit for bit and that training changed them; returns the result, the probe and the loaded run. With
    bf16 / fp16 mixed precision the trained model's forward runs under autocast (accelerate wraps it), so the
    reloaded one is run under the same autocast."""
    import torch

    import peftkit
    from peftkit.rundir.load import load_run

    probe = logits_probe(texts)
    result = peftkit.train(recipe, callbacks=[probe], **overrides)
    run = load_run(result.output_dir)
    reloaded = logits_of(run.model, run.tokenizer, texts, precision=run.recipe.train.precision)
    assert not torch.allclose(probe.trained, probe.untrained, atol=1e-4), "training did not change the logits"
    assert torch.equal(reloaded, probe.trained), (reloaded - probe.trained).abs().max()
    return {"result": result, "probe": probe, "run": run, "reloaded": reloaded}


# -- model cards --------------------------------------------------------------------------------------------------

#: Runs a card's code (argv[1]) then ``argv[2]`` (the test's own lines, which see the card's names) in a process
#: that cannot import peftkit (nor peft when ``argv[3]`` is "no-peft"); start it with ``python -I``.
CARD_RUN = """
import sys
sys.modules["peftkit"] = None
if sys.argv[3] == "no-peft":
    sys.modules["peft"] = None
exec(sys.argv[1] + "\\n" + sys.argv[2])
"""


def card_code(card: Path, heading: str = "## Load it", language: str = "python") -> str:
    """The first ``language`` code block after ``heading`` in the model card ``card`` (a README.md)."""
    import re

    found = re.search(rf"^{re.escape(heading)}\n.*?```{language}\n(.*?)```", card.read_text(), re.S | re.M)
    assert found, f"{card} has no {language} block under {heading!r}"
    return found.group(1)


def run_card(card: Path, then: str = "", heading: str = "## Load it", peft: bool = True) -> str:
    """Run the card's code as printed, then ``then``, in a fresh isolated Python without peftkit; its stdout."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-I", "-c", CARD_RUN, card_code(card, heading), then,
                           "peft" if peft else "no-peft"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout
