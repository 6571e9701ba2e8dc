"""Built-in task heads; importing this package registers them."""

from peftkit.heads import causal_lm, classification, ner, sentiment  # noqa: F401
