"""The recipe's sections: every option once, with its default, help text and bounds; a rule about one
section is a validator on it."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import SerializeAsAny, ValidationInfo, field_validator, model_validator

from peftkit.config.limits import MAX_AUGMENT_COPIES, MAX_WORKERS, SEED_MAX
from peftkit.config.schema import HeadConfig, MethodConfig, Section, option, refuse

DType = Literal["float32", "bfloat16", "float16"]


def _is_size(key: str) -> bool:
    """A model config field that counts something (a width, layers, heads): it must be a whole number ≥ 1."""
    return key.startswith("num_") or key.endswith(("_size", "_layers", "_heads", "_dim", "_embeddings"))


class ModelSection(Section):
    name: str = option("minilm-l6", "catalogue model (`peftkit models ls`), local directory or hub id")
    dtype: DType = option("float32", "dtype the base weights are loaded in (quantized layers aside)")
    trust_remote_code: bool = option(False, "run code shipped with a hub model; only for sources you trust")
    revision: str | None = option(None, "hub revision (branch, tag or commit) of a hub model")
    hidden_dropout: float | None = option(
        None, "dropout between layers (hidden_dropout_prob, dropout, resid_pdrop … by architecture); empty = "
        "the model's own", ge=0, lt=1
    )
    attention_dropout: float | None = option(
        None, "dropout on attention probabilities; empty = the model's own", ge=0, lt=1
    )
    classifier_dropout: float | None = option(
        None, "dropout before the classification layer; empty = the model's own", ge=0, lt=1
    )
    random_init: bool = option(
        False, "random weights from the model's config instead of its checkpoint (memory / speed benchmarks)"
    )
    config_overrides: dict[str, Any] = option(
        {}, "model config fields to change, e.g. {hidden_size: 512, num_hidden_layers: 8} (with random_init)"
    )
    attn_implementation: Literal["auto", "flash_attention_2", "sdpa", "eager"] = option(
        "auto", "attention kernel; auto = flash_attention_2 where flash-attn is installed, the GPU is Ampere or "
        "newer and the model supports it, else sdpa (eager where neither works)"
    )
    lowercase: bool | Literal["auto"] = option(
        "auto", "lower-case text in the tokenizer's own normalizer (so the tokenizer a run saves does too); auto = "
        "on where the tokenizer lower-cases already or its vocabulary has no capitals (m3e-small's keeps case, "
        "so 'OK' and 'IBM' were [UNK]); false = the tokenizer as shipped"
    )

    @model_validator(mode="after")
    def _overrides_need_random_init(self) -> ModelSection:
        if self.config_overrides and not self.random_init:
            raise refuse("'model.config_overrides' changes the architecture; it needs model.random_init")
        for key, value in self.config_overrides.items():
            if _is_size(key) and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise refuse(f"'model.config_overrides.{key}': {value!r} is not a count; it must be a whole "
                             "number of at least 1")
        return self


class QuantizationSection(Section):
    mode: Literal["none", "8bit", "4bit"] = option("none", "bitsandbytes quantization of the base model")
    quant_type: Literal["nf4", "fp4"] = option("nf4", "4-bit data type (4bit only)")
    double_quant: bool = option(True, "also quantize the 4-bit quantization constants (4bit only)")
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "dtype 4-bit layers compute in; auto = bfloat16 on a GPU with native bf16, float16 on an older "
        "GPU, float32 on a CPU"
    )
    quant_storage: Literal["uint8", "float32", "bfloat16", "float16"] = option(
        "uint8", "dtype packed 4-bit weights are stored in; FSDP needs it equal to model.dtype (4bit only)"
    )


class DataSection(Section):
    source: str = option(
        "movie-snippets",
        "catalogue data set (`peftkit data ls`), a local CSV/JSON/JSONL/Parquet/CoNLL file or a hub id",
    )
    files: dict[Literal["train", "validation", "test"], str] = option(
        {}, "pre-split local files by split name; overrides `source` when given"
    )
    hub_config: str | None = option(None, "configuration name of a hub data set")
    source_splits: dict[Literal["train", "validation", "test"], str] = option(
        {}, "which split of a hub data set serves as train / validation / test, e.g. {test: validation} for GLUE, "
        "whose test labels are hidden; given, splits not named (train aside) are carved from train"
    )
    text_column: str = option("text", "column holding the input text (classification heads)")
    label_column: str = option("label", "column holding the label name or id (classification heads)")
    tokens_column: str = option("tokens", "column holding the word list (token classification heads)")
    tags_column: str = option("tags", "column holding one tag per word (token classification heads)")
    validation_size: int | float = option(
        0.05, "held-out validation share (<1) or row count (>=1) when the source has no such split", ge=0
    )
    test_size: int | float = option(
        0.1, "held-out test share (<1) or row count (>=1) when the source has no test split", ge=0
    )
    split_seed: int = option(42, "seed of the deterministic train/validation/test split", ge=0, le=SEED_MAX)
    max_length: int = option(128, "longest tokenized input; longer ones are truncated", ge=8)
    max_train_samples: int | None = option(None, "use only the first N training rows (after the split)", ge=1)
    max_eval_samples: int | None = option(None, "use only the first N validation and test rows", ge=1)
    padding: Literal["dynamic", "longest_in_dataset", "max_length"] = option(
        "dynamic", "pad each batch to its longest text (dynamic), every batch to the longest text of the data set, "
        "or to data.max_length"
    )
    cache_tokenized: bool = option(
        True, "keep each tokenized split in <cache>/tokenized, keyed by its rows, the tokenizer and these settings, "
        "so the next run of the same data does not tokenize again"
    )

    @model_validator(mode="after")
    def _files_need_train(self) -> DataSection:
        if self.files and "train" not in self.files:
            raise refuse(f"'data.files' names {', '.join(self.files)} but no train file; add files.train")
        return self

    @field_validator("test_size", "validation_size")
    @classmethod
    def _share_or_count(cls, value: float, info: ValidationInfo) -> float:
        if isinstance(value, float) and value >= 1 and not value.is_integer():
            raise refuse(f"'data.{info.field_name}': {value} is neither a share below 1 (e.g. 0.1) nor a whole row "
                         "count (e.g. 100)")
        return value


#: The arguments each learning-rate schedule takes (`train.scheduler_options`).
SCHEDULER_OPTIONS = {
    "cosine": {"num_cycles"}, "cosine_with_restarts": {"num_cycles"}, "polynomial": {"power", "lr_end"}
}


class TrainSection(Section):
    epochs: float = option(3.0, "passes over the training data", gt=0)
    max_steps: int = option(-1, "stop after this many optimizer steps; > 0 overrides epochs")
    batch_size: int = option(32, "training examples per device per step", ge=1)
    eval_batch_size: int = option(128, "examples per evaluation batch", ge=1)
    grad_accum: int = option(1, "gradient accumulation steps (effective batch = batch_size × grad_accum)", ge=1)
    learning_rate: float | None = option(
        None, "peak learning rate; empty = the method's default (LoRA-style methods want ~10× full FT's)", gt=0
    )
    warmup: float = option(0.06, "linear warm-up: a share of all steps (<1) or a step count (>=1)", ge=0)
    scheduler: Literal[
        "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"
    ] = option("linear", "learning-rate schedule after warm-up (transformers' schedulers)")
    scheduler_options: dict[str, float] = option(
        {}, "schedule arguments: num_cycles (cosine, cosine_with_restarts), power and lr_end (polynomial)"
    )
    weight_decay: float = option(0.01, "decoupled weight decay (L2) of the AdamW family", ge=0)
    layerwise_lr_decay: float | None = option(
        None, "layer-wise LR decay d: layer i of N (0-based) learns at lr × d^(N−i), embeddings at lr × d^(N+1), "
        "the head at lr; empty = one rate", gt=0, le=1
    )
    l1: float = option(0.0, "L1 penalty: adds l1 × Σ|w| over trainable weight matrices to the training loss", ge=0)
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy (Trainer's label_smoothing_factor)",
                                    ge=0, lt=1)
    max_grad_norm: float = option(1.0, "gradient clipping norm; 0 disables it", ge=0)
    seed: int = option(42, "seed set before the model, adapter and head are initialised", ge=0, le=SEED_MAX)
    eval_strategy: Literal["no", "epoch", "steps"] = option("epoch", "when to evaluate on the validation split")
    eval_steps: int = option(200, "evaluate every N steps (eval_strategy: steps)", ge=1)
    save_strategy: Literal["no", "epoch", "steps"] = option("epoch", "when to write a checkpoint")
    save_steps: int = option(200, "checkpoint every N steps (save_strategy: steps)", ge=1)
    save_total_limit: int | None = option(2, "keep at most N checkpoints (the best one is always kept)", ge=1)
    logging_steps: int = option(25, "log the training loss every N steps", ge=1)
    early_stopping_patience: int | None = option(
        None, "stop after N evaluations without improvement of metric_for_best_model", ge=1
    )
    metric_for_best_model: str | None = option(
        None, "validation metric that picks the best checkpoint; empty = the head's main metric"
    )
    gradient_checkpointing: bool | Literal["auto"] = option(
        "auto", "recompute activations in the backward pass to save memory; auto = on when `peftkit estimate` "
        "predicts the run would not fit the device's memory without it"
    )
    optim: Literal[
        "auto", "adamw_torch_fused", "adamw_torch", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit",
        "adafactor", "sgd"
    ] = option("auto", "optimizer; adamw_torch_fused is torch's AdamW in one fused kernel per step, bitsandbytes' "
                       "8-bit and paged AdamW are the ones QLoRA uses; auto = paged_adamw_8bit for a quantized "
                       "base on a CUDA GPU, else adamw_torch_fused")
    lm_loss: Literal["auto", "full", "chunked", "liger"] = option(
        "auto", "causal LM training loss: full = the model's own (every position's logits, then an fp32 copy); "
        "chunked = the labelled positions through the output layer a chunk at a time, recomputed in the backward "
        "pass, so full-vocabulary logits are never held; liger = liger-kernel's fused linear cross-entropy (CUDA); "
        "auto = liger where liger-kernel is installed on a CUDA GPU, else chunked; full for models without "
        "logits_to_keep, AdaLoRA (its penalty is in the model's loss) and FSDP / DeepSpeed"
    )
    tf32: bool | Literal["auto"] = option(
        "auto", "TF32 tensor cores for float32 matmuls (CUDA, Ampere or newer); auto = on where the GPU has them"
    )
    torch_compile: bool = option(False, "compile the model with torch.compile (first steps slower, later ones "
                                        "faster; opt-in: not every model and method compiles)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "fp32, or bf16 / fp16 mixed precision (fp16 needs a CUDA GPU, bf16 a GPU or CPU that has it); "
        "auto = bf16 on a GPU with native bf16 (Ampere on), fp16 on older GPUs; on a CPU bf16 for LoRA on an "
        "unquantized base where the CPU has native bf16 (AMX / AVX512-BF16), else fp32"
    )
    group_by_length: bool = option(True, "batch texts of similar length together to cut padding")
    cpu_heap: Literal["adaptive", "compact"] = option(
        "adaptive", "how the C heap holds memory on a CPU (Linux with glibc): adaptive = glibc's own (it raises its "
        "mmap threshold after large frees and keeps freed memory for reuse: faster steps, a higher and run-to-run "
        "varying peak); compact = the threshold fixed at 128 KiB, so every large tensor is its own mapping, returned "
        "when freed (a QLoRA run at 632M peaked at 726 MiB instead of 1,633-2,046)"
    )
    dataloader_num_workers: int = option(0, "worker processes for data loading", ge=0, le=MAX_WORKERS)
    resume: Literal["never", "auto"] = option(
        "never", "auto = continue from the last complete checkpoint in output_dir (`train --resume`)"
    )
    auto_find_batch_size: bool = option(
        False, "on GPU out-of-memory halve train.batch_size and retry (accelerate's find_executable_batch_size)"
    )
    eval_accumulation_steps: int | None = option(
        8, "move evaluation outputs to the CPU every N batches, so evaluation memory stays bounded", ge=1
    )
    report_to: list[Literal["none", "tensorboard", "mlflow", "wandb"]] = option(
        [], "experiment trackers, offline under tracking_dir: tensorboard, mlflow (file store), wandb (offline "
        "mode); [] or [none] = none"
    )
    tracking_dir: str | None = option(None, "where report_to trackers write; empty = <output_dir>/logs")

    @field_validator("report_to", mode="before")
    @classmethod
    def _one_tracker(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _consistent(self) -> TrainSection:
        if self.early_stopping_patience and self.eval_strategy == "no":
            raise refuse("'train.early_stopping_patience' needs train.eval_strategy epoch or steps")
        if self.early_stopping_patience and self.save_strategy != self.eval_strategy:
            raise refuse(
                "'train.early_stopping_patience' needs train.save_strategy equal to train.eval_strategy "
                f"({self.save_strategy} vs {self.eval_strategy})"
            )
        allowed = SCHEDULER_OPTIONS.get(self.scheduler, set())
        for key, value in self.scheduler_options.items():
            if key not in allowed:
                takes = f"takes {', '.join(sorted(allowed))}" if allowed else "takes none"
                raise refuse(f"'train.scheduler_options.{key}': scheduler {self.scheduler} {takes}")
            if not value > 0 and not (key == "lr_end" and value == 0):
                above = "0 or more" if key == "lr_end" else "above 0"
                raise refuse(f"'train.scheduler_options.{key}': {value} is out of range; it must be {above}")
        lr_end = self.scheduler_options.get("lr_end")
        if lr_end is not None and self.learning_rate is not None and lr_end >= self.learning_rate:
            raise refuse(f"'train.scheduler_options.lr_end': {lr_end} must be below train.learning_rate "
                         f"({self.learning_rate})")
        return self


class DistributedSection(Section):
    backend: Literal["nccl", "gloo", "mpi", "ccl", "hccl"] | None = option(
        None, "torch.distributed backend of multi-process runs; empty = nccl on GPUs, gloo on CPUs"
    )
    fsdp: bool = option(
        False, "shard weights, gradients and optimizer state across the processes with FSDP2 (through accelerate) "
        "instead of a whole copy of the model in each (DDP); train.gradient_checkpointing becomes FSDP's "
        "activation checkpointing"
    )
    sharding: Literal["full_shard", "shard_grad_op"] = option(
        "full_shard", "FSDP: full_shard frees each block's gathered weights after its forward pass (least memory); "
        "shard_grad_op keeps them until the backward pass (less communication, more memory)"
    )
    wrap: list[str] | None = option(
        None, "FSDP: module classes gathered and freed as one unit each, e.g. [BertLayer]; empty = the model's "
        "transformer blocks (its _no_split_modules); [] = the whole model as one unit"
    )
    cpu_offload: bool = option(
        False, "FSDP: keep the shards of weights, gradients and optimizer state in CPU memory, moving each to "
        "the GPU when used (CUDA GPUs; slower, for a model whose shards do not fit)"
    )
    deepspeed: str | dict[str, Any] | None = option(
        None, "DeepSpeed config passed through to transformers: a JSON file or the config itself (ZeRO stage …)"
    )
    find_unused_parameters: bool | None = option(
        None, "DDP find_unused_parameters; empty = transformers' choice (off unless gradient checkpointing)"
    )

    @model_validator(mode="after")
    def _one_sharding(self) -> DistributedSection:
        if self.fsdp and self.deepspeed:
            raise refuse("'distributed.fsdp' and 'distributed.deepspeed' exclude each other; set one")
        for key in ("sharding", "wrap", "cpu_offload"):
            default = type(self).model_fields[key].get_default(call_default_factory=True)
            if not self.fsdp and getattr(self, key) != default:
                raise refuse(f"'distributed.{key}' is an FSDP setting; set distributed.fsdp: true or drop it")
        return self


Step = Literal[
    "strip_html", "nfkc", "fullwidth_to_halfwidth", "lowercase", "mask_urls", "mask_emails",
    "remove_stopwords", "segment_zh",
]


class PreprocessSection(Section):
    steps: list[Step] = option(
        [], "text cleaning steps in order: strip_html, nfkc, fullwidth_to_halfwidth, lowercase, mask_urls, "
        "mask_emails, remove_stopwords, segment_zh (needs jieba: pip install 'peftkit[zh]')"
    )
    stopwords: list[str] | str | None = option(
        None, "remove_stopwords: the words, or a UTF-8 file with one per line; empty = a small built-in "
        "English + Chinese list (the run saves the words themselves)"
    )
    url_token: str = option("[URL]", "mask_urls: what replaces a URL")
    email_token: str = option("[EMAIL]", "mask_emails: what replaces an e-mail address")


class AugmentSection(Section):
    copies: int = option(0, "augmented copies added per training row (training split only); 0 = off", ge=0,
                         le=MAX_AUGMENT_COPIES)
    prob: float = option(
        0.1, "share of the words (characters of unsegmented Chinese) one operation changes, at least one", gt=0, le=1
    )
    ops: list[str] = option(
        ["synonym", "insert", "swap", "delete"],
        "operations, one drawn per copy: synonym (skipped without augment.synonyms), insert, swap, delete, or a "
        "plug-in of the peftkit.augmenters entry point group (e.g. back-translation)",
    )
    synonyms: str | None = option(
        None, "UTF-8 file, one group of interchangeable words per line (separated by spaces or commas); "
        "used by synonym and insert"
    )

    @model_validator(mode="after")
    def _ops_for_copies(self) -> AugmentSection:
        if not self.ops and self.copies:
            raise refuse(f"'augment.ops' is empty but augment.copies is {self.copies}")
        return self


class Recipe(Section):
    description: str = option("", "one line shown by `peftkit recipes`")
    model: ModelSection = option(ModelSection(), "the pretrained base model")
    quantization: QuantizationSection = option(QuantizationSection(), "quantization of the base model")
    method: SerializeAsAny[MethodConfig] = option(MethodConfig(), "fine-tuning method and its options")
    task: SerializeAsAny[HeadConfig] = option(HeadConfig(), "task head and its options")
    data: DataSection = option(DataSection(), "where the examples come from and how they are split")
    train: TrainSection = option(TrainSection(), "optimisation and evaluation settings")
    distributed: DistributedSection = option(DistributedSection(), "multi-process settings (`train --nproc N`)")
    preprocess: PreprocessSection = option(
        PreprocessSection(), "text cleaning applied at training and predict time; a plain list = its steps"
    )
    augment: AugmentSection = option(AugmentSection(), "augmentation of the training split")
    output_dir: str | None = option(None, "where the run is written; empty = runs/<recipe name>")

    def to_yaml(self) -> str:
        """The resolved recipe as YAML (every default filled in)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


SECTIONS: dict[str, type[Section]] = {
    "model": ModelSection,
    "quantization": QuantizationSection,
    "data": DataSection,
    "train": TrainSection,
    "distributed": DistributedSection,
    "preprocess": PreprocessSection,
    "augment": AugmentSection,
}


#: The value of an option peftkit resolves for the device a run trains on (peftkit.hardware.auto).
AUTO = "auto"


def auto_options(recipe: Recipe) -> list[str]:
    """The dotted keys of ``recipe`` still set to `auto` (empty once it is resolved for a device)."""
    values = {"train.precision": recipe.train.precision,
              "quantization.compute_dtype": recipe.quantization.compute_dtype,
              "train.optim": recipe.train.optim,
              "model.attn_implementation": recipe.model.attn_implementation,
              "train.gradient_checkpointing": recipe.train.gradient_checkpointing,
              "train.lm_loss": recipe.train.lm_loss,
              "train.tf32": recipe.train.tf32,
              "task.packing": getattr(recipe.task, "packing", None)}
    return [key for key, value in values.items() if value == AUTO]
