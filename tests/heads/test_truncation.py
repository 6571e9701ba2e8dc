"""`task.truncate`: which part of a long text the classification heads cut, in training, predict, cards and ONNX."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from testkit import FILLER, NEGATIVE, POSITIVE, card_code, run_card, tiny_tokenizer, write_csv

import peftkit
from peftkit.config.load import recipe_from_dict
from peftkit.errors import PeftkitError
from peftkit.export.onnx import export_onnx
from peftkit.heads.truncation import truncated_inputs
from peftkit.rundir.inference import predict


@pytest.mark.parametrize(("cut", "kept"), [("end", FILLER[:6]), ("start", FILLER[-6:]),
                                           ("middle", FILLER[:1] + FILLER[-5:])])
def test_each_cut_keeps_its_part_and_every_special_token(cut: str, kept: list[str]) -> None:
    tokenizer = tiny_tokenizer()
    tokenizer.model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    encoded = truncated_inputs(tokenizer, [" ".join(FILLER), "good"], 8, cut)
    assert tokenizer.convert_ids_to_tokens(encoded["input_ids"][0]) == ["[CLS]", *kept, "[SEP]"]
    assert set(encoded) == {"input_ids", "token_type_ids", "attention_mask"}
    assert all(len(values[0]) == 8 for values in encoded.values())
    assert {name: values[1] for name, values in encoded.items()} == dict(tokenizer("good"))  # short: untouched


def _verdict_at_the_end(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Twelve filler words, then the one word that decides the label: cut at 8 tokens, only the end says it."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 == 0 else "negative"
        words = [*rng.sample(FILLER, len(FILLER)), rng.choice(POSITIVE if label == "positive" else NEGATIVE)]
        rows.append({"text": " ".join(words), "label": label})
    return rows


def test_a_run_that_keeps_both_ends_learns_what_only_the_end_says(write_recipe, tmp_path: Path) -> None:
    """Cut at the end (transformers' way) the deciding word is gone and the model stays near chance; `middle` keeps
    it, and the saved run, `peftkit predict`, the model card's code and the ONNX export's code all cut as training
    did."""
    data = write_csv(tmp_path / "late.csv", _verdict_at_the_end(400))
    settings = {"data.source": str(data), "data.max_length": 8, "train.max_steps": 120}
    cut_end = peftkit.train(write_recipe({**settings, "output_dir": str(tmp_path / "end")}, "end.yaml"))
    assert cut_end.metrics["test"]["accuracy"] <= 0.75, cut_end.metrics["test"]
    middle = peftkit.train(write_recipe({**settings, "task.truncate": "middle"}))
    assert middle.metrics["test"]["accuracy"] >= 0.9, middle.metrics["test"]
    run = middle.output_dir
    saved = yaml.safe_load((run / "recipe.yaml").read_text(encoding="utf-8"))
    assert saved["task"]["truncate"] == "middle"

    texts = [" ".join([*FILLER, word]) for word in ("wonderful", "boring", "terrible")]
    expected = ["positive", "negative", "negative"]
    assert [p["label"] for p in predict(run, texts)] == expected

    assert "def truncated_inputs(" in card_code(run / "README.md")
    printed = run_card(run / "README.md", f"texts = {texts!r}\n"
                       "inputs = tokenizer.pad(truncated_inputs(tokenizer, texts, 8, 'middle'), return_tensors='pt')\n"
                       "print(model(**inputs).logits.argmax(-1).tolist())")
    assert printed.strip().splitlines()[-1] == repr([saved["task"]["labels"].index(label) for label in expected])
    out = tmp_path / "onnx"
    report = export_onnx(run, out)
    assert report["parity"]["checked"] and report["parity"]["max_abs_logit_diff"] <= 1e-4
    onnx_code = card_code(out / "README.md", heading="## Run it with onnxruntime")
    assert 'texts = ["first text", "second text"]' in onnx_code and "truncated_inputs(tokenizer, texts, 8" in onnx_code
    onnx_code = onnx_code.replace('texts = ["first text", "second text"]', f"texts = {texts!r}")
    done = subprocess.run([sys.executable, "-I", "-c", "import sys\nsys.modules['peftkit'] = None\n" + onnx_code],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [line.split()[-1] for line in done.stdout.strip().splitlines()] == expected


def test_truncate_is_a_classification_option() -> None:
    with pytest.raises(PeftkitError, match=r"'task.truncate': input should be 'end', 'start' or 'middle' "
                                           r"\(got 'both'\)"):
        recipe_from_dict({"task": {"head": "sentiment", "truncate": "both"}})
    with pytest.raises(PeftkitError, match=r"unknown key 'task.truncate'"):
        recipe_from_dict({"task": {"head": "ner", "truncate": "middle"}})
