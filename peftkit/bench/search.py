"""A suite's search: which value each variant's trials chose on the validation split, and whether a recipe has a
validation split of its own (without one peftkit validates on the test split, which a search must never see)."""

from __future__ import annotations

import math
from typing import Any

from peftkit.config.load import recipe_from_dict
from peftkit.data.loading import own_validation_split
from peftkit.errors import PeftkitError


def is_trial(result: dict[str, Any]) -> bool:
    """Whether a cell result is a search trial (scored on validation, never on test)."""
    return (result.get("search") or {}).get("role") == "trial"


def better(score: float, best: float, metric: str) -> bool:
    """Strictly better (a tie keeps the earlier value); a metric named *loss* is minimised."""
    return score < best if "loss" in metric else score > best


def choose(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Variant → its search: every trial (value, cell, status, validation score) in the order tried, and the
    chosen value (None when no trial finished). Only the trials' validation scores are read."""
    searches: dict[str, dict[str, Any]] = {}
    for result in sorted(filter(is_trial, results), key=lambda r: r["search"]["index"]):
        trial = result["search"]
        search = searches.setdefault(result["variant"], {
            "role": "chosen", "key": trial["key"], "seed": trial["seed"], "metric": None, "value": None, "tried": []})
        score = None
        if result["status"] == "ok":
            search["metric"] = metric = trial["metric"]
            score = result["validation"][metric]
            best = search.get("best")
            if math.isfinite(score) and (best is None or better(score, best, metric)):
                search.update(value=trial["value"], best=score)
        search["tried"].append({"value": trial["value"], "cell": result["cell"], "status": result["status"],
                                "validation": score})
    for search in searches.values():
        search.pop("best", None)
    return searches


def has_validation_split(raw: dict[str, Any], source: str) -> bool | None:
    """:func:`peftkit.data.loading.own_validation_split` of a cell's raw recipe; None when the recipe does not
    load (its cell records why)."""
    try:
        return own_validation_split(recipe_from_dict(raw, source=source).data)
    except PeftkitError:
        return None
