"""Built-in fine-tuning methods; importing this package registers them."""

from peftkit.methods import full, lora  # noqa: F401
