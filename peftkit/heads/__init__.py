"""Built-in task heads; importing this package registers them."""

from peftkit.heads import classification, sentiment  # noqa: F401
