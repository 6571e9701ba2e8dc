"""FastDropout: the same Bernoulli mask distribution as torch's dropout, its gradient, and where training uses it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from peftkit.model.fast_dropout import FastDropout, keep_mask, lane_thresholds, use_fast_dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.9])
def test_each_element_is_kept_with_probability_one_minus_p(p: float) -> None:
    torch.manual_seed(0)
    count = 2_000_000
    kept = keep_mask(torch.Size([count]), p).double()
    tolerance = 5 * math.sqrt(p * (1 - p) / count)  # five standard deviations of the binomial share
    assert abs(kept.mean().item() - (1 - p)) < tolerance
    for lane in range(4):  # every lane of a 64-bit draw on its own, the top lane's 15 bits included
        assert abs(kept[lane::4].mean().item() - (1 - p)) < 2 * tolerance


def test_neighbouring_elements_are_independent() -> None:
    torch.manual_seed(1)
    kept = keep_mask(torch.Size([1_000_000]), 0.5).double()
    both = (kept[:-1] * kept[1:]).mean().item()
    assert abs(both - 0.25) < 0.003  # P(a and b) = P(a) P(b) for adjacent elements, lanes of one draw included


def test_thresholds_round_p_to_a_lane_step() -> None:
    low = lane_thresholds(0.1)
    assert low.tolist() == [-32768 + 6554, -32768 + 6554, -32768 + 6554, 3277]


def test_training_forward_scales_the_kept_elements_and_the_gradient_is_the_mask() -> None:
    torch.manual_seed(2)
    x = torch.full((64, 256), 2.0, requires_grad=True)
    dropout = FastDropout(0.25).train()
    y = dropout(x)
    kept = y != 0
    assert torch.allclose(y[kept], torch.tensor(2.0 / 0.75))
    assert 0.70 < kept.double().mean().item() < 0.80
    y.sum().backward()
    assert torch.equal(x.grad, kept.float() / 0.75)


def test_evaluation_and_p_zero_are_the_identity() -> None:
    x = torch.randn(8, 16)
    assert torch.equal(FastDropout(0.5).eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)


def test_a_seed_gives_the_same_mask() -> None:
    x = torch.ones(32, 32)
    dropout = FastDropout(0.3).train()
    torch.manual_seed(7)
    first = dropout(x)
    torch.manual_seed(7)
    assert torch.equal(dropout(x), first)


def test_every_plain_dropout_of_a_model_is_swapped_in_place() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), nn.Sequential(nn.Dropout(0.2)), nn.Linear(4, 2))
    assert use_fast_dropout(model) == 2
    assert [type(m) for m in model.modules() if isinstance(m, nn.Dropout)] == [FastDropout, FastDropout]
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.1, 0.2]
    assert use_fast_dropout(model) == 0  # already swapped


def test_cpu_training_uses_it_for_the_base_and_the_adapter(write_recipe: Any, tmp_path: Path) -> None:
    from peftkit.config.load import load_recipe
    from peftkit.training.build import build_trainer

    recipe = load_recipe(write_recipe({"method": {"name": "lora", "r": 4, "dropout": 0.1}}))
    model = build_trainer(recipe, tmp_path / "run").trainer.model
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Dropout)]
    assert any("lora_dropout" in name for name in names) and any("lora" not in name for name in names)
    assert all(isinstance(m, FastDropout) for m in model.modules() if isinstance(m, nn.Dropout))
