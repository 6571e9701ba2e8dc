"""Prompt-learning methods: trained virtual tokens in front of the input (prompt tuning, P-tuning) or in
every layer's keys and values (prefix tuning); the base model stays untouched."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from peft import PeftConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig
from torch import nn

from peftkit.methods.base import ALL_HEAD_KINDS, ALL_QUANTIZATION, PeftMethod
from peftkit.registry import METHODS
from peftkit.schema import MethodConfig, option

if TYPE_CHECKING:
    from peftkit.recipe import Recipe


class PrefixTuningOptions(MethodConfig):
    name: str = option("prefix_tuning", "fine-tuning method (`peftkit methods` lists them)")
    num_virtual_tokens: int = option(20, "trained virtual tokens (prompt methods)", ge=1)
    prefix_projection: bool = option(False, "prefix tuning: produce the prefix through a two-layer MLP")
    encoder_hidden_size: int | None = option(
        None, "hidden size of the prefix MLP (prefix_projection) or the P-tuning encoder; empty = the model's", ge=1
    )


class PromptTuningOptions(MethodConfig):
    name: str = option("prompt_tuning", "fine-tuning method (`peftkit methods` lists them)")
    num_virtual_tokens: int = option(20, "trained virtual tokens (prompt methods)", ge=1)
    init: Literal["random", "text"] = option(
        "random", "prompt tuning: start the virtual tokens random, or as the embeddings of method.init_text"
    )
    init_text: str = option("", "prompt tuning: text whose token embeddings start the virtual tokens (init: text)")


class PTuningOptions(MethodConfig):
    name: str = option("p_tuning", "fine-tuning method (`peftkit methods` lists them)")
    num_virtual_tokens: int = option(20, "trained virtual tokens (prompt methods)", ge=1)
    encoder_type: Literal["MLP", "LSTM"] = option("MLP", "P-tuning: network that produces the virtual tokens")
    encoder_hidden_size: int | None = option(
        None, "hidden size of the prefix MLP (prefix_projection) or the P-tuning encoder; empty = the model's", ge=1
    )
    encoder_num_layers: int = option(2, "P-tuning: layers of the encoder", ge=1)
    encoder_dropout: float = option(0.0, "P-tuning: dropout in the encoder", ge=0, lt=1)


class PromptMethod(PeftMethod):
    """Shared by the three: any quantization (the base is frozen), no packing."""

    quantization_modes = ALL_QUANTIZATION
    default_learning_rate = 1e-2
    head_kinds = ("sequence_classification", "causal_lm")
    head_hint = ("; peft prepends the virtual tokens to the input, so per-token outputs no longer line up with "
                 "the tags (prefix_tuning keeps them in the keys and values and works)")

    def refusal(self, recipe: Recipe) -> str | None:
        if getattr(recipe.task, "packing", False):
            return "virtual tokens cannot be packed with other examples; set task.packing: false"
        return None


@METHODS.register("prefix_tuning")
class PrefixTuningMethod(PromptMethod):
    name = "prefix_tuning"
    description = "prefix tuning: trained key/value prefixes in every attention layer (Li & Liang 2021)"
    config_cls = PrefixTuningOptions
    head_kinds = ALL_HEAD_KINDS

    def peft_config(self, model: nn.Module, head_modules: list[str], task_type: Any) -> PeftConfig:
        cfg = self.config
        return PrefixTuningConfig(
            task_type=task_type,
            num_virtual_tokens=cfg.num_virtual_tokens,
            prefix_projection=cfg.prefix_projection,
            encoder_hidden_size=cfg.encoder_hidden_size or model.config.hidden_size,
            modules_to_save=head_modules,
        )


@METHODS.register("prompt_tuning")
class PromptTuningMethod(PromptMethod):
    name = "prompt_tuning"
    description = "prompt tuning: trained soft-prompt embeddings before the input (Lester et al. 2021)"
    config_cls = PromptTuningOptions

    def refusal(self, recipe: Recipe) -> str | None:
        if self.config.init == "text" and not self.config.init_text.strip():
            return "method.init: text needs method.init_text (the words whose embeddings start the prompt)"
        return super().refusal(recipe)

    def peft_config(self, model: nn.Module, head_modules: list[str], task_type: Any) -> PeftConfig:
        cfg = self.config
        text = cfg.init == "text"
        return PromptTuningConfig(
            task_type=task_type,
            num_virtual_tokens=cfg.num_virtual_tokens,
            prompt_tuning_init="TEXT" if text else "RANDOM",
            prompt_tuning_init_text=cfg.init_text if text else None,
            tokenizer_name_or_path=model.config._name_or_path if text else None,
            modules_to_save=head_modules,
        )


@METHODS.register("p_tuning")
class PTuningMethod(PromptMethod):
    name = "p_tuning"
    description = "P-tuning: virtual tokens produced by a small trained encoder (Liu et al. 2021)"
    config_cls = PTuningOptions

    def peft_config(self, model: nn.Module, head_modules: list[str], task_type: Any) -> PeftConfig:
        cfg = self.config
        return PromptEncoderConfig(
            task_type=task_type,
            num_virtual_tokens=cfg.num_virtual_tokens,
            encoder_reparameterization_type=cfg.encoder_type,
            encoder_hidden_size=cfg.encoder_hidden_size or model.config.hidden_size,
            encoder_num_layers=cfg.encoder_num_layers,
            encoder_dropout=cfg.encoder_dropout,
            modules_to_save=head_modules,
        )
