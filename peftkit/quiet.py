"""Library start-up messages that read as errors but are not: filtered once, when peftkit is imported.

bitsandbytes (≥ 0.49, CPUs with AVX512-BF16) tries to fetch an optional fused 4-bit kernel from the hub
through the ``kernels`` package at import, and logs a warning when that package is missing, on every command,
even those that never quantize. Without it bitsandbytes uses its own CPU 4-bit kernels; results are the same.
peftkit does not install ``kernels`` (it downloads code at run time), so the line is dropped.
"""

from __future__ import annotations

import logging

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropMessage(logging.Filter):
    """Drops records whose message starts with ``prefix``; every other record passes."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def install() -> None:
    """Filter the optional-kernel warning on bitsandbytes' CPU logger (idempotent)."""
    logger = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _DropMessage) for f in logger.filters):
        logger.addFilter(_DropMessage(KERNELS_MESSAGE))
