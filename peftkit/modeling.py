"""Recipe → tokenizer and base model: catalogue name, local directory or hub id, quantized or not."""

from __future__ import annotations

import gc
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoTokenizer,
    BitsAndBytesConfig,
    PretrainedConfig,
    PreTrainedTokenizerBase,
)

from peftkit import device as devices
from peftkit.data.cache import cache_root, fetch_model, is_cached
from peftkit.data.catalog import MODELS
from peftkit.errors import PeftkitError
from peftkit.heads.base import KNOWN_HEAD_MODULES, Head
from peftkit.recipe import ModelSection, QuantizationSection
from peftkit.regularization import dropout_kwargs
from peftkit.safety import require_safetensors

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: The config.json of hub models the named recipes use (a few KB each), so validate / estimate work offline.
HUB_CONFIGS = Path(__file__).resolve().parent / "hub_configs"


def resolve_model_path(name: str) -> str:
    """A catalogue model is fetched into the cache; a directory is used as is; anything else is a hub id."""
    if name in MODELS:
        return str(fetch_model(name))
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name.startswith((".", "/", "~")):
        raise PeftkitError(f"model.name: directory '{name}' does not exist")
    return name


def shipped_config(name: str) -> Path | None:
    """The directory holding the config.json peftkit ships for hub model ``name``, if it ships one."""
    directory = HUB_CONFIGS / name.replace("/", "--")
    return directory if "/" in name and (directory / "config.json").is_file() else None


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
        raise _hub_error(source, exc) from None


def parameter_count(model: ModelSection) -> int | None:
    """Parameters of the model as its checkpoint holds it (the architecture its config names), counted on the meta
    device; None when the config is not at hand without a download (an unfetched catalogue model, a hub model
    peftkit ships no config of)."""
    import transformers

    if model.name in MODELS and not is_cached("model", model.name):
        return None
    if model.name not in MODELS and not shipped_config(model.name) and not Path(model.name).is_dir():
        return None
    config = model_config(model, **(model.config_overrides if model.random_init else {}))
    architecture = getattr(transformers, (getattr(config, "architectures", None) or ["AutoModel"])[0], AutoModel)
    with torch.device("meta"):
        built = (architecture.from_config(config, trust_remote_code=model.trust_remote_code)
                 if architecture is AutoModel else architecture(config))
    return sum(p.numel() for p in built.parameters())


def quantization_config(section: QuantizationSection) -> BitsAndBytesConfig | None:
    """bitsandbytes settings for the recipe; task heads and a causal LM's output layer are never quantized.

    Naming skip modules replaces transformers' default list, which keeps ``lm_head`` (often tied to the
    input embeddings) in full precision; it is named here again.
    """
    skip = [*KNOWN_HEAD_MODULES, "lm_head"]
    if section.mode == "none":
        return None
    if section.mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    compute = section.compute_dtype
    if compute == "auto":  # a section not resolved by a run (e.g. `peftkit methods`): this machine's choice
        compute = devices.compute_dtype(devices.current())
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=section.quant_type,
        bnb_4bit_use_double_quant=section.double_quant,
        bnb_4bit_compute_dtype=DTYPES[compute],
        bnb_4bit_quant_storage=section.quant_storage,
        llm_int8_skip_modules=skip,
    )


def _hub_error(source: str, exc: Exception) -> PeftkitError:
    if "trust_remote_code" in str(exc):
        return PeftkitError(
            f"model.name '{source}': its config asks to run code shipped with the model (auto_map); peftkit "
            "runs it only when the recipe sets model.trust_remote_code: true — do that only for a source you trust"
        )
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = " (HF_HUB_OFFLINE=1 is set)" if offline else ""
    return PeftkitError(
        f"model.name '{source}': not a catalogue model (`peftkit models ls`), a local model directory, "
        f"or a hub id that could be loaded{hint}: {first}"
    )


def load_tokenizer(model: ModelSection, path: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer of the recipe's model (or of ``path``, a saved run)."""
    source = path or resolve_model_path(model.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=model.trust_remote_code, revision=None if path else model.revision
        )
    except (OSError, ValueError) as exc:
        raise _hub_error(source, exc) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise PeftkitError(f"model.name '{model.name}': the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def random_init_path(model: ModelSection) -> Path | None:
    """Where ``random_init_checkpoint`` keeps the model's random-init checkpoint (None without random_init)."""
    if not model.random_init:
        return None
    source = str(shipped_config(model.name) or resolve_model_path(model.name))
    key = json.dumps({"source": source, "overrides": model.config_overrides, "dtype": model.dtype}, sort_keys=True)
    return cache_root() / "random-init" / hashlib.sha256(key.encode()).hexdigest()[:16]


def random_init_checkpoint(model: ModelSection) -> str | None:
    """With ``model.random_init``: a cached checkpoint of the body with seeded random weights, built once from
    the model's config and ``model.config_overrides``, so it loads (and quantizes) like any checkpoint."""
    target = random_init_path(model)
    if target is None:
        return None
    if not (target / "config.json").is_file():
        try:
            config = model_config(model, **model.config_overrides)
        except (ValueError, TypeError) as exc:
            raise PeftkitError(f"model.config_overrides: {str(exc).splitlines()[0]}") from None
        with torch.random.fork_rng():
            torch.manual_seed(0)
            body = AutoModel.from_config(config, dtype=DTYPES[model.dtype])
        staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            body.save_pretrained(staging)
            staging.replace(target)
        except (OSError, SafetensorError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise PeftkitError(
                f"model.random_init: could not write the random checkpoint into the cache '{cache_root()}' "
                f"({getattr(exc, 'strerror', None) or exc}); set PEFTKIT_CACHE to a writable directory"
            ) from None
        del body
    return str(target)


def check_position_limit(model: nn.Module, longest: int, model_name: str) -> None:
    """Refuse inputs longer than the model's learned position table (an index error deep in training)."""
    config = getattr(model, "config", None)
    limit = getattr(config, "max_position_embeddings", None)
    rotary = any(getattr(config, key, None) for key in ("rope_theta", "rope_parameters", "rope_scaling"))
    if getattr(config, "position_embedding_type", "absolute") != "absolute" or rotary:
        return  # relative / rotary positions have no table to run off
    if isinstance(limit, int) and longest > limit:
        raise PeftkitError(
            f"'data.max_length': inputs of up to {longest} tokens, but model '{model_name}' has positions for "
            f"{limit} (max_position_embeddings); set data.max_length to {limit} or less"
        )


MAPS_FILE = Path("/proc/self/maps")


def mapped_files(suffix: str = ".safetensors") -> dict[str, list[tuple[int, int]]]:
    """Address ranges of this process's file mappings whose path ends with ``suffix`` (Linux; else empty)."""
    found: dict[str, list[tuple[int, int]]] = {}
    try:
        lines = MAPS_FILE.read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].endswith(suffix):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            found.setdefault(parts[5], []).append((start, end))
    return found


def release_checkpoint(model: nn.Module) -> int:
    """Copy into private memory every parameter and buffer of ``model`` that is still a view of a mapped
    safetensors file, so the file is unmapped once nothing else holds it; returns how many were copied.

    transformers reads checkpoints through mmap and keeps tensors it did not convert as views of the file. On
    a quantized load every page of the float32 file was read to quantize it, and the whole file stays mapped and
    resident for the sake of a few tensors (embeddings, norms, skipped modules). Unquantized, a frozen base would
    be held as file pages that memory accounting does not see as the run's own. Copied, every weight a run holds
    is private memory, as it is on a GPU.
    """
    ranges = [r for spans in mapped_files().values() for r in spans]
    if not ranges:
        return 0
    copied = 0
    for module in model.modules():
        tensors = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
        for _, tensor in tensors:
            pointer = tensor.data_ptr()
            if any(start <= pointer < end for start, end in ranges):
                tensor.data = tensor.data.clone()
                copied += 1
    gc.collect()
    return copied


def load_base_model(model: ModelSection, quantization: QuantizationSection, head: Head,
                    label_names: list[str], path: str | None = None) -> tuple[nn.Module, list[str]]:
    """The base model with the head's task layer, and the names of the head modules to train and save.

    Head modules are the ones transformers initialised fresh (missing from the checkpoint) plus the
    usual head names; they stay out of quantization so peft's ``modules_to_save`` can train them.
    """
    source = path or random_init_checkpoint(model) or resolve_model_path(model.name)
    kwargs: dict[str, Any] = dict(
        dtype=DTYPES[model.dtype],
        trust_remote_code=model.trust_remote_code,
        quantization_config=quantization_config(quantization),
        output_loading_info=True,
        use_safetensors=True,
        attn_implementation=None if model.attn_implementation == "auto" else model.attn_implementation,
        **head.model_kwargs(label_names),
        **dropout_kwargs(model, source),
    )
    if path is None and model.revision:
        kwargs["revision"] = model.revision
    require_safetensors(source, f"model.name '{model.name}'" if path is None else f"run '{path}'")
    try:
        loaded, info = head.auto_class.from_pretrained(source, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise PeftkitError(
                f"model.name '{model.name}': its architecture has no {head.auto_class.__name__} "
                f"(needed by task.head '{head.name}')"
            ) from None
        raise _hub_error(source, exc) from None
    except OSError as exc:
        raise _hub_error(source, exc) from None
    except SafetensorError as exc:
        what = f"model.name '{model.name}'" if path is None else f"run '{path}'"
        catalogued = path is None and model.name in MODELS
        fix = f"; `peftkit models fetch {model.name}` fetches it again" if catalogued else "; replace it"
        raise PeftkitError(f"{what}: a weights file in '{source}' is damaged or truncated ({exc}){fix}") from None
    release_checkpoint(loaded)
    if getattr(loaded.config, "pad_token_id", None) is None:
        loaded.config.pad_token_id = getattr(loaded.config, "eos_token_id", None)
    fresh = {key.split(".")[0] for key in info["missing_keys"]}
    children = {name for name, _ in loaded.named_children()}
    head_modules = sorted((fresh | set(KNOWN_HEAD_MODULES)) & children)
    return loaded, head_modules
