"""Safe loading: weights only as safetensors (what --overwrite may delete: peftkit.ownership).

The other rules live where the thing is done: recipes are parsed with ``yaml.safe_load``
(peftkit.recipe), ``trust_remote_code`` is false unless a recipe sets it (peftkit.recipe), plugins
come only from installed entry points (peftkit.registry), and the Trainer reads its own optimizer /
RNG state with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

from pathlib import Path

from peftkit.errors import PeftkitError

#: Weight files that are Python pickles: loading one can run arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def require_safetensors(directory: str | Path, what: str) -> None:
    """Refuse a local model / adapter directory whose weights exist only as pickles.

    ``what`` names the culprit in the message, e.g. ``"model.name 'x'"`` or ``"run 'runs/y'"``.
    A directory with no weights at all is left to the loader, which names what is missing.
    """
    directory = Path(directory)
    if not directory.is_dir() or any(directory.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise PeftkitError(
            f"{what}: weights only as pickle ({', '.join(pickles)}); peftkit loads safetensors only, since "
            "unpickling can run code — convert them with safetensors (save_pretrained(safe_serialization=True))"
        )
