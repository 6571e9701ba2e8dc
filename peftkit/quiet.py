"""Library messages that read as problems but are not, filtered by name when peftkit is imported; every other
warning of peft, transformers, torch or bitsandbytes reaches the user.

- bitsandbytes (≥ 0.49, CPUs with AVX512-BF16) tries to fetch an optional fused 4-bit kernel from the hub through
  the ``kernels`` package at import, and logs a warning when that package is missing, on every command, even those
  that never quantize. Without it bitsandbytes uses its own CPU 4-bit kernels; results are the same. peftkit does
  not install ``kernels`` (it downloads code at run time), so the line is dropped.
- transformers 5.2x renamed gradient checkpointing to activation checkpointing and warns (FutureWarning) on the old
  name, also from its own code paths and from the TrainingArguments field that every transformers version peftkit
  supports takes; nothing a user can act on. peftkit passes the new name where transformers has it; peft still reads
  the old property of the model.
- transformers logs a "LOAD REPORT" table (with terminal colour codes) whenever a checkpoint lacks weights the model
  has: for every classification head peftkit adds, which training initialises by design.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from importlib.machinery import ModuleSpec
from types import ModuleType

BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"
KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"
#: FutureWarnings dropped, by the start of their message (a regular expression, as ``warnings`` matches it).
RENAMED_CHECKPOINTING = r"`(is_)?gradient_checkpointing` is deprecated"
#: The loggers transformers writes its LOAD REPORT through (model loading, adapter loading, pipeline layers).
LOAD_REPORT_LOGGERS = ("transformers.modeling_utils", "transformers.integrations.peft", "transformers.modeling_layers")
LOAD_REPORT = "LOAD REPORT"


class _DropMessage(logging.Filter):
    """Drops records whose message starts with ``prefix`` (or, ``anywhere``, contains it); every other passes."""

    def __init__(self, prefix: str, anywhere: bool = False) -> None:
        super().__init__()
        self.prefix = prefix
        self.anywhere = anywhere

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (self.prefix in message if self.anywhere else message.startswith(self.prefix))


def _drop(logger_name: str, prefix: str, anywhere: bool = False) -> None:
    logger = logging.getLogger(logger_name)
    if not any(isinstance(f, _DropMessage) and f.prefix == prefix for f in logger.filters):
        logger.addFilter(_DropMessage(prefix, anywhere))


def install() -> None:
    """Filter the named messages above, and only those (idempotent)."""
    _drop(BNB_CPU_LOGGER, KERNELS_MESSAGE)
    for name in LOAD_REPORT_LOGGERS:
        _drop(name, LOAD_REPORT, anywhere=True)
    warnings.filterwarnings("ignore", message=RENAMED_CHECKPOINTING, category=FutureWarning)


@contextlib.contextmanager
def library_noise_filtered() -> Iterator[None]:
    """The filters of `install` in force for a block even where the caller reset the warning filters (pytest,
    some notebooks); the caller's filters come back afterwards."""
    with warnings.catch_warnings():
        install()
        yield


@contextlib.contextmanager
def logger_silenced(name: str) -> Iterator[None]:
    """No record of logger ``name`` or its children for a block, errors included: for a call whose failure peftkit
    reports itself in one line (datasets logs a parser's error before raising it)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def no_progress_bars() -> None:
    """No progress bars of datasets or transformers (loading weights, tokenizing) in this process."""
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``action`` on the top-level module ``name`` right after it is first imported, so that a setting for it
    costs nothing in a process that never imports it. Removes itself once it has found the module."""

    def __init__(self, name: str, action: Callable[[ModuleType], None]) -> None:
        self.name = name
        self.action = action

    def find_spec(self, fullname: str, path: object = None, target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)
        spec = next((s for f in sys.meta_path if (s := f.find_spec(fullname, path, target)) is not None), None)
        if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
            run, action = spec.loader.exec_module, self.action

            def exec_module(module: ModuleType) -> None:
                run(module)
                action(sys.modules[fullname])

            spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _transformers_errors_only(transformers: ModuleType) -> None:
    transformers.logging.set_verbosity_error()


def for_cli() -> None:
    """The CLI shows its own output and the progress bars, not transformers' informational logging: set once
    transformers is imported (now, or when a verb first imports it; verbs that need no model never do)."""
    if "transformers" in sys.modules:
        _transformers_errors_only(sys.modules["transformers"])
    elif not any(isinstance(finder, _AfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport("transformers", _transformers_errors_only))
