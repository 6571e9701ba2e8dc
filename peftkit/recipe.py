"""The recipe: schema (every option once, default + help), loading, dotted overrides and validation."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import SerializeAsAny, ValidationError, ValidationInfo, field_validator, model_validator

from peftkit.data import augment, preprocess
from peftkit.data.augment import AugmentSection
from peftkit.data.formats import looks_like_path
from peftkit.data.preprocess import PreprocessSection
from peftkit.errors import PeftkitError, did_you_mean
from peftkit.registry import HEADS, METHODS
from peftkit.schema import RULE, HeadConfig, MethodConfig, Section, option, refuse

DType = Literal["float32", "bfloat16", "float16"]


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

    @model_validator(mode="after")
    def _overrides_need_random_init(self) -> ModelSection:
        if self.config_overrides and not self.random_init:
            raise refuse("'model.config_overrides' changes the architecture; it needs model.random_init")
        return self


class QuantizationSection(Section):
    mode: Literal["none", "8bit", "4bit"] = option("none", "bitsandbytes quantization of the base model")
    quant_type: Literal["nf4", "fp4"] = option("nf4", "4-bit data type (4bit only)")
    double_quant: bool = option(True, "also quantize the 4-bit quantization constants (4bit only)")
    compute_dtype: Literal["auto", "float32", "bfloat16", "float16"] = option(
        "auto", "dtype 4-bit layers compute in; auto = bfloat16 on a GPU with native bf16, else float32"
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
    split_seed: int = option(42, "seed of the deterministic train/validation/test split")
    max_length: int = option(128, "longest tokenized input; longer ones are truncated", ge=8)
    max_train_samples: int | None = option(None, "use only the first N training rows (after the split)", ge=1)
    max_eval_samples: int | None = option(None, "use only the first N validation and test rows", ge=1)
    padding: Literal["dynamic", "longest_in_dataset", "max_length"] = option(
        "dynamic", "pad each batch to its longest text (dynamic), every batch to the longest text of the data set, "
        "or to data.max_length"
    )

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
    seed: int = option(42, "seed set before the model, adapter and head are initialised")
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
        "auto", "adamw_torch", "adamw_bnb_8bit", "paged_adamw_8bit", "paged_adamw_32bit", "adafactor", "sgd"
    ] = option("auto", "optimizer; bitsandbytes' 8-bit and paged AdamW are the ones QLoRA uses; auto = "
                       "paged_adamw_8bit for a quantized base on a CUDA GPU, else adamw_torch")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = option(
        "auto", "fp32, or bf16 / fp16 mixed precision (fp16 needs a CUDA GPU, bf16 a GPU or CPU that has it); "
        "auto = bf16 on a GPU with native bf16 (Ampere on), fp16 on older GPUs, fp32 on a CPU"
    )
    group_by_length: bool = option(True, "batch texts of similar length together to cut padding")
    dataloader_num_workers: int = option(0, "worker processes for data loading", ge=0)
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
        for key in self.scheduler_options:
            if key not in allowed:
                takes = f"takes {', '.join(sorted(allowed))}" if allowed else "takes none"
                raise refuse(f"'train.scheduler_options.{key}': scheduler {self.scheduler} {takes}")
        return self


class DistributedSection(Section):
    backend: Literal["nccl", "gloo", "mpi", "ccl", "hccl"] | None = option(
        None, "torch.distributed backend of multi-process runs; empty = nccl on GPUs, gloo on CPUs"
    )
    fsdp: str = option("", "FSDP mode passed to transformers, e.g. 'full_shard auto_wrap'; empty = DDP")
    fsdp_config: dict[str, Any] = option({}, "FSDP settings passed through to transformers' fsdp_config")
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


def recipe_dirs() -> list[Path]:
    """Where named recipes live: inside an installed wheel, or the source checkout's recipes/."""
    package = Path(__file__).resolve().parent
    return [d for d in (package / "_recipes", package.parent / "recipes") if d.is_dir()]


def named_recipes() -> dict[str, Path]:
    """Every named recipe, name → file."""
    found: dict[str, Path] = {}
    for directory in recipe_dirs():
        for path in sorted(directory.glob("*.yaml")):
            found.setdefault(path.stem, path)
    return found


def resolve_recipe_path(name_or_path: str | Path) -> Path:
    """A recipe file from a name (`sentiment-lora`) or a path; a clear error otherwise."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise PeftkitError(f"recipe file '{path}' does not exist")
        return path
    recipes = named_recipes()
    if str(name_or_path) not in recipes:
        raise PeftkitError(
            f"unknown recipe '{name_or_path}'{did_you_mean(str(name_or_path), recipes)} "
            "(`peftkit recipes` lists them; a file path must end in .yaml)"
        )
    return recipes[str(name_or_path)]


class _UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (YAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice in one mapping", key_node.start_mark
                )
            if isinstance(key, (str, int, float, bool)) or key is None:
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    """Parse a YAML mapping with the safe loader; syntax errors and duplicate keys name the file and line."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PeftkitError(f"{path}{where}: invalid YAML ({problem})") from None
    except UnicodeDecodeError:
        raise PeftkitError(f"{path}: not UTF-8 text") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PeftkitError(f"{path}: a recipe must be a mapping of sections, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[str, Any]:
    """`train.epochs=2` → ("train.epochs", 2); the value is read as YAML (numbers, lists, null)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise PeftkitError(f"override '{text}' must look like section.key=value (e.g. train.epochs=2)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``raw`` with dotted keys set; unknown keys are caught later by validation."""
    result = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        parts = dotted.split(".")
        node = result
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise PeftkitError(f"override '{dotted}': '{'.'.join(parts[: i + 1])}' is not a section")
            node = child
        node[parts[-1]] = value
    return result


#: pydantic tags a member of a union (``int | float``) in an error's location; not a key the user wrote.
_UNION_TAGS = {"int", "float", "str", "bool", "none"}


def _key_path(error: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(p) for p in error["loc"] if p != "[key]" and not (
        isinstance(p, str) and (p in _UNION_TAGS or "[" in p or p.startswith("literal"))))


def _describe_error(error: dict[str, Any], prefix: tuple[str, ...], fields: list[str]) -> str:
    loc = prefix + _key_path(error)
    path = ".".join(loc)
    kind = error["type"]
    if kind == RULE:
        return error["msg"]
    if kind == "extra_forbidden":
        return f"unknown key '{path}'{did_you_mean(loc[-1], fields, prefix='.'.join(loc[:-1]) + '.')}"
    if kind == "missing":
        return f"'{path}' is required"
    got = error.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    return f"'{path}': {error['msg'].lower()} (got {shown})"


def _validate(cls: type[Section], data: Any, prefix: tuple[str, ...], source: str) -> Section:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        path = ".".join(prefix)
        raise PeftkitError(f"{source}: '{path}' must be a mapping of options, got {data!r}")
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        same = [e for e in errors if _key_path(e) == _key_path(errors[0])]  # one key failing each union member
        first = next((e for e in same if e["type"] == "finite_number"), errors[0])
        errors = [first, *(e for e in errors if e not in same)]
        owner = cls
        for part in first["loc"][:-1]:  # suggest keys of the section the bad key sits in
            field = owner.model_fields.get(str(part))
            annotation = getattr(field, "annotation", None)
            if isinstance(annotation, type) and issubclass(annotation, Section):
                owner = annotation
        message = _describe_error(first, prefix, list(owner.model_fields))
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise PeftkitError(f"{source}: {message}{more}") from None


def _shorthand(value: Any, key: str) -> Any:
    """`method: lora`, `task: ner`, `quantization: 4bit` stand for `{key: value}`."""
    if isinstance(value, (str, int)) and not isinstance(value, bool):
        return {key: str(value)}
    return value


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe", check_data: bool = True) -> Recipe:
    """Validate a raw mapping into a Recipe; the first problem becomes a one-line PeftkitError.

    ``check_data=False`` skips checking that the data files exist (a saved run used for prediction).
    """
    raw = dict(raw)
    allowed = list(Recipe.model_fields)
    for key in raw:
        if key not in allowed:
            raise PeftkitError(f"{source}: unknown section '{key}'{did_you_mean(str(key), allowed)}")
    method_raw = _shorthand(raw.pop("method", None), "name") or {}
    task_raw = _shorthand(raw.pop("task", None), "head") or {}
    if "quantization" in raw:
        raw["quantization"] = _shorthand(raw["quantization"], "mode")
    if isinstance(raw.get("preprocess"), list):
        raw["preprocess"] = {"steps": raw["preprocess"]}
    for name in ("method", "task"):
        value = method_raw if name == "method" else task_raw
        if not isinstance(value, dict):
            raise PeftkitError(f"{source}: '{name}' must be a mapping of options, got {value!r}")
    method_name = str(method_raw.get("name", MethodConfig().name))
    head_name = str(task_raw.get("head", HeadConfig().head))
    try:
        method = METHODS.get(method_name)
        head = HEADS.get(head_name)
    except PeftkitError as exc:
        key = "method.name" if method_name not in METHODS else "task.head"
        raise PeftkitError(f"{source}: '{key}': {exc}") from None
    sections = {name: _validate(cls, raw.get(name), (name,), source) for name, cls in SECTIONS.items()}
    sections["method"] = _validate(method.config_cls, method_raw, ("method",), source)
    sections["task"] = _validate(head.config_cls, task_raw, ("task",), source)
    top = {k: v for k, v in raw.items() if k not in SECTIONS}
    recipe = _validate(Recipe, {**top, **sections}, (), source)
    check_combinations(recipe, source, check_data)
    if recipe.train.learning_rate is None:
        recipe.train.learning_rate = method.default_learning_rate
    return recipe


def check_combinations(recipe: Recipe, source: str = "recipe", check_data: bool = True) -> None:
    """Refuse combinations of sections that cannot work, naming the keys involved."""
    method = METHODS.get(recipe.method.name)
    head = HEADS.get(recipe.task.head)
    mode = recipe.quantization.mode
    if mode not in method.quantization_modes:
        supported = ", ".join(method.quantization_modes)
        raise PeftkitError(
            f"{source}: 'quantization.mode' {mode} does not work with method '{method.name}' "
            f"(it supports: {supported}){method.quantization_hint}"
        )
    if head.kind not in method.head_kinds:
        raise PeftkitError(
            f"{source}: method '{method.name}' does not support task.head '{head.name}' "
            f"({head.kind}); it supports {', '.join(method.head_kinds)}{method.head_hint}"
        )
    reason = method(recipe.method).refusal(recipe)
    if reason:
        raise PeftkitError(f"{source}: method '{method.name}' with task.head '{head.name}': {reason}")
    check_techniques(recipe, source)
    quantization = recipe.quantization
    if recipe.distributed.fsdp and quantization.mode == "4bit" and quantization.quant_storage != recipe.model.dtype:
        raise PeftkitError(
            f"{source}: 'quantization.quant_storage': FSDP shards 4-bit weights only when they are stored in "
            f"model.dtype; set quantization.quant_storage: {recipe.model.dtype}"
        )
    data = recipe.data
    if check_data:
        for split, path in data.files.items():
            _check_data_file(path, f"data.files.{split}", source)
        if not data.files and looks_like_path(data.source):
            _check_data_file(data.source, "data.source", source)
        check_source_files(recipe, source)
    if looks_like_path(recipe.model.name) and not Path(recipe.model.name).is_dir():
        raise PeftkitError(f"{source}: 'model.name': directory '{recipe.model.name}' does not exist")


def check_source_files(recipe: Recipe, source: str = "recipe") -> None:
    """Refuse a recipe whose other training inputs are missing (DeepSpeed config, stop words, synonyms), naming
    the key; like the data files, checked when training, not when a saved run is read."""
    files = {}
    if isinstance(recipe.distributed.deepspeed, str):
        files["distributed.deepspeed"] = recipe.distributed.deepspeed
    if isinstance(recipe.preprocess.stopwords, str):
        files["preprocess.stopwords"] = recipe.preprocess.stopwords
    if recipe.augment.synonyms:
        files["augment.synonyms"] = recipe.augment.synonyms
    for key, path in files.items():
        if not Path(path).is_file():
            raise PeftkitError(f"{source}: '{key}': file '{path}' does not exist")


def check_techniques(recipe: Recipe, source: str = "recipe") -> None:
    """Refuse label smoothing the task's loss cannot take, preprocessing this machine cannot run and augmentation
    operations no augmenter is registered for."""
    train = recipe.train
    if train.label_smoothing and (getattr(recipe.task, "multi_label", False)
                                  or getattr(recipe.task, "class_weights", "none") != "none"):
        raise PeftkitError(
            f"{source}: 'train.label_smoothing' works with the single-label cross-entropy only, not with "
            "task.multi_label or task.class_weights"
        )
    preprocess.check(recipe.preprocess, source)
    augment.check(recipe.augment, source)


def _check_data_file(value: str, key: str, source: str) -> None:
    path = Path(value).expanduser()
    if path.is_dir():
        raise PeftkitError(f"{source}: '{key}': '{value}' is a directory; name a data file inside it")
    if path.exists() and not path.is_file():
        raise PeftkitError(f"{source}: '{key}': '{value}' is not a regular file (a FIFO or device); "
                           "peftkit reads data from regular files")
    if not path.exists():
        raise PeftkitError(f"{source}: '{key}': file '{value}' does not exist")


def load_recipe(name_or_path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> Recipe:
    """Load a named recipe or a YAML file, apply dotted overrides, validate, fill in defaults."""
    path = resolve_recipe_path(name_or_path)
    raw = read_yaml(path)
    if isinstance(overrides, list):
        overrides = dict(parse_override(o) for o in overrides)
    source = str(path) if path.parent not in recipe_dirs() else path.stem
    check_method_switch(raw, overrides or {}, source, path.stem)
    raw = apply_overrides(raw, overrides or {})
    recipe = recipe_from_dict(raw, source=source)
    if recipe.output_dir is None:
        recipe.output_dir = str(Path("runs") / path.stem)
    return recipe


def check_method_switch(raw: dict[str, Any], overrides: dict[str, Any], source: str, stem: str) -> None:
    """``method.name=X`` on a recipe written for another method: name every option X does not take, say that
    they come from the recipe, and how to switch (replace the whole section, or a recipe for X)."""
    new = overrides.get("method.name")
    method_raw = _shorthand(raw.get("method"), "name")
    if new is None or "method" in overrides or not isinstance(method_raw, dict) or str(new) not in METHODS:
        return
    old = str(method_raw.get("name", MethodConfig().name))
    fields = METHODS.get(str(new)).config_cls.model_fields
    foreign = [f"method.{key}" for key in method_raw if key not in fields and f"method.{key}" not in overrides]
    if old == str(new) or not foreign:
        return
    hint = f"pass method={{name: {new}}} to replace the whole section"
    sibling = stem.removesuffix(f"-{old}") + f"-{new}"
    if stem.endswith(f"-{old}") and sibling in named_recipes():
        hint += f", or use the recipe '{sibling}'"
    raise PeftkitError(
        f"{source}: method.name={new}: the recipe's {old} options {', '.join(foreign)} do not apply to "
        f"method '{new}'; {hint}"
    )


def _shown(default: Any) -> str:
    return json.dumps(default, ensure_ascii=False)


def describe_options() -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every option of every section, method and head: the docs' source.

    An option that several methods (or heads) share with the same default and help is listed once.
    """
    rows: list[tuple[str, str, str]] = []

    def walk(cls: type[Section], prefix: str) -> None:
        for name, field in cls.model_fields.items():
            annotation = field.annotation
            if name in ("method", "task"):
                continue
            if isinstance(annotation, type) and issubclass(annotation, Section):
                walk(annotation, f"{prefix}{name}.")
            else:
                rows.append((f"{prefix}{name}", _shown(field.get_default(call_default_factory=True)),
                             field.description or ""))

    walk(Recipe, "")
    for section, registry, key in (("method", METHODS, "name"), ("task", HEADS, "head")):
        rows.append((f"{section}.{key}", _shown(getattr((MethodConfig if section == "method" else HeadConfig)(), key)),
                     f"{'method' if section == 'method' else 'task head'}: one of {', '.join(registry.names())}"))
        shared: dict[tuple[str, str, str], list[str]] = {}
        for plugin_name, plugin in registry:
            for name, field in plugin.config_cls.model_fields.items():
                if name != key:
                    row = (name, _shown(field.get_default(call_default_factory=True)), field.description or "")
                    shared.setdefault(row, []).append(plugin_name)
        for (name, default, help_text), owners in shared.items():
            rows.append((f"{section}.{name} ({key}: {', '.join(owners)})", default, help_text))
    return rows
