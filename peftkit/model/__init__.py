"""The base model: where it comes from, its config, loading (quantized or not), weights on disk, parameter counts."""
