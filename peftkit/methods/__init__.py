"""Built-in fine-tuning methods, one file per family; importing this package registers them."""

from peftkit.methods import adalora, full, ia3, lora, lycoris, oft, prompt, vera  # noqa: F401
