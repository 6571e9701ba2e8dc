"""Bounds shared by the recipe schema and the CLI's arguments (plain constants: the CLI imports them at start)."""

#: The largest seed numpy's generator takes (seeds are 0 … 2**32 - 1).
SEED_MAX = 2**32 - 1
#: Most data-loading worker processes a recipe may ask for; training also caps them at WORKERS_PER_CORE × cores.
MAX_WORKERS = 64
WORKERS_PER_CORE = 4
#: Most augmented copies per training row (each multiplies the training split held in memory).
MAX_AUGMENT_COPIES = 100
