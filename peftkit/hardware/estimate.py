"""Predict a recipe's peak training memory before running it: weights by precision, trainable state, activations,
runtime overhead.

The model is built on the meta device (no weights allocated), the method applied to it, and every parameter
counted by where it ends up: quantized, frozen, or trained with gradients and optimizer state. Activations are
the tensors autograd saves for the backward pass, counted by running one training batch through the model on fake
CPU tensors (peftkit.hardware.trace: no memory, no arithmetic; mixed precision under autocast's casting rules,
CUDA's fused attention modelled); where that cannot run (gradient checkpointing, an architecture that reads values
in its forward) a per-layer formula stands in. Evaluation may hold more than training: one layer's
working set at the evaluation batch plus a causal LM's logits and their fp32 copies (``eval_logit_bytes``); the
larger of the two counts. Runtime overhead is what a real run holds beyond those in the phase that peaks (train
or evaluate): a constant per device kind (RUNTIME_OVERHEAD); in training, the share of freed activations the
allocator keeps (ALLOCATOR_RETENTION, by method family; on a quantized base at least DEQUANT_RETENTION of its
layers de-quantized) and the largest transient working set, either the optimizer step's temporaries or a quantized
layer de-quantized for its matmul; in evaluation, the same shares of the evaluation batch and the de-quantization
working set of a quantized layer (EVAL_DEQUANT_BYTES).
A CUDA device also holds memory outside the tensors counted (DEVICE_RESERVE), added where a recipe must fit it
(``MemoryEstimate.needed``).

Under FSDP (``distributed.fsdp``) in N processes the figures are per process: each holds 1/N of the weights,
gradients and optimizer state, plus the blocks it gathers whole while computing (FULL_SHARD: the block at work and
the one prefetched; SHARD_GRAD_OP keeps every block gathered from forward to backward, so all weights count).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from accelerate import init_empty_weights
from torch import nn

from peftkit.config.sections import Recipe, auto_options
from peftkit.data.pipeline import build_splits, padded_length
from peftkit.errors import PeftkitError, first_line
from peftkit.hardware import device as devices
from peftkit.hardware.attention import fuses_attention
from peftkit.hardware.trace import traced_activations
from peftkit.heads.base import KNOWN_HEAD_MODULES, Head
from peftkit.heads.lm_loss import CHUNK_TOKENS
from peftkit.model.config import DTYPES, model_config
from peftkit.model.loading import load_tokenizer
from peftkit.model.params import count_parameters
from peftkit.registry import build_head, plugins

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
#: Optimizer state bytes per trainable parameter: two moments in the parameter's own dtype (torch's AdamW: bf16
#: weights, as full fine-tuning in bf16 keeps them, get bf16 moments), or a fixed size (bitsandbytes: two uint8
#: moments for 8-bit AdamW, two fp32 ones for 32-bit).
OPTIMIZER_BYTES: dict[str, float | str] = {"adamw_torch": "2 x parameter", "adamw_torch_fused": "2 x parameter",
                                           "adamw_bnb_8bit": 2,
                                           "paged_adamw_8bit": 2, "paged_adamw_32bit": 8, "adafactor": 0, "sgd": 0}
#: Bytes per quantized weight: 4-bit packs two per byte plus one fp32 absmax per block of 64 (double
#: quantization: a uint8 absmax per 64 and an fp32 per 256 blocks); 8-bit is one byte plus a per-row fp32 scale.
QUANT_WEIGHT_BYTES = {("4bit", True): 0.5 + 1 / 64 + 4 / (64 * 256), ("4bit", False): 0.5 + 4 / 64,
                      ("8bit", True): 1.0, ("8bit", False): 1.0}
SKIPPED = (*KNOWN_HEAD_MODULES, "lm_head")
#: The dtype a mixed-precision run computes in, by train.precision (the Trainer's autocast).
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
MIB = 2**20
#: Private memory a training run holds beyond weights, trainable state, activations and transients, by device
#: kind: the Trainer, autograd's graph, the allocator's free lists, tokenized data, bitsandbytes' tables.
#: Measured once per device kind with `python benchmarks/overhead.py` (README, "Memory estimate"), together with
#: ALLOCATOR_RETENTION: CPU 44 MiB on this project's shared 2-core Xeon (torch 2.13, transformers 5.24, glibc malloc).
#: No GPU has been lent to measure CUDA's (there the allocator's figure leaves the CUDA context and library
#: workspaces out); 0 until someone does.
RUNTIME_OVERHEAD = {"cpu": 64 * MIB, "cuda": 0}
#: Method families whose allocator retention differs: full fine-tuning, adapters on a full-precision base, adapters
#: on a quantized base (``method_family``).
FAMILIES = ("full", "adapter", "quantized")
#: Share of a phase's working set (training activations, an evaluation batch) the allocator still holds once it is
#: freed (chunks kept for reuse, heap fragmentation, per-thread arenas), by device kind and method family: fitted
#: with RUNTIME_OVERHEAD on the calibration cells of benchmarks/overhead.yaml (glibc's malloc on this CPU).
#: CUDA: unmeasured; its allocated figure counts live tensors only.
ALLOCATOR_RETENTION = {"cpu": {"full": 0.04, "adapter": 0.70, "quantized": 0.92},
                       "cuda": dict.fromkeys(FAMILIES, 0.0)}
#: On a quantized base every matmul de-quantizes its layer (a forward and, for the input's gradient, a backward; again
#: in the recomputed forward under gradient checkpointing), and the allocator keeps part of those freed copies: the
#: share of all quantized layers de-quantized at once (in the compute dtype) it holds in training and evaluation,
#: where that is more than its share of the working set. Fitted on benchmarks/overhead.yaml's checkpointed quantized
#: cell (0.71 on this CPU).
DEQUANT_RETENTION = {"cpu": 0.71, "cuda": 0.0}
#: Bytes per weight of the largest quantized layer an evaluation forward works through beyond its de-quantized
#: copy: bitsandbytes' CPU build repacks each 4-bit layer at its first inference forward (an int32 unpacking and
#: three byte-sized copies: 7 bytes a weight).
EVAL_DEQUANT_BYTES = {"cpu": 7, "cuda": 0}
#: Device memory a CUDA run holds beyond the tensors ``total`` counts (torch.cuda.max_memory_allocated leaves it
#: out): the CUDA context (about 0.3-0.6 GiB with lazy module loading), cuBLAS workspaces and the caching
#: allocator's reserved but free blocks. Assumed, 1 GiB, as no GPU has been lent to measure it; counted where a
#: recipe must fit a device (``MemoryEstimate.needed``: `peftkit estimate` / `env`, `auto` gradient checkpointing).
DEVICE_RESERVE = {"cpu": 0, "cuda": 2**30}
#: Temporaries of one optimizer step per element of the largest trainable tensor, in its bytes: AdamW's
#: ``exp_avg_sq.sqrt() / bias_correction`` makes two tensors of the parameter's size before they are folded in;
#: the fused kernel updates each element in place and makes none.
STEP_TEMPORARIES = {"adamw_torch": 2.0, "adamw_torch_fused": 0.0, "adamw_bnb_8bit": 1.0, "paged_adamw_8bit": 1.0,
                    "paged_adamw_32bit": 2.0,
                    "adafactor": 1.0, "sgd": 1.0}


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
    quantized_weights: int = 0
    base_params: int = 0  # the model's own, before the method adds any
    evaluation: int = 0  # an evaluation batch's working set, eval_logits included
    eval_logits: int = 0
    overhead: int = 0
    retained: int = 0  # what the allocator keeps of freed training activations
    transient: int = 0
    eval_retained: int = 0  # what the allocator keeps of freed evaluation batches
    eval_transient: int = 0  # a quantized layer de-quantized (and on a CPU repacked) in evaluation
    family: str = "adapter"
    dequantized_total: int = 0  # every quantized layer de-quantized in the compute dtype
    reserved: int = 0  # DEVICE_RESERVE: held by the device outside the counted tensors
    gathered: int = 0  # FSDP: blocks gathered whole beside the process's shards
    processes: int = 1  # FSDP: the weights, gradients and optimizer state are split this many ways
    device: str = "cpu"
    activations_from: str = "formula"

    @property
    def floor(self) -> int:
        """Bytes no run can go below: weights (full precision and quantized) plus trainable state."""
        return self.weights + self.quantized_weights + self.gradients + self.optimizer + self.gathered

    @property
    def working_set(self) -> int:
        """The larger of the training activations and an evaluation batch's working set."""
        return max(self.activations, self.evaluation)

    def phases(self) -> dict[str, int]:
        """Bytes each phase holds beyond the device's constant: training (the floor, activations, what the
        allocator keeps of them, the transient beyond them: optimizer step, de-quantized layer), evaluation (the
        floor less the gradients, freed after every step; a batch, what the allocator keeps of it, a quantized
        layer de-quantized). Loading holds the weights only, less than either."""
        return {"train": self.floor + self.activations + self.retained + max(0, self.transient - self.activations),
                "evaluate": self.floor - self.gradients + self.evaluation + self.eval_retained + self.eval_transient}

    @property
    def peak_phase(self) -> str:
        """The phase predicted to peak."""
        phases = self.phases()
        return max(phases, key=phases.__getitem__)

    @property
    def runtime_overhead(self) -> int:
        """What a run holds beyond floor and working set: the device's constant and what the peak phase holds
        beyond the working set (the allocator's retained share, transients, a quantized load's churn)."""
        return self.overhead + max(self.phases().values()) - self.floor - self.working_set

    @property
    def total(self) -> int:
        """The predicted peak: the floor, the working set and runtime overhead."""
        return self.floor + self.working_set + self.runtime_overhead

    @property
    def needed(self) -> int:
        """What the device must have free: the peak and what it reserves besides (CUDA context, allocator)."""
        return self.total + self.reserved

    def terms(self) -> list[tuple[str, int]]:
        """(name, bytes) of every term of ``total``, in print order (gathered blocks only under FSDP)."""
        return [("weights", self.weights), ("quantized weights", self.quantized_weights),
                ("gradients", self.gradients), ("optimizer state", self.optimizer),
                *([("gathered blocks", self.gathered)] if self.gathered else []),
                ("activations", self.activations), ("evaluation", self.working_set - self.activations),
                ("runtime overhead", self.runtime_overhead)]

    def as_dict(self) -> dict[str, Any]:
        """Every component and the floor and total, for result files."""
        return {**asdict(self), "runtime_overhead": self.runtime_overhead, "floor": self.floor, "total": self.total,
                "working_set": self.working_set, "needed": self.needed,
                "phases": self.phases(), "peak_phase": self.peak_phase}


def _config(recipe: Recipe, head: Head, labels: list[str]) -> Any:
    kwargs = head.model_kwargs(labels) if head.kind != "causal_lm" else {}
    overrides = recipe.model.config_overrides if recipe.model.random_init else {}
    return model_config(recipe.model, **overrides, **kwargs)


def meta_base(recipe: Recipe, labels: list[str]) -> tuple[nn.Module, list[str]]:
    """The recipe's model in model.dtype on the meta device, tied embeddings tied as a loaded model has them, and
    its head modules."""
    head = build_head(recipe.task)
    config = _config(recipe, head, labels)
    with init_empty_weights():
        model = head.auto_class.from_config(config, trust_remote_code=recipe.model.trust_remote_code,
                                            dtype=DTYPES[recipe.model.dtype])
    model.tie_weights()  # outside init_empty_weights, which would give the tied module a parameter of its own
    return model, sorted({name for name, _ in model.named_children()} & set(KNOWN_HEAD_MODULES))


def with_method(recipe: Recipe, model: nn.Module, head_modules: list[str]) -> nn.Module:
    """``model`` (on the meta device) with the recipe's method applied, the trained parameters in the dtype a run
    trains them in (``Method.master_weights``)."""
    head, method = plugins(recipe)
    with init_empty_weights():
        applied = method.apply(model, head_modules, head.task_type)
    return method.master_weights(applied, recipe.train.precision)


def meta_model(recipe: Recipe, labels: list[str]) -> nn.Module:
    """The recipe's model with its method applied, on the meta device."""
    return with_method(recipe, *meta_base(recipe, labels))


def longest_sequence(recipe: Recipe, head: Head) -> tuple[int, list[str]]:
    """The padded length of the longest training batch, and the label names (from the data)."""
    parts = {"max_length": (), "dynamic": ("train",)}.get(recipe.data.padding, ("train", "validation", "test"))
    data = build_splits(recipe, head, load_tokenizer(recipe.model), parts=parts)
    return padded_length(data.tokenized, recipe.data), data.label_names


def sequence_for(recipe: Recipe) -> tuple[int, list[str], str]:
    """(padded length of the longest batch, label names, where the length came from).

    When the data or the tokenizer cannot be loaded (offline, hub only) but the model's config can, the
    length is data.max_length, an upper bound, and the labels are the recipe's task.labels."""
    head: Head = build_head(recipe.task)
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


def method_family(recipe: Recipe) -> str:
    """The recipe's method family (FAMILIES): full fine-tuning, adapters, or adapters on a quantized base."""
    if recipe.quantization.mode != "none":
        return "quantized"
    return "full" if recipe.method.name == "full" else "adapter"


def _is_quantized(module: nn.Module, pname: str, parameter: nn.Parameter, name: str, mode: str) -> bool:
    return (mode != "none" and isinstance(module, nn.Linear) and pname == "weight" and not parameter.requires_grad
            and not any(s in name.split(".") for s in SKIPPED))


def _weight_bytes(model: nn.Module, recipe: Recipe) -> tuple[int, int, int, int, int]:
    """(full-precision weight bytes, quantized weight bytes, bytes of the largest de-quantized weight, weights of
    the largest quantized layer, bytes of all quantized layers de-quantized); weights
    not quantized count in their dtype on the meta model (model.dtype, trained ones as the method trains them),
    or in float32 beside quantized ones where the method keeps them so (``float32_beside_quantized``)."""
    mode = recipe.quantization.mode
    upcast = mode != "none" and getattr(plugins(recipe)[1], "float32_beside_quantized", False)
    per_quantized = QUANT_WEIGHT_BYTES.get((mode, recipe.quantization.double_quant), 0.0)
    compute_bytes = DTYPE_BYTES.get(recipe.quantization.compute_dtype, 4)
    plain, quantized, largest, widest, dequantized = 0.0, 0.0, 0, 0, 0
    seen: set[int] = set()  # a tied parameter (embeddings and lm_head) once
    for name, module in model.named_modules():
        for pname, parameter in module.named_parameters(recurse=False):
            if id(parameter) in seen:
                continue
            seen.add(id(parameter))
            n = parameter.numel()
            if _is_quantized(module, pname, parameter, name, mode):
                quantized += n * per_quantized + (module.out_features * 4 if mode == "8bit" else 0)
                largest = max(largest, n * compute_bytes)
                widest, dequantized = max(widest, n), dequantized + n * compute_bytes
            else:
                plain += n * (4 if upcast and parameter.is_floating_point() else parameter.element_size())
    return int(plain), int(quantized), largest, widest, dequantized


def _half(recipe: Recipe) -> bool:
    return recipe.train.precision != "fp32" or recipe.model.dtype != "float32"


def _activation_bytes(config: Any, recipe: Recipe, seq: int, trainable_body: bool, causal: bool,
                      fused: bool = False) -> int:
    """Korthikanti et al. (2022): s·b·h·(34 + 5·a·s/h) bytes per layer in 16-bit; doubled for fp32 runs; a fused
    attention kernel keeps no attention probabilities (the 5·a·s/h term). A frozen body (head only) keeps no
    activations for backward: one layer's forward working set instead."""
    text = getattr(config, "text_config", config)
    hidden = text.hidden_size
    layers = text.num_hidden_layers
    heads = text.num_attention_heads
    scale = 1 if _half(recipe) else 2
    batch = recipe.train.batch_size
    per_layer = seq * batch * hidden * (34 + (0 if fused else 5 * heads * seq / hidden)) * scale
    logits = training_logit_bytes(recipe, batch * seq, text.vocab_size) if causal else 0
    if recipe.train.gradient_checkpointing:
        stored = layers * seq * batch * hidden * 2 * scale + per_layer
    else:
        stored = layers * per_layer
    return int((stored if trainable_body else per_layer) + logits)


def eval_logit_bytes(config: Any, recipe: Recipe, seq: int, causal: bool) -> int:
    """A causal LM's evaluation logits: eval batch × sequence × vocabulary in the forward's dtype (half under
    mixed precision or a half model), plus, while the loss and ``response_nll`` run, an fp32 copy of them (made
    only from half logits) and the fp32 log-softmax of the cross-entropy. A classifier's logits are negligible."""
    if not causal:
        return 0
    text = getattr(config, "text_config", config)
    logit_bytes = 2 if _half(recipe) else 4
    per_element = logit_bytes + (4 if logit_bytes < 4 else 0) + 4
    return recipe.train.eval_batch_size * seq * text.vocab_size * per_element


def evaluation_bytes(config: Any, recipe: Recipe, seq: int, causal: bool) -> int:
    """An evaluation batch's working set: one layer's forward (fp32 intermediates) and the evaluation logits."""
    text = getattr(config, "text_config", config)
    hidden, heads = text.hidden_size, text.num_attention_heads
    layer = seq * recipe.train.eval_batch_size * (
        getattr(text, "intermediate_size", 4 * hidden) + 3 * hidden + heads * seq) * 4
    return int(layer + eval_logit_bytes(config, recipe, seq, causal))


def _activations(model: nn.Module, config: Any, recipe: Recipe, seq: int, trainable_body: bool,
                 causal: bool, device_kind: str) -> tuple[int, str]:
    """Training activation bytes on ``device_kind`` and where they came from ("traced" or "formula")."""
    fused = fuses_attention(device_kind, model.config)
    formula = _activation_bytes(config, recipe, seq, trainable_body, causal, fused)
    if recipe.train.gradient_checkpointing:
        return formula, "formula"
    chunked = causal and recipe.train.lm_loss != "full"
    try:
        traced = traced_activations(model, recipe.train.batch_size, seq, autocast=AUTOCAST.get(recipe.train.precision),
                                    fused_attention=fused, **({"logits_to_keep": 1} if chunked else {}))
    except Exception:  # any forward the trace cannot run (one that reads values) falls back to the formula
        return formula, "formula"
    text = getattr(config, "text_config", config)
    logits = training_logit_bytes(recipe, recipe.train.batch_size * seq, text.vocab_size) if causal else 0
    return traced + logits, "traced"


def gathered_bytes(model: nn.Module, recipe: Recipe) -> int:
    """What an FSDP process gathers whole beside its shards: two of the largest blocks FSDP shards as one unit
    (distributed.wrap, default the model's transformer blocks) under full_shard, every weight under shard_grad_op."""
    weights = {id(p): p.numel() * p.element_size() for p in model.parameters()}
    if recipe.distributed.sharding == "shard_grad_op":
        return sum(weights.values())
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = set(recipe.distributed.wrap if recipe.distributed.wrap is not None
                else getattr(base, "_no_split_modules", None) or ())
    blocks = [sum(p.numel() * p.element_size() for p in m.parameters()) for m in base.modules()
              if type(m).__name__ in names]
    return 2 * max(blocks, default=sum(weights.values()) // 2)


def training_logit_bytes(recipe: Recipe, tokens: int, vocab: int) -> int:
    """A causal LM's training loss beyond the model's own outputs: with `train.lm_loss: full` the fp32 log-softmax
    and its gradient over every position (2 × tokens × vocabulary × 4 bytes); chunked or liger never hold more than
    one chunk's logits (CHUNK_TOKENS positions: half-precision output, its fp32 copy, and the gradient), the
    model's own output layer running on the last position only."""
    if recipe.train.lm_loss == "full":
        return 2 * tokens * vocab * 4
    return min(tokens, CHUNK_TOKENS) * vocab * ((2 if _half(recipe) else 0) + 2 * 4)


def optimizer_bytes(optim: str, parameters: list[nn.Parameter]) -> int:
    """Optimizer state of ``parameters`` (OPTIMIZER_BYTES)."""
    per = OPTIMIZER_BYTES[optim]
    if isinstance(per, str):
        return sum(2 * p.numel() * p.element_size() for p in parameters)
    return int(sum(p.numel() for p in parameters) * per)


def estimate(recipe: Recipe, sequence_length: int | None = None, labels: list[str] | None = None,
             device: devices.Device | None = None, processes: int = 1) -> MemoryEstimate:
    """Predict the peak training memory of ``recipe`` on ``device`` (default: this machine's), per process of
    ``processes`` (FSDP shards by it; DDP copies the model into each). The recipe must be resolved for that device
    (peftkit.hardware.auto.resolved_for); the data is tokenized to find the longest batch unless
    ``sequence_length`` (and ``labels``) are given."""
    unresolved = auto_options(recipe)
    if unresolved:
        raise ValueError(f"estimate() takes a resolved recipe; {', '.join(unresolved)} still auto "
                         "(peftkit.hardware.auto.resolved_for resolves them)")
    head: Head = build_head(recipe.task)
    if sequence_length is None or labels is None:
        sequence_length, found = longest_sequence(recipe, head)
        labels = labels or found
    try:
        model, head_modules = meta_base(recipe, labels)
        base_params = count_parameters(model)[1]
        model = with_method(recipe, model, head_modules)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise PeftkitError(f"estimate: could not build {recipe.model.name} with method "
                           f"{recipe.method.name} on the meta device ({first_line(exc)})") from None
    trainable, total = count_parameters(model)
    trained = [p for p in model.parameters() if p.requires_grad]
    shards = processes if recipe.distributed.fsdp else 1
    if shards > 1 and recipe.train.precision in ("bf16", "fp16"):  # accelerate keeps FSDP's trained weights fp32
        for parameter in trained:
            parameter.data = parameter.data.float()
    head_params = sum(p.numel() for n, p in model.named_parameters()
                      if p.requires_grad and any(s in n.split(".") for s in SKIPPED))
    config = _config(recipe, head, labels)
    kind = (device or devices.current()).kind
    causal = head.kind == "causal_lm"
    plain, quantized, dequantized, widest, dequantized_total = _weight_bytes(model, recipe)
    largest = max(trained, key=lambda p: p.numel(), default=None)
    activations, source = _activations(model, config, recipe, sequence_length, trainable > head_params, causal,
                                       kind)
    evaluation = evaluation_bytes(config, recipe, sequence_length, causal)
    step = 0 if largest is None else int(largest.numel() * largest.element_size()
                                         * STEP_TEMPORARIES[recipe.train.optim] / shards)
    family = method_family(recipe)
    keeps = not (kind == "cpu" and recipe.train.cpu_heap == "compact")  # compact: freed blocks are unmapped
    retention = ALLOCATOR_RETENTION[kind][family] if keeps else 0.0
    dequant_kept = DEQUANT_RETENTION[kind] * dequantized_total if keeps else 0
    repacked = EVAL_DEQUANT_BYTES[kind] * widest if recipe.quantization.mode == "4bit" else 0
    return MemoryEstimate(
        weights=plain // shards,
        gradients=sum(p.numel() * p.element_size() for p in trained) // shards,
        optimizer=optimizer_bytes(recipe.train.optim, trained) // shards,
        gathered=gathered_bytes(model, recipe) if shards > 1 else 0,
        processes=shards,
        activations=activations,
        trainable_params=trainable,
        total_params=total,
        base_params=base_params,
        sequence_length=sequence_length,
        quantized_weights=quantized // shards,
        evaluation=evaluation,
        eval_logits=eval_logit_bytes(config, recipe, sequence_length, causal),
        overhead=RUNTIME_OVERHEAD[kind],
        retained=int(max(retention * activations, dequant_kept)),
        transient=max(step, activations + dequantized),
        eval_retained=int(max(retention * evaluation, dequant_kept)),
        eval_transient=dequantized + repacked,
        family=family,
        dequantized_total=dequantized_total,
        reserved=DEVICE_RESERVE[kind],
        device=kind,
        activations_from=source,
    )
