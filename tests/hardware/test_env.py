"""`peftkit env`: versions against the tested range, devices, flash-attn; with a recipe, the fit per device."""

from __future__ import annotations

import importlib.metadata as metadata
import re

import pytest

from peftkit.cli import main
from peftkit.config.load import load_recipe
from peftkit.hardware import auto, env
from peftkit.hardware import device as devices


def test_tested_range_comes_from_peftkit_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    requires = ["transformers>=5.20,<5.25", "peft<0.1", "torch>=2.4", "optuna>=3.4; extra == 'sweep'"]
    monkeypatch.setattr(metadata, "requires", lambda name: requires if name == "peftkit" else None)
    versions = {"transformers": "5.24.0", "peft": "0.21.2", "torch": "2.13.0+cpu"}
    monkeypatch.setattr(env, "installed", lambda name: versions.get(name))
    assert "optuna" not in env.tested_ranges()  # extras are not the tested core
    rows = {row.name: row for row in env.package_rows()}
    assert rows["transformers"].tested == ">=5.20,<5.25" and rows["transformers"].status == "in tested range"
    assert rows["peft"].status == "OUT of tested range"
    assert rows["torch"].status == "in tested range"  # a local build tag (+cpu) is still torch 2.13.0
    assert rows["bitsandbytes"].status == "not installed"


def test_env_prints_versions_devices_and_flash_attn(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for name in ("python", "torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets"):
        assert re.search(rf"^{name}\s+\S", out, re.M), name
    assert metadata.version("transformers") in out
    native = "native bf16" if devices.cpu().cpu_bf16 else "no native bf16"
    assert re.search(rf"^  cpu \[cpu\]: [\d,.]+ GiB, {native}$", out, re.M)
    assert out.rstrip().endswith(("flash-attn: installed", "flash-attn: not installed (attention: sdpa)"))


def test_env_with_recipe_says_whether_it_fits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["env", "sentiment-lora", "train.batch_size=8"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("  cpu [cpu]") and "MiB" in line)
    precision = auto.precision(devices.cpu(), load_recipe("sentiment-lora"))  # bf16 where the CPU has it
    assert re.search(rf"{precision}\s+adamw_torch_fused\s+off\s+[\d,]+ MiB\s+yes$", row)


def test_estimate_answers_for_24_and_80_gb_gpus_offline(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "qwen2.5-7b-qlora-sft"]) == 0
    out = capsys.readouterr().out
    assert "data.max_length, an upper bound" in out
    for card in ("24 GB GPU", "80 GB GPU"):
        line = next(line for line in out.splitlines() if line.lstrip().startswith(card))
        assert re.search(r"bf16\s+paged_adamw_8bit\s+(on|off)\s+[\d,]+ MiB\s+yes$", line), line
