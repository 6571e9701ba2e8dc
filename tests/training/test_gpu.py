"""On a CUDA GPU (marked `gpu`: skipped where torch sees none): the fast recipe trains with bf16 mixed precision, its
loss stays finite and falls, and the saved run reloads onto the GPU with the trained model's logits."""

from __future__ import annotations

import math

import pytest
import torch
import yaml
from testkit import train_and_reload

TEXTS = ["the film was really wonderful", "a boring and clumsy plot", "acting is quite charming"]


@pytest.mark.gpu
def test_bf16_run_on_cuda_learns_and_reloads_to_the_trained_logits(write_recipe) -> None:
    if not torch.cuda.is_bf16_supported():
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
