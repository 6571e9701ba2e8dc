"""Verbs on recipes: `recipes`, `show`, `cp`, `validate`, `options`."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from peftkit.cli.common import Verbs, recipe_args, verb
from peftkit.errors import PeftkitError, did_you_mean


def add_recipes(verbs: Verbs) -> None:
    """Declare `peftkit recipes`."""
    verb(verbs, "recipes", cmd_recipes, "list the named recipes")


def _parameters(count: int | None) -> str:
    if count is None:
        return "?"
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.{1 if count < 100 * scale else 0}f}{unit}"
    return str(count)


def cmd_recipes(args: argparse.Namespace) -> None:
    """List the named recipes with their base model's size and description."""
    from peftkit.config.files import named_recipes, read_yaml
    from peftkit.config.load import recipe_from_dict
    from peftkit.model.params import parameter_count

    recipes = named_recipes()
    width = max(map(len, recipes), default=0)
    sizes: dict[str, str] = {}
    print(f"{'recipe':<{width}}  {'params':>6}  description (params: the base model's; ? = not fetched yet)")
    for name, path in recipes.items():
        raw = read_yaml(path)
        model = recipe_from_dict(raw, source=name).model
        key = model.model_dump_json()
        if key not in sizes:
            sizes[key] = _parameters(parameter_count(model))
        print(f"{name:<{width}}  {sizes[key]:>6}  {raw.get('description', '')}")


def add_show(verbs: Verbs) -> None:
    """Declare `peftkit show RECIPE [overrides]`."""
    recipe_args(verb(verbs, "show", cmd_show, "print a recipe with every default filled in"))


def cmd_show(args: argparse.Namespace) -> None:
    """Print the recipe with its overrides applied and every default filled in."""
    from peftkit.config.load import load_recipe

    print(load_recipe(args.recipe, args.overrides).to_yaml(), end="")


def add_cp(verbs: Verbs) -> None:
    """Declare `peftkit cp RECIPE DEST [--force]`."""
    cp = verb(verbs, "cp", cmd_cp, "copy a named recipe to a file to edit")
    cp.add_argument("recipe", help="recipe name or file")
    cp.add_argument("dest", help="destination file or directory")
    cp.add_argument("--force", action="store_true", help="replace an existing file")


def cmd_cp(args: argparse.Namespace) -> None:
    """Copy a recipe's file to a file or into a directory."""
    from peftkit.config.files import resolve_recipe_path

    source = resolve_recipe_path(args.recipe)
    dest = Path(args.dest)
    if dest.is_dir():
        dest = dest / source.name
    if not dest.parent.is_dir():
        raise PeftkitError(f"cp: directory '{dest.parent}' does not exist; create it first")
    if dest.exists() and not args.force:
        raise PeftkitError(f"'{dest}' already exists; pass --force to replace it")
    shutil.copyfile(source, dest)
    print(f"copied {source.stem} to {dest}; edit it, then `peftkit validate {dest}`")


def add_validate(verbs: Verbs) -> None:
    """Declare `peftkit validate RECIPE [overrides]`."""
    recipe_args(verb(verbs, "validate", cmd_validate,
                     "check a recipe (and this machine's support for it) without training"))


def cmd_validate(args: argparse.Namespace) -> None:
    """Check a recipe and resolve its `auto` options for this machine, without training."""
    from peftkit.config.load import load_recipe
    from peftkit.config.sections import AUTO

    recipe = load_recipe(args.recipe, args.overrides)  # a schema error stops here, before torch is imported
    from peftkit.hardware import device
    from peftkit.training.build import prepare_recipe

    here = device.current()
    resolved = prepare_recipe(recipe, here)
    if getattr(recipe.task, "pooling", None) == AUTO:  # the loader resolves it; say what it will pick
        from peftkit.model.loading import recorded_pooling

        resolved["task.pooling"] = recorded_pooling(recipe.model) or "the architecture's own"
    if recipe.model.lowercase == AUTO:  # read from the tokenizer's vocabulary, where it is on this machine
        from peftkit.model.loading import lowercase_at_hand

        lowercase = lowercase_at_hand(recipe.model)
        resolved["model.lowercase"] = "read from the tokenizer once it is fetched" if lowercase is None else lowercase
    print(
        f"ok: {args.recipe} — model {recipe.model.name}, method {recipe.method.name}, "
        f"head {recipe.task.head}, data {recipe.data.source}, quantization {recipe.quantization.mode}"
    )
    if resolved:
        print(f"auto on {here.label}: " + ", ".join(f"{k}={v}" for k, v in resolved.items()))


def add_options(verbs: Verbs) -> None:
    """Declare `peftkit options [SECTION]`."""
    options = verb(verbs, "options", cmd_options, "list every recipe option with its default and help")
    options.add_argument("section", nargs="?", help="only keys starting with this, e.g. train")


def cmd_options(args: argparse.Namespace) -> None:
    """List every recipe option (or those of one section) with its default and help."""
    from peftkit.config.options import describe_options

    rows = [row for row in describe_options() if not args.section or row[0].startswith(args.section)]
    if not rows:
        sections = sorted({key.split(".")[0] for key, _, _ in describe_options()})
        raise PeftkitError(f"options: no option starts with '{args.section}'{did_you_mean(args.section, sections)} "
                           f"(sections: {', '.join(sections)})")
    for key, default, help_text in rows:
        print(f"{key} = {default}\n    {help_text}")
