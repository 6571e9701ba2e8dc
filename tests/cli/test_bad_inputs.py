"""Bad-input catalogue: recipes, data, models and CLI misuse, each through `peftkit.cli.main` as a user types it.

Every case must end with exit code 2, one `peftkit: error:` line naming the culprit and nothing else in stdout or
stderr but the noise named in NOISE, and nothing written or deleted: not in the scratch directory, not beside the
data file, not in the model directory, not in the peftkit cache or the `datasets` cache (both pointed at fresh
folders for the test).
API-level recipe and data errors are covered in config/test_recipe.py / data/test_data.py; these are end to end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from testkit import tiny_recipe, write_recipe_file

from peftkit.cli import main


@dataclass
class Env:
    """What a case builds its arguments from: a scratch directory, a tiny recipe, the tiny BERT's directory."""

    tmp: Path
    recipe: Path
    model: Path

    @property
    def out(self) -> Path:
        return self.tmp / "out"

    def file(self, name: str, content: str | bytes) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def csv(self, name: str, lines: list[str], encoding: str = "utf-8") -> Path:
        return self.file(name, "\n".join(lines).encode(encoding) + b"\n")

    def model_dir(self, name: str, weights: str | None, config: dict | None = None) -> Path:
        """A model directory with the tiny BERT's tokenizer, a config (its own unless given) and a weights file."""
        path = self.tmp / name
        path.mkdir()
        for item in self.model.iterdir():
            if item.name.startswith(("tokenizer", "vocab", "special_tokens")):
                shutil.copy(item, path / item.name)
        if config is None:
            shutil.copy(self.model / "config.json", path / "config.json")
        else:
            (path / "config.json").write_text(json.dumps(config), encoding="utf-8")
        if weights:
            (path / weights).write_bytes(b"not really weights")
        return path


def train(env: Env, *overrides: str) -> list[str]:
    return ["train", str(env.recipe), f"output_dir={env.out}", *overrides]


def rows_csv(env: Env, rows: list[str]) -> str:
    return f"data.source={env.csv('rows.csv', ['text,label', *rows])}"


def ner_jsonl(env: Env, rows: list[dict]) -> list[str]:
    path = env.file("ner.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    return train(env, f"data.source={path}", "task.head=ner", "data.test_size=1", "data.validation_size=1")


def tiny_clip_text(env: Env) -> Path:
    """A real model whose architecture (CLIP's text tower) has no sequence-classification head."""
    from transformers import CLIPTextConfig, CLIPTextModel

    path = env.model_dir("clip-text", None)
    config = CLIPTextConfig(vocab_size=30522, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=64)
    CLIPTextModel(config).save_pretrained(path)
    return path


def remote_config(env: Env) -> dict:
    """The tiny BERT's config, but of an architecture shipped as code beside it (which must never run)."""
    config = json.loads((env.model / "config.json").read_text(encoding="utf-8"))
    return {**config, "model_type": "xcustom", "auto_map": {
        "AutoConfig": "configuration_x.XConfig", "AutoModelForSequenceClassification": "modeling_x.XModel"}}


def alias_bomb(env: Env) -> Path:
    """A 400-byte recipe whose nested aliases expand to half a billion nodes."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    return env.file("bomb.yaml", "\n".join(lines) + "\n")


def self_referencing(env: Env) -> Path:
    """The tiny recipe plus an option whose value contains itself (it validated, trained, then failed to save)."""
    return env.file("self.yaml", env.recipe.read_text() + "distributed:\n  wrap: &x [*x]\n")


def conll(env: Env, name: str, sentence: str, n: int = 60) -> str:
    return f"data.source={env.file(name, (sentence + chr(10)) * n)}"


#: name, the argv built from the Env, the text the error line must hold (or a function of the Env giving it)
Case = tuple[str, Callable[[Env], list[str]], str | Callable[[Env], str]]

RECIPE_CASES: list[Case] = [
    ("yaml-unclosed-quote", lambda e: ["validate", str(e.file("q.yaml", 'train:\n  scheduler: "cosine\n'))],
     "q.yaml line 3: invalid YAML (found unexpected end of stream)"),
    ("recipe-not-utf8", lambda e: ["validate", str(e.file("l.yaml", b"description: caf\xe9\n"))],
     "l.yaml: not UTF-8 text"),
    ("section-not-a-mapping", lambda e: ["validate", str(e.file("s.yaml", "train: 5\n"))],
     "'train' must be a mapping of options, got 5"),
    ("override-wrong-type", lambda e: train(e, "train.max_steps=abc"),
     "'train.max_steps': input should be a valid integer"),
    ("override-without-key", lambda e: train(e, "=3"), "override '=3' must look like section.key=value"),
    ("negative-learning-rate", lambda e: train(e, "train.learning_rate=-1"),
     "'train.learning_rate': input should be greater than 0"),
    ("unknown-top-level-key", lambda e: train(e, "output=x"), "unknown section 'output'; did you mean 'output_dir'?"),
    ("bad-resume-mode", lambda e: train(e, "train.resume=sometimes"),
     "'train.resume': input should be 'never' or 'auto'"),
    ("bad-model-dtype", lambda e: train(e, "model.dtype=float64"), "'model.dtype': input should be 'float32'"),
    ("early-stopping-without-matching-saves",
     lambda e: train(e, "train.early_stopping_patience=2", "train.eval_strategy=steps", "train.save_strategy=epoch"),
     "needs train.save_strategy equal to train.eval_strategy (epoch vs steps)"),
    ("fsdp-and-deepspeed", lambda e: train(e, "distributed.fsdp=true", "distributed.deepspeed=ds.json"),
     "'distributed.fsdp' and 'distributed.deepspeed' exclude each other"),
    ("deepspeed-file-missing", lambda e: train(e, "distributed.deepspeed=nope.json"),
     "'distributed.deepspeed': file 'nope.json' does not exist"),
    ("method-without-the-head-kind",
     lambda e: ["validate", str(e.file("f.yaml", "method: head_only\ntask: causal_lm\n"))],
     "method 'head_only' does not support task.head 'causal_lm'"),
    ("paged-optimizer-on-cpu", lambda e: train(e, "train.optim=paged_adamw_8bit"),
     "'train.optim': paged_adamw_8bit pages optimizer state between GPU and CPU memory and needs a CUDA GPU"),
    ("max-length-too-small", lambda e: train(e, "data.max_length=4"),
     "'data.max_length': input should be greater than or equal to 8"),
    ("resume-and-overwrite", lambda e: [*train(e), "--resume", "--overwrite"],
     "--resume and --overwrite exclude each other"),
    ("output-dir-is-a-file", lambda e: ["train", str(e.recipe), f"output_dir={e.file('taken', 'x')}"],
     lambda e: f"output_dir '{e.tmp / 'taken'}' is a file, not a directory"),
    ("epochs-infinite", lambda e: train(e, "train.epochs=inf"), "'train.epochs': input should be a finite number"),
    ("test-size-infinite", lambda e: train(e, "data.test_size=inf"),
     "'data.test_size': input should be a finite number (got 'inf')"),
    ("learning-rate-infinite", lambda e: train(e, "train.learning_rate=inf"),
     "'train.learning_rate': input should be a finite number"),
    ("duplicate-yaml-key", lambda e: ["validate", str(e.file("d.yaml", "train:\n  epochs: 1\ntrain:\n  epochs: 2\n"))],
     "d.yaml line 3: invalid YAML (key 'train' appears twice in one mapping)"),
    ("duplicate-labels", lambda e: train(e, "task.labels=[negative,positive,positive]"),
     "'task.labels': 'positive' given more than once"),
    ("test-size-fraction-above-one", lambda e: train(e, "data.test_size=1.5"),
     "'data.test_size': 1.5 is neither a share below 1 (e.g. 0.1) nor a whole row count"),
    ("method-switch-keeps-the-recipes-options", lambda e: ["validate", "sentiment-lora", "method.name=ia3"],
     "sentiment-lora: method.name=ia3: the recipe's lora options method.r, method.alpha, method.dropout do not "
     "apply to method 'ia3'; pass method={name: ia3} to replace the whole section, or use the recipe 'sentiment-ia3'"),
    ("output-dir-under-a-file", lambda e: ["train", str(e.recipe), f"output_dir={e.file('plain', 'x') / 'run'}"],
     "plain' is a file, not a directory"),
    ("seed-negative", lambda e: train(e, "train.seed=-1"), "'train.seed': input should be greater than or equal to 0"),
    ("seed-beyond-numpy", lambda e: train(e, f"train.seed={2**64 + 1}"),
     "'train.seed': input should be less than or equal to 4294967295"),
    ("split-seed-negative", lambda e: train(e, "data.split_seed=-5"),
     "'data.split_seed': input should be greater than or equal to 0"),
    ("cosine-negative-cycles", lambda e: train(e, "train.scheduler=cosine", "train.scheduler_options={num_cycles: -1}"),
     "'train.scheduler_options.num_cycles': -1.0 is out of range; it must be above 0"),
    ("polynomial-lr-end-above-the-rate",
     lambda e: train(e, "train.scheduler=polynomial", "train.scheduler_options={lr_end: 0.5}"),
     "'train.scheduler_options.lr_end': 0.5 must be below train.learning_rate (0.0005)"),
    ("data-files-without-train", lambda e: train(e, f"data.files={{validation: {e.csv('v.csv', ['text,label'])}}}"),
     "'data.files' names validation but no train file; add files.train"),
    ("workers-unbounded", lambda e: train(e, "train.dataloader_num_workers=100000"),
     "'train.dataloader_num_workers': input should be less than or equal to 64"),
    ("random-init-width-the-heads-do-not-divide",
     lambda e: train(e, "model.random_init=true", "model.config_overrides={hidden_size: 30}"),
     "model.config_overrides: The hidden size (30) is not a multiple of the number of attention heads"),
    ("random-init-width-refused-by-validate",
     lambda e: ["validate", str(e.recipe), "model.random_init=true", "model.config_overrides={hidden_size: 30}"],
     "model.config_overrides: The hidden size (30) is not a multiple of the number of attention heads"),
    ("random-init-negative-width",
     lambda e: train(e, "model.random_init=true", "model.config_overrides={hidden_size: -4}"),
     "'model.config_overrides.hidden_size': -4 is not a count; it must be a whole number of at least 1"),
    ("random-init-beyond-memory",
     lambda e: train(e, "model.random_init=true", "model.config_overrides={hidden_size: 1000000}"),
     "more than this machine's"),
    ("yaml-alias-bomb-in-show", lambda e: ["show", str(alias_bomb(e))],
     "bomb.yaml: invalid YAML (aliases expand to 490,329,036 more nodes (at most 10,000)"),
    ("yaml-alias-bomb-in-validate", lambda e: ["validate", str(alias_bomb(e))], "bomb.yaml: invalid YAML (aliases"),
    ("yaml-self-referencing-alias", lambda e: ["train", str(self_referencing(e)), f"output_dir={e.out}"],
     "self.yaml line 21: invalid YAML (an alias refers to a node that contains it (a self-referencing structure))"),
    ("recipe-is-a-directory", lambda e: ["validate", str((e.tmp / "dir.yaml").mkdir() or e.tmp / "dir.yaml")],
     "dir.yaml' is a directory, expected a file"),
    ("overwrite-a-directory-that-is-no-run",
     lambda e: ["train", str(e.recipe), f"output_dir={e.file('mine/notes.txt', 'keep me').parent}", "--overwrite"],
     lambda e: f"'{e.tmp / 'mine'}' is not a peftkit run (no .peftkit-manifest.json written by peftkit); "
               "refusing to delete anything"),
]

DATA_CASES: list[Case] = [
    ("text-column-missing", lambda e: train(e, "data.text_column=body"),
     "column 'body' (data.text_column) not found; columns are: text, label"),
    ("unlabelled-row", lambda e: train(e, rows_csv(e, ["a good film,positive", "a dull film,", "fine,negative"])),
     "missing label in column 'label'"),
    ("empty-data-file", lambda e: train(e, f"data.source={e.csv('empty.csv', ['text,label'])}"),
     "empty.csv': could not be read as csv"),
    ("utf16-data-file",
     lambda e: train(e, f"data.source={e.csv('u16.csv', ['text,label', 'good,positive'], 'utf-16')}"),
     "u16.csv': not UTF-8 text"),
    ("broken-json-lines", lambda e: train(e, "data.source=" + str(e.file("b.jsonl", '{"text": "a"}\n{oops\n'))),
     "b.jsonl': could not be read as json"),
    ("token-tag-length-mismatch",
     lambda e: ner_jsonl(e, [{"tokens": ["alice", "went"], "tags": ["B-PER", "O"]}] * 4
                         + [{"tokens": ["bob", "left", "today"], "tags": ["B-PER", "O"]}]),
     "3 words in 'tokens' but 2 tags in 'tags'; need one tag per word"),
    ("single-label",
     lambda e: train(e, rows_csv(e, [f"film {i},positive" for i in range(60)]), "task.head=classification"),
     "rows.csv' (train split): column 'label' holds only the label 'positive'; a classifier needs at least two "
     "labels"),
    ("single-label-with-declared-labels",
     lambda e: train(e, rows_csv(e, [f"film {i},positive" for i in range(60)]), "task.labels=[negative,positive]"),
     "column 'label' holds only the label 'positive'"),
    ("numeric-labels-spelled-two-ways",
     lambda e: train(e, "data.source=" + str(e.file("n.jsonl", "".join(
         json.dumps({"text": f"film {i}", "label": ("0", "1", "1.0")[i % 3]}) + "\n" for i in range(60)))),
         "task.head=classification"),
     "column 'label': labels '1' and '1.0' are one number written two ways and would become two classes"),
    ("conll-with-only-o-tags", lambda e: train(e, conll(e, "o.conll", "alice O\nleft O\n"), "task.head=ner"),
     "o.conll' (train split): every tag in column 'tags' is 'O'; a token classifier needs at least two tags"),
    ("split-larger-than-the-data", lambda e: train(e, "data.test_size=400"),
     "'data.test_size': 400 means 400 of 400 training rows; hold out at least 1 and leave at least 1"),
    ("empty-test-split", lambda e: train(e, "data.test_size=0"), "'data.test_size': 0 means 0 of 400 training rows"),
    ("data-source-is-a-directory", lambda e: train(e, f"data.source={(e.tmp / 'corpus').mkdir() or e.tmp / 'corpus'}"),
     "corpus' is a directory; name a data file inside it"),
    ("data-source-is-a-fifo", lambda e: train(e, f"data.source={os.mkfifo(e.tmp / 'pipe.csv') or e.tmp / 'pipe.csv'}"),
     "pipe.csv' is not a regular file (a FIFO or device)"),
    ("max-length-beyond-the-models-positions",
     lambda e: train(e, rows_csv(e, [f"{' '.join(['film'] * 600)},{('positive', 'negative')[i % 2]}"
                                     for i in range(40)]), "data.max_length=100000"),
     lambda e: f"'data.max_length': inputs of up to 602 tokens, but model '{e.model}' has positions for 64"),
    ("unknown-data-set", lambda e: train(e, "data.source=movie-snipets"),
     "data.source 'movie-snipets': not a catalogue data set"),
]

MODEL_CASES: list[Case] = [
    ("model-directory-without-weights", lambda e: train(e, f"model.name={e.model_dir('empty-model', None)}"),
     "no file named model.safetensors found in directory"),
    ("pickle-only-weights", lambda e: train(e, f"model.name={e.model_dir('pickled', 'pytorch_model.bin')}"),
     "weights only as pickle (pytorch_model.bin); peftkit loads safetensors only"),
    ("architecture-without-the-head", lambda e: train(e, f"model.name={tiny_clip_text(e)}"),
     "its architecture has no AutoModelForSequenceClassification (needed by task.head 'sentiment')"),
    ("target-modules-not-in-the-model", lambda e: train(e, "method.target_modules=[nonexistent]"),
     "'method.target_modules': [nonexistent] matches no layer of the model; its linear layers are named: classifier, "
     "dense, key, query, value"),
    ("rank-above-the-layer-width", lambda e: train(e, "method.r=100000"),
     "'method.r': 100000 is above the width of the adapted layer"),
    ("truncated-safetensors", lambda e: train(e, f"model.name={e.model_dir('cut', 'model.safetensors')}"),
     "is damaged or truncated"),
    ("model-asks-for-remote-code",
     lambda e: train(e, f"model.name={e.model_dir('remote', 'model.safetensors', remote_config(e))}"),
     "its config asks to run code shipped with the model (auto_map); peftkit runs it only when the recipe sets "
     "model.trust_remote_code: true"),
    ("unknown-model", lambda e: train(e, "model.name=minilm-l7"), "model.name 'minilm-l7': not a catalogue model"),
    ("pooling-unknown", lambda e: train(e, "task.pooling=max"),
     "'task.pooling': input should be 'auto', 'cls', 'pooler', 'mean' or 'last' (got 'max')"),
    ("pooling-the-architecture-lacks", lambda e: train(e, "task.pooling=last"),
     "'task.pooling': last does not apply to BertForSequenceClassification (its head reads the pooler output); it "
     "supports pooler, cls, mean or auto"),
]

CLI_CASES: list[Case] = [
    ("no-verb", lambda e: [], "the following arguments are required: VERB"),
    ("unknown-verb", lambda e: ["trian"], "invalid choice: 'trian'"),
    ("train-without-recipe", lambda e: ["train"], "the following arguments are required: recipe"),
    ("unknown-flag", lambda e: [*train(e), "--epochs", "2"], "unrecognized arguments: --epochs 2"),
    ("nproc-zero", lambda e: [*train(e), "--nproc", "0"], "--nproc must be at least 1, got 0"),
    ("nproc-beyond-the-machine", lambda e: [*train(e), "--nproc", "4096"],
     "--nproc 4096: this machine has"),
    ("augment-copies-unbounded", lambda e: train(e, "augment.copies=100000", "augment.ops=[swap]"),
     "augment.copies"),
    ("predict-without-text", lambda e: ["predict", str(e.tmp)], "predict: no text given"),
    ("eval-of-an-unfinished-run",
     lambda e: ["eval", str(e.file("half/recipe.yaml", e.recipe.read_text()).parent)],
     "is an unfinished run (no metrics.json); continue it with `peftkit train ... --resume`"),
    ("cp-into-a-missing-directory", lambda e: ["cp", "sentiment-lora", str(e.tmp / "nodir" / "x.yaml")],
     lambda e: f"cp: directory '{e.tmp / 'nodir'}'"),
    ("predict-batch-size-zero", lambda e: ["predict", str(e.tmp), "good", "--batch-size", "0"],
     "argument --batch-size: expected a whole number of at least 1, got '0'"),
    ("predict-batch-size-negative", lambda e: ["predict", str(e.tmp), "good", "--batch-size", "-3"],
     "argument --batch-size: expected a whole number of at least 1, got '-3'"),
    ("predict-file-is-a-directory", lambda e: ["predict", str(e.tmp), "--file", str(e.tmp)],
     "is a directory, expected a file"),
    ("eval-json-is-a-directory", lambda e: ["eval", str(e.tmp), "--json", str(e.tmp)],
     "is a directory, expected a file"),
    ("export-max-shard-size-not-a-size",
     lambda e: ["export", str(e.tmp), "--out", str(e.out), "--max-shard-size", "abc"],
     "argument --max-shard-size: expected a size such as 500MB, 2GB or 1GiB"),
    ("export-tolerance-nan", lambda e: ["export", str(e.tmp), "--out", str(e.out), "--tolerance", "nan"],
     "argument --tolerance: expected a finite number, got 'nan'"),
    ("fuse-density-above-one", lambda e: ["fuse", str(e.tmp), "--out", str(e.out), "--density", "2"],
     "argument --density: expected a share above 0 and at most 1, got '2'"),
    ("sweep-seed-negative", lambda e: ["sweep", str(e.recipe), "--space", "s.yaml", "--seed", "-1"],
     "argument --seed: expected a seed from 0 to 4294967295, got '-1'"),
    ("options-of-no-section", lambda e: ["options", "trian"],
     "options: no option starts with 'trian'; did you mean 'train'?"),
    ("eval-json-into-a-missing-directory",
     lambda e: ["eval", str(e.tmp), "--json", str(e.tmp / "nodir" / "m.json")],
     lambda e: f"--json: directory '{e.tmp / 'nodir'}'"),
]

CASES = RECIPE_CASES + DATA_CASES + MODEL_CASES + CLI_CASES


def test_the_catalogue_has_at_least_30_distinct_cases() -> None:
    names = [name for name, _, _ in CASES]
    assert len(names) == len(set(names)) and len(names) >= 30


#: Cases that only fail on a machine without CUDA.
CPU_ONLY = {"paged-optimizer-on-cpu"}
#: Output allowed besides the one error line: argparse's usage lines, progress bars and transformers' reports
#: of the (tiny) model it loaded before the error. Anything else (a warning, a second error, a traceback) fails.
NOISE = re.compile(r"^(usage: |\s+\S|\s*$|tokenizing( \w+)?:|Loading weights|Generating \w+ split|Map|Filter"
                   r"|\[transformers\]|Key\s+\||-+\+|classifier\.|Notes:|- MISSING)")


def _snapshot(*roots: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for root in roots for p in root.rglob("*")}


@pytest.mark.parametrize(("build", "expected"), [
    pytest.param(b, x, id=n, marks=pytest.mark.skipif(torch.cuda.is_available(), reason="refused on CPUs only")
                 if n in CPU_ONLY else ()) for n, b, x in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    build: Callable[[Env], list[str]], expected: str | Callable[[Env], str], tmp_path: Path, tiny_bert: Path,
    sentiment_csv: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import datasets.config

    scratch, caches = tmp_path / "scratch", tmp_path / "caches"
    scratch.mkdir()
    for name in ("datasets", "peftkit"):
        (caches / name).mkdir(parents=True)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(caches / "datasets"))
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(caches / "datasets"))
    monkeypatch.setenv("PEFTKIT_CACHE", str(caches / "peftkit"))
    monkeypatch.chdir(scratch)
    for handler in logging.getLogger("datasets").handlers:  # bound to an earlier test's (closed) captured stderr
        monkeypatch.setattr(handler, "stream", sys.stderr)
    recipe = write_recipe_file(scratch / "tiny.yaml", tiny_recipe(tiny_bert, sentiment_csv, {
        "method": {"name": "lora", "r": 2, "target_modules": ["query"]},
        "data.test_size": 20, "data.validation_size": 10, "data.max_length": 16,
        "train": {"max_steps": 1, "batch_size": 4, "save_strategy": "no", "eval_strategy": "no"},
    }))
    env = Env(scratch, recipe, tiny_bert)
    argv = build(env)
    capsys.readouterr()  # what building the case printed (e.g. saving a model) is not the command's output
    watched = (scratch, caches, sentiment_csv.parent, tiny_bert)
    before = _snapshot(*watched)
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse exits by itself
        code = exc.code
    captured = capsys.readouterr()
    output = (captured.out + captured.err).splitlines()
    errors = [line for line in output if line.startswith("peftkit")]
    assert code == 2, captured.err[-1500:]
    assert len(errors) == 1, output[-20:]
    assert errors[0].startswith(("peftkit: error: ", f"peftkit {argv[0] if argv else ''}: error: "))
    assert [line for line in output if line not in errors and not NOISE.match(line)] == [], output[-20:]
    assert (expected if isinstance(expected, str) else expected(env)) in errors[0]
    assert not env.out.exists(), "a refused run must not create its output directory"
    assert _snapshot(*watched) == before, "a refused command must not write or delete anything"
