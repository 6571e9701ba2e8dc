"""causal_lm head: response-only labels and prompt truncation on SmolLM2's real tokenizer (its chat template);
training, packing, reload, predict and merge on the tiny random Llama; the real SmolLM2-135M in the slow tier."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from testkit import logits_of, tiny_recipe, train_and_reload, write_json_lines, write_recipe_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

import peftkit
from peftkit.config.load import load_recipe
from peftkit.config.sections import ModelSection
from peftkit.data import load_splits
from peftkit.errors import PeftkitError
from peftkit.heads.causal_lm import IGNORE, CausalLMConfig, CausalLMHead, response_nll
from peftkit.heads.lm_loss import HiddenStates, chunked_nll, lm_loss
from peftkit.model.loading import load_tokenizer
from peftkit.rundir.inference import evaluate_run, predict
from peftkit.rundir.load import load_run
from peftkit.rundir.save import save_run
from peftkit.training.build import build_trainer

COLOURS = {"banana": "yellow", "apple": "red", "lime": "green", "plum": "purple", "cherry": "red", "kiwi": "green"}
PROMPTS = ["What colour is a ripe lime?", "What colour is a ripe plum?"]


def fruit_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    """Prompt/response pairs with a fixed answer pattern: learnable in a dozen steps."""
    rng = random.Random(seed)
    fruits = [rng.choice(list(COLOURS)) for _ in range(n)]
    return [{"question": f"What colour is a ripe {f}?", "answer": f"A ripe {f} is {COLOURS[f]}."} for f in fruits]


@pytest.fixture(scope="module")
def smollm_tokenizer():
    return load_tokenizer(ModelSection(name="smollm2-135m"))


def write_causal_recipe(root: Path, model: str, **train: Any) -> Path:
    """Fruit-colour pairs and a LoRA recipe for ``model`` (the tiny Llama has no chat template: plain one)."""
    data = write_json_lines(root / "fruit.jsonl", fruit_rows(160))
    tiny = model != "smollm2-135m"
    recipe = tiny_recipe(model, data, {
        "method": {"name": "lora", "r": 8, "alpha": 16, "dropout": 0.0,
                   **({"target_modules": "all-linear"} if tiny else {})},
        "task": {"head": "causal_lm", "prompt_column": "question", "response_column": "answer", "max_new_tokens": 12,
                 **({"template": "plain"} if tiny else {})},
        "data.max_length": 64,
        "train.max_steps": 100 if tiny else 12, "train.batch_size": 8, "train.learning_rate": 2e-2 if tiny else 2e-3,
        "train.logging_steps": 3,
        "output_dir": str(root / "run"),
    }, {f"train.{key}": value for key, value in train.items()})
    return write_recipe_file(root / "causal.yaml", recipe)


@pytest.fixture(scope="module")
def causal_recipe(tmp_path_factory: pytest.TempPathFactory, tiny_llama: Path) -> Path:
    return write_causal_recipe(tmp_path_factory.mktemp("causal"), str(tiny_llama))


@pytest.fixture(scope="module")
def trained(causal_recipe: Path) -> dict[str, Any]:
    """Train once, keep the in-memory model's logits and the base model's test loss, save the run (in fp32: these
    tests compare logits bit for bit with a plain, un-autocast reload)."""
    recipe = load_recipe(causal_recipe, {"train.precision": "fp32"})
    output_dir = Path(recipe.output_dir)
    output_dir.mkdir(parents=True)
    prepared = build_trainer(recipe, output_dir)
    trainer = prepared.trainer
    with trainer.model.disable_adapter():
        before = trainer.evaluate(prepared.tokenized["test"], metric_key_prefix="test")
        base_logits = logits_of(trainer.model, trainer.processing_class, PROMPTS)
    trainer.train()
    after = trainer.evaluate(prepared.tokenized["test"], metric_key_prefix="test")
    model = trainer.model.eval()
    tokenizer = trainer.processing_class
    inputs = tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        logits = model(**inputs).logits
    metrics = {"test": {k.removeprefix("test_"): v for k, v in after.items()}}
    save_run(recipe, trainer, prepared.method, output_dir, metrics)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return {"dir": output_dir, "before": before, "after": after, "logits": logits, "inputs": inputs,
            "base_logits": base_logits, "model_name": recipe.model.name,
            "losses": losses, "tokenized": prepared.tokenized, "head": prepared.head, "model": model,
            "resolved": prepared.resolved}


def test_labels_cover_only_the_response(smollm_tokenizer) -> None:
    head = CausalLMHead(CausalLMConfig(instruction="Answer briefly."))
    pair = head.encode_pair(smollm_tokenizer, "What colour is a lime?", "Green.", max_length=128)
    ids, labels = pair["input_ids"], pair["labels"]
    first = next(i for i, label in enumerate(labels) if label != IGNORE)
    assert all(label == IGNORE for label in labels[:first])
    assert labels[first:] == ids[first:]
    assert smollm_tokenizer.decode(ids[first:]) == "Green." + smollm_tokenizer.eos_token
    prompt = smollm_tokenizer.decode(ids[:first])
    assert prompt.startswith("<|im_start|>") and prompt.endswith("<|im_start|>assistant\n")
    assert "Answer briefly.\n\nWhat colour is a lime?" in prompt


def test_plain_template_and_truncation_keep_the_response(smollm_tokenizer) -> None:
    head = CausalLMHead(CausalLMConfig(template="plain"))
    pair = head.encode_pair(smollm_tokenizer, "word " * 200 + "END", "The answer.", max_length=32)
    assert len(pair["input_ids"]) == 32
    first = next(i for i, label in enumerate(pair["labels"]) if label != IGNORE)
    assert smollm_tokenizer.decode(pair["input_ids"][:first]).endswith("END\n\n### Response:\n")
    assert smollm_tokenizer.decode(pair["labels"][first:]) == "The answer." + smollm_tokenizer.eos_token


def test_missing_prompt_column_names_the_key(causal_recipe: Path, tmp_path: Path) -> None:
    with pytest.raises(PeftkitError, match=r"column 'prompt' \(task.prompt_column\) not found; columns are: "):
        peftkit.train(causal_recipe, **{"task.prompt_column": "prompt", "output_dir": str(tmp_path / "r")})
    assert not (tmp_path / "r").exists(), "a refused run creates no output directory"


def test_training_lowers_the_response_loss(trained: dict[str, Any]) -> None:
    assert trained["resolved"]["train.lm_loss"] == "chunked"  # trained through the chunked loss
    losses = trained["losses"]
    assert losses[-1] < losses[0] / 2, f"training loss did not fall: {losses}"
    before, after = trained["before"], trained["after"]
    assert after["test_token_loss"] < before["test_token_loss"] / 2
    assert after["test_perplexity"] == pytest.approx(torch.tensor(after["test_token_loss"]).exp().item(), rel=1e-6)
    assert after["test_tokens"] == sum(
        sum(label != IGNORE for label in labels[1:]) for labels in trained["tokenized"]["test"]["labels"]
    )


def test_packing_gives_the_same_loss_as_padding(trained: dict[str, Any]) -> None:
    """Padding-free packing must keep attention inside each example: same per-token loss as padded batches."""
    rows = [trained["tokenized"]["test"][i] for i in range(6)]
    sums = {}
    for packing in (False, True):
        collate = CausalLMHead(CausalLMConfig(packing=packing)).collator(load_run(trained["dir"]).tokenizer)
        batch = collate(rows)
        assert batch["input_ids"].shape[0] == (1 if packing else 6)
        with torch.no_grad():
            logits = trained["model"](**{k: v for k, v in batch.items() if k != "labels"}).logits
        sums[packing] = response_nll(logits, batch["labels"]).sum(dim=0)
    assert sums[True][1] == sums[False][1]
    assert sums[True][0] == pytest.approx(sums[False][0].item(), rel=1e-4)


def test_reloaded_run_gives_the_trained_logits(trained: dict[str, Any]) -> None:
    """The reload equals the in-memory model after training, which differs from the base (lora_B starts at 0)."""
    run = load_run(trained["dir"])
    with torch.no_grad():
        reloaded = run.model(**trained["inputs"]).logits
    assert torch.equal(reloaded, trained["logits"])
    assert not torch.allclose(trained["logits"], trained["base_logits"], atol=1e-3)
    base = AutoModelForCausalLM.from_pretrained(trained["model_name"])
    plain = PeftModel.from_pretrained(base, trained["dir"]).eval()
    with torch.no_grad():
        assert torch.equal(plain(**trained["inputs"]).logits, trained["logits"])


def test_eval_reproduces_saved_metrics(trained: dict[str, Any]) -> None:
    saved = json.loads((trained["dir"] / "metrics.json").read_text())["test"]
    metrics = evaluate_run(trained["dir"])
    assert metrics["token_loss"] == pytest.approx(saved["token_loss"], rel=1e-5)
    assert metrics["tokens"] == saved["tokens"]


def test_predict_generates_a_bounded_learned_answer(trained: dict[str, Any]) -> None:
    predictions = predict(trained["dir"], PROMPTS)
    assert [p["prompt"] for p in predictions] == PROMPTS
    assert_learned_answers(predictions)
    run = load_run(trained["dir"])
    tokenizer = run.tokenizer
    head = CausalLMHead(CausalLMConfig(max_new_tokens=3, template=run.recipe.task.template))
    short = head.predict(run.model, tokenizer, PROMPTS[:1], [], 4, 64)
    assert len(tokenizer(short[0]["response"], add_special_tokens=False)["input_ids"]) <= 3



def assert_learned_answers(predictions: list[dict[str, Any]]) -> None:
    """Each fruit's own colour, in the trained pattern (the tiny tokenizer lower-cases)."""
    assert re.fullmatch(r"a ripe lime is green\.", predictions[0]["response"], re.IGNORECASE), predictions
    assert re.fullmatch(r"a ripe plum is purple\.", predictions[1]["response"], re.IGNORECASE), predictions


def test_long_prompts_lose_their_start_not_the_response_cue(smollm_tokenizer) -> None:
    head = CausalLMHead(CausalLMConfig())
    inputs = head.prompt_inputs(smollm_tokenizer, ["word " * 100 + PROMPTS[0], PROMPTS[1]], max_length=48)
    assert inputs["input_ids"].shape[1] == 48
    long, short = (smollm_tokenizer.decode(ids, skip_special_tokens=False) for ids in inputs["input_ids"])
    assert long.endswith("word What colour is a ripe lime?<|im_end|>\n<|im_start|>assistant\n")
    assert short.endswith("What colour is a ripe plum?<|im_end|>\n<|im_start|>assistant\n")
    assert inputs["attention_mask"][1, 0] == 0 and inputs["attention_mask"][1, -1] == 1  # padded on the left
    assert smollm_tokenizer.padding_side == "right"  # training's side, restored


def test_merged_export_reloads_as_a_plain_causal_lm(trained: dict[str, Any], tmp_path: Path) -> None:
    """The adapter merges into the base and reloads with transformers alone (what an export does)."""
    load_run(trained["dir"]).model.merge_and_unload().save_pretrained(tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        logits = merged(**trained["inputs"]).logits
    torch.testing.assert_close(logits, trained["logits"], atol=1e-3, rtol=1e-4)
    card = (trained["dir"] / "README.md").read_text()
    assert f'base = AutoModelForCausalLM.from_pretrained("{trained["model_name"]}")' in card


def test_qlora_trains_on_a_4bit_base_and_reloads(causal_recipe: Path, tmp_path: Path) -> None:
    """The output layer stays out of 4-bit quantization; the run reloads to the trained model's logits."""
    out = train_and_reload(causal_recipe, PROMPTS, **{"method.name": "qlora", "quantization.mode": "4bit",
                                                      "train.max_steps": 6, "output_dir": str(tmp_path / "q")})
    result, run = out["result"], out["run"]
    losses = [entry["loss"] for entry in result.metrics["loss_history"]]
    assert losses[-1] < losses[0], losses
    assert type(run.model.get_base_model().lm_head).__name__ == "Linear"
    samples = result.metrics["test"]["samples"]  # bounded generation on the first test prompts
    test_split = load_splits(run.recipe.data, run.head, [])[0]["test"]
    assert [(s["prompt"], s["reference"]) for s in samples] == list(zip(test_split["prompt"][:3],
                                                                        test_split["response"][:3], strict=True))
    assert all(s["response"] for s in samples)
    assert evaluate_run(result.output_dir)["samples"] == samples


def test_head_only_is_refused_for_a_causal_lm(causal_recipe: Path) -> None:
    with pytest.raises(PeftkitError, match=r"method 'head_only' does not support task.head 'causal_lm' \(causal_lm\)"):
        load_recipe(causal_recipe, {"method": {"name": "head_only"}})


@pytest.mark.slow
def test_real_smollm_learns_the_answers_and_reloads(tmp_path: Path) -> None:
    """SmolLM2-135M with its chat template: 12 steps teach the answer's form (measured: not yet each fruit's
    colour, both prompts got "red"; the tiny model's 100 steps are checked for the colours); the reload gives
    the trained logits."""
    recipe = write_causal_recipe(tmp_path, "smollm2-135m")
    out = train_and_reload(recipe, PROMPTS)
    losses = [entry["loss"] for entry in out["result"].metrics["loss_history"]]
    assert losses[-1] < losses[0] / 2, losses
    predictions = predict(out["result"].output_dir, PROMPTS)
    colours = "|".join(sorted(set(COLOURS.values())))
    for prediction, fruit in zip(predictions, ("lime", "plum"), strict=True):
        assert re.fullmatch(rf"A ripe {fruit} is ({colours})\.", prediction["response"]), predictions


def lora_llama(path: Path, lm_head: bool = False) -> Any:
    """The tiny Llama with LoRA adapters that start non-zero (on lm_head too with ``lm_head``), in train mode,
    without a KV cache as the Trainer sets it (a cache would hide the packed rows' boundaries from the mask)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.config.use_cache = False
    targets = ["q_proj", "v_proj", *(["lm_head"] if lm_head else [])]
    return get_peft_model(model, LoraConfig(r=4, target_modules=targets, init_lora_weights=False)).train()


def prompt_response_batch() -> dict[str, torch.Tensor]:
    """Three rows: prompt tokens unlabelled, the last one padded (mask 0, labels ignored)."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 80, (3, 12), generator=generator)
    labels = ids.clone()
    labels[:, :5] = IGNORE
    mask = torch.ones_like(ids)
    mask[2, 9:], labels[2, 9:] = 0, IGNORE
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def trainable_grads(model: nn.Module) -> dict[str, torch.Tensor]:
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return grads


@pytest.mark.parametrize("lora_head", [False, True], ids=["plain-head", "lora-on-lm_head"])
def test_chunked_loss_equals_the_full_loss_and_its_gradient(tiny_llama: Path, lora_head: bool) -> None:
    """`train.lm_loss: chunked` gives transformers' own loss and gradients, while the model's output layer runs on
    the last position only."""
    model, inputs = lora_llama(tiny_llama, lora_head), prompt_response_batch()
    full = model(**inputs).loss
    full.backward()
    expected = trainable_grads(model)
    chunked, outputs = lm_loss(HiddenStates(model), model, inputs, "chunked")
    assert outputs.logits.shape[1] == 1
    assert chunked.item() == pytest.approx(full.item(), abs=1e-6)
    chunked.backward()
    got = trainable_grads(model)
    assert set(got) == set(expected) and any("lm_head" in n for n in got) == lora_head
    for name, grad in expected.items():
        torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=1e-5, msg=name)
    # normalised by the accumulated batch's labelled tokens when the Trainer gives them
    items = torch.tensor(50)
    summed, _ = lm_loss(HiddenStates(model), model, inputs, "chunked", num_items_in_batch=items)
    labelled = int((inputs["labels"][:, 1:] != IGNORE).sum())
    assert summed.item() == pytest.approx(full.item() * labelled / 50, abs=1e-6)


def test_chunks_add_up_to_the_whole_cross_entropy() -> None:
    """Chunk by chunk (3 positions each), recomputed in backward: the summed NLL and its gradients are exact."""
    torch.manual_seed(0)
    head, hidden = nn.Linear(8, 50), torch.randn(2, 7, 8, requires_grad=True)
    labels = torch.randint(0, 50, (2, 7))
    labels[0, :3] = IGNORE
    total, count = chunked_nll(hidden, head, labels, chunk_tokens=3, label_smoothing=0.1)
    total.backward()
    got = hidden.grad.clone(), head.weight.grad.clone()
    hidden.grad, head.weight.grad = None, None
    targets = torch.nn.functional.pad(labels, (0, 1), value=IGNORE)[:, 1:]
    whole = torch.nn.functional.cross_entropy(head(hidden).reshape(-1, 50), targets.reshape(-1), reduction="sum",
                                              ignore_index=IGNORE, label_smoothing=0.1)
    whole.backward()
    assert count == (targets != IGNORE).sum() and total.item() == pytest.approx(whole.item(), abs=1e-5)
    torch.testing.assert_close(got[0], hidden.grad, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got[1], head.weight.grad, atol=1e-6, rtol=1e-6)


def test_packed_batches_give_the_padded_loss_without_cross_contamination(tiny_llama: Path) -> None:
    """Padding-free packing: positions restart per example, no example attends to another, and the loss of the
    packed row equals the padded batch's (transformers' loss and the chunked one)."""
    model = lora_llama(tiny_llama).eval()
    lengths = (9, 5, 12)
    generator = torch.Generator().manual_seed(2)
    rows = []
    for length in lengths:
        ids = torch.randint(3, 80, (length,), generator=generator).tolist()
        rows.append({"input_ids": ids, "labels": [IGNORE] * 3 + ids[3:]})
    packed = CausalLMHead(CausalLMConfig(packing=True)).collator(None)(rows)
    padded = CausalLMHead(CausalLMConfig(packing=False)).collator(AutoTokenizer.from_pretrained(tiny_llama))(rows)
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    assert packed["position_ids"][0].tolist() == [i for n in lengths for i in range(n)]
    with torch.no_grad():
        expected = model(**padded).loss
        assert model(**packed).loss.item() == pytest.approx(expected.item(), abs=1e-5)
        chunked, _ = lm_loss(HiddenStates(model), model, packed, "chunked")
        assert chunked.item() == pytest.approx(expected.item(), abs=1e-5)
        inputs = {k: v for k, v in packed.items() if k != "labels"}
        before = model(**inputs).logits
        inputs["input_ids"] = inputs["input_ids"].clone()
        inputs["input_ids"][0, 2:lengths[0]] = 7  # change the first example only
        after = model(**inputs).logits
    first = lengths[0]
    assert not torch.allclose(before[0, 2:first], after[0, 2:first])
    torch.testing.assert_close(before[0, first:], after[0, first:], atol=1e-6, rtol=0)


def test_the_trainer_loss_is_the_same_chunked_or_full(causal_recipe: Path, tmp_path: Path) -> None:
    """PeftkitTrainer's training loss with `train.lm_loss` chunked equals the model's own, num_items_in_batch and
    the padded batch of its collator included; evaluation keeps the full logits."""
    recipe = load_recipe(causal_recipe)
    recipe.output_dir = str(tmp_path / "run")
    trainer = build_trainer(recipe, tmp_path / "run").trainer
    assert trainer.lm_loss == "chunked" and trainer.hidden_states is not None
    batch = next(iter(trainer.get_train_dataloader()))
    items = (batch["labels"][:, 1:] != IGNORE).sum() + 5  # as if more were accumulated
    trainer.model.train()
    chunked = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=items)
    trainer.hidden_states = None
    full = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=items)
    assert chunked.item() == pytest.approx(full.item(), abs=1e-6)
