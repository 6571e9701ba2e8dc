"""Parameter counts: of a built model (trainable, total), and of a model section's checkpoint on the meta device."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel

from peftkit.config.sections import ModelSection
from peftkit.data.cache import is_cached
from peftkit.data.catalog import MODELS
from peftkit.model.config import model_config, shipped_config


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; packed 4-bit weights count as their unpacked size."""
    trainable = total = 0
    for parameter in model.parameters():
        n = parameter.numel()
        if parameter.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if parameter.requires_grad:
            trainable += n
    return trainable, total


def config_at_hand(model: ModelSection) -> bool:
    """Whether the model's config can be read without a download (a fetched catalogue model, a directory, a hub
    model peftkit ships the config of)."""
    if model.name in MODELS:
        return is_cached("model", model.name)
    return bool(shipped_config(model.name)) or Path(model.name).is_dir()


def parameter_count(model: ModelSection) -> int | None:
    """Parameters of the model as its checkpoint holds it (the architecture its config names), counted on the meta
    device; None when the config is not at hand without a download (an unfetched catalogue model, a hub model
    peftkit ships no config of)."""
    import transformers

    if not config_at_hand(model):
        return None
    config = model_config(model, **(model.config_overrides if model.random_init else {}))
    architecture = getattr(transformers, (getattr(config, "architectures", None) or ["AutoModel"])[0], AutoModel)
    with torch.device("meta"):
        built = (architecture.from_config(config, trust_remote_code=model.trust_remote_code)
                 if architecture is AutoModel else architecture(config))
    built.tie_weights()  # on the meta device embeddings tied in the config are not tied yet (counted twice)
    return count_parameters(built)[1]
