"""The bitsandbytes settings of a recipe's (resolved) quantization section."""

from __future__ import annotations

from transformers import BitsAndBytesConfig

from peftkit.config.sections import AUTO, QuantizationSection
from peftkit.heads.base import KNOWN_HEAD_MODULES
from peftkit.model.config import DTYPES


def quantization_config(section: QuantizationSection) -> BitsAndBytesConfig | None:
    """bitsandbytes settings for the recipe; task heads and a causal LM's output layer are never quantized.

    Naming skip modules replaces transformers' default list, which keeps ``lm_head`` (often tied to the
    input embeddings) in full precision; it is named here again. A 4-bit section's compute dtype must be resolved
    for the device (peftkit.hardware.auto) first.
    """
    skip = [*KNOWN_HEAD_MODULES, "lm_head"]
    if section.mode == "none":
        return None
    if section.mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)
    compute = section.compute_dtype
    if compute == AUTO:
        raise ValueError("quantization.compute_dtype is still auto; resolve it for the device first")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=section.quant_type,
        bnb_4bit_use_double_quant=section.double_quant,
        bnb_4bit_compute_dtype=DTYPES[compute],
        bnb_4bit_quant_storage=section.quant_storage,
        llm_int8_skip_modules=skip,
    )
