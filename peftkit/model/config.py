"""Where a model comes from (catalogue, local directory, hub id) and its config, without loading weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, PretrainedConfig

from peftkit.config.sections import ModelSection
from peftkit.data.cache import fetch_model
from peftkit.data.catalog import MODELS
from peftkit.errors import PeftkitError, first_line
from peftkit.model.shipped import shipped_config

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_model_path(name: str) -> str:
    """A catalogue model is fetched into the cache; a directory is used as is; anything else is a hub id."""
    if name in MODELS:
        return str(fetch_model(name))
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name.startswith((".", "/", "~")):
        what = "is a file, expected a model directory" if path.exists() else "does not exist"
        raise PeftkitError(f"model.name: directory '{name}' {what}")
    return name


def model_config(model: ModelSection, **kwargs: Any) -> PretrainedConfig:
    """The model's config; for a hub model peftkit ships the config of (and no revision is pinned), that copy,
    so nothing is downloaded. ``kwargs`` override config fields."""
    shipped = shipped_config(model.name) if model.revision is None else None
    source = str(shipped) if shipped else resolve_model_path(model.name)
    revision = None if shipped else model.revision
    try:
        if model.trust_remote_code or not kwargs:
            return AutoConfig.from_pretrained(source, trust_remote_code=model.trust_remote_code, revision=revision,
                                              **kwargs)
        # overrides go in before the config is built, so fields derived from them (layer_types) follow
        fields, _ = PretrainedConfig.get_config_dict(source, revision=revision)
        fields = {**fields, **kwargs}
        return AutoConfig.for_model(fields.pop("model_type"), **fields)
    except OSError as exc:
        raise hub_error(source, exc) from None


def hub_error(source: str, exc: Exception) -> PeftkitError:
    if "trust_remote_code" in str(exc):
        return PeftkitError(
            f"model.name '{source}': its config asks to run code shipped with the model (auto_map); peftkit "
            "runs it only when the recipe sets model.trust_remote_code: true — do that only for a source you trust"
        )
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    first = first_line(exc)
    hint = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
    return PeftkitError(
        f"model.name '{source}': not a catalogue model (`peftkit models ls`), a local model directory, "
        f"or a hub id that could be loaded{hint}: {first}"
    )
