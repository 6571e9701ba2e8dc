"""`peftkit export --format gguf`: merge, write one GGUF file under llama.cpp's names, check it in transformers' reader.

The file is what llama.cpp, Ollama and LM Studio load: the architecture's metadata, the tokenizer (vocabulary,
merges, special tokens, chat template) and the merged weights, written with the ``gguf`` package. Parity is
checked by a reader peftkit did not write: transformers' GGUF loader rebuilds the model and the tokenizer.
"""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from peftkit.config.sections import Recipe
from peftkit.errors import PeftkitError
from peftkit.export.merge import merged_float32, open_for_export
from peftkit.export.parity import compare, logits_of, parity_section, sample_batches, write_report_and_check
from peftkit.heads.base import Head
from peftkit.model.config import model_config
from peftkit.rundir.cards import write_gguf_card
from peftkit.rundir.load import load_run_tokenizer
from peftkit.rundir.staging import locked_output, staged_directory

#: GGUF weight types by --dtype, with the long names the safetensors export uses.
DTYPE_NAMES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
#: How much the parity tolerance (--tolerance, the f32 bound) widens for each weight type: the rounding it costs.
TOLERANCE_SCALE = {"f32": 1.0, "f16": 100.0, "bf16": 1000.0, "q8_0": 1000.0}
#: transformers model_type → the llama.cpp architecture it is written as.
ARCHITECTURES = {"llama": "LLAMA", "qwen2": "QWEN2"}
SUPPORTED = "llama (Llama, SmolLM2) and qwen2 (Qwen2, Qwen2.5)"
#: Llama 3's pre-tokenizer split (llama.cpp's "llama-bpe"); Qwen2's comes from transformers, GPT-2's is ByteLevel's own.
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
                r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
#: The Ollama Modelfile written beside the GGUF file.
MODELFILE = "Modelfile"


def model_file(dtype: str) -> str:
    """The GGUF file's name in the export directory."""
    return f"model-{dtype}.gguf"


def _gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise PeftkitError("--format gguf needs the gguf package; pip install gguf") from None
    return gguf


def check_exportable(recipe: Recipe, head: Head) -> str:
    """The run's llama.cpp architecture name, or a one-line refusal: a non-causal head, an unsupported model."""
    if head.kind != "causal_lm":
        raise PeftkitError(f"--format gguf: task.head '{head.name}' is not supported; GGUF export covers causal_lm "
                           "runs (llama.cpp, Ollama and LM Studio run text generation)")
    config = model_config(recipe.model)
    if config.model_type not in ARCHITECTURES:
        raise PeftkitError(f"--format gguf: model architecture '{config.model_type}' ({recipe.model.name}) is not "
                           f"supported; GGUF export covers {SUPPORTED}")
    rope = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    biased = getattr(config, "mlp_bias", False) or (config.model_type == "llama" and config.attention_bias)
    if rope != "default" or biased:
        raise PeftkitError(f"--format gguf: {recipe.model.name} uses rope scaling '{rope}' or biases a "
                           f"{config.model_type} GGUF file does not describe; GGUF export covers the plain {SUPPORTED}")
    return ARCHITECTURES[config.model_type]


# -- tokenizer -----------------------------------------------------------------------------------------------


def _pre_tokenizer(spec: dict[str, Any] | None) -> str | None:
    """llama.cpp's name for a byte-level pre-tokenizer (tokenizer.ggml.pre), or None for any other."""
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX as QWEN2_SPLIT

    spec = spec or {}
    if spec.get("type") == "ByteLevel" and spec.get("use_regex", True) and not spec.get("add_prefix_space"):
        return "gpt2"
    steps = spec.get("pretokenizers", []) if spec.get("type") == "Sequence" else []
    if len(steps) != 2 or steps[0].get("type") != "Split" or steps[1].get("type") != "ByteLevel" or steps[1].get(
            "use_regex", True) or steps[1].get("add_prefix_space"):
        return None
    pattern = steps[0].get("pattern", {}).get("Regex")
    return {QWEN2_SPLIT: "qwen2", LLAMA3_SPLIT: "llama-bpe"}.get(pattern)


def _adds(tokenizer: PreTrainedTokenizerBase) -> tuple[bool, bool]:
    """Whether encoding a text adds the BOS / EOS token (llama.cpp adds them by these flags)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    bos = tokenizer.bos_token_id is not None and full[:1] == [tokenizer.bos_token_id] and len(full) > len(plain)
    eos = tokenizer.eos_token_id is not None and full[-1:] == [tokenizer.eos_token_id] and len(full) > len(plain) + bos
    return bos, eos


def check_tokenizer(tokenizer: PreTrainedTokenizerBase) -> tuple[str, list[str]]:
    """llama.cpp's pre-tokenizer name and the merges of the run's byte-level BPE tokenizer.

    Word-level, WordPiece, unigram and sentencepiece tokenizers are refused in one line: transformers' reader
    and llama.cpp rebuild only the byte-level BPE kind (GPT-2, SmolLM2, Qwen2, Llama 3) from llama.cpp's "gpt2"
    tokenizer keys.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model", {})
    pre = _pre_tokenizer(spec.get("pre_tokenizer")) if model.get("type") == "BPE" else None
    if pre is None or model.get("byte_fallback") or model.get("continuing_subword_prefix") or model.get(
            "end_of_word_suffix"):
        kind = model.get("type", type(tokenizer).__name__)
        raise PeftkitError(f"--format gguf: the run's tokenizer ({kind}) is not a byte-level BPE tokenizer; GGUF "
                           "export covers byte-level BPE tokenizers (GPT-2, SmolLM2, Qwen2, Llama 3 kind)")
    return pre, [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]


def add_tokenizer(writer: Any, tokenizer: PreTrainedTokenizerBase, vocab_size: int) -> dict[str, Any]:
    """Write the run's byte-level BPE tokenizer as llama.cpp's "gpt2" model; returns what was written."""
    gguf = _gguf()
    pre, merges = check_tokenizer(tokenizer)
    by_id = {i: token for token, i in tokenizer.get_vocab().items()}
    if len(by_id) > vocab_size or sorted(by_id) != list(range(len(by_id))):
        raise PeftkitError(f"--format gguf: the run's tokenizer has {len(by_id)} tokens with ids that do not fill "
                           f"0..{len(by_id) - 1} within the model's {vocab_size} embeddings")
    added = {t.content: t.special for t in tokenizer.added_tokens_decoder.values()}
    types, tokens = [], []
    for i in range(vocab_size):
        token = by_id.get(i, f"[PAD{i}]")
        tokens.append(token)
        types.append(gguf.TokenType.UNUSED if i not in by_id else gguf.TokenType.NORMAL if token not in added
                     else gguf.TokenType.CONTROL if added[token] else gguf.TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    special = {"bos": tokenizer.bos_token_id, "eos": tokenizer.eos_token_id, "unk": tokenizer.unk_token_id,
               "pad": tokenizer.pad_token_id}
    for name, token_id in special.items():
        if token_id is not None:
            getattr(writer, f"add_{name}_token_id")(token_id)
    add_bos, add_eos = _adds(tokenizer)
    writer.add_add_bos_token(add_bos)
    writer.add_add_eos_token(add_eos)
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    if template:
        writer.add_chat_template(template)
    return {"model": "gpt2", "pre": pre, "tokens": len(by_id), "merges": len(merges), "add_bos": add_bos,
            "add_eos": add_eos, "chat_template": bool(template)}


# -- weights -------------------------------------------------------------------------------------------------


def permute_rope(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's q/k row order for Llama (rotary halves interleaved per head); transformers' reader undoes it."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _weight_type(shape: tuple[int, ...], dtype: str) -> Any:
    """The GGUF type a weight of ``shape`` is stored in for ``dtype``: vectors stay f32 and rows q8_0 cannot cut
    into blocks go f16, as llama.cpp's converter does."""
    types = _gguf().GGMLQuantizationType
    if len(shape) < 2 or dtype == "f32":
        return types.F32
    if dtype == "q8_0":
        return types.Q8_0 if shape[-1] % _gguf().GGML_QUANT_SIZES[types.Q8_0][0] == 0 else types.F16
    return {"f16": types.F16, "bf16": types.BF16}[dtype]


def add_weights(writer: Any, model: nn.Module, arch: Any, dtype: str) -> int:
    """Declare ``model``'s weights under llama.cpp's tensor names, write the file's header, then stream the weights
    one at a time (only one converted tensor is in memory); returns how many."""
    gguf = _gguf()
    config = model.config
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    tied = getattr(config, "tie_word_embeddings", False)
    planned = []
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue
        stem, _, suffix = hf_name.rpartition(".")
        name = names.get_name(stem)
        if name is None:
            raise PeftkitError(f"--format gguf: weight '{hf_name}' has no llama.cpp name for this architecture")
        shape = tuple(tensor.shape)
        qtype = _weight_type(shape, dtype)
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        writer.add_tensor_info(f"{name}.{suffix}", shape, np.float32, tensor.numel() // block * size, raw_dtype=qtype)
        planned.append((stem, tensor, qtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for stem, tensor, qtype in planned:
        data = tensor.detach().float().cpu().numpy()
        if arch == gguf.MODEL_ARCH.LLAMA and stem.endswith(("q_proj", "k_proj")):
            data = permute_rope(data, config.num_attention_heads if stem.endswith("q_proj")
                                else config.num_key_value_heads)
        writer.write_tensor_data(gguf.quants.quantize(data, qtype))
    return len(planned)


def add_architecture(writer: Any, config: Any, arch: Any, dtype: str) -> None:
    """The model's hyper-parameters under the architecture's keys (what llama.cpp and transformers rebuild it from)."""
    gguf = _gguf()
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_file_type({"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16,
                          "bf16": gguf.LlamaFileType.MOSTLY_BF16, "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[dtype])
    if dtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0)))
    writer.add_vocab_size(config.vocab_size)
    if arch == gguf.MODEL_ARCH.LLAMA:
        writer.add_rope_dimension_count(head_dim)
    if head_dim != config.hidden_size // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)


def write_gguf(path: Path, model: nn.Module, tokenizer: PreTrainedTokenizerBase, arch_name: str, dtype: str,
               name: str) -> dict[str, Any]:
    """Write ``model`` (merged, float32) and ``tokenizer`` to one GGUF file at ``path``; returns the tokenizer's
    and the tensors' summary."""
    gguf = _gguf()
    arch = getattr(gguf.MODEL_ARCH, arch_name)
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[arch])
    try:
        writer.add_name(name)
        add_architecture(writer, model.config, arch, dtype)
        written = add_tokenizer(writer, tokenizer, model.config.vocab_size)
        tensors = add_weights(writer, model, arch, dtype)
    finally:
        writer.close()
    return {"tokenizer": written, "tensors": tensors}


# -- parity --------------------------------------------------------------------------------------------------


def round_trip_texts(recipe: Recipe, head: Any, tokenizer: PreTrainedTokenizerBase, samples: int) -> list[str]:
    """The first ``samples`` test prompts as the model sees them, and their responses: the round-trip texts."""
    from peftkit.data.pipeline import build_splits

    test = build_splits(recipe, head, tokenizer, parts=()).text["test"]
    rows = test.select(range(min(samples, len(test))))
    return [text for row in rows for text in (head.format_prompt(tokenizer, row["prompt"]), row["response"])]


def tokenizer_round_trip(ours: PreTrainedTokenizerBase, theirs: PreTrainedTokenizerBase,
                         texts: list[str]) -> dict[str, Any]:
    """Token ids and decoded text of ``texts`` from the run's tokenizer and the one rebuilt from the GGUF file."""
    mismatched = [text for text in texts if ours(text, add_special_tokens=False)["input_ids"]
                  != theirs(text, add_special_tokens=False)["input_ids"]]
    ids = [ours(text, add_special_tokens=False)["input_ids"] for text in texts]
    decoded = sum(ours.decode(i) != theirs.decode(i) for i in ids)
    specials = {name: (getattr(ours, f"{name}_token_id"), getattr(theirs, f"{name}_token_id"))
                for name in ("bos", "eos", "pad")}
    return {"texts": len(texts), "identical": not mismatched and not decoded and all(
        a == b for a, b in specials.values()), "mismatched_texts": mismatched[:3], "decode_differs": decoded,
        "special_tokens": {name: {"run": a, "gguf": b} for name, (a, b) in specials.items()}}


def gguf_logits(directory: Path, file: str, batches: list[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
    """float32 logits of the GGUF file as transformers' reader rebuilds the model (de-quantized to float32)."""
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=file, dtype=torch.float32)
    try:
        return logits_of(model, batches)
    finally:
        del model
        gc.collect()


def export_gguf(run_dir: str | Path, out: str | Path, dtype: str = "f16", tolerance: float = 1e-4,
                samples: int = 64, overwrite: bool = False) -> dict[str, Any]:
    """Export a causal-LM run to one GGUF file in ``out`` and return its parity report.

    The adapter is merged into the float32 base (a 4-/8-bit base is de-quantized first) and written as
    ``dtype`` (f32, f16, bf16 or q8_0). transformers' GGUF reader then rebuilds the model and the tokenizer
    from the file: the model's logits on the first ``samples`` test examples must be within ``tolerance``
    (× the largest |logit| when above 1) of the merged model's, widened by TOLERANCE_SCALE for the lossy
    types, and the tokenizer must encode and decode the test prompts identically, or the export fails and
    leaves nothing. ``out`` also gets an Ollama Modelfile, the report and a model card.
    """
    run_dir, out = Path(run_dir), Path(out)
    dtype = DTYPE_NAMES.get(dtype, dtype)
    if dtype not in TOLERANCE_SCALE:
        raise PeftkitError(f"--dtype '{dtype}': --format gguf writes one of {', '.join(TOLERANCE_SCALE)}")
    with locked_output(out):  # the whole command: a second one writing --out fails at once
        return _export_locked(run_dir, out, dtype, tolerance, samples, overwrite)


def _export_locked(run_dir: Path, out: Path, dtype: str, tolerance: float, samples: int,
                   overwrite: bool) -> dict[str, Any]:
    """``export_gguf`` under the lock of ``out``."""
    recipe, metrics, head, method = open_for_export(run_dir, out, overwrite, tolerance, samples)
    arch_name = check_exportable(recipe, head)
    _gguf()
    tokenizer = load_run_tokenizer(run_dir, recipe)
    check_tokenizer(tokenizer)
    batches = sample_batches(recipe, head, tokenizer, samples)
    texts = round_trip_texts(recipe, head, tokenizer, samples)
    file = model_file(dtype)
    with staged_directory(out, overwrite, inputs=[run_dir]) as staging:
        model = merged_float32(None, recipe, head, method, run_dir, "gguf")
        reference = logits_of(model, batches)
        written = write_gguf(staging / file, model, tokenizer, arch_name, dtype, out.name)
        del model
        gc.collect()
        figures = compare(reference, gguf_logits(staging, file, batches))
        round_trip = tokenizer_round_trip(tokenizer, AutoTokenizer.from_pretrained(staging, gguf_file=file), texts)
        scale = TOLERANCE_SCALE[dtype]
        report: dict[str, Any] = {
            "run": str(run_dir),
            "format": "gguf",
            "mode": "merge",
            "dtype": dtype,
            "file": file,
            "architecture": arch_name.lower(),
            "base_quantization": recipe.quantization.mode,
            "merged_into": f"de-quantized {recipe.quantization.mode} base (float32)"
                           if recipe.quantization.mode != "none" else "base weights (float32)",
            **written,
            "reader": f"transformers {transformers.__version__}, from_pretrained with gguf_file",
            "weights_bytes": (staging / file).stat().st_size,
            "tokenizer_round_trip": round_trip,
            "parity": parity_section(figures, samples, tolerance * scale, True,
                                     f"the merged model (PyTorch, float32) vs the {dtype} GGUF file rebuilt by "
                                     f"transformers' reader; tolerance {tolerance:g} × {scale:g} for {dtype}", ""),
        }
        write_report_and_check(staging, report, f"GGUF parity check failed: the {dtype} file's logits")
        if not round_trip["identical"]:
            example = round_trip["mismatched_texts"][:1]
            raise PeftkitError(f"GGUF tokenizer check failed: the tokenizer transformers rebuilds from the file "
                               f"encodes or decodes the test prompts differently (e.g. {example}, special tokens "
                               f"{round_trip['special_tokens']}); nothing was written")
        ollama = modelfile(head, tokenizer, file)
        (staging / MODELFILE).write_text(ollama, encoding="utf-8")
        write_gguf_card(staging, out, recipe, metrics, report, ollama, texts[0], head.config.max_new_tokens)
    return report


def modelfile(head: Any, tokenizer: PreTrainedTokenizerBase, file: str) -> str:
    """An Ollama Modelfile: the file, the run's prompt format around Ollama's ``{{ .Prompt }}``, greedy decoding
    and the end-of-sequence token as the stop word."""
    template = head.format_prompt(tokenizer, "{{ .Prompt }}")
    stop = f'PARAMETER stop "{tokenizer.eos_token}"\n' if tokenizer.eos_token else ""
    return f'FROM ./{file}\nTEMPLATE """{template}"""\nPARAMETER temperature 0\n{stop}'
