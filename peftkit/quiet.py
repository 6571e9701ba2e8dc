"""Library messages that read as problems but are not, filtered by name when peftkit is imported; every other
warning of peft, transformers, torch or bitsandbytes reaches the user.

- bitsandbytes (≥ 0.49, CPUs with AVX512-BF16) tries to fetch an optional fused 4-bit kernel from the hub through
  the ``kernels`` package at import, and logs a warning when that package is missing, on every command, even those
  that never quantize. Without it bitsandbytes uses its own CPU 4-bit kernels; results are the same. peftkit does
  not install ``kernels`` (it downloads code at run time), so the line is dropped.
- transformers 5.2x renamed gradient checkpointing to activation checkpointing and warns (FutureWarning) on the old
  name, also from its own code paths and from the TrainingArguments field that every transformers version peftkit
  supports takes; nothing a user can act on.
"""

from __future__ import annotations

import logging
import warnings

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
#: FutureWarnings dropped, by the start of their message (a regular expression, as ``warnings`` matches it).
RENAMED_CHECKPOINTING = r"`(is_)?gradient_checkpointing` is deprecated"


class _DropMessage(logging.Filter):
    """Drops records whose message starts with ``prefix``; every other record passes."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def install() -> None:
    """Filter the named messages above, and only those (idempotent)."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage(KERNELS_MESSAGE))
    warnings.filterwarnings("ignore", message=RENAMED_CHECKPOINTING, category=FutureWarning)


def for_cli() -> None:
    """The CLI shows its own output and the progress bars, not transformers' informational logging."""
    import transformers

    transformers.logging.set_verbosity_error()
