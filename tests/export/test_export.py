"""Export: merged weights load with transformers alone and match the adapter; QLoRA de-quantized; errors."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from testkit import tiny_recipe, write_ner_conll, write_recipe_file

import peftkit
from peftkit.cli import main
from peftkit.errors import PeftkitError
from peftkit.export import export_run
from peftkit.rundir import ownership
from peftkit.rundir.load import load_run

TEXTS = ["the film was really wonderful", "a boring and clumsy plot", "acting is quite charming"]


def export_recipe(directory: Path, data: Path, name: str, model: Path, **sections: Any) -> Path:
    """A 30-step sentiment recipe on the tiny BERT (``model``) writing its run to ``directory / name``;
    ``sections`` replace whole sections."""
    recipe = tiny_recipe(model, data, {
        "method.target_modules": ["query", "value"], "data.test_size": 40, "data.max_length": 32,
        "train.max_steps": 30, "train.logging_steps": 4, "output_dir": str(directory / name),
    }, sections)
    return write_recipe_file(directory / f"{name}.yaml", recipe)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, sentiment_csv: Path) -> Path:
    return peftkit.train(export_recipe(tmp_path_factory.mktemp("runs"), sentiment_csv, "lora", tiny_bert)).output_dir


def run_logits(run: Path) -> torch.Tensor:
    loaded = load_run(run)
    with torch.no_grad():
        return loaded.model(**loaded.tokenizer(TEXTS, padding=True, return_tensors="pt")).logits


PLAIN_LOAD = """
import json, sys
sys.modules["peft"] = None  # importing peft or peftkit fails in this process
sys.modules["peftkit"] = None
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
model = AutoModelForSequenceClassification.from_pretrained(sys.argv[1]).eval()
tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
with torch.no_grad():
    logits = model(**tokenizer(json.loads(sys.argv[2]), padding=True, return_tensors="pt")).logits
print(json.dumps({"logits": logits.tolist(), "id2label": model.config.id2label}))
"""


def load_without_peftkit(directory: Path) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-I", "-c", PLAIN_LOAD, str(directory), json.dumps(TEXTS)],
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_merged_lora_matches_the_adapter_and_loads_with_transformers_alone(lora_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "merged"
    report = export_run(lora_run, out, max_shard_size="100KB")
    parity = report["parity"]
    assert parity["checked"] and parity["max_abs_logit_diff"] < 1e-4 and parity["prediction_agreement"] == 1.0
    assert parity["compared"] == 40  # the whole 40-example test split (fewer than --samples)
    assert json.loads((out / "export_report.json").read_text()) == report
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").is_file()  # sharded at 100KB
    assert not list(out.glob("adapter_*")) and not list(tmp_path.glob(".merged*"))

    plain = load_without_peftkit(out)
    assert plain["id2label"] == {"0": "negative", "1": "positive"}
    assert torch.allclose(torch.tensor(plain["logits"]), run_logits(lora_run), atol=1e-4)
    card = (out / "README.md").read_text()
    assert "AutoModelForSequenceClassification.from_pretrained" in card and "max_abs_logit_diff" in card


def test_cli_exports_bfloat16_and_adapter_only(lora_run: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(lora_run), "--merge", "--dtype", "bfloat16", "--out", str(tmp_path / "m16")]) == 0
    assert "report only" in capsys.readouterr().out
    report = json.loads((tmp_path / "m16" / "export_report.json").read_text())
    assert report["dtype"] == "bfloat16" and not report["parity"]["checked"]
    parity = report["parity"]
    assert 0 < parity["max_abs_logit_diff"] < 0.1  # bf16 rounding, measured, not hidden
    assert 0 < parity["mean_abs_logit_diff"] < parity["max_abs_logit_diff"]
    assert json.loads((tmp_path / "m16" / "config.json").read_text())["dtype"] == "bfloat16"

    assert main(["export", str(lora_run), "--adapter-only", "--out", str(tmp_path / "adapter")]) == 0
    files = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= files
    assert "model.safetensors" not in files
    assert json.loads((tmp_path / "adapter" / "export_report.json").read_text())["parity"]["max_abs_logit_diff"] == 0


def test_qlora_nf4_merges_into_a_dequantized_base(tmp_path: Path, sentiment_csv: Path, tiny_bert: Path) -> None:
    recipe = export_recipe(tmp_path, sentiment_csv, "qlora", tiny_bert, method={"name": "qlora", "r": 4, "alpha": 8,
                           "target_modules": ["query", "value"]}, quantization={"mode": "4bit", "quant_type": "nf4"})
    run = peftkit.train(recipe).output_dir
    report = export_run(run, tmp_path / "merged", samples=16)
    assert report["merged_into"] == "de-quantized 4bit base (float32)" and not report["parity"]["checked"]
    assert report["parity"]["compared"] == 16 and report["parity"]["prediction_agreement"] == 1.0
    # merged into the de-quantized weights it was trained on; bitsandbytes' CPU inference kernel for 4-bit weights
    # (the adapter model's side) rounds like bfloat16, hence a relative bound
    parity = report["parity"]
    assert parity["max_abs_logit_diff"] < 0.05 * max(1.0, parity["max_abs_logit"]), parity
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert "quantization_config" not in config and config["dtype"] == "float32"
    plain = load_without_peftkit(tmp_path / "merged")
    assert torch.allclose(torch.tensor(plain["logits"]), run_logits(run), atol=0.05 * max(1.0, parity["max_abs_logit"]))


def test_requantize_is_explicit_and_measured(lora_run: Path, tmp_path: Path) -> None:
    report = export_run(lora_run, tmp_path / "q4", requantize_to="4bit", samples=16)
    requantized = report["requantized"]
    assert requantized["mode"] == "4bit" and requantized["bytes_after"] < 0.7 * requantized["bytes_before"]
    parity = report["parity"]
    assert not parity["checked"] and 0 < parity["max_abs_logit_diff"] < 0.5 * max(1.0, parity["max_abs_logit"])
    assert parity["prediction_agreement"] >= 0.75  # what 4-bit rounding costs, bounded
    assert json.loads((tmp_path / "q4" / "config.json").read_text())["quantization_config"]["load_in_4bit"]


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_export_errors_leave_nothing_behind(lora_run: Path, tmp_path: Path, monkeypatch, capsys) -> None:
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "is not a peftkit run (no recipe.yaml)" in capsys.readouterr().err
    assert main(["export", str(lora_run), "--out", str(lora_run)]) == 2
    assert "would replace the run" in capsys.readouterr().err

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("mine")
    assert main(["export", str(lora_run), "--out", str(tmp_path / "taken")]) == 2
    assert "already exists; choose another directory or pass --overwrite" in capsys.readouterr().err
    assert leftovers(tmp_path / "taken") == ["keep.txt"]

    import peftkit.export.merge as merge

    real_write = Path.write_text

    def disk_full(self: Path, *args: Any, **kwargs: Any) -> int:
        if self.name == "export_report.json":  # after the weights were written
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", disk_full)
    assert main(["export", str(lora_run), "--out", str(tmp_path / "nested" / "full"), "--samples", "8"]) == 2
    assert "writing '" in capsys.readouterr().err
    monkeypatch.setattr(Path, "write_text", real_write)
    assert leftovers(tmp_path) == ["taken"]  # neither the export, its staging directory nor the parent made for it

    def perturbed(model: torch.nn.Module, method: Any) -> torch.nn.Module:
        model = model.merge_and_unload()
        model.classifier.bias.data += 0.01
        return model

    monkeypatch.setattr(merge, "merged_model", perturbed)
    failed = r"parity check failed: .* up to (9\.9\de-03|1\.0\de-02) \(tolerance 0\.0001 × largest \|logit\| "
    with pytest.raises(PeftkitError, match=r"taken' is not a peftkit export"):
        export_run(lora_run, tmp_path / "taken", overwrite=True, samples=8)
    prior = tmp_path / "prior"  # an earlier export (its manifest says so)
    prior.mkdir()
    (prior / "config.json").write_text("{}")
    ownership.record(prior, "export", ["config.json"])
    with pytest.raises(PeftkitError, match=failed):
        export_run(lora_run, prior, overwrite=True, samples=8)
    assert leftovers(prior) == [".peftkit-manifest.json", "config.json"]  # --overwrite replaces only after success
    assert leftovers(tmp_path) == ["prior", "taken"]

    class CustomModel(torch.nn.Module):
        pass

    from peftkit.heads.sentiment import SentimentHead

    monkeypatch.setattr(SentimentHead, "auto_class", CustomModel)
    with pytest.raises(PeftkitError, match="its model class CustomModel is not a transformers Auto class"):
        export_run(lora_run, tmp_path / "custom")
    assert leftovers(tmp_path) == ["prior", "taken"]


@pytest.fixture(scope="module")
def lora_run_b(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path, sentiment_csv: Path) -> Path:
    recipe = export_recipe(tmp_path_factory.mktemp("runs"), sentiment_csv, "lora_b", tiny_bert)
    return peftkit.train(recipe, **{"train.seed": 7}).output_dir


def test_cat_fusion_weights_the_adapters_and_averages_the_heads(lora_run: Path, lora_run_b: Path,
                                                                 tmp_path: Path) -> None:
    """Weights 3 and 1: the heads are averaged 0.75 / 0.25 (not the first run's head), the LoRA updates
    added 3 × ΔW_a + 1 × ΔW_b (cat stacks the ranks)."""
    from safetensors.torch import load_file

    from peftkit.export import fuse_runs

    result = fuse_runs([lora_run, lora_run_b], tmp_path / "fused", weights=[3.0, 1.0], combination="cat")
    assert result.metrics["fusion"]["rank"] == 8  # cat stacks the two rank-4 adapters
    a, b, fused = (load_file(str(d / "adapter_model.safetensors")) for d in (lora_run, lora_run_b, tmp_path / "fused"))
    heads = [k for k in fused if "classifier" in k]
    assert heads and all(not torch.allclose(a[k], b[k]) for k in heads)
    for key in heads:
        torch.testing.assert_close(fused[key], 0.75 * a[key] + 0.25 * b[key])

    def delta(run: Path) -> torch.Tensor:
        merged = load_run(run).model.merge_and_unload()
        return merged.bert.encoder.layer[0].attention.self.query.weight.detach()

    base = load_run(lora_run).model.get_base_model().bert.encoder.layer[0].attention.self.query.base_layer.weight
    expected = 3 * (delta(lora_run) - base) + (delta(lora_run_b) - base)
    torch.testing.assert_close(delta(tmp_path / "fused") - base, expected, atol=1e-5, rtol=1e-4)


def test_cli_fuses_with_ties_and_eval_evaluates_it(lora_run: Path, lora_run_b: Path, tmp_path: Path,
                                                    capsys) -> None:
    out = tmp_path / "fused"
    argv = ["fuse", str(lora_run), str(lora_run_b), "--weights", "0.5", "0.5", "--combination", "ties"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("test metrics of the fused run (ties):\n") and "{" not in printed  # no raw Trainer dict
    assert "fused run saved to" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["fusion"]["combination"] == "ties" and metrics["fusion"]["density"] == 0.5
    assert main(["eval", str(out), "--json", str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["accuracy"] == metrics["test"]["accuracy"]
    assert main([*argv, "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_fusion_refuses_mismatched_runs(lora_run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    other = tmp_path / "other"
    shutil.copytree(lora_run, other)
    recipe = yaml.safe_load((other / "recipe.yaml").read_text())
    base = recipe["model"]["name"]
    recipe["model"]["name"] = "smollm2-135m"
    (other / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["fuse", str(lora_run), str(other), "--out", str(tmp_path / "fused")]) == 2
    assert f"differ in model.name ('{base}' vs 'smollm2-135m'); only adapters trained on the same base" in (
        capsys.readouterr().err
    )
    assert main(["fuse", str(lora_run), str(lora_run), "--weights", "1", "2", "3", "--out", str(tmp_path / "f")]) == 2
    assert "--weights: 3 values for 2 runs" in capsys.readouterr().err
    assert leftovers(tmp_path) == ["other"]


@pytest.mark.parametrize("method", ["full", "head_only"])
def test_full_and_head_only_runs_export_and_load_without_peftkit(tmp_path: Path, sentiment_csv: Path,
                                                                 tiny_bert: Path, method: str) -> None:
    run = peftkit.train(export_recipe(tmp_path, sentiment_csv, method, tiny_bert, method={"name": method})).output_dir
    report = export_run(run, tmp_path / "merged", samples=16)
    assert report["parity"]["checked"] and report["parity"]["max_abs_logit_diff"] <= 1e-4
    assert report["merged_into"] is None  # nothing to merge: the weights are saved as trained
    assert torch.allclose(torch.tensor(load_without_peftkit(tmp_path / "merged")["logits"]), run_logits(run),
                          atol=1e-4)


def test_qlora_8bit_merges_into_a_dequantized_base(tmp_path: Path, sentiment_csv: Path, tiny_bert: Path) -> None:
    recipe = export_recipe(tmp_path, sentiment_csv, "q8", tiny_bert, method={"name": "qlora", "r": 4, "alpha": 8,
                           "target_modules": ["query", "value"]}, quantization={"mode": "8bit"})
    run = peftkit.train(recipe).output_dir
    report = export_run(run, tmp_path / "merged", samples=16)
    parity = report["parity"]
    assert report["merged_into"] == "de-quantized 8bit base (float32)" and not parity["checked"]
    assert parity["prediction_agreement"] >= 0.9 and parity["max_abs_logit_diff"] < 0.1 * max(
        1.0, parity["max_abs_logit"]), parity
    assert "quantization_config" not in json.loads((tmp_path / "merged" / "config.json").read_text())


def test_adapter_only_fails_above_the_tolerance_and_writes_nothing(lora_run: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import peftkit.export.merge as merge

    real = merge.run_builder

    def shifted_builder(recipe: Any, head: Any) -> Any:  # the exported adapter is reloaded onto a shifted base
        build = real(recipe, head)

        def build_shifted(path: str | None = None) -> torch.nn.Module:
            model = build(path)
            with torch.no_grad():
                # noise: a constant added to every weight would cancel in the LayerNorm that follows
                weight = model.bert.encoder.layer[0].output.dense.weight
                weight.add_(0.05 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
            return model

        return build_shifted

    monkeypatch.setattr(merge, "run_builder", shifted_builder)
    with pytest.raises(PeftkitError, match=r"parity check failed: exported logits differ .* nothing was written"):
        export_run(lora_run, tmp_path / "adapter", mode="adapter", samples=8)
    assert leftovers(tmp_path) == []


def test_token_head_parity_counts_every_real_token(tmp_path: Path, tiny_bert: Path) -> None:
    from peftkit.export.parity import sample_batches
    from peftkit.model.loading import load_tokenizer
    from peftkit.registry import HEADS

    data = write_ner_conll(tmp_path / "ner.conll", 120)
    recipe = export_recipe(tmp_path, data, "ner", tiny_bert, task={"head": "ner", "word_split": "whitespace"})
    run = peftkit.train(recipe).output_dir
    report = export_run(run, tmp_path / "merged", samples=8)
    loaded = load_run(run)
    batches = sample_batches(loaded.recipe, HEADS.get("ner")(loaded.recipe.task),
                             load_tokenizer(loaded.recipe.model, path=str(run)), 8)
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    assert report["parity"]["compared"] == tokens > 8  # per token, not per sentence
    assert report["parity"]["checked"] and report["parity"]["max_abs_logit_diff"] <= 1e-4


def test_overwrite_replaces_an_earlier_export(lora_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    export_run(lora_run, out, dtype="bfloat16", samples=8)
    report = export_run(lora_run, out, overwrite=True, samples=8)
    assert report["dtype"] == "float32" and report["parity"]["checked"]
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert json.loads((out / "export_report.json").read_text()) == report
    assert leftovers(tmp_path) == ["export"]  # no staging directory or old copy left beside it
