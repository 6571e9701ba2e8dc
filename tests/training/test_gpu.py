"""The GPU path. On a CUDA GPU (marked `gpu`: skipped where torch sees none): the fast recipe trains with bf16 mixed
precision and reloads onto the GPU. On this CPU, what the GPU path does that a CPU can show: bf16 / fp16 weights
and autocast, QLoRA's dtypes on bitsandbytes' CPU 4-bit path, the refusals, the per-rank device map (rank mocked),
the padding token a classifier pools past; and the bf16 tier (slow): every method × quantization mode trains in
bf16, saves, reloads to the trained logits and exports."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from testkit import logits_of, train_and_reload

from peftkit.config.load import recipe_from_dict
from peftkit.errors import PeftkitError
from peftkit.registry import plugins

TEXTS = ["the film was really wonderful", "a boring and clumsy plot", "acting is quite charming"]


@pytest.mark.gpu
def test_bf16_run_on_cuda_learns_and_reloads_to_the_trained_logits(write_recipe) -> None:
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("this GPU has no native bf16 (compute capability below 8.0)")
    # sdpa even where flash-attn is installed: this checks bf16 training and the reload, not the attention kernel
    recipe = write_recipe({"train.precision": "bf16", "model.attn_implementation": "sdpa"})
    out = train_and_reload(recipe, TEXTS)  # the reload, under the same bf16 autocast, gives the trained logits
    result, run = out["result"], out["run"]
    losses = [entry["loss"] for entry in result.metrics["loss_history"]]
    assert len(losses) >= 4 and all(math.isfinite(loss) for loss in losses), losses
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, f"loss did not fall: {losses}"
    assert next(run.model.parameters()).device.type == "cuda"
    saved = yaml.safe_load((result.output_dir / "recipe.yaml").read_text(encoding="utf-8"))
    assert saved["train"]["precision"] == "bf16"


def built(model_dir: Path, precision: str, **sections: Any) -> tuple[Any, torch.nn.Module]:
    """The model a run of ``sections`` on ``model_dir`` trains (base loaded, method applied, master weights) and
    the recipe; quantization's compute dtype follows model.dtype."""
    raw = {"model": {"name": str(model_dir)}, "task": {"head": "sentiment"}, "method": {"name": "lora", "r": 4},
           "train": {"precision": precision}, **sections}
    if raw.get("quantization", {}).get("mode", "none") != "none":
        raw["quantization"].setdefault("compute_dtype", raw["model"].get("dtype", "float32"))
    recipe = recipe_from_dict(raw)
    from peftkit.model.loading import load_base_model

    head, method = plugins(recipe)
    labels = [] if head.kind == "causal_lm" else ["negative", "positive"]
    base, head_modules = load_base_model(recipe.model, recipe.quantization, head, labels)
    return recipe, method.master_weights(method.apply(base, head_modules, head.task_type), precision)


def test_qlora_keeps_the_base_in_model_dtype_and_its_forward_in_bf16(tiny_llama: Path) -> None:
    """peft's prepare_model_for_kbit_training cast embeddings, norms and lm_head to float32, and a 4-bit layer
    returns its input's dtype: under bf16 autocast the MLP then ran in float32. Now only the adapters are fp32."""
    _, model = built(tiny_llama, "bf16", model={"name": str(tiny_llama), "dtype": "bfloat16"},
                     task={"head": "causal_lm"}, method={"name": "qlora", "r": 4},
                     quantization={"mode": "4bit", "quant_type": "nf4"})
    dtypes = {name: p.dtype for name, p in model.named_parameters() if p.__class__.__name__ != "Params4bit"}
    frozen = {name: dtype for name, dtype in dtypes.items() if "lora_" not in name}
    assert any("embed_tokens" in n for n in frozen) and any("norm" in n for n in frozen)
    assert set(frozen.values()) == {torch.bfloat16}, frozen
    assert {dtypes[n] for n in dtypes if "lora_" in n} == {torch.float32}
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    seen: dict[str, torch.dtype] = {}
    up = model.get_submodule("base_model.model.model.layers.0.mlp.up_proj")

    def hook(module: torch.nn.Module, args: Any, output: torch.Tensor) -> None:
        seen["up_proj"] = output.dtype

    up.register_forward_hook(hook)
    device = next(model.parameters()).device  # bitsandbytes put the base on the GPU where there is one
    with torch.autocast(device.type, dtype=torch.bfloat16):
        logits = model(input_ids=torch.tensor([[5, 6, 7, 8]], device=device)).logits
    assert seen["up_proj"] == torch.bfloat16 and logits.dtype == torch.bfloat16


def test_fp16_trains_float16_weights_through_float32_master_weights(tiny_bert: Path) -> None:
    """fp16 mixed precision over a float16 model: the adapters and the head peft keeps (modules_to_save) are fp32,
    so the gradient scaler can unscale them (fp16 gradients: 'Attempting to unscale FP16 gradients')."""
    _, model = built(tiny_bert, "fp16", model={"name": str(tiny_bert), "dtype": "float16"})
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    assert any("modules_to_save" in name for name in trained) and any("lora_" in name for name in trained)
    assert {p.dtype for p in trained.values()} == {torch.float32}
    assert {p.dtype for p in model.parameters() if not p.requires_grad} == {torch.float16}
    optimizer = torch.optim.AdamW(trained.values(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu")
    with torch.autocast("cpu", dtype=torch.float16):
        loss = model(input_ids=torch.tensor([[2, 8, 9, 3]]), labels=torch.tensor([1])).loss
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    assert all(torch.isfinite(p).all() for p in trained.values())


def test_full_fine_tuning_keeps_model_dtype_and_refuses_float16_under_fp16(tiny_bert: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    _, model = built(tiny_bert, "bf16", model={"name": str(tiny_bert), "dtype": "bfloat16"},
                     method={"name": "full"})
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}  # no fp32 copy of the whole model
    explicit = {"model": {"name": str(tiny_bert), "dtype": "float16"}, "task": {"head": "sentiment"},
                "method": {"name": "full"}, "train": {"precision": "fp16"}}
    with pytest.raises(PeftkitError, match=r"train\.precision fp16 cannot train float16 weights"):
        recipe_from_dict(explicit)
    # `auto` precision becomes fp16 on a pre-Ampere GPU: refused once resolved, before anything loads
    from peftkit.hardware.device import Device
    from peftkit.training.build import prepare_recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    recipe = recipe_from_dict({**explicit, "train": {"precision": "auto"}})
    with pytest.raises(PeftkitError, match=r"train\.precision fp16 cannot train float16 weights"):
        prepare_recipe(recipe, Device("cuda", "Tesla T4", 16 * 2**30, (7, 5)))


@pytest.mark.parametrize("mode", ["4bit", "8bit"])
def test_head_only_on_a_quantized_base_is_refused_up_front(tiny_bert: Path, mode: str) -> None:
    with pytest.raises(PeftkitError) as refused:
        recipe_from_dict({"model": {"name": str(tiny_bert)}, "task": {"head": "sentiment"},
                          "method": {"name": "head_only"}, "quantization": {"mode": mode}})
    assert str(refused.value).count("\n") == 0
    assert f"'quantization.mode' {mode} does not work with method 'head_only' (it supports: none)" in str(refused.value)


class Loaded(Exception):
    """Raised by the stand-in for from_pretrained once it has seen its arguments."""


@pytest.mark.parametrize(("mode", "rank", "device_map"), [("4bit", "1", {"": 1}), ("8bit", "3", {"": 3}),
                                                          ("4bit", None, {"": 0}), ("none", "1", None)])
def test_a_quantized_base_loads_onto_the_gpu_of_its_rank(tiny_bert: Path, monkeypatch: pytest.MonkeyPatch,
                                                         mode: str, rank: str | None, device_map: Any) -> None:
    """Under `train --nproc N` each process loads its quantized base onto cuda:LOCAL_RANK (bitsandbytes places
    the weights at load time), not every one onto cuda:0."""
    from peftkit.model.loading import load_base_model

    recipe = recipe_from_dict({"model": {"name": str(tiny_bert)}, "task": {"head": "sentiment"},
                               "method": {"name": "qlora" if mode != "none" else "lora"},
                               "quantization": {"mode": mode, "compute_dtype": "bfloat16"}})
    head, _ = plugins(recipe)
    seen: dict[str, Any] = {}

    def from_pretrained(source: str, **kwargs: Any) -> None:
        seen.update(kwargs)
        raise Loaded

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    if rank is None:
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    else:
        monkeypatch.setenv("LOCAL_RANK", rank)
    monkeypatch.setattr(head.auto_class, "from_pretrained", from_pretrained)
    with pytest.raises(Loaded):
        load_base_model(recipe.model, recipe.quantization, head, ["negative", "positive"])
    assert seen.get("device_map") == device_map


def test_a_classifier_pools_the_last_token_before_the_tokenizers_padding(tiny_llama: Path, tmp_path: Path) -> None:
    """Qwen's config names eos (<|im_end|>) as its pad token while its tokenizer pads with <|endoftext|>: a
    classifier then pooled a padding token. The config's pad_token_id is the tokenizer's."""
    from peftkit.model.loading import load_tokenizer

    model_dir = tmp_path / "llama-eos-pad"
    shutil.copytree(tiny_llama, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    config["pad_token_id"] = config["eos_token_id"]  # as Qwen2.5-Instruct: pad = eos, not the tokenizer's pad
    (model_dir / "config.json").write_text(json.dumps(config))
    recipe, model = built(model_dir, "fp32", task={"head": "classification"}, method={"name": "head_only"})
    tokenizer = load_tokenizer(recipe.model)
    assert tokenizer.pad_token_id != config["eos_token_id"]
    assert model.config.pad_token_id == tokenizer.pad_token_id
    short, long = "the film was good", "the film was good and the plot was great"
    padded = logits_of(model, tokenizer, [short, long])[0]
    alone = logits_of(model, tokenizer, [short])[0]
    torch.testing.assert_close(padded, alone)


#: Options that keep the tiny runs learnable in a dozen steps (as tests/methods/test_methods.py uses them).
BF16_OPTIONS: dict[str, dict[str, Any]] = {
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "qlora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "dora": {"r": 4, "alpha": 8, "dropout": 0.0}, "adalora": {"init_r": 6, "target_r": 4}, "vera": {"r": 16},
    "oft": {"oft_block_size": 16}, "prefix_tuning": {"num_virtual_tokens": 4},
    "prompt_tuning": {"num_virtual_tokens": 4}, "p_tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 32},
}
BF16_LR = {"full": 1e-3, "head_only": 5e-2, "prompt_tuning": 5e-2, "vera": 5e-2}


def bf16_recipe(method: str, mode: str, head: str = "sentiment") -> dict[str, Any]:
    """The method on a bfloat16 base under bf16 mixed precision (``mode`` quantization, compute in bfloat16)."""
    quantization = {"mode": mode} | ({"compute_dtype": "bfloat16"} if mode != "none" else {})
    task = {"head": head} | ({"template": "plain", "test_samples": 0} if head == "causal_lm" else {})
    return {"method": {"name": method, **BF16_OPTIONS.get(method, {})}, "quantization": quantization,
            "task": task, "model.dtype": "bfloat16", "train.precision": "bf16", "train.max_steps": 12,
            "train.logging_steps": 1, "train.learning_rate": BF16_LR.get(method, 1e-2)}


def bf16_cells() -> list[tuple[str, str]]:
    """Every method × quantization mode that validates on this machine (its refusals are tested elsewhere)."""
    from peftkit.registry import METHODS

    cells = []
    for method in METHODS.names():
        for mode in METHODS.get(method).quantization_modes:
            raw = {"model": {"name": "minilm-l6"}, "task": {"head": "sentiment"}, "method": {"name": method},
                   "quantization": {"mode": mode}}
            try:
                recipe_from_dict(raw)
            except PeftkitError:
                continue
            cells.append((method, mode))
    return cells


@pytest.fixture(scope="module")
def bf16_world(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from testkit import write_learnable_data

    root = tmp_path_factory.mktemp("bf16")
    return {**tiny_models, "root": root, **write_learnable_data(root, ("text", "causal"), 160)}


def train_bf16_reload_export(world: dict[str, Path], method: str, mode: str, head: str = "sentiment") -> None:
    """Train in bf16 (loss finite and falling), reload to the trained logits under the same autocast, export (merged
    where the method merges, else the adapter) with the exported model agreeing with the run."""
    from testkit import ROUNDED_RELOAD, logits_probe, tiny_recipe, write_recipe_file

    import peftkit
    from peftkit.export import export_run
    from peftkit.rundir.load import load_run

    name = f"{method}-{mode}-{head}"
    causal = head == "causal_lm"
    texts = ["colour of lime?", "colour of plum?"] if causal else TEXTS
    raw = tiny_recipe(world["llama" if causal else "bert"], world["causal" if causal else "text"],
                      bf16_recipe(method, mode, head), {"output_dir": str(world["root"] / name)})
    probe = logits_probe(texts)
    result = peftkit.train(write_recipe_file(world["root"] / f"{name}.yaml", raw), callbacks=[probe])
    losses = [entry["loss"] for entry in result.metrics["loss_history"]]
    assert all(math.isfinite(loss) for loss in losses) and sum(losses[-3:]) < sum(losses[:3]), losses
    run = load_run(result.output_dir)
    assert run.recipe.train.precision == "bf16" and run.recipe.model.dtype == "bfloat16"
    reloaded = logits_of(run.model, run.tokenizer, texts, precision="bf16")
    assert not torch.allclose(probe.trained, probe.untrained, atol=1e-4), "training did not move the logits"
    if method in ROUNDED_RELOAD:
        torch.testing.assert_close(reloaded, probe.trained, rtol=0, atol=0.05)
    else:
        assert torch.equal(reloaded, probe.trained), (reloaded - probe.trained).abs().max()
    # prompt methods have nothing to merge into the weights; peft merges no (IA)³ into a quantized base
    adapter = method in ("prefix_tuning", "prompt_tuning", "p_tuning") or (method == "ia3" and mode != "none")
    report = export_run(result.output_dir, world["root"] / f"{name}-export", mode="adapter" if adapter else "merge",
                        samples=16)
    parity = report["parity"]
    assert report["dtype"] == "bfloat16" and parity["prediction_agreement"] >= 0.85, parity
    if mode == "none":  # a merge into bf16 weights rounds once; into a de-quantized base, more
        assert parity["max_abs_logit_diff"] <= 0.05 * max(1.0, parity["max_abs_logit"]), parity


@pytest.mark.slow
@pytest.mark.parametrize(("method", "mode"), bf16_cells(), ids=[f"{m}-{q}" for m, q in bf16_cells()])
def test_bf16_tier_every_method_and_quantization_trains_reloads_and_exports(bf16_world: dict[str, Path],
                                                                           method: str, mode: str) -> None:
    train_bf16_reload_export(bf16_world, method, mode)


@pytest.mark.slow
@pytest.mark.parametrize(("method", "mode"), [("lora", "none"), ("qlora", "4bit"), ("qlora", "8bit")])
def test_bf16_tier_causal_lm(bf16_world: dict[str, Path], method: str, mode: str) -> None:
    train_bf16_reload_export(bf16_world, method, mode, head="causal_lm")
