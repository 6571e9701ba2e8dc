"""The config.json of hub models the named recipes use (a few KB each), so validate / estimate work offline."""

from __future__ import annotations

from pathlib import Path

HUB_CONFIGS = Path(__file__).resolve().parent / "hub_configs"


def shipped_config(name: str) -> Path | None:
    """The directory holding the config.json peftkit ships for hub model ``name``, if it ships one."""
    directory = HUB_CONFIGS / name.replace("/", "--")
    return directory if "/" in name and (directory / "config.json").is_file() else None
