"""Start-up: verbs that need no model import no torch, transformers or peft (issue 29), each in a fresh interpreter.

Not timed (the machine may be loaded): what a verb imports is what makes it slow, so that is what is asserted.
benchmarks/startup.py gives the times and module counts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "transformers", "peft", "datasets", "sklearn", "seqeval")
#: Runs `peftkit ARGS` through `main` in this interpreter, then prints the exit code and the heavy modules imported.
PROBE = f"""
import json, sys
from peftkit.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("PROBE " + json.dumps(dict(code=code, heavy=[m for m in {HEAVY!r} if m in sys.modules])))
"""


def run_verb(*args: str) -> tuple[int, list[str], str, str]:
    """(exit code, heavy modules imported, stdout before the probe line, stderr) of `peftkit ARGS`."""
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=300)
    out, _, probe = done.stdout.rpartition("PROBE ")
    assert probe, done.stderr
    result = json.loads(probe)
    return result["code"], result["heavy"], out, done.stderr


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A schema-error recipe, a folder of tiny fake runs (finished, unfinished, broken) and a destination for cp."""
    root = tmp_path_factory.mktemp("startup")
    bad = root / "bad.yaml"
    bad.write_text("model: {name: minilm-l6}\ntrain: {epochs: many}\n")
    runs = root / "runs"
    finished = runs / "finished"
    finished.mkdir(parents=True)
    (finished / "recipe.yaml").write_text("model: {name: minilm-l6}\nmethod: {name: lora}\n")
    (finished / "metrics.json").write_text(json.dumps({"test": {"accuracy": 0.875},
                                                       "parameters": {"trainable_percent": 0.5}}))
    checkpoint = runs / "unfinished" / "checkpoints" / "checkpoint-4"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 4, "max_steps": 8}))
    (runs / "broken").mkdir()
    (runs / "broken" / "recipe.yaml").write_text("model: {name: minilm-l6}\n")
    (runs / "broken" / "metrics.json").write_text('{"test": {"accuracy": 0.')
    (root / "dest").mkdir()
    return {"bad": bad, "runs": runs, "dest": root / "dest"}


CASES = {
    "help": (["--help"], 0, "recipes"),
    "recipes": (["recipes"], 0, "sentiment-lora"),
    "show": (["show", "sentiment-lora", "train.epochs=2"], 0, "epochs: 2"),
    "show-unknown": (["show", "no-such-recipe"], 2, ""),
    "validate-schema-error": (["validate", "{bad}"], 2, ""),
    "estimate-schema-error": (["estimate", "{bad}"], 2, ""),
    "runs": (["runs", "{runs}"], 0, "unfinished"),
    "runs-json": (["runs", "{runs}", "--json"], 0, '"broken"'),
    "heads": (["heads"], 0, "causal_lm"),
    "methods": (["methods"], 0, "adalora"),
    "options": (["options"], 0, "method.name"),
    "options-section": (["options", "train"], 0, "train.epochs"),
    "models-ls": (["models", "ls"], 0, "minilm-l6"),
    "data-ls": (["data", "ls"], 0, "conll2003"),
    "cp": (["cp", "sentiment-lora", "{dest}"], 0, "copied sentiment-lora"),
}


@pytest.mark.parametrize("case", CASES)
def test_light_verbs_import_no_torch_transformers_or_peft(case: str, folders: dict[str, Path]) -> None:
    template, expected_code, expected_out = CASES[case]
    args = [arg.format(**folders) for arg in template]
    code, heavy, out, err = run_verb(*args)
    assert (code, heavy) == (expected_code, []), err
    assert expected_out in out
    if expected_code == 2:
        assert err.startswith("peftkit: error: ") and err.count("\n") == 1 and not out


def test_bad_recipe_errors_name_the_field(folders: dict[str, Path]) -> None:
    _, _, _, err = run_verb("validate", str(folders["bad"]))
    assert "'train.epochs'" in err and "many" in err


def test_the_cli_still_quiets_transformers_once_a_verb_imports_it() -> None:
    """`for_cli` sets transformers' verbosity to errors when transformers is first imported, as it did at start."""
    code = ("import sys; from peftkit.cli import main; main(['heads']); assert 'transformers' not in sys.modules; "
            "import transformers; print(transformers.logging.get_verbosity())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.split()[-1] == "40"  # logging.ERROR


def test_light_declarations_agree_with_the_libraries() -> None:
    """Names written out so that declaring a plugin imports nothing heavy are the libraries' own."""
    from peft import TaskType
    from peft.utils import CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoModelForTokenClassification
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    from peftkit.methods.base import PeftMethod
    from peftkit.registry import HEADS
    from peftkit.rundir.layout import CHECKPOINT_PREFIX

    assert (PeftMethod.saved_config, PeftMethod.saved_weights) == (CONFIG_NAME, SAFETENSORS_WEIGHTS_NAME)
    assert CHECKPOINT_PREFIX == PREFIX_CHECKPOINT_DIR
    expected = {"classification": (AutoModelForSequenceClassification, TaskType.SEQ_CLS),
                "sentiment": (AutoModelForSequenceClassification, TaskType.SEQ_CLS),
                "ner": (AutoModelForTokenClassification, TaskType.TOKEN_CLS),
                "causal_lm": (AutoModelForCausalLM, TaskType.CAUSAL_LM)}
    for name, (auto_class, task_type) in expected.items():
        head = HEADS.get(name)
        assert head.auto_class is auto_class and head.task_type is task_type
        assert head(head.config_cls()).auto_class is auto_class  # read through an instance too
