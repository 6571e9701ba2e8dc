"""Prompt-learning methods: trained virtual tokens in front of the input (prompt tuning, P-tuning) or in
every layer's keys and values (prefix tuning); the base model stays untouched."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from peft import PeftConfig, TaskType
from torch import nn

from peftkit.config.schema import MethodConfig, option
from peftkit.errors import PeftkitError
from peftkit.methods.base import ALL_HEAD_KINDS, BaseBuilder, QuantizablePeftMethod
from peftkit.registry import METHODS

if TYPE_CHECKING:
    from peftkit.config.sections import Recipe


class PromptOptions(MethodConfig):
    """Options every prompt method shares: declared once, here."""

    num_virtual_tokens: int = option(20, "trained virtual tokens (prompt methods)", ge=1)


class PrefixTuningOptions(PromptOptions):
    name: str = option("prefix_tuning", "fine-tuning method (`peftkit methods` lists them)")
    prefix_projection: bool = option(False, "prefix tuning: produce the prefix through a two-layer MLP")
    encoder_hidden_size: int | None = option(
        None, "hidden size of the prefix MLP (prefix_projection) or the P-tuning encoder; empty = the model's", ge=1
    )


class PromptTuningOptions(PromptOptions):
    name: str = option("prompt_tuning", "fine-tuning method (`peftkit methods` lists them)")
    init: Literal["random", "text"] = option(
        "random", "prompt tuning: start the virtual tokens random, or as the embeddings of method.init_text"
    )
    init_text: str = option("", "prompt tuning: text whose token embeddings start the virtual tokens (init: text)")


class PTuningOptions(PromptOptions):
    name: str = option("p_tuning", "fine-tuning method (`peftkit methods` lists them)")
    encoder_type: Literal["MLP", "LSTM"] = option("MLP", "P-tuning: network that produces the virtual tokens")
    encoder_hidden_size: int | None = option(
        None, "hidden size of the prefix MLP (prefix_projection) or the P-tuning encoder; empty = the model's", ge=1
    )
    encoder_num_layers: int = option(2, "P-tuning: layers of the encoder", ge=1)
    encoder_dropout: float = option(0.0, "P-tuning: dropout in the encoder", ge=0, lt=1)


class PromptMethod(QuantizablePeftMethod):
    """Shared by the three: any quantization (the base is frozen), no packing; an empty encoder_hidden_size
    (prefix MLP, P-tuning encoder) is the model's hidden size."""

    default_learning_rate = 1e-2
    head_kinds = ("sequence_classification", "causal_lm")
    head_hint = ("; peft prepends the virtual tokens to the input, so per-token outputs no longer line up with "
                 "the tags (prefix_tuning keeps them in the keys and values and works)")
    copied = ("num_virtual_tokens",)

    def refusal(self, recipe: Recipe) -> str | None:
        if getattr(recipe.task, "packing", False) is True:
            return "virtual tokens cannot be packed with other examples; set task.packing: false"
        return None

    def peft_fields(self, model: nn.Module) -> dict[str, Any]:
        fields = super().peft_fields(model)
        if "encoder_hidden_size" in fields:
            fields["encoder_hidden_size"] = fields["encoder_hidden_size"] or model.config.hidden_size
        return fields


def accept_past_key_values(model: nn.Module, task_type: Any) -> nn.Module:
    """Let peft hand its prefix to a classification model, which peft checks for a ``past_key_values`` argument.

    transformers 5.24 renamed that argument to ``cache`` (the old name still works until 5.40); peft 0.21
    looks the old name up in the signatures of the model and then of its backbone, and refuses without it.
    The first of the two that takes ``cache`` gets a ``forward`` that also takes ``past_key_values`` and
    passes it on as ``cache``. Causal LMs need nothing (peft passes the prefix without checking); a model
    whose forward takes neither cannot carry a prefix and is refused in one line before training starts.
    """
    if task_type not in (TaskType.SEQ_CLS, TaskType.TOKEN_CLS):
        return model
    for module in (model, getattr(model, model.base_model_prefix, model)):
        params = inspect.signature(module.forward).parameters
        if "past_key_values" in params:
            return model
        if "cache" in params:
            module.forward = _renaming_forward(module.forward)
            return model
    raise PeftkitError(
        f"method 'prefix_tuning': {type(model).__name__} takes no past key values, so it cannot carry a prefix; "
        "use prompt_tuning, p_tuning or lora with this model"
    )


def _renaming_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    def renamed(*args: Any, past_key_values: Any = None, **kwargs: Any) -> Any:
        if past_key_values is not None:
            kwargs["cache"] = past_key_values
        return forward(*args, **kwargs)

    return renamed


@METHODS.register("prefix_tuning")
class PrefixTuningMethod(PromptMethod):
    description = "prefix tuning: trained key/value prefixes in every attention layer (Li & Liang 2021)"
    config: PrefixTuningOptions
    head_kinds = ALL_HEAD_KINDS
    copied = (*PromptMethod.copied, "prefix_projection", "encoder_hidden_size")

    def apply(self, model: nn.Module, head_modules: list[str], task_type: Any) -> nn.Module:
        return super().apply(accept_past_key_values(model, task_type), head_modules, task_type)

    def load(self, directory: Path, build_base: BaseBuilder) -> nn.Module:
        task_type = PeftConfig.from_pretrained(str(directory)).task_type
        return super().load(directory, lambda *a, **kw: accept_past_key_values(build_base(*a, **kw), task_type))


@METHODS.register("prompt_tuning")
class PromptTuningMethod(PromptMethod):
    description = "prompt tuning: trained soft-prompt embeddings before the input (Lester et al. 2021)"
    config: PromptTuningOptions

    def refusal(self, recipe: Recipe) -> str | None:
        if self.config.init == "text" and not self.config.init_text.strip():
            return "method.init: text needs method.init_text (the words whose embeddings start the prompt)"
        return super().refusal(recipe)

    def peft_fields(self, model: nn.Module) -> dict[str, Any]:
        text = self.config.init == "text"
        return {
            **super().peft_fields(model),
            "prompt_tuning_init": "TEXT" if text else "RANDOM",
            "prompt_tuning_init_text": self.config.init_text if text else None,
            "tokenizer_name_or_path": model.config._name_or_path if text else None,
        }


@METHODS.register("p_tuning")
class PTuningMethod(PromptMethod):
    description = "P-tuning: virtual tokens produced by a small trained encoder (Liu et al. 2021)"
    config: PTuningOptions
    copied = (*PromptMethod.copied, "encoder_hidden_size", "encoder_num_layers", "encoder_dropout")
    renamed: ClassVar[dict[str, str]] = {"encoder_type": "encoder_reparameterization_type"}
