"""Every registered method × every registered head (read from METHODS and HEADS, data chosen by the head's kind):
a few steps on tiny random models (loss falls), save, reload to the trained model's logits; combinations that
cannot work are refused at validation with the reason; parameter counts; the table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from testkit import ROUNDED_RELOAD, logits_of, tiny_recipe, write_learnable_data, write_recipe_file
from transformers import BertConfig, BertModel, LlamaConfig

import peftkit
from peftkit.config.load import load_recipe, recipe_from_dict
from peftkit.errors import PeftkitError
from peftkit.methods.targets import default_target_modules
from peftkit.model.method_table import method_rows
from peftkit.registry import HEADS, METHODS
from peftkit.rundir.load import load_run
from peftkit.rundir.save import save_run
from peftkit.training.build import build_trainer

#: Per-method options that keep the tiny runs learnable in a dozen steps (defaults otherwise).
OPTIONS: dict[str, dict[str, Any]] = {
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "qlora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "dora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "adalora": {"init_r": 6, "target_r": 4},
    "vera": {"r": 16},
    "oft": {"oft_block_size": 16},
    "prefix_tuning": {"num_virtual_tokens": 4},
    "prompt_tuning": {"num_virtual_tokens": 4},
    "p_tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 32},
}
#: Learning rates for methods that move slowly in 10 steps at the default 1e-2 (a frozen random body, a few
#: virtual tokens, VeRA's shared random projections).
FAST_LR = {"head_only": 5e-2, "prompt_tuning": 5e-2, "vera": 5e-2}
#: Test data and base model for each head kind a head declares; a new kind needs a line here, a new head none.
KIND_DATA = {"sequence_classification": "text", "token_classification": "ner", "causal_lm": "causal"}
KIND_MODEL = {"sequence_classification": "bert", "token_classification": "bert", "causal_lm": "llama"}


@pytest.fixture(scope="module")
def tiny(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The session's tiny BERT and Llama, and data for every head kind."""
    root = tmp_path_factory.mktemp("tiny")
    return {**tiny_models, "root": root, **write_learnable_data(root, set(KIND_DATA.values()), 160)}


def method_recipe(tiny: dict[str, Path], method: str, head: str, **extra: Any) -> dict[str, Any]:
    """10 steps of ``method`` with ``head`` on the tiny model and data of the head's kind; ``extra``: dotted."""
    kind = HEADS.get(head).kind
    fields = HEADS.get(head).config_cls.model_fields
    task: dict[str, Any] = {"head": head}
    # the tiny tokenizer has no chat template and splits on whitespace; generation samples are not the point
    task |= {key: value for key, value in (("template", "plain"), ("test_samples", 0), ("word_split", "whitespace"))
             if key in fields}
    return tiny_recipe(tiny[KIND_MODEL[kind]], tiny[KIND_DATA[kind]], {
        "method": {"name": method, **OPTIONS.get(method, {})}, "task": task,
        "train.max_steps": 10, "train.learning_rate": 1e-2 if method != "full" else 1e-3, "train.logging_steps": 1,
    }, extra)


def refusal(method: str, head: str, mode: str) -> str | None:
    """The validation error of a combination, or None when it is accepted."""
    recipe = {"model": {"name": "minilm-l6"}, "method": {"name": method}, "task": {"head": head},
              "quantization": {"mode": mode}}
    try:
        recipe_from_dict(recipe, source="r")
    except PeftkitError as exc:
        return str(exc)
    return None


def supported(method: str, head: str, mode: str = "none") -> bool:
    return refusal(method, head, mode) is None


def probe_texts(head: str) -> list[str]:
    if HEADS.get(head).kind == "causal_lm":
        return ["colour of lime?", "colour of plum?"]
    return ["bob saw a great film in rome"]


def train_save_reload(tiny: dict[str, Path], raw: dict[str, Any], name: str) -> dict[str, Any]:
    """Train in memory, save the run, reload it: losses, both logits, the run directory and the trainer."""
    path = tiny["root"] / f"{name}.yaml"
    raw["output_dir"] = str(tiny["root"] / "runs" / name)
    recipe = load_recipe(write_recipe_file(path, raw))
    output_dir = Path(recipe.output_dir)
    output_dir.mkdir(parents=True)
    prepared = build_trainer(recipe, output_dir)
    texts = probe_texts(recipe.task.head)
    tokenizer = prepared.trainer.processing_class
    untrained = logits_of(prepared.trainer.model, tokenizer, texts, eval_mode=False)
    prepared.trainer.train()
    recipe.task.labels = prepared.label_names
    model = prepared.trainer.model.eval()
    before = logits_of(model, tokenizer, texts)
    save_run(recipe, prepared.trainer, prepared.method, output_dir, {"test": {}})
    # bf16 autocast wraps the trained model's forward (train.precision auto on a CPU with native bf16): the same
    # autocast for the reloaded one
    after = logits_of(load_run(output_dir).model, tokenizer, texts, precision=recipe.train.precision)
    losses = [e["loss"] for e in prepared.trainer.state.log_history if "loss" in e]
    return {"losses": losses, "untrained": untrained, "before": before, "after": after, "dir": output_dir,
            "model": model, "precision": recipe.train.precision}


CELLS = [(m, h) for m in METHODS.names() for h in HEADS.names()]


@pytest.mark.parametrize(("method", "head"), CELLS, ids=[f"{m}-{h}" for m, h in CELLS])
def test_method_trains_and_reloads_identically(tiny: dict[str, Path], method: str, head: str) -> None:
    mode = "none" if "none" in METHODS.get(method).quantization_modes else "4bit"
    why = refusal(method, head, mode)
    plugin, kind = METHODS.get(method), HEADS.get(head).kind
    if kind not in plugin.head_kinds:  # refused, with the method's own reason; every other cell must train
        assert why == (f"r: method '{method}' does not support task.head '{head}' ({kind}); it supports "
                       f"{', '.join(plugin.head_kinds)}{plugin.head_hint}")
        return
    assert why is None, why
    extra = {"quantization.mode": mode} if mode != "none" else {}
    if method in FAST_LR:
        extra["train.learning_rate"] = FAST_LR[method]
    result = train_save_reload(tiny, method_recipe(tiny, method, head, **extra), f"{method}-{head}")
    losses = result["losses"]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3, f"loss did not fall: {losses}"
    assert_same_logits(method, result)


def assert_same_logits(method: str, result: dict[str, Any]) -> None:
    """The reload gives the trained model's logits, which training moved away from the untrained ones (a reload
    that dropped the adapter would not): bit-identical, except AdaLoRA, whose reload drops the pruned (zeroed)
    ranks, which only reorders float sums, and, under bf16 / fp16 autocast (``auto`` on a GPU), the methods of
    ``ROUNDED_RELOAD``, which match to that dtype's rounding."""
    assert not torch.allclose(result["before"], result["untrained"], atol=1e-4), "training did not move the logits"
    if method in ROUNDED_RELOAD and result["precision"] in ("bf16", "fp16"):
        scale = max(1.0, float(result["before"].abs().max()))  # bf16's rounding grows with the logits' size
        torch.testing.assert_close(result["before"], result["after"], rtol=0, atol=0.05 * scale)
    elif method == "adalora":
        torch.testing.assert_close(result["before"], result["after"], rtol=0, atol=1e-5)
    else:
        assert torch.equal(result["before"], result["after"])


@pytest.mark.parametrize(("method", "mode"), [("ia3", "8bit"), ("adalora", "4bit"), ("prefix_tuning", "4bit"),
                                              ("dora", "4bit"), ("qlora", "8bit")])
def test_quantized_subset(tiny: dict[str, Path], method: str, mode: str) -> None:
    raw = method_recipe(tiny, method, "sentiment", **{"quantization.mode": mode})
    result = train_save_reload(tiny, raw, f"{method}-{mode}")
    assert sum(result["losses"][-3:]) < sum(result["losses"][:3]), result["losses"]
    assert_same_logits(method, result)


def no_bnb(method: str, mode: str) -> str:
    """The refusal of a quantized base for a method peft has no bitsandbytes layers for."""
    return (f"'quantization.mode' {mode} does not work with method '{method}' (it supports: none); "
            "peft has no bitsandbytes layers for it")


@pytest.mark.parametrize(("method", "head", "mode", "message"), [
    *((method, "sentiment", mode, no_bnb(method, mode)) for method in ("loha", "lokr") for mode in ("4bit", "8bit")),
    ("vera", "sentiment", "4bit", no_bnb("vera", "4bit")),
    ("oft", "sentiment", "4bit", no_bnb("oft", "4bit")),
    ("vera", "ner", "8bit", "does not work with method 'vera'"),
    ("oft", "sentiment", "8bit", "does not work with method 'oft'"),
    ("full", "sentiment", "4bit", "quantized weights cannot be trained directly"),
    ("full", "sentiment", "8bit", "'quantization.mode' 8bit does not work with method 'full' (it supports: none); "
                                  "quantized weights cannot be trained directly (use qlora)"),
    ("prompt_tuning", "ner", "none", "method 'prompt_tuning' does not support task.head 'ner' (token_classification); "
                                     "it supports sequence_classification, causal_lm; peft prepends the virtual "
                                     "tokens to the input, so per-token outputs no longer line up with the tags"),
    ("p_tuning", "ner", "none", "no longer line up with the tags"),
    ("head_only", "causal_lm", "none", "method 'head_only' does not support task.head 'causal_lm'"),
])
def test_unsupported_combinations_are_refused_at_validation(method: str, head: str, mode: str,
                                                            message: str) -> None:
    assert message in (refusal(method, head, mode) or "accepted")


QUANT_REFUSED = [(m, mode) for m in METHODS.names() for mode in ("8bit", "4bit")
                 if mode not in METHODS.get(m).quantization_modes]


@pytest.mark.parametrize(("method", "mode"), QUANT_REFUSED, ids=[f"{m}-{q}" for m, q in QUANT_REFUSED])
def test_every_refused_quantization_names_the_mode_the_method_and_what_it_supports(method: str, mode: str) -> None:
    plugin = METHODS.get(method)
    assert refusal(method, "sentiment", mode) == (
        f"r: 'quantization.mode' {mode} does not work with method '{method}' "
        f"(it supports: {', '.join(plugin.quantization_modes)}){plugin.quantization_hint}")


@pytest.mark.parametrize(("method", "extra", "message"), [
    ("lora", {"method.init_lora_weights": "pissa", "quantization.mode": "4bit"},
     "init_lora_weights pissa decomposes the base weights, which must not be quantized"),
    ("adalora", {"method.tinit": 10, "method.tfinal": 5}, "method.tinit (10) + method.tfinal (5) must be below "
                                                          "the 10 steps"),
    ("adalora", {"method.target_r": 20}, "method.target_r (20) must not exceed method.init_r"),
    ("prefix_tuning", {"task.packing": True}, "virtual tokens cannot be packed"),
    pytest.param("dora", {"quantization.mode": "8bit"}, "DoRA on an 8-bit base fails in bitsandbytes' CPU backward",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only refusal")),
    ("prompt_tuning", {"method.init": "text"}, "method.init: text needs method.init_text"),
    ("ia3", {"method.target_modules": ["query"], "method.feedforward_modules": ["dense"]},
     "method.feedforward_modules ['dense'] are not among method.target_modules"),
])
def test_option_combinations_are_refused(tiny: dict[str, Path], method: str, extra: dict[str, Any],
                                         message: str) -> None:
    head = "causal_lm" if "task.packing" in extra else "sentiment"
    with pytest.raises(PeftkitError, match=r"^recipe: ") as caught:
        recipe_from_dict(method_recipe(tiny, method, head, **extra))
    assert message in str(caught.value)


def test_metrics_report_parameters_and_adapter_size(tiny: dict[str, Path], tmp_path: Path) -> None:
    """metrics.json of a prompt method: trainable = virtual tokens + classifier; adapter bytes = the file."""
    raw = method_recipe(tiny, "prompt_tuning", "sentiment", output_dir=str(tmp_path / "run"), **{"train.max_steps": 2})
    result = peftkit.train(write_recipe_file(tmp_path / "r.yaml", raw))
    saved = json.loads((result.output_dir / "metrics.json").read_text())
    base = sum(p.numel() for p in BertModel.from_pretrained(tiny["bert"]).parameters())
    head = 64 * 2 + 2  # classifier: hidden × labels + bias
    assert saved["parameters"]["trainable"] == 4 * 64 + head
    assert saved["parameters"]["total"] == base + 4 * 64 + 2 * head  # peft keeps the original classifier too
    assert saved["adapter_bytes"] == (result.output_dir / "adapter_model.safetensors").stat().st_size


def test_prompt_method_on_causal_lm_end_to_end(tiny: dict[str, Path], tmp_path: Path) -> None:
    """Virtual tokens lengthen the logits: evaluation, generation samples and `peftkit eval` still line up."""
    from peftkit.rundir.inference import evaluate_run, predict

    raw = method_recipe(tiny, "prompt_tuning", "causal_lm", output_dir=str(tmp_path / "run"),
                        **{"train.max_steps": 2, "task.test_samples": 1})
    result = peftkit.train(write_recipe_file(tmp_path / "r.yaml", raw))
    test = result.metrics["test"]
    assert test["tokens"] > 0 and test["token_loss"] == pytest.approx(test["loss"], rel=1e-5)
    assert len(test["samples"]) == 1
    assert evaluate_run(result.output_dir)["token_loss"] == pytest.approx(test["token_loss"], rel=1e-5)
    assert result.metrics["parameters"]["trainable"] == 4 * 64  # the virtual tokens; a causal LM has no head
    assert predict(result.output_dir, ["colour of lime?"])[0]["prompt"] == "colour of lime?"


def test_default_targets_per_architecture() -> None:
    assert default_target_modules("lora", "bert") == ["query", "value"]
    assert default_target_modules("lora", "distilbert") == ["q_lin", "v_lin"]
    assert default_target_modules("ia3", "distilbert") == ["k_lin", "v_lin", "lin2"]
    assert default_target_modules("lora", "llama") == ["q_proj", "v_proj"]
    assert default_target_modules("adalora", "qwen2") == ["q_proj", "v_proj"]
    assert default_target_modules("lora", "gpt2") == ["c_attn"]
    assert default_target_modules("ia3", "gpt2") == ["c_attn", "mlp.c_proj"]
    assert default_target_modules("lora", "roberta") == ["query", "value"]
    assert default_target_modules("lora", "no-such-model") is None


def test_unknown_architecture_without_targets_names_the_key(tiny: dict[str, Path]) -> None:
    from peftkit.methods.targets import resolve_target_modules

    model = torch.nn.Linear(2, 2)
    with pytest.raises(PeftkitError, match=r"method\.target_modules: no default target modules for model type ''"):
        resolve_target_modules("lora", model, None)
    assert resolve_target_modules("lora", model, "all-linear") == "all-linear"


def test_methods_table_lists_every_method_with_its_support(tiny: dict[str, Path]) -> None:
    rows = {row[0]: row for row in method_rows(str(tiny["bert"]))}
    assert set(METHODS.names()) <= set(rows)
    assert rows["loha"][1:3] == ("no", "no") and rows["ia3"][1:3] == ("yes", "yes")
    assert rows["full"][4] == "100.000 %"
    assert float(rows["lora"][4].split()[0]) < float(rows["adalora"][4].split()[0]) < 100
    assert "token" not in rows["prompt_tuning"][3] and "token" in rows["prefix_tuning"][3]
    assert all(HEADS.get(h).kind in KIND_DATA for h in HEADS.names())


def test_prefix_reaches_a_classifier_whatever_its_past_key_values_argument_is_called() -> None:
    """transformers 5.24 calls it `cache` (BERT's backbone, Llama's classifier); peft 0.21 asks for the old name.
    The prefix must reach attention: changing it changes the logits."""
    from peft import PrefixTuningConfig, TaskType, get_peft_model
    from transformers import BertForTokenClassification, LlamaForSequenceClassification

    from peftkit.methods.prompt import accept_past_key_values

    torch.manual_seed(0)
    bert = BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
    llama = LlamaConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, intermediate_size=37, pad_token_id=0)
    for model, task_type in [(BertForTokenClassification(bert), TaskType.TOKEN_CLS),
                             (LlamaForSequenceClassification(llama), TaskType.SEQ_CLS)]:
        peft_model = get_peft_model(accept_past_key_values(model, task_type),
                                    PrefixTuningConfig(task_type=task_type, num_virtual_tokens=3))
        ids = torch.randint(1, 40, (2, 6))
        before = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        with torch.no_grad():
            for p in peft_model.prompt_encoder.parameters():
                p.add_(1.0)
        after = peft_model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        assert (before - after).abs().max() > 1e-4, type(model).__name__


def test_prefix_refused_in_one_line_for_a_model_without_past_key_values() -> None:
    from peft import TaskType

    from peftkit.methods.prompt import accept_past_key_values

    class NoCache(torch.nn.Module):
        base_model_prefix = "body"

        def __init__(self) -> None:
            super().__init__()
            self.body = torch.nn.Linear(2, 2)

        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return self.body(input_ids)

    with pytest.raises(PeftkitError, match="NoCache takes no past key values, so it cannot carry a prefix"):
        accept_past_key_values(NoCache(), TaskType.SEQ_CLS)
