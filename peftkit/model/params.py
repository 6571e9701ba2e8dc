"""Parameter counts: of a built model (trainable, total), and of a model section's checkpoint on the meta device."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from peftkit.data.cache import is_cached
from peftkit.data.catalog import MODELS
from peftkit.model.shipped import shipped_config

if TYPE_CHECKING:
    from torch import nn

    from peftkit.config.sections import ModelSection

#: What ``parameter_count`` counts for the models the named recipes use (tests/model/test_params.py counts them
#: again), so that `peftkit recipes` lists their sizes without importing torch and building each model.
KNOWN_COUNTS = {
    "minilm-l6": 22_713_216,
    "mpnet-base": 109_518_527,
    "m3e-small": 23_953_920,
    "smollm2-135m": 134_515_008,
    "FacebookAI/roberta-base": 124_697_433,
    "Qwen/Qwen2.5-1.5B-Instruct": 1_543_714_304,
    "Qwen/Qwen2.5-7B-Instruct": 7_615_616_512,
    "google-bert/bert-base-chinese": 102_290_312,
}


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
    device (for the named recipes' models: KNOWN_COUNTS); None when the config is not at hand without a download
    (an unfetched catalogue model, a hub model peftkit ships no config of)."""
    if not config_at_hand(model):
        return None
    if model.name in KNOWN_COUNTS and not model.random_init and model.revision is None:
        return KNOWN_COUNTS[model.name]
    import torch
    import transformers
    from transformers import AutoModel

    from peftkit.model.config import model_config

    config = model_config(model, **(model.config_overrides if model.random_init else {}))
    architecture = getattr(transformers, (getattr(config, "architectures", None) or ["AutoModel"])[0], AutoModel)
    with torch.device("meta"):
        built = (architecture.from_config(config, trust_remote_code=model.trust_remote_code)
                 if architecture is AutoModel else architecture(config))
    built.tie_weights()  # on the meta device embeddings tied in the config are not tied yet (counted twice)
    return count_parameters(built)[1]
