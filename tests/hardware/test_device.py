"""`auto` options resolved per device: on this CPU, and on an Ampere-class and an older GPU (CUDA queries mocked)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from peftkit.config.load import load_recipe
from peftkit.hardware import auto
from peftkit.hardware import device as devices


def mock_gpu(monkeypatch: pytest.MonkeyPatch, name: str, capability: tuple[int, int], memory: int,
             flash: bool = False) -> None:
    """Make torch report one CUDA GPU (and flash-attn installed or not)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    monkeypatch.setattr(torch.cuda, "get_device_properties",
                        lambda index=0: SimpleNamespace(name=name, total_memory=memory))
    monkeypatch.setattr(devices, "flash_attn_installed", lambda: flash)


def resolved(name: str, *overrides: str) -> dict[str, object]:
    recipe = load_recipe(name, list(overrides))
    auto.resolve_settings(recipe, devices.current())
    return {"precision": recipe.train.precision, "compute_dtype": recipe.quantization.compute_dtype,
            "optim": recipe.train.optim, "attn": recipe.model.attn_implementation, "tf32": recipe.train.tf32,
            "lm_loss": recipe.train.lm_loss, "packing": getattr(recipe.task, "packing", None)}


def test_auto_is_the_default() -> None:
    recipe = load_recipe("sentiment-lora")
    assert not auto.is_resolved(recipe)
    assert (recipe.train.precision, recipe.quantization.compute_dtype, recipe.train.optim,
            recipe.model.attn_implementation, recipe.train.gradient_checkpointing, recipe.train.lm_loss,
            recipe.train.tf32) == ("auto",) * 7
    assert load_recipe("causal-lm-lora").task.packing == "auto"
    assert recipe.train.torch_compile is False  # opt-in


def test_cpu_resolves_to_fp32_fused_adamw_sdpa_chunked_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a CPU: fused AdamW (torch 2.13's fused CPU step, several times faster), no TF32 (CUDA only), the
    chunked loss (same loss, no full-vocabulary logits) and no packing (sdpa would attend over one long row)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert devices.current().kind == "cpu"
    assert resolved("causal-lm-qlora") == {
        "precision": "fp32", "compute_dtype": "float32", "optim": "adamw_torch_fused", "attn": "sdpa",
        "tf32": False, "lm_loss": "chunked", "packing": False}
    assert resolved("sentiment-lora")["lm_loss"] == "full"  # a classifier's logits are small
    # AdaLoRA adds its orthogonality penalty to the model's own loss, which the chunked loss would leave out
    assert resolved("causal-lm-lora", "method={name: adalora}")["lm_loss"] == "full"
    # FSDP gathers the sharded output layer inside the model's forward only
    assert resolved("causal-lm-lora", "distributed.fsdp=true")["lm_loss"] == "full"


def test_ampere_gpu_resolves_to_bf16_paged_8bit_and_flash(monkeypatch: pytest.MonkeyPatch) -> None:
    mock_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0), 80 * 10**9, flash=True)
    assert devices.current().bf16
    assert resolved("causal-lm-qlora") == {
        "precision": "bf16", "compute_dtype": "bfloat16", "optim": "paged_adamw_8bit", "attn": "flash_attention_2",
        "tf32": True, "lm_loss": "chunked", "packing": True}
    # without quantization fused AdamW; without flash-attn installed, sdpa and so no packing
    monkeypatch.setattr(devices, "flash_attn_installed", lambda: False)
    assert resolved("causal-lm-lora") == {
        "precision": "bf16", "compute_dtype": "bfloat16", "optim": "adamw_torch_fused", "attn": "sdpa",
        "tf32": True, "lm_loss": "chunked", "packing": False}
    monkeypatch.setattr(devices, "liger_installed", lambda: True)
    assert resolved("causal-lm-lora")["lm_loss"] == "liger"
    # packing stays off where the method prepends virtual tokens or the data pads to a fixed length
    monkeypatch.setattr(devices, "flash_attn_installed", lambda: True)
    assert resolved("causal-lm-lora", "method={name: prompt_tuning}")["packing"] is False
    assert resolved("causal-lm-lora", "data.padding=max_length")["packing"] is False
    assert resolved("causal-lm-lora")["packing"] is True


def test_older_gpu_resolves_to_fp16_float16_and_no_flash(monkeypatch: pytest.MonkeyPatch) -> None:
    """4-bit layers compute in float16 there, the half precision fp16 autocast runs in (not float32)."""
    mock_gpu(monkeypatch, "Tesla T4", (7, 5), 16 * 10**9, flash=True)
    assert not devices.current().bf16
    assert resolved("causal-lm-qlora") == {
        "precision": "fp16", "compute_dtype": "float16", "optim": "paged_adamw_8bit", "attn": "sdpa",
        "tf32": False, "lm_loss": "chunked", "packing": False}


def test_explicit_values_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    mock_gpu(monkeypatch, "NVIDIA A100-SXM4-80GB", (8, 0), 80 * 10**9, flash=True)
    assert resolved("causal-lm-qlora", "train.precision=fp32", "train.optim=adamw_torch",
                    "model.attn_implementation=eager", "quantization.compute_dtype=float16", "train.tf32=false",
                    "train.lm_loss=full", "task.packing=true") == {
        "precision": "fp32", "compute_dtype": "float16", "optim": "adamw_torch", "attn": "eager",
        "tf32": False, "lm_loss": "full", "packing": True}


def test_attention_falls_back_to_what_the_model_class_supports() -> None:
    gpu = devices.Device("cuda", "A100", 80 * 10**9, (8, 0))
    neither = type("Plain", (), {})
    sdpa_only = type("SdpaOnly", (), {"_supports_sdpa": True})
    both = type("Both", (), {"_supports_sdpa": True, "_supports_flash_attn": True})
    assert auto.attn_implementation(gpu, neither, flash_installed=True) == "eager"
    assert auto.attn_implementation(gpu, sdpa_only, flash_installed=True) == "sdpa"
    assert auto.attn_implementation(gpu, both, flash_installed=True) == "flash_attention_2"
    assert auto.attn_implementation(gpu, both, flash_installed=False) == "sdpa"


def test_gradient_checkpointing_turns_on_only_when_the_estimate_does_not_fit() -> None:
    from peftkit.hardware.estimate import estimate

    recipe = load_recipe("sentiment-lora", ["train.batch_size=64"])
    gpu = devices.Device("cuda", "A100", 80 * 10**9, (8, 0))
    auto.resolve_settings(recipe, gpu)
    predicted = estimate(recipe.model_copy(update={"train": recipe.train.model_copy(
        update={"gradient_checkpointing": False})}, deep=True), 96, ["negative", "positive"], device=gpu)
    from peftkit.hardware.estimate import DEVICE_RESERVE

    assert predicted.needed == predicted.total + DEVICE_RESERVE["cuda"] > predicted.total  # CUDA context, allocator
    peak = predicted.needed
    small = devices.Device("cuda", "small", peak - 1, (8, 0))
    large = devices.Device("cuda", "large", peak + 1, (8, 0))
    for target, expected in ((small, True), (large, False)):
        trial = recipe.model_copy(deep=True)
        assert auto.resolve_checkpointing(trial, target, 96, ["negative", "positive"]) == {
            "train.gradient_checkpointing": expected}
        assert trial.train.gradient_checkpointing is expected


def test_cpu_run_saves_resolved_values(write_recipe, tmp_path: Path) -> None:
    from peftkit.training.run import train

    result = train(write_recipe({"train.max_steps": 2, "quantization.mode": "none"}))
    saved = yaml.safe_load((result.output_dir / "recipe.yaml").read_text(encoding="utf-8"))
    precision = "bf16" if devices.current().cpu_bf16 else "fp32"  # LoRA: bf16 where the CPU has it natively
    assert saved["train"]["precision"] == precision
    assert saved["train"]["optim"] == "adamw_torch_fused"
    assert saved["train"]["tf32"] is False and saved["train"]["lm_loss"] == "full"
    assert saved["train"]["gradient_checkpointing"] is False
    assert saved["quantization"]["compute_dtype"] == "float32"
    assert saved["model"]["attn_implementation"] == "sdpa"
    assert result.metrics["resolved"]["train.precision"] == precision
    assert result.metrics["device"].startswith("cpu")


def test_the_estimate_takes_a_resolved_recipe_and_the_policy_resolves_a_copy() -> None:
    from peftkit.hardware.estimate import estimate

    recipe = load_recipe("sentiment-lora")
    labels, cpu = ["negative", "positive"], devices.Device("cpu", "cpu", 24 * 2**30)
    with pytest.raises(ValueError, match=r"estimate\(\) takes a resolved recipe; train.precision, "):
        estimate(recipe, 96, labels, device=cpu)
    copy = auto.resolved_for(recipe, cpu, 96, labels)
    assert recipe.train.precision == "auto" and auto.is_resolved(copy) and copy.train.precision == "fp32"
    assert auto.estimate_on(recipe, cpu, 96, labels) == estimate(copy, 96, labels, device=cpu)


def test_a_quantization_config_needs_a_resolved_compute_dtype() -> None:
    from peftkit.config.sections import QuantizationSection
    from peftkit.model.quantization import quantization_config

    with pytest.raises(ValueError, match="compute_dtype is still auto"):
        quantization_config(QuantizationSection(mode="4bit"))
    config = quantization_config(QuantizationSection(mode="4bit", compute_dtype="bfloat16"))
    assert config.bnb_4bit_compute_dtype == torch.bfloat16 and "classifier" in config.llm_int8_skip_modules


def test_explicit_bf16_is_refused_on_a_gpu_that_only_emulates_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch.cuda.is_bf16_supported() counts emulation (a T4 says yes); bf16 needs the native kind."""
    from peftkit.errors import PeftkitError
    from peftkit.hardware.preflight import check_machine

    mock_gpu(monkeypatch, "Tesla T4", (7, 5), 16 * 10**9)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    with pytest.raises(PeftkitError, match="no native bf16"):
        check_machine(load_recipe("sentiment-lora", ["train.precision=bf16", "model.attn_implementation=sdpa"]))
    check_machine(load_recipe("sentiment-lora", ["train.precision=fp16", "model.attn_implementation=sdpa"]))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # an Ampere GPU
    check_machine(load_recipe("sentiment-lora", ["train.precision=bf16", "model.attn_implementation=sdpa"]))


@pytest.mark.parametrize(("method", "quantized", "native", "expected"), [
    ({"name": "lora"}, False, True, "bf16"),
    ({"name": "lora"}, False, False, "fp32"),  # no AMX / AVX512-BF16: bf16 would be emulated, slowly
    ({"name": "lora"}, True, True, "fp32"),
    ({"name": "lora", "use_dora": True}, False, True, "fp32"),
    ({"name": "dora"}, False, True, "fp32"),
    ({"name": "full"}, False, True, "fp32"),
    ({"name": "ia3"}, False, True, "fp32"),
])
def test_auto_precision_on_a_cpu_is_bf16_only_where_measured_and_native(method: dict, quantized: bool, native: bool,
                                                                        expected: str) -> None:
    name = "qlora" if quantized else method["name"]
    recipe = load_recipe("sentiment-lora", {"method": {**method, "name": name},
                                            "quantization.mode": "4bit" if quantized else "none"})
    cpu = devices.Device("cpu", "cpu", 24 * 2**30, cpu_bf16=native)
    assert auto.precision(cpu, recipe) == expected
    assert auto.precision(devices.Device("cuda", "A100", 80 * 2**30, (8, 0)), recipe) == "bf16"
