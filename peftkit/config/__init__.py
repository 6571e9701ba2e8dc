"""The recipe: its sections and options (one source of truth), recipe files, overrides, loading and validation."""
