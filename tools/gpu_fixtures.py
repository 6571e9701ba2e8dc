"""Offline fixtures of the GPU proof, built on the machine that runs it: `python3 -m tools.gpu_fixtures DIR [--tiny]`.

Nothing is downloaded. DIR receives random-init Qwen2.5 checkpoints built from the configs peftkit ships
(``peftkit/model/hub_configs/``): the 7B's width with 2 layers and the 1.5B's with 4, in bf16 with the full
vocabulary (embeddings and logits weigh what they do at full size), each with a word-level tokenizer over a made-up
vocabulary (each word one token); synthetic SFT data (prompt / response JSONL) and classification data (text,label
CSV). The tokenizer is stored as a byte-level BPE whose merges spell exactly those words: transformers loads the
tokenizer of every qwen2 checkpoint as Qwen2Tokenizer, which rebuilds a WordLevel ``tokenizer.json`` into one that
yields no tokens at all. A finished
fixture is kept and not rebuilt; each is written beside its place and renamed into it. ``--tiny`` caps every width
(for tests on a CPU); the manifest records it, so a full GPU run refuses tiny fixtures.
"""

from __future__ import annotations

import csv
import json
import os
import random
import shutil
import string
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Fixture model → (the shipped config it is built from, the layer count it keeps).
MODELS = {"qwen2.5-7b-2l": ("Qwen--Qwen2.5-7B-Instruct", 2), "qwen2.5-1.5b-4l": ("Qwen--Qwen2.5-1.5B-Instruct", 4)}
SFT, CLASSIFY, MANIFEST = "sft.jsonl", "classify.csv", "fixtures.json"
#: Widths of ``--tiny`` fixtures (a CPU builds them in a second).
TINY = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
        "vocab_size": 2048}
#: Letters only: Qwen's pre-tokenizer splits digits apart, so "w12" could never be one token.
WORDS = [f"w{a}{b}" for a in string.ascii_lowercase for b in string.ascii_lowercase][:600]
LABELS = ("positive", "negative")
ROWS = 640
#: The plain SFT template's own words (peftkit's task.plain_format), so the tokenizer knows them too.
TEMPLATE = "### Instruction:\n\n### Response:\n"


def fixture_files() -> list[str]:
    """What a complete fixture folder holds, besides its manifest."""
    return [*MODELS, SFT, CLASSIFY]


def _tokenizer() -> Any:
    """Byte-level BPE trained on the made-up words (and the template's), each of which it keeps whole."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    rng = random.Random(2)
    corpus = [TEMPLATE, *(" ".join(rng.sample(WORDS, 50)) for _ in range(200)), " ".join(WORDS)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=TINY["vocab_size"], special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")


def build_model(directory: Path, name: str, tiny: bool, weights: bool = True) -> None:
    """A random-init causal LM (seed 0, bf16) of fixture ``name`` with the word-level tokenizer, in ``directory``;
    without ``weights`` its config and tokenizer only (enough for `peftkit estimate`)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

    from peftkit.model.shipped import HUB_CONFIGS

    source, layers = MODELS[name]
    tokenizer = _tokenizer()
    fields, _ = PretrainedConfig.get_config_dict(str(HUB_CONFIGS / source))
    fields.update(num_hidden_layers=layers, max_window_layers=layers, bos_token_id=tokenizer.eos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **(TINY if tiny else {}))
    fields.pop("torch_dtype", None)
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    tokenizer.save_pretrained(directory)
    if not weights:
        config.save_pretrained(directory)
        return
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(directory)
    check_tokenizer(directory)


def check_tokenizer(directory: Path) -> None:
    """Refuse a fixture whose tokenizer, loaded the way peftkit loads it, does not keep each word whole."""
    from transformers import AutoTokenizer

    sample = " ".join(WORDS[:: len(WORDS) // 20])
    ids = AutoTokenizer.from_pretrained(directory)(sample)["input_ids"]
    if len(ids) != len(sample.split()):
        raise SystemExit(f"gpu_fixtures: error: the tokenizer in {directory} splits {len(sample.split())} words "
                         f"into {len(ids)} tokens once loaded; the fixtures would train on nothing")


def _sentence(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def build_sft(path: Path) -> None:
    """Prompt / response pairs of varied length (packing has something to pack): the response repeats the
    prompt's first words."""
    rng = random.Random(0)
    with path.open("w", encoding="utf-8") as handle:
        for _ in range(ROWS):
            prompt = _sentence(rng, 40, 400)
            handle.write(json.dumps({"prompt": prompt, "response": " ".join(prompt.split()[:rng.randint(4, 24)])})
                         + "\n")


def build_classify(path: Path) -> None:
    """Texts labelled by which half of the vocabulary most of their words come from."""
    rng = random.Random(1)
    half = len(WORDS) // 2
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        for _ in range(ROWS):
            label = rng.randrange(2)
            words = [rng.choice(WORDS[:half] if rng.random() < 0.8 - 0.6 * label else WORDS[half:])
                     for _ in range(rng.randint(20, 200))]
            writer.writerow([" ".join(words), LABELS[label]])


def _write(target: Path, build: Callable[[Path], None], folder: bool) -> None:
    """Build ``target`` beside its place and rename it into place: a fixture is complete or absent."""
    staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    if folder:
        staging.mkdir(parents=True)
    try:
        build(staging)
        staging.replace(target)
    finally:
        if staging.is_dir():
            shutil.rmtree(staging)
        elif staging.exists():
            staging.unlink()


def read_manifest(directory: Path) -> dict[str, Any] | None:
    """The manifest of a fixture folder, or None when there is none (not built yet)."""
    path = directory / MANIFEST
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def build(directory: Path, tiny: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Build every fixture missing from ``directory`` (refusing one built at the other size); returns the
    manifest."""
    manifest = read_manifest(directory)
    if manifest is not None and manifest["tiny"] != tiny:
        raise SystemExit(f"gpu_fixtures: error: {directory} holds {'tiny' if manifest['tiny'] else 'full-size'} "
                         "fixtures; delete it or pick another folder")
    directory.mkdir(parents=True, exist_ok=True)
    for name in MODELS:
        if not (directory / name / "config.json").is_file():
            say(f"building {name}{' (tiny)' if tiny else ''} from {MODELS[name][0]}")
            _write(directory / name, lambda path, name=name: build_model(path, name, tiny), folder=True)
    for name, builder in ((SFT, build_sft), (CLASSIFY, build_classify)):
        if not (directory / name).is_file():
            _write(directory / name, builder, folder=False)
    manifest = {"tiny": tiny, "files": fixture_files(),
                "models": {name: {"source": source, "num_hidden_layers": layers}
                           for name, (source, layers) in MODELS.items()}}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    """`python3 -m tools.gpu_fixtures DIR [--tiny]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    tiny = "--tiny" in args
    rest = [a for a in args if a != "--tiny"]
    if len(rest) != 1:
        print("usage: python3 -m tools.gpu_fixtures DIR [--tiny]", file=sys.stderr)
        return 2
    build(Path(rest[0]), tiny)
    return 0


if __name__ == "__main__":
    sys.exit(main())
