"""What a fine-tuning method declares: options, supported heads and quantization, apply / save / load."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from peftkit.config.schema import MethodConfig, declared_options, option
from peftkit.errors import PeftkitError
from peftkit.methods.targets import resolve_target_modules

if TYPE_CHECKING:  # declaring a method imports no torch / transformers / peft: light verbs list methods
    from peft import PeftConfig
    from torch import nn
    from transformers import TrainerCallback

    from peftkit.config.sections import Recipe

ALL_HEAD_KINDS = ("sequence_classification", "token_classification", "causal_lm")
ALL_QUANTIZATION = ("none", "8bit", "4bit")
#: peft's names for the scaling and dropout options of LoRA and AdaLoRA (``PeftMethod.renamed``).
LORA_NAMES = {"alpha": "lora_alpha", "dropout": "lora_dropout"}

#: Builds the base model; ``path`` replaces the recipe's model (used to reload fully fine-tuned runs).
BaseBuilder = Callable[..., "nn.Module"]


class Method:
    """Base class of a fine-tuning method. Subclass, set the class attributes, register with
    ``@METHODS.register("name")`` (or an entry point in the ``peftkit.methods`` group). The options class is the
    type of ``config`` (``config: LoraOptions``), declared once: it becomes ``config_cls``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_cls: ClassVar[type[MethodConfig]] = MethodConfig
    head_kinds: ClassVar[tuple[str, ...]] = ALL_HEAD_KINDS
    quantization_modes: ClassVar[tuple[str, ...]] = ("none",)
    quantization_hint: ClassVar[str] = ""  # appended to the refusal of an unsupported quantization mode
    head_hint: ClassVar[str] = ""  # appended to the refusal of an unsupported head kind
    default_learning_rate: ClassVar[float] = 5e-4
    #: Whether the trained weights stay in ``model.dtype`` under mixed precision (full fine-tuning: no fp32 copy
    #: of the whole model); otherwise they are float32 master weights (``master_weights``).
    trains_in_model_dtype: ClassVar[bool] = False
    #: Whether the adapted model adds terms of its own to the loss it returns (AdaLoRA's orthogonality penalty),
    #: so the training loss must come from the model (`train.lm_loss: full`).
    adds_to_model_loss: ClassVar[bool] = False
    #: What ``save`` writes into a run directory and ``load`` reads back: a JSON config and a safetensors weights
    #: file (sharded: ``<weights>.index.json`` beside its shards); checked before ``load``. Empty: not declared.
    saved_config: ClassVar[str] = ""
    saved_weights: ClassVar[str] = ""
    config: MethodConfig

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_cls" not in vars(cls):
            cls.config_cls = declared_options(cls) or cls.config_cls

    def __init__(self, config: MethodConfig) -> None:
        self.config = config

    def refusal(self, recipe: Recipe) -> str | None:
        """Why this method cannot run the recipe (checked at validation), or None; quantization modes and
        head kinds are checked from the class attributes before this."""
        return None

    def bf16_on_cpu(self, recipe: Recipe) -> bool:
        """Whether `train.precision: auto` trains ``recipe`` with bf16 autocast on a CPU with native bf16 (AMX or
        AVX512-BF16): only where it was measured to keep test accuracy (benchmarks/RESULTS.md)."""
        return False

    def master_weights(self, model: nn.Module, precision: str) -> nn.Module:
        """Under bf16 / fp16 mixed precision, the trained parameters (adapters, the task head peft keeps in
        ``modules_to_save``) as float32 master weights: autocast runs the forward in half precision, and fp16's
        gradient scaler refuses fp16 gradients. Unless ``trains_in_model_dtype``; frozen weights are left alone."""
        if precision not in ("bf16", "fp16") or self.trains_in_model_dtype:
            return model
        import torch

        for parameter in model.parameters():
            if parameter.requires_grad and parameter.is_floating_point() and parameter.dtype != torch.float32:
                parameter.data = parameter.data.float()
        return model

    def callbacks(self) -> list[TrainerCallback]:
        """Trainer callbacks the method needs during training (e.g. AdaLoRA's rank budget)."""
        return []

    def learning_rate_factor(self, parameter_name: str) -> float:
        """What the method multiplies ``train.learning_rate`` by for one trained parameter (LoRA+: its B matrices)."""
        return 1.0

    @property
    def scales_learning_rates(self) -> bool:
        """Whether ``learning_rate_factor`` is other than 1 for some parameter (the optimizer then gets groups)."""
        return False

    def apply(self, model: nn.Module, head_modules: list[str], task_type: Any) -> nn.Module:
        """Make ``model`` trainable the method's way; ``head_modules`` must be trained and saved."""
        raise NotImplementedError

    def save(self, model: nn.Module, directory: Path) -> None:
        """Write what was trained to ``directory``."""
        model.save_pretrained(directory)

    def load(self, directory: Path, build_base: BaseBuilder) -> nn.Module:
        """Rebuild the trained model from ``directory`` for inference."""
        raise NotImplementedError


class AdapterOptions(MethodConfig):
    """Options every adapter method that targets modules shares: declared once, here."""

    target_modules: list[str] | str | None = option(
        None, "module names to adapt, or 'all-linear'; empty = the architecture's default (`peftkit methods`)"
    )


def check_targets(model: nn.Module, config: PeftConfig) -> None:
    """Refuse target modules that match no layer (naming the layers there are), and a rank ``r`` above the
    width (smaller side) of a layer it adapts: more trainable parameters than the layer has, no more power."""
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists
    from torch import nn

    targets = getattr(config, "target_modules", None)
    if isinstance(targets, str) or not targets:
        return
    layers = [(name, module) for name, module in model.named_modules() if name]
    if not any(check_target_module_exists(config, name) for name, _ in layers):
        linear = sorted({name.rsplit(".", 1)[-1] for name, module in layers if isinstance(module, nn.Linear)})
        raise PeftkitError(
            f"'method.target_modules': [{', '.join(sorted(targets))}] matches no layer of the model; its linear "
            f"layers are named: {', '.join(linear[:12]) or 'none'} (or use target_modules: all-linear)"
        )
    rank = config.r if isinstance(config, LoraConfig) else None  # LoRA, DoRA, AdaLoRA: r is a matrix rank
    if not isinstance(rank, int):
        return
    for name, module in layers:
        dims = (getattr(module, "in_features", None), getattr(module, "out_features", None))
        weight = getattr(module, "weight", None)
        if None in dims:  # e.g. GPT-2's Conv1D: the weight's shape; a packed 4-bit weight has in/out_features
            if not isinstance(weight, nn.Parameter) or weight.dim() != 2:
                continue
            dims = tuple(weight.shape)
        if not isinstance(dims[0], int) or not check_target_module_exists(config, name):
            continue
        width = min(dims)
        if rank > width:
            raise PeftkitError(
                f"'method.r': {rank} is above the width of the adapted layer '{name}' ({width}); "
                f"use a rank of at most {width} (typically 4-64)"
            )


class PeftMethod(Method):
    """A method that is a peft config: applied with ``get_peft_model``, saved in peft's own format.

    ``peft_type`` names the peft tuner it builds (its config class comes from peft's registry; empty: the method's
    name, as for ``ia3``), which also picks the architecture's default target modules for ``AdapterOptions``.
    The options it passes on are ``copied`` under their own names and ``renamed`` (option → peft field) under
    peft's; values worked out otherwise are added by overriding ``peft_fields``. It trains on an unquantized base
    only, unless it is a ``QuantizablePeftMethod``."""

    quantization_hint = ("; peft has no bitsandbytes layers for it (use lora, qlora, dora, adalora, ia3 or a prompt "
                         "method)")
    peft_type: ClassVar[str] = ""
    #: Whether peft's bitsandbytes layers of this tuner return float32 from a half base (IA3 multiplies by its
    #: float32 vector, AdaLoRA divides by its float32 rank count): on a quantized base its other weights are then
    #: kept in float32 too (``prepared_base``), or the model mixes dtypes where no autocast covers it.
    float32_beside_quantized: ClassVar[bool] = False
    saved_config = "adapter_config.json"  # peft.utils.CONFIG_NAME
    saved_weights = "adapter_model.safetensors"  # peft.utils.SAFETENSORS_WEIGHTS_NAME
    copied: ClassVar[tuple[str, ...]] = ()
    renamed: ClassVar[dict[str, str]] = {}

    @property
    def tuner(self) -> str:
        """The peft tuner this method builds, in lower case (``lora``, ``ia3``, ``p_tuning`` …)."""
        return self.peft_type or self.name

    def peft_fields(self, model: nn.Module) -> dict[str, Any]:
        """Keyword arguments of the peft config (besides ``task_type``) from the options, on ``model``."""
        cfg = self.config
        fields = {name: getattr(cfg, name) for name in self.copied}
        fields |= {peft_name: getattr(cfg, name) for name, peft_name in self.renamed.items()}
        if isinstance(cfg, AdapterOptions):
            fields["target_modules"] = resolve_target_modules(self.tuner, model, cfg.target_modules)
        return fields

    def peft_config(self, model: nn.Module, head_modules: list[str], task_type: Any) -> PeftConfig:
        """The peft config for this method's options on ``model`` (its architecture picks default targets);
        ``apply`` adds the task head modules to train and save (``modules_to_save``)."""
        from peft import PeftType
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

        config_cls = PEFT_TYPE_TO_CONFIG_MAPPING[PeftType(self.tuner.upper())]
        return config_cls(task_type=task_type, **self.peft_fields(model))

    def apply(self, model: nn.Module, head_modules: list[str], task_type: Any) -> nn.Module:
        config = self.peft_config(model, head_modules, task_type)
        config.modules_to_save = head_modules
        check_targets(model, config)
        return get_peft_model(self.prepared_base(model), config)

    def prepared_base(self, model: nn.Module) -> nn.Module:
        """The base as peft wraps it, for training and reloading alike. A quantized base stays as loaded (peft
        freezes it), its other weights (embeddings, norms, lm_head) in model.dtype: peft's
        prepare_model_for_kbit_training would cast them to float32, and as a 4-bit layer returns its input's dtype
        the residual stream would then run in float32 under bf16 autocast. Unless ``float32_beside_quantized``."""
        if self.float32_beside_quantized and getattr(model, "is_quantized", False):
            for parameter in model.parameters():
                if parameter.is_floating_point() and parameter.__class__.__name__ != "Params4bit":
                    parameter.data = parameter.data.float()
        return model

    def load(self, directory: Path, build_base: BaseBuilder) -> nn.Module:
        from peft import PeftModel

        return PeftModel.from_pretrained(self.prepared_base(build_base()), directory)


def get_peft_model(model: nn.Module, config: PeftConfig, *args: Any, **kwargs: Any) -> nn.Module:
    """peft's ``get_peft_model``, imported on first use; ``PeftMethod.apply`` calls it by this name (the seam
    tools/gpu_proof.py wraps)."""
    from peft import get_peft_model as wrap

    return wrap(model, config, *args, **kwargs)


class QuantizablePeftMethod(PeftMethod):
    """A peft method that also trains on an 8-bit or 4-bit bitsandbytes base: peft wraps the quantized layers
    (LoRA and its variants, AdaLoRA, IA3) or leaves them alone (prompt methods)."""

    quantization_modes = ALL_QUANTIZATION
    quantization_hint = ""
