"""Predict a recipe's peak training memory before running it: weights by precision, trainable state, activations.

The model is built on the meta device (no weights allocated), the method applied to it, and every parameter
counted by where it ends up: quantized, frozen, or trained with gradients and optimizer state.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from accelerate import init_empty_weights
from datasets import DatasetDict
from torch import nn

from peftkit import device as devices
from peftkit.errors import PeftkitError
from peftkit.heads.base import KNOWN_HEAD_MODULES, Head
from peftkit.modeling import load_tokenizer, model_config
from peftkit.pipeline import build_splits
from peftkit.recipe import DataSection, Recipe
from peftkit.registry import HEADS, METHODS

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: Optimizer state bytes per trainable parameter (AdamW: two fp32 moments; 8-bit AdamW: two uint8 ones).
OPTIMIZER_BYTES = {"adamw_torch": 8, "adamw_bnb_8bit": 2, "paged_adamw_8bit": 2, "paged_adamw_32bit": 8,
                   "adafactor": 0, "sgd": 0}
#: Bytes per quantized weight: 4-bit packs two per byte plus one fp32 absmax per block of 64 (double
#: quantization: a uint8 absmax per 64 and an fp32 per 256 blocks); 8-bit is one byte plus a per-row fp32 scale.
QUANT_WEIGHT_BYTES = {("4bit", True): 0.5 + 1 / 64 + 4 / (64 * 256), ("4bit", False): 0.5 + 4 / 64,
                      ("8bit", True): 1.0, ("8bit", False): 1.0}
SKIPPED = (*KNOWN_HEAD_MODULES, "lm_head")


@dataclass
class MemoryEstimate:
    """Predicted peak training memory in bytes, by component."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    trainable_params: int
    total_params: int
    sequence_length: int

    @property
    def floor(self) -> int:
        """Bytes no run can go below: weights plus trainable state (gradients, optimizer)."""
        return self.weights + self.gradients + self.optimizer

    @property
    def total(self) -> int:
        """The predicted peak: the floor plus activations."""
        return self.floor + self.activations

    def as_dict(self) -> dict[str, Any]:
        """Every component and the floor and total, for result files."""
        return {**asdict(self), "floor": self.floor, "total": self.total}


def _config(recipe: Recipe, head: Head, labels: list[str]) -> Any:
    kwargs = head.model_kwargs(labels) if head.kind != "causal_lm" else {}
    overrides = recipe.model.config_overrides if recipe.model.random_init else {}
    return model_config(recipe.model, **overrides, **kwargs)


def meta_model(recipe: Recipe, labels: list[str]) -> nn.Module:
    """The recipe's model with its method applied, on the meta device."""
    head: Head = HEADS.get(recipe.task.head)(recipe.task)
    method = METHODS.get(recipe.method.name)(recipe.method)
    config = _config(recipe, head, labels)
    with init_empty_weights():
        model = head.auto_class.from_config(config, trust_remote_code=recipe.model.trust_remote_code)
        head_modules = sorted({name for name, _ in model.named_children()} & set(KNOWN_HEAD_MODULES))
        return method.apply(model, head_modules, head.task_type)


def longest_sequence(recipe: Recipe, head: Head) -> tuple[int, list[str]]:
    """The padded length of the longest training batch, and the label names (from the data)."""
    parts = {"max_length": (), "dynamic": ("train",)}.get(recipe.data.padding, ("train", "validation", "test"))
    data = build_splits(recipe, head, load_tokenizer(recipe.model), parts=parts)
    return padded_length(data.tokenized, recipe.data), data.label_names


def padded_length(tokenized: DatasetDict, data: DataSection) -> int:
    """The padded length of the longest training batch of already tokenized splits."""
    if data.padding == "max_length":
        return data.max_length
    parts = [tokenized["train"]] if data.padding == "dynamic" else list(tokenized.values())
    return max(len(ids) for part in parts for ids in part["input_ids"])


def sequence_for(recipe: Recipe) -> tuple[int, list[str], str]:
    """(padded length of the longest batch, label names, where the length came from).

    When the data or the tokenizer cannot be loaded (offline, hub only) but the model's config can, the
    length is data.max_length, an upper bound, and the labels are the recipe's task.labels."""
    head: Head = HEADS.get(recipe.task.head)(recipe.task)
    try:
        length, labels = longest_sequence(recipe, head)
        return length, labels, "longest training batch"
    except PeftkitError as exc:
        if head.kind != "causal_lm" and not recipe.task.labels:
            raise
        model_config(recipe.model)
        cause = str(exc) if len(str(exc)) < 90 else str(exc)[:87] + "..."
        return (recipe.data.max_length, list(recipe.task.labels),
                f"data.max_length, an upper bound: the tokenizer or data could not be loaded here ({cause})")


def _weight_bytes(model: nn.Module, recipe: Recipe) -> int:
    mode, dtype_bytes = recipe.quantization.mode, DTYPE_BYTES[recipe.model.dtype]
    per_quantized = QUANT_WEIGHT_BYTES.get((mode, recipe.quantization.double_quant), 0.0)
    total = 0.0
    for name, module in model.named_modules():
        for pname, parameter in module.named_parameters(recurse=False):
            n = parameter.numel()
            quantized = (mode != "none" and isinstance(module, nn.Linear) and pname == "weight"
                         and not parameter.requires_grad and not any(s in name.split(".") for s in SKIPPED))
            if quantized:
                total += n * per_quantized + (module.out_features * 4 if mode == "8bit" else 0)
            else:
                total += n * (4 if parameter.requires_grad else dtype_bytes)
    return int(total)


def _activation_bytes(config: Any, recipe: Recipe, seq: int, trainable_body: bool, causal: bool) -> int:
    """Korthikanti et al. (2022): s·b·h·(34 + 5·a·s/h) bytes per layer in 16-bit; doubled for fp32 runs.
    A frozen body (head only) keeps no activations for backward: one layer's forward working set instead."""
    text = getattr(config, "text_config", config)
    hidden = text.hidden_size
    layers = text.num_hidden_layers
    heads = text.num_attention_heads
    half = recipe.train.precision != "fp32" or recipe.model.dtype != "float32"
    scale = 1 if half else 2
    batch = recipe.train.batch_size
    per_layer = seq * batch * hidden * (34 + 5 * heads * seq / hidden) * scale
    logits = 2 * batch * seq * text.vocab_size * 4 if causal else 0
    if recipe.train.gradient_checkpointing:
        stored = layers * seq * batch * hidden * 2 * scale + per_layer
    else:
        stored = layers * per_layer
    train = (stored if trainable_body else per_layer) + logits
    eval_batch = recipe.train.eval_batch_size
    evaluation = seq * eval_batch * (getattr(text, "intermediate_size", 4 * hidden) + 3 * hidden + heads * seq) * 4
    return int(max(train, evaluation))


def estimate(recipe: Recipe, sequence_length: int | None = None, labels: list[str] | None = None,
             device: devices.Device | None = None) -> MemoryEstimate:
    """Predict the peak training memory of ``recipe`` on ``device`` (default: this machine's), its `auto`
    options resolved for that device; the data is tokenized to find the longest batch unless
    ``sequence_length`` (and ``labels``) are given."""
    head: Head = HEADS.get(recipe.task.head)(recipe.task)
    if sequence_length is None or labels is None:
        sequence_length, found = longest_sequence(recipe, head)
        labels = labels or found
    if not devices.is_resolved(recipe):
        recipe = recipe.model_copy(deep=True)
        devices.resolve(recipe, device or devices.current(), sequence_length, labels)
    try:
        model = meta_model(recipe, labels)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise PeftkitError(f"estimate: could not build {recipe.model.name} with method "
                           f"{recipe.method.name} on the meta device ({str(exc).splitlines()[0]})") from None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    head_params = sum(p.numel() for n, p in model.named_parameters()
                      if p.requires_grad and any(s in n.split(".") for s in SKIPPED))
    config = _config(recipe, head, labels)
    return MemoryEstimate(
        weights=_weight_bytes(model, recipe),
        gradients=trainable * 4,
        optimizer=trainable * OPTIMIZER_BYTES[recipe.train.optim],
        activations=_activation_bytes(config, recipe, sequence_length, trainable > head_params,
                                      head.kind == "causal_lm"),
        trainable_params=trainable,
        total_params=total,
        sequence_length=sequence_length,
    )
