"""Rules across sections, files and registries: combinations that cannot work are refused, naming the keys."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from peftkit.config.limits import WORKERS_PER_CORE
from peftkit.config.paths import looks_like_path
from peftkit.config.sections import AugmentSection, PreprocessSection, Recipe
from peftkit.errors import PeftkitError
from peftkit.registry import AUGMENTERS, HEADS, METHODS


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
    check_method(recipe, source)
    check_techniques(recipe, source)
    check_sharding(recipe, source)
    data = recipe.data
    if check_data:
        for split, path in data.files.items():
            _check_data_file(path, f"data.files.{split}", source)
        if not data.files and looks_like_path(data.source):
            _check_data_file(data.source, "data.source", source)
        check_source_files(recipe, source)
        check_workers(recipe.train.dataloader_num_workers, source)
    if looks_like_path(recipe.model.name) and not Path(recipe.model.name).is_dir():
        what = "is a file, expected a model directory" if Path(recipe.model.name).exists() else "does not exist"
        raise PeftkitError(f"{source}: 'model.name': directory '{recipe.model.name}' {what}")


def check_sharding(recipe: Recipe, source: str = "recipe") -> None:
    """Refuse what FSDP cannot shard: 8-bit weights, 4-bit weights packed in another dtype than the model's, a
    loss term computed over one process's shard of the weights."""
    if not recipe.distributed.fsdp:
        return
    quantization = recipe.quantization
    if quantization.mode == "8bit":
        raise PeftkitError(f"{source}: 'quantization.mode': FSDP cannot shard bitsandbytes 8-bit weights (int8 "
                           "with per-row scales); use 4bit with quantization.quant_storage: "
                           f"{recipe.model.dtype}, or DDP (distributed.fsdp: false)")
    if quantization.mode == "4bit" and quantization.quant_storage != recipe.model.dtype:
        raise PeftkitError(
            f"{source}: 'quantization.quant_storage': FSDP shards 4-bit weights only when they are stored in "
            f"model.dtype; set quantization.quant_storage: {recipe.model.dtype}"
        )
    if recipe.train.l1:
        raise PeftkitError(f"{source}: 'train.l1': under FSDP each process holds a shard of the weights, so the "
                           "L1 penalty would cover only that shard; set train.l1: 0 or use DDP "
                           "(distributed.fsdp: false)")


def check_method(recipe: Recipe, source: str = "recipe") -> None:
    """Refuse what the method itself cannot run; checked again once `auto` options are resolved for the device."""
    method = METHODS.get(recipe.method.name)
    reason = method(recipe.method).refusal(recipe)
    if reason:
        raise PeftkitError(f"{source}: method '{method.name}' with task.head '{recipe.task.head}': {reason}")


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
        if Path(path).is_dir():
            raise PeftkitError(f"{source}: '{key}': '{path}' is a directory, expected a file")
        if not Path(path).is_file():
            what = "is not a regular file (a FIFO or device)" if Path(path).exists() else "does not exist"
            raise PeftkitError(f"{source}: '{key}': file '{path}' {what}")


def check_workers(workers: int, source: str = "recipe") -> None:
    """Refuse more data-loading workers than WORKERS_PER_CORE × this machine's cores (each is a process holding
    a copy of the data); checked when training, not when a saved run is read on a smaller machine."""
    cores = os.cpu_count() or 1
    if workers > WORKERS_PER_CORE * cores:
        raise PeftkitError(f"{source}: 'train.dataloader_num_workers': {workers} workers on a machine with {cores} "
                           f"CPU core(s); use at most {WORKERS_PER_CORE * cores} ({WORKERS_PER_CORE} per core)")


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
    check_preprocess(recipe.preprocess, source)
    check_augment(recipe.augment, source)


def _check_data_file(value: str, key: str, source: str) -> None:
    path = Path(value).expanduser()
    if path.is_dir():
        raise PeftkitError(f"{source}: '{key}': '{value}' is a directory; name a data file inside it")
    if path.exists() and not path.is_file():
        raise PeftkitError(f"{source}: '{key}': '{value}' is not a regular file (a FIFO or device); "
                           "peftkit reads data from regular files")
    if not path.exists():
        raise PeftkitError(f"{source}: '{key}': file '{value}' does not exist")


def check_preprocess(section: PreprocessSection, source: str = "recipe") -> None:
    """Refuse steps this machine cannot run, naming the key (a missing stop-word file: check_source_files)."""
    if "segment_zh" in section.steps and importlib.util.find_spec("jieba") is None:
        raise PeftkitError(
            f"{source}: 'preprocess.steps': segment_zh needs the jieba package, which is not installed "
            "(pip install 'peftkit[zh]'), or drop the step"
        )


def check_augment(section: AugmentSection, source: str = "recipe") -> None:
    """Refuse unknown operations, naming the key (a missing synonym file: check_source_files)."""
    for name in section.ops:
        if name not in AUGMENTERS:
            try:
                AUGMENTERS.get(name)
            except PeftkitError as exc:
                raise PeftkitError(f"{source}: 'augment.ops': {exc}") from None
