"""`peftkit train --nproc 2` with `distributed.fsdp`: FSDP2 over two CPU processes (gloo) trains as one process on
the same global batch, saves the full weights once (reloadable by plain peft / transformers), resumes after a
kill -9; recipes FSDP cannot shard are refused before any process starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file
from testkit import TORCHRUN, logits_of

import peftkit
from peftkit.cli import main
from peftkit.config.load import load_recipe
from peftkit.config.sections import DistributedSection
from peftkit.errors import PeftkitError
from peftkit.rundir.load import load_run
from peftkit.training.distributed import set_wrap, training_kwargs

#: Two processes reduce-scatter the same gradients in another order (gloo), so losses and weights differ in the
#: last float32 bits (measured: losses 1e-7, LoRA weights 3e-7, logits of the reloaded runs 1e-6).
LOSS_ATOL = 1e-5
WEIGHT_ATOL = 1e-4
TEXTS = ["a great and moving film", "the plot was dull", "boring acting"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run([sys.executable, "-m", "peftkit", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def one_and_sharded(write_recipe, tmp_path: Path, overrides: dict) -> tuple[Path, Path]:
    """The same 12 steps of 16 examples in one process and in two FSDP processes of 8 each; both run folders.
    fp32: bf16 autocast (auto for LoRA on a CPU with native bf16) rounds a batch of 8 and one of 16 differently."""
    recipe = write_recipe({"method.dropout": 0.0, "train.max_steps": 12, "train.eval_batch_size": 20,
                           "train.precision": "fp32", **overrides})
    one = peftkit.train(recipe, **{"output_dir": str(tmp_path / "one")}).output_dir
    before = set(tmp_path.iterdir())
    proc = run_cli("train", str(recipe), "train.batch_size=8", "distributed.fsdp=true",
                   "--output-dir", str(tmp_path / "two"), "--nproc", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("run saved to") == 1, proc.stdout  # only rank 0 reports and writes
    two = tmp_path / "two"
    assert set(tmp_path.iterdir()) - before == {two}
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    metrics = [json.loads((run / "metrics.json").read_text()) for run in (one, two)]
    assert [m["train"]["processes"] for m in metrics] == [1, 2]
    assert [m["train"]["steps"] for m in metrics] == [12, 12]
    single, sharded = ([e["loss"] for e in m["loss_history"]] for m in metrics)
    assert sharded == pytest.approx(single, abs=LOSS_ATOL)
    assert metrics[1]["train"]["loss"] == pytest.approx(metrics[0]["train"]["loss"], abs=LOSS_ATOL)
    return one, two


def reloaded_logits(run: Path) -> torch.Tensor:
    loaded = load_run(run)
    return logits_of(loaded.model, loaded.tokenizer, TEXTS)


@pytest.mark.slow
@TORCHRUN
def test_fsdp_lora_trains_as_one_process_and_saves_a_plain_adapter(write_recipe, tmp_path: Path) -> None:
    one, two = one_and_sharded(write_recipe, tmp_path, {})
    single, sharded = (load_file(run / "adapter_model.safetensors") for run in (one, two))
    assert single.keys() == sharded.keys() and all(k.startswith("base_model.model.") for k in sharded)
    assert max(single[k].abs().max().item() for k in single if "lora_B" in k) > 100 * WEIGHT_ATOL  # it trained
    for key in single:
        torch.testing.assert_close(sharded[key], single[key], atol=WEIGHT_ATOL, rtol=0)
    reloaded = reloaded_logits(two)
    torch.testing.assert_close(reloaded, reloaded_logits(one), atol=WEIGHT_ATOL, rtol=0)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    merged = tmp_path / "merged"
    assert main(["export", str(two), "--out", str(merged), "--merge"]) == 0  # plain transformers weights
    model = AutoModelForSequenceClassification.from_pretrained(merged)
    torch.testing.assert_close(logits_of(model, AutoTokenizer.from_pretrained(merged), TEXTS), reloaded,
                               atol=1e-5, rtol=0)


@pytest.mark.slow
@TORCHRUN
def test_fsdp_full_fine_tuning_trains_as_one_process_and_saves_plain_weights(write_recipe, tmp_path: Path) -> None:
    one, two = one_and_sharded(write_recipe, tmp_path, {"method": {"name": "full"}, "train.learning_rate": 1e-3})
    single, sharded = (load_file(run / "model.safetensors") for run in (one, two))
    assert single.keys() == sharded.keys()
    for key in single:
        if not key.endswith("attention.self.key.bias"):  # its gradient is 0 (softmax ignores it): Adam scales noise
            torch.testing.assert_close(sharded[key], single[key], atol=WEIGHT_ATOL, rtol=0)
    torch.testing.assert_close(reloaded_logits(two), reloaded_logits(one), atol=WEIGHT_ATOL, rtol=0)


def _kill_tree(process: subprocess.Popen) -> None:
    """kill -9 the launcher and its workers (torchrun starts them in sessions of their own)."""
    tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for member in tree:
        member.kill()
    psutil.wait_procs(tree, timeout=60)


@pytest.mark.slow
@TORCHRUN
def test_fsdp_run_killed_mid_training_resumes_to_the_same_weights(write_recipe, tmp_path: Path) -> None:
    recipe = str(write_recipe({"train.max_steps": 40, "train.batch_size": 8, "train.save_strategy": "steps",
                               "train.save_steps": 4, "train.save_total_limit": 2, "train.logging_steps": 4,
                               "distributed.fsdp": True}))
    full, killed = tmp_path / "full", tmp_path / "killed"
    args = ["train", recipe, "--nproc", "2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen([sys.executable, "-m", "peftkit", *args, "--output-dir", str(killed)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (killed / "checkpoints" / "checkpoint-8").is_dir():
        assert process.poll() is None and time.monotonic() < deadline, "the run never wrote checkpoint-8"
        time.sleep(0.05)
    _kill_tree(process)
    assert not (killed / "metrics.json").exists(), "killed before it finished"

    resumed = run_cli(*args, "--output-dir", str(killed), "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "trained 40 steps" in resumed.stdout
    reference = run_cli(*args, "--output-dir", str(full))
    assert reference.returncode == 0, reference.stderr[-3000:]
    a, b = (load_file(run / "adapter_model.safetensors") for run in (full, killed))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads((run / "metrics.json").read_text())["loss_history"] for run in (full, killed)]
    assert history[0] == history[1]


@pytest.mark.parametrize(("overrides", "message"), [
    (["method={name: qlora}", "quantization.mode=8bit"],
     "'quantization.mode': FSDP cannot shard bitsandbytes 8-bit weights"),
    (["method={name: qlora}", "quantization.mode=4bit"],
     "'quantization.quant_storage': FSDP shards 4-bit weights only when they are stored in model.dtype; "
     "set quantization.quant_storage: float32"),
    (["train.l1=0.001"], "'train.l1': under FSDP each process holds a shard of the weights"),
    (["distributed.cpu_offload=true"], "'distributed.cpu_offload' moves FSDP shards between GPU and CPU memory"),
])
def test_what_fsdp_cannot_shard_is_refused_before_any_process_starts(write_recipe, tmp_path: Path, capsys,
                                                                      overrides: list, message: str) -> None:
    if "cpu_offload" in message and torch.cuda.is_available():
        pytest.skip("CPU offload runs on CUDA GPUs")
    recipe = write_recipe()
    before = set(tmp_path.iterdir())
    assert main(["train", str(recipe), "distributed.fsdp=true", *overrides, "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("peftkit: error: ") and message in err[0], err
    assert set(tmp_path.iterdir()) == before  # no run folder: refused in this process, nothing launched


@pytest.mark.parametrize(("section", "message"), [
    ({"distributed.sharding": "shard_grad_op"}, "'distributed.sharding' is an FSDP setting; set distributed.fsdp"),
    ({"distributed.wrap": ["BertLayer"]}, "'distributed.wrap' is an FSDP setting"),
    ({"distributed.fsdp": True, "distributed.sharding": "hybrid_shard"}, "'distributed.sharding'"),
])
def test_fsdp_settings_are_checked_at_validation(write_recipe, section: dict, message: str) -> None:
    with pytest.raises(PeftkitError, match=message.replace(".", r"\.")):
        load_recipe(write_recipe(section))


def test_fsdp_section_becomes_accelerates_fsdp2_plugin() -> None:
    section = DistributedSection(fsdp=True, sharding="shard_grad_op", backend="gloo")
    assert training_kwargs(section, checkpointing=True) == {
        "ddp_backend": "gloo", "ddp_find_unused_parameters": None, "fsdp": True,
        "fsdp_config": {"version": 2, "reshard_after_forward": False, "cpu_offload": False,
                        "state_dict_type": "SHARDED_STATE_DICT", "activation_checkpointing": True},
    }
    assert "fsdp" not in training_kwargs(DistributedSection())


def test_wrap_defaults_to_the_models_blocks_that_do_not_hold_the_embeddings(tiny_bert: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    assert set(model._no_split_modules) == {"BertEmbeddings", "BertLayer"}
    assert set_wrap(model, DistributedSection(fsdp=True)) == ["BertLayer"]
    assert model._no_split_modules == {"BertLayer"}  # where accelerate and peft read the classes to wrap
    assert set_wrap(model, DistributedSection(fsdp=True, wrap=[])) == []
    with pytest.raises(PeftkitError, match=r"'distributed.wrap': the model has no module of class LlamaDecoderLayer"):
        set_wrap(model, DistributedSection(fsdp=True, wrap=["LlamaDecoderLayer"]))


def test_estimate_per_process_shards_weights_gradients_and_optimizer_under_fsdp(write_recipe) -> None:
    from peftkit.hardware.auto import resolved_for
    from peftkit.hardware.device import current
    from peftkit.hardware.estimate import estimate

    def of(fsdp: bool, processes: int):
        recipe = load_recipe(write_recipe({"method": {"name": "full"}, "distributed.fsdp": fsdp}))
        return estimate(resolved_for(recipe, current(), 32, ["negative", "positive"]), 32,
                        ["negative", "positive"], processes=processes)

    one, sharded, ddp = of(True, 1), of(True, 2), of(False, 2)
    assert ddp == one  # DDP: a whole copy in every process
    assert (sharded.weights, sharded.gradients, sharded.optimizer) == (one.weights // 2, one.gradients // 2,
                                                                      one.optimizer // 2)
    assert 0 < sharded.gathered < one.weights  # two BertLayers gathered whole, not the model
    assert sharded.processes == 2 and sharded.total < one.total
    assert ("gathered blocks", sharded.gathered) in sharded.terms() and "gathered blocks" not in dict(one.terms())
    assert sum(value for _, value in sharded.terms()) == sharded.total


def test_qwen_7b_full_fsdp_recipe_validates_and_fits_8_gpus_of_24_gb_offline(monkeypatch) -> None:
    """The shipped config answers without the hub: one 24 GB GPU cannot hold 7.6B parameters' training state, a
    shard of eight can (bf16 mixed precision: fp32 weights, gradients and AdamW moments, 16 bytes a parameter)."""
    from peftkit.hardware.device import reference_gpus
    from peftkit.hardware.env import fits

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recipe = load_recipe("qwen2.5-7b-full-fsdp")
    assert recipe.distributed.fsdp and recipe.method.name == "full"
    gb24 = [gpu for gpu in reference_gpus() if gpu.memory == 24 * 2**30]
    alone, sharded = (fits(recipe, gb24, processes=n)[0][0] for n in (1, 8))
    assert not alone.fits and sharded.fits
    e = sharded.estimate
    assert e.processes == 8 and e.optimizer == 2 * e.gradients == 2 * 4 * e.total_params // 8
