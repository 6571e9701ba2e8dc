"""`peftkit env`: installed versions against the tested range, devices, and whether a recipe fits each device."""

from __future__ import annotations

import importlib.metadata as metadata
import platform
from dataclasses import dataclass

import torch
from packaging.requirements import InvalidRequirement, Requirement
from packaging.version import InvalidVersion, Version

from peftkit.config.sections import Recipe
from peftkit.hardware import auto
from peftkit.hardware import device as devices
from peftkit.hardware.estimate import MemoryEstimate, estimate, sequence_for

#: The packages a bug report needs, in the order shown.
PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets")
MIB = 2**20


@dataclass
class PackageRow:
    """One installed package against the range peftkit declares for it."""

    name: str
    version: str | None  # None: not installed
    tested: str  # the specifier from peftkit's dependencies, "" when none

    @property
    def status(self) -> str:
        if self.version is None:
            return "not installed"
        if not self.tested:
            return ""
        try:
            inside = Requirement(f"{self.name}{self.tested}").specifier.contains(Version(self.version),
                                                                                 prereleases=True)
        except (InvalidRequirement, InvalidVersion):
            return "unknown"
        return "in tested range" if inside else "OUT of tested range"


def tested_ranges() -> dict[str, str]:
    """Package → version specifier, read from the installed peftkit's metadata (pyproject's dependencies)."""
    ranges: dict[str, str] = {}
    try:
        requirements = metadata.requires("peftkit") or []
    except metadata.PackageNotFoundError:
        return ranges
    for line in requirements:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.marker is None:  # extras ([test], [bench]) are not part of the tested core
            bounds = sorted(map(str, requirement.specifier), key=lambda bound: not bound.startswith(">"))
            ranges[requirement.name.lower()] = ",".join(bounds)  # lower bound first: >=5.0,<5.25
    return ranges


def installed(name: str) -> str | None:
    """The installed version of distribution ``name``, or None."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def package_rows() -> list[PackageRow]:
    """Each package a bug report needs: installed version and tested range."""
    ranges = tested_ranges()
    return [PackageRow(name, installed(name), ranges.get(name, "")) for name in PACKAGES]


def describe_device(device: devices.Device) -> str:
    """One line: name, memory, bf16 support."""
    bf16 = "native bf16" if device.bf16 or device.cpu_bf16 else "no native bf16"
    return f"{device.label}: {device.memory / 2**30:,.1f} GiB, {bf16}"


def report() -> list[str]:
    """The lines of `peftkit env` without a recipe."""
    cuda = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU build, no CUDA"
    lines = [f"peftkit {installed('peftkit') or '(not installed)'}", f"python {platform.python_version()}"]
    for row in package_rows():
        shown = row.version or "-"
        if row.name == "torch":
            shown += f" ({cuda})"
        tested = f"tested {row.tested}" if row.tested else ""
        lines.append(f"{row.name:<13} {shown:<34} {tested:<22} {row.status}".rstrip())
    lines.append("devices:")
    lines += [f"  {describe_device(d)}" for d in devices.all_devices()]
    flash = "installed" if devices.flash_attn_installed() else "not installed (attention: sdpa)"
    lines.append(f"flash-attn: {flash}")
    return lines


@dataclass
class Fit:
    """A recipe resolved for one device and its predicted peak."""

    device: devices.Device
    recipe: Recipe
    estimate: MemoryEstimate

    @property
    def fits(self) -> bool:
        return self.estimate.needed <= self.device.memory


def fits(recipe: Recipe, targets: list[devices.Device], processes: int = 1) -> tuple[list[Fit], str]:
    """The recipe's predicted peak on each device (its `auto` options resolved per device), per process of
    ``processes``, and where the sequence length came from."""
    length, labels, source = sequence_for(recipe)
    rows = []
    for target in targets:
        resolved = auto.resolved_for(recipe, target, length, labels)
        rows.append(Fit(target, resolved, estimate(resolved, length, labels, device=target, processes=processes)))
    return rows, source


def fit_table(rows: list[Fit]) -> list[str]:
    """Aligned lines: device, resolved settings, predicted peak with what the device reserves besides, whether it
    fits."""
    header = ("device", "memory", "precision", "optim", "grad ckpt", "needs", "fits")
    table = [header]
    for row in rows:
        t = row.recipe.train
        table.append((row.device.label, f"{row.device.memory / 2**30:,.1f} GiB", t.precision, t.optim,
                      "on" if t.gradient_checkpointing else "off", f"{row.estimate.needed / MIB:,.0f} MiB",
                      "yes" if row.fits else "NO"))
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
