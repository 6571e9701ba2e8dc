"""The two baselines: full fine-tuning (every weight) and head-only (a linear probe on a frozen body)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftkit.config.schema import MethodConfig, option
from peftkit.errors import PeftkitError
from peftkit.methods.base import BaseBuilder, Method
from peftkit.registry import METHODS

if TYPE_CHECKING:
    from torch import nn

    from peftkit.config.sections import Recipe

HEAD_WEIGHTS = "head_model.safetensors"


class FullOptions(MethodConfig):
    name: str = option("full", "fine-tuning method (`peftkit methods` lists them)")


@METHODS.register("full")
class FullMethod(Method):
    description = "baseline: every weight trained, the whole model saved"
    config: FullOptions
    quantization_hint = "; quantized weights cannot be trained directly (use qlora)"
    default_learning_rate = 3e-5
    trains_in_model_dtype = True

    def refusal(self, recipe: Recipe) -> str | None:
        if recipe.model.dtype == "float16" and recipe.train.precision == "fp16":
            return ("train.precision fp16 cannot train float16 weights (the gradient scaler refuses fp16 "
                    "gradients); set model.dtype: float32 (fp16 autocast over float32 weights) or use bf16")
        return None
    saved_config = "config.json"
    saved_weights = "model.safetensors"

    def apply(self, model: nn.Module, head_modules: list[str], task_type: Any) -> nn.Module:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return model

    def load(self, directory: Path, build_base: BaseBuilder) -> nn.Module:
        return build_base(path=str(directory))


class HeadOnlyOptions(MethodConfig):
    name: str = option("head_only", "fine-tuning method (`peftkit methods` lists them)")


@METHODS.register("head_only")
class HeadOnlyMethod(Method):
    description = "baseline: frozen body, only the task head trained (linear probe); saves just the head"
    config: HeadOnlyOptions
    head_kinds = ("sequence_classification", "token_classification")  # a causal LM has no separate head
    # the Trainer refuses to train a quantized model that is not a peft model
    quantization_hint = "; the Trainer trains a quantized base only through an adapter (use qlora)"
    default_learning_rate = 2e-3
    saved_config = "config.json"
    saved_weights = HEAD_WEIGHTS

    def apply(self, model: nn.Module, head_modules: list[str], task_type: Any) -> nn.Module:
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(any(_in_module(name, head) for head in head_modules))
        if not any(p.requires_grad for p in model.parameters()):
            raise PeftkitError(f"method head_only: the model has no head module among {head_modules}")
        return model

    def save(self, model: nn.Module, directory: Path) -> None:
        from safetensors.torch import save_file

        state = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(state, str(directory / HEAD_WEIGHTS))
        model.config.save_pretrained(directory)

    def load(self, directory: Path, build_base: BaseBuilder) -> nn.Module:
        from safetensors.torch import load_file

        model = build_base()
        state = load_file(str(directory / HEAD_WEIGHTS))
        missing = set(state) - {n for n, _ in model.named_parameters()}
        if missing:
            raise PeftkitError(f"{directory / HEAD_WEIGHTS}: weights for unknown modules {sorted(missing)[:3]}")
        model.load_state_dict(state, strict=False)
        return model


def _in_module(parameter_name: str, module_name: str) -> bool:
    return parameter_name == module_name or parameter_name.startswith(module_name + ".") or (
        "." + module_name + "." in "." + parameter_name
    )
