"""The data of a recipe, split by job.

loading (catalogue, local files or hub → deterministic train / validation / test splits), formats (the one suffix
table and the file readers; conll: CoNLL / IOB token files), catalog (the built-in models and data sets; parsers
and assemble turn their files into records and model directories), cache (fetching, hashing, the cache),
preprocess (named text-cleaning steps) and augment (training-split augmentation and its plug-in registry).
"""

from peftkit.data.formats import read_file
from peftkit.data.loading import SPLITS, load_source, load_splits, split

__all__ = ["SPLITS", "load_source", "load_splits", "read_file", "split"]
