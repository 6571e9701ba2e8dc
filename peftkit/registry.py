"""The one registration mechanism: named plugins (heads, methods) incl. third-party entry points."""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Generic, TypeVar

from peftkit.errors import PeftkitError, did_you_mean

if TYPE_CHECKING:  # types only: the plugins sit in layers above this one and register themselves here
    from peftkit.config.schema import HeadConfig, MethodConfig
    from peftkit.config.sections import Recipe
    from peftkit.data.augment import Augmenter
    from peftkit.heads.base import Head
    from peftkit.methods.base import Method

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a name to a plugin object; built-ins load from a package, third parties from entry points.

    ``builtin_package`` is imported on first use so its modules can register themselves;
    every installed entry point of ``entry_point_group`` is then loaded the same way.
    """

    def __init__(self, kind: str, builtin_package: str, entry_point_group: str, option: str | None = None) -> None:
        self.kind = kind
        self.option = option  # the options field naming the plugin (``method.name``, ``task.head``)
        self.builtin_package = builtin_package
        self.entry_point_group = entry_point_group
        self._items: dict[str, T] = {}
        self._origins: dict[str, str] = {}
        self._loaded = False
        self._loading = False
        self._lock = threading.RLock()  # another thread waits for the first load; the loading one re-enters

    def register(self, name: str, origin: str = "peftkit") -> Callable[[T], T]:
        """Decorator that registers an object under ``name``; a duplicate name is an error.

        A plugin class is given ``name`` as its ``name`` attribute (one it declares itself must agree), and the
        default of its options' naming field must be ``name`` too: the name is stated once, here."""

        def add(obj: T) -> T:
            self._bind_name(obj, name, origin)
            if name in self._items:
                raise PeftkitError(
                    f"{self.kind} '{name}' is registered twice "
                    f"(by {self._origins[name]} and by {origin}); rename one of them"
                )
            self._items[name] = obj
            self._origins[name] = origin
            return obj

        return add

    def _bind_name(self, obj: object, name: str, origin: str) -> None:
        if not isinstance(obj, type) or self.option is None:
            return
        declared = obj.__dict__.get("name")
        if declared and declared != name:
            raise PeftkitError(f"{self.kind} class {obj.__name__} ({origin}) declares name '{declared}' but is "
                               f"registered as '{name}'; drop its name attribute")
        obj.name = name  # type: ignore[attr-defined]
        config_cls = getattr(obj, "config_cls", None)
        field = getattr(config_cls, "model_fields", {}).get(self.option)
        if field is not None and field.default != name:
            raise PeftkitError(f"{self.kind} '{name}' ({origin}): its options {config_cls.__name__}.{self.option} "
                               f"default to '{field.default}'; declare {self.option} = option('{name}', ...)")

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded or self._loading:
                return
            self._loading = True
            try:
                importlib.import_module(self.builtin_package)
                for ep in entry_points(group=self.entry_point_group):
                    if ep.name in self._items:
                        continue
                    try:
                        obj = ep.load()
                    except Exception as exc:  # a broken plugin must not take the whole tool down silently
                        raise PeftkitError(
                            f"plugin {self.kind} '{ep.name}' ({ep.value}) failed to import: {exc}"
                        ) from exc
                    if ep.name not in self._items:
                        self.register(ep.name, origin=f"entry point {ep.value}")(obj)
                self._loaded = True
            finally:
                self._loading = False

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name is a one-line error with a suggestion."""
        self._ensure_loaded()
        if name not in self._items:
            raise PeftkitError(
                f"unknown {self.kind} '{name}'{did_you_mean(name, self._items)} "
                f"(known: {', '.join(sorted(self._items))})"
            )
        return self._items[name]

    def origin(self, name: str) -> str:
        """Who registered ``name``: 'peftkit' or the entry point that did."""
        self._ensure_loaded()
        return self._origins[name]

    def names(self) -> list[str]:
        """All registered names, in registration order."""
        self._ensure_loaded()
        return list(self._items)

    def __iter__(self) -> Iterator[tuple[str, T]]:
        self._ensure_loaded()
        return iter(list(self._items.items()))

    def __contains__(self, name: object) -> bool:
        self._ensure_loaded()
        return name in self._items


HEADS: Registry[type[Head]] = Registry("head", "peftkit.heads", "peftkit.heads", option="head")
METHODS: Registry[type[Method]] = Registry("method", "peftkit.methods", "peftkit.methods", option="name")
#: Text augmentation operations ``(text, ctx) -> text`` (`augment.ops`), e.g. a back-translation plug-in.
AUGMENTERS: Registry[Augmenter] = Registry("augmenter", "peftkit.data.augment", "peftkit.augmenters")


def build_head(task: HeadConfig) -> Head:
    """The task head a recipe's ``task`` section names, built with those options."""
    return HEADS.get(task.head)(task)


def build_method(method: MethodConfig) -> Method:
    """The fine-tuning method a recipe's ``method`` section names, built with those options."""
    return METHODS.get(method.name)(method)


def plugins(recipe: Recipe) -> tuple[Head, Method]:
    """A recipe's task head and fine-tuning method, each built from its section."""
    return build_head(recipe.task), build_method(recipe.method)
