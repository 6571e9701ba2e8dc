"""Recipe → tokenizer and base model: catalogue name, local directory or hub id, quantized or not."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from peftkit.config.sections import AUTO, ModelSection, QuantizationSection
from peftkit.data.cache import cache_root, is_cached
from peftkit.data.catalog import MODELS
from peftkit.errors import PeftkitError, first_line
from peftkit.heads.base import KNOWN_HEAD_MODULES, Head
from peftkit.heads.pooling import apply_pooling, native
from peftkit.model.casing import apply_lowercase
from peftkit.model.config import DTYPES, hub_error, model_config, resolve_model_path
from peftkit.model.dropout import dropout_kwargs
from peftkit.model.heap import trim_heap
from peftkit.model.quantization import quantization_config
from peftkit.model.shipped import shipped_config
from peftkit.model.weights import release_checkpoint, require_safetensors


def load_tokenizer(model: ModelSection, path: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer of the recipe's model, `model.lowercase` resolved in place and applied (peftkit.model.casing),
    or of ``path``, a saved run, as it was saved."""
    source = path or resolve_model_path(model.name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, trust_remote_code=model.trust_remote_code, revision=None if path else model.revision
        )
    except (OSError, ValueError) as exc:
        raise hub_error(source, exc) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise PeftkitError(f"model.name '{model.name}': the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if path is None:
        apply_lowercase(model, tokenizer)
    return tokenizer


def lowercase_at_hand(model: ModelSection) -> bool | None:
    """What `model.lowercase: auto` resolves to when the tokenizer is on this machine (a fetched catalogue model or
    a directory), None when it would have to be fetched first."""
    if not (is_cached("model", model.name) if model.name in MODELS else Path(model.name).expanduser().is_dir()):
        return None
    copy = model.model_copy()
    load_tokenizer(copy)
    return bool(copy.lowercase)


def random_init_path(model: ModelSection) -> Path | None:
    """Where ``random_init_checkpoint`` keeps the model's random-init checkpoint (None without random_init)."""
    if not model.random_init:
        return None
    source = str(shipped_config(model.name) or resolve_model_path(model.name))
    key = json.dumps({"source": source, "overrides": model.config_overrides, "dtype": model.dtype,
                      "with_lm_head": True}, sort_keys=True)
    return cache_root() / "random-init" / hashlib.sha256(key.encode()).hexdigest()[:16]


def random_init_config(model: ModelSection) -> Any:
    """The config ``model.config_overrides`` make, refused (naming the key) when the architecture cannot be built
    from it (e.g. a width the head count does not divide) or its weights would not fit this machine's memory;
    checked before anything loads (hardware.preflight) where the config is at hand, and again when building."""
    try:
        config = model_config(model, **model.config_overrides)
        with torch.device("meta"):
            parameters = sum(p.numel() for p in AutoModel.from_config(config).parameters())
    except (ValueError, TypeError, RuntimeError) as exc:
        raise PeftkitError(f"model.config_overrides: {first_line(exc)}") from None
    needed = parameters * DTYPES[model.dtype].itemsize
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > memory:
        raise PeftkitError(
            f"model.config_overrides: {model.config_overrides} make a model of {parameters:,} parameters "
            f"({needed / 2**30:.1f} GiB in {model.dtype}), more than this machine's {memory / 2**30:.1f} GiB of memory"
        )
    return config


def random_init_checkpoint(model: ModelSection) -> str | None:
    """With ``model.random_init``: a cached checkpoint with seeded random weights, built once from the model's
    config and ``model.config_overrides``, so it loads (and quantizes) like any checkpoint. A causal LM's holds its
    ``lm_head`` too: without it an untied head would load as fresh and be trained whole beside the adapter."""
    target = random_init_path(model)
    if target is None:
        return None
    if not (target / "config.json").is_file():
        config = random_init_config(model)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            causal = any(name.endswith("ForCausalLM") for name in getattr(config, "architectures", None) or ())
            body = (AutoModelForCausalLM if causal else AutoModel).from_config(config, dtype=DTYPES[model.dtype])
        staging = target.with_name(f".{target.name}.tmp-{os.getpid()}")
        try:
            body.save_pretrained(staging)
            staging.replace(target)
        except (OSError, SafetensorError) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if (target / "config.json").is_file():  # another process (`bench --jobs`) built it first: seed 0,
                return str(target)  # the same weights, renamed into place whole
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


def training_device(sharded: bool) -> int | None:
    """The CUDA device a training process loads its base model straight onto (under torchrun its own GPU), or
    None: no GPU, or FSDP / DeepSpeed, which place (and shard) the weights themselves."""
    return None if sharded or not torch.cuda.is_available() else int(os.environ.get("LOCAL_RANK", "0"))


def recorded_pooling(model: ModelSection) -> str:
    """What `task.pooling: auto` resolves to before the model loads: the catalogue model's recorded pooling, or ""
    (the architecture's own, known once it has loaded)."""
    entry = MODELS.get(model.name)
    return entry.pooling if entry else ""


def set_pooling(model: ModelSection, head: Head, loaded: nn.Module, saved_run: bool) -> None:
    """Resolve the head's `task.pooling: auto` in its options (the catalogue model's record, else the
    architecture's own) and apply it. A saved run's recipe holds the resolved value; `auto` there is a run saved
    before the option existed, which pooled the architecture's own way."""
    pooling = getattr(head.config, "pooling", None)
    if pooling is None:
        return
    if pooling == AUTO:
        pooling = head.config.pooling = ("" if saved_run else recorded_pooling(model)) or native(loaded)
    apply_pooling(loaded, pooling)


def load_base_model(model: ModelSection, quantization: QuantizationSection, head: Head,
                    label_names: list[str], path: str | None = None, device: int | None = None,
                    saved_run: bool = False) -> tuple[nn.Module, list[str]]:
    """The base model with the head's task layer, and the names of the head modules to train and save.

    Head modules are the ones transformers initialised fresh (missing from the checkpoint) plus the
    usual head names; they stay out of quantization so peft's ``modules_to_save`` can train them. Given a CUDA
    ``device`` the weights are read straight onto it (no CPU copy first). The head's ``task.pooling`` is
    resolved and applied (``saved_run``: building the model of a saved run).
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
    if quantization.mode != "none" and torch.cuda.is_available():
        # bitsandbytes places quantized weights at load time; under torchrun each process on its own GPU
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}
    elif device is not None:
        kwargs["device_map"] = {"": device}
    require_safetensors(source, f"model.name '{model.name}'" if path is None else f"run '{path}'")
    try:
        loaded, info = head.auto_class.from_pretrained(source, **kwargs)
    except ValueError as exc:
        if "Unrecognized configuration class" in str(exc):
            raise PeftkitError(
                f"model.name '{model.name}': its architecture has no {head.auto_class.__name__} "
                f"(needed by task.head '{head.name}')"
            ) from None
        raise hub_error(source, exc) from None
    except OSError as exc:
        raise hub_error(source, exc) from None
    except SafetensorError as exc:
        what = f"model.name '{model.name}'" if path is None else f"run '{path}'"
        catalogued = path is None and model.name in MODELS
        fix = f"; `peftkit models fetch {model.name}` fetches it again" if catalogued else "; replace it"
        raise PeftkitError(f"{what}: a weights file in '{source}' is damaged or truncated ({exc}){fix}") from None
    release_checkpoint(loaded)
    trim_heap()  # quantizing churns the heap: what it freed goes back to the system, not into the run's peak
    if path is None or getattr(loaded.config, "pad_token_id", None) is None:
        # the token the tokenizer pads with (sequence classification pools the last token that is not it), not
        # the config's own: Qwen's names eos (<|im_end|>) while its tokenizer pads with <|endoftext|>
        loaded.config.pad_token_id = load_tokenizer(model, path).pad_token_id
    set_pooling(model, head, loaded, saved_run)
    fresh = {key.split(".")[0] for key in info["missing_keys"]}
    children = {name for name, _ in loaded.named_children()}
    head_modules = sorted((fresh | set(KNOWN_HEAD_MODULES)) & children)
    return loaded, head_modules
