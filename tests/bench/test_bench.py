"""Benchmark harness: suite expansion, a real cell in its own process, failure and resume, reports, estimate."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import make_sentiment_rows, tiny_recipe, write_csv

from peftkit.bench.cell import RESULT_KEYS, SCHEMA
from peftkit.bench.report import render
from peftkit.bench.runner import load_results, run_suite
from peftkit.bench.suite import expand, load_suite
from peftkit.cli import main
from peftkit.errors import PeftkitError

TINY_TRAIN = {"max_steps": 3, "batch_size": 8, "learning_rate": 3e-3, "eval_strategy": "no", "save_strategy": "no",
              "warmup": 0, "logging_steps": 1}


def bench_recipe(data: Path, model: Path | str) -> dict[str, Any]:
    """A suite's recipe: 3 LoRA steps, 40 test rows, no validation split."""
    return tiny_recipe(model, data, {"method": {"name": "lora", "r": 4, "target_modules": ["query", "value"]},
                                     "data.test_size": 40, "data.validation_size": 0, "data.max_length": 32,
                                     "train": TINY_TRAIN})


def write_suite(path: Path, data: Path, model: Path | str = "minilm-l6", **extra: Any) -> Path:
    suite = {
        "description": "tiny",
        "recipe": bench_recipe(data, model),
        "variants": {"lora": {}, "broken": {"method": {"name": "no_such_method"}}},
        "grid": {"train.seed": [1, 2]},
        **extra,
    }
    path.write_text(yaml.safe_dump(suite, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def finished_suite(tmp_path_factory: pytest.TempPathFactory, sentiment_csv: Path, tiny_bert: Path) -> Path:
    """A suite on the tiny BERT whose lora-seed1 cell was recorded before the run (so it must be skipped), run once."""
    root = tmp_path_factory.mktemp("bench")
    suite = write_suite(root / "tiny.yaml", sentiment_csv, tiny_bert)
    out = root / "out"
    pre = {"schema": SCHEMA, "suite": "tiny", "cell": "lora-seed1", "variant": "lora", "values": {"train.seed": 1},
           "labels": {"train.seed": "seed1"}, "status": "failed", "error": "recorded before the run",
           "recipe_hash": None, "provenance": None}
    (out / "cells").mkdir(parents=True)
    (out / "cells" / "lora-seed1.json").write_text(json.dumps(pre), encoding="utf-8")
    lines: list[str] = []
    outcome = run_suite(suite, directory=out, progress=lines.append)
    assert outcome.skipped == ["lora-seed1"]
    assert outcome.ran == ["broken-seed1", "lora-seed2", "broken-seed2"]
    assert outcome.failed == ["broken-seed1", "broken-seed2"]
    assert lines[0].startswith("1 of 4 cells already have results")
    assert lines[1] == "cell 1/3: broken-seed1" and lines[3].startswith("cell 2/3: lora-seed2, ETA ")
    return out


def test_suite_expands_variants_times_grid_and_quick(tmp_path: Path, sentiment_csv: Path) -> None:
    path = write_suite(tmp_path / "s.yaml", sentiment_csv,
                       quick={"variants": ["lora"], "grid": {"train.seed": [7]}, "overrides": {"train.max_steps": 1}})
    cells = expand(load_suite(path))
    assert [c.id for c in cells] == ["lora-seed1", "broken-seed1", "lora-seed2", "broken-seed2"]
    assert cells[2].recipe["train"]["seed"] == 2 and cells[1].recipe["method"] == {"name": "no_such_method"}
    quick = expand(load_suite(path), quick=True)
    assert [c.id for c in quick] == ["lora-seed7"] and quick[0].recipe["train"]["max_steps"] == 1


def test_suite_errors_are_one_line(tmp_path: Path, sentiment_csv: Path) -> None:
    path = write_suite(tmp_path / "s.yaml", sentiment_csv, reference="nope")
    with pytest.raises(PeftkitError, match=r"variant 'nope' is not one of the suite's \(lora, broken\)"):
        load_suite(path)
    path.write_text("variants: {a: {}}\ngird: {}\n", encoding="utf-8")
    with pytest.raises(PeftkitError, match="'gird': extra inputs are not permitted"):
        load_suite(path)


def test_cell_result_schema(finished_suite: Path) -> None:
    result = json.loads((finished_suite / "cells" / "lora-seed2.json").read_text(encoding="utf-8"))
    assert set(RESULT_KEYS) <= set(result)
    assert result["schema"] == SCHEMA and result["status"] == "ok" and result["error"] is None
    assert result["values"] == {"train.seed": 2} and result["method"] == "lora"
    assert 0 < result["parameters"]["trainable"] < result["parameters"]["total"]
    assert result["adapter_bytes"] > 0
    memory = result["memory"]
    assert memory["device"] == "cpu" and memory["measure"] == "private" and memory["peak_bytes"] > 2**20
    phases = memory["phases"]
    assert {"load", "train", "evaluate", "save"} <= set(phases)
    assert memory["peak_bytes"] == memory["private_peak_bytes"] == phases[memory["peak_phase"]]["private_bytes"]
    assert memory["peak_bytes"] == max(p["private_bytes"] for p in phases.values())
    assert memory["rss_peak_bytes"] == max(p["rss_bytes"] for p in phases.values())
    assert memory["samples"] > 10
    assert memory["predicted"]["floor"] < memory["predicted_bytes"] == memory["predicted"]["total"]
    speed = result["speed"]
    assert speed["steps"] == 3 and speed["samples_per_second"] > 0 and speed["tokens_per_second"] > 0
    correct = result["metrics"]["accuracy"] * 40  # computed from the 40 test predictions: a whole count
    assert correct == pytest.approx(round(correct), abs=1e-6) and 0 <= correct <= 40
    provenance = result["provenance"]
    assert provenance["packages"]["torch"] and provenance["device"] == "cpu" and provenance["cpu"]
    assert len(result["recipe_hash"]) == 16
    assert not (finished_suite / "runs" / "lora-seed2").exists()  # run directories are dropped unless kept


def test_failing_cell_is_recorded_and_resume_skips_done_cells(finished_suite: Path) -> None:
    results = {r["cell"]: r for r in load_results(finished_suite)}
    assert results["broken-seed1"]["status"] == "failed"
    assert "unknown method 'no_such_method'" in results["broken-seed1"]["error"]
    assert results["lora-seed1"]["error"] == "recorded before the run"  # skipped, not re-run
    again = run_suite(finished_suite.parent / "tiny.yaml", directory=finished_suite, progress=lambda _: None)
    assert again.ran == [] and len(again.skipped) == 4


@pytest.mark.slow
def test_estimate_within_a_sane_factor_of_the_measured_peak(tmp_path: Path, sentiment_csv: Path,
                                                            minilm_dir: Path) -> None:
    """On the real MiniLM (a tiny model's peak is interpreter noise): one LoRA cell, predicted vs measured."""
    suite = write_suite(tmp_path / "tiny.yaml", sentiment_csv, "minilm-l6", grid={"train.seed": [1]},
                        variants={"lora": {}})
    run_suite(suite, directory=tmp_path / "out", progress=lambda _: None)
    memory = json.loads((tmp_path / "out" / "cells" / "lora-seed1.json").read_text(encoding="utf-8"))["memory"]
    assert 0.25 < memory["predicted_bytes"] / memory["peak_bytes"] < 4


def test_report_can_predict_again_with_this_checkout(finished_suite: Path, tmp_path: Path) -> None:
    import shutil

    from peftkit.config.load import recipe_from_dict
    from peftkit.hardware.auto import estimate_on

    copy = tmp_path / "bench"
    shutil.copytree(finished_suite, copy)
    cell = copy / "cells" / "lora-seed2.json"
    result = json.loads(cell.read_text(encoding="utf-8"))
    measured = result["memory"]["peak_bytes"]
    result["memory"]["predicted_bytes"] = 1  # as if an older estimate had predicted it
    cell.write_text(json.dumps(result), encoding="utf-8")
    recipe = recipe_from_dict(json.loads((copy / "specs" / "lora-seed2.json").read_text())["recipe"])
    expected = estimate_on(recipe).total  # this machine: a CPU in CI
    text, _ = render(copy, re_estimate=True)
    assert "Predictions recomputed by `peftkit estimate` at commit" in text
    row = next(line for line in text.splitlines() if line.startswith("| lora-seed2 |"))
    assert f"| {expected / 2**20:,.0f} |" in row and f"| {measured / 2**20:,.0f} |" in row
    assert json.loads(cell.read_text(encoding="utf-8"))["memory"]["predicted_bytes"] == 1  # results untouched


def fake_result(cell: str, variant: str, method: str, seed: int, accuracy: float, peak_mib: float,
                trainable: int, size: str | None = None) -> dict[str, Any]:
    labels = {"train.seed": f"seed{seed}"} if size is None else {"model.config_overrides": size}
    return {
        "schema": SCHEMA, "suite": "fake", "cell": cell, "variant": variant, "values": {}, "labels": labels,
        "status": "ok", "error": None, "recipe_hash": "0" * 16,
        "provenance": {"device": "cpu", "cpu": "test cpu", "cpu_count": 2, "git_commit": "abc", "gpu": None},
        "method": method, "quantization": "4bit" if "q" in variant else "none", "model": "m",
        "parameters": {"trainable": trainable, "total": 1_000_000}, "adapter_bytes": trainable * 4,
        "memory": {"device": "cpu", "measure": "private", "peak_bytes": int(peak_mib * 2**20), "peak_phase": "train",
                   "rss_peak_bytes": int(peak_mib * 2**20 * 3), "predicted_bytes": int(peak_mib * 2**20 * 1.1),
                   "predicted": {"floor": int(peak_mib * 2**20 / 2)}, "error_percent": 10.0},
        "speed": {"train_seconds": 10.0, "samples_per_second": 100.0 / peak_mib, "tokens_per_second": 1000.0},
        "metrics": {"accuracy": accuracy} if size is None else {},
    }


def write_fake(directory: Path, kind: str, results: list[dict[str, Any]]) -> None:
    (directory / "cells").mkdir(parents=True)
    suite = {"name": "fake", "kind": kind, "variants": {r["variant"]: {} for r in results}}
    if kind == "accuracy":
        suite["reference"] = "seeds-recipe"
    (directory / "suite.yaml").write_text(yaml.safe_dump(suite), encoding="utf-8")
    for r in results:
        (directory / "cells" / f"{r['cell']}.json").write_text(json.dumps(r), encoding="utf-8")


def plotted_lines(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Spy on every saved figure: file name → line label → its (x, y) points."""
    from matplotlib.figure import Figure

    seen: dict[str, dict[str, list[tuple[float, float]]]] = {}
    real = Figure.savefig

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        seen[Path(fname).name] = {line.get_label(): list(zip(line.get_xdata(), line.get_ydata(), strict=True))
                                  for ax in self.axes for line in ax.get_lines()}
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return seen


def test_accuracy_report_table_csv_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plots = plotted_lines(monkeypatch)
    write_fake(tmp_path, "accuracy", [
        fake_result("full-seed1", "full", "full", 1, 0.80, 400, 1_000_000),
        fake_result("full-seed2", "full", "full", 2, 0.84, 420, 1_000_000),
        fake_result("lora-seed1", "lora", "lora", 1, 0.81, 200, 10_000),
        fake_result("seeds-recipe-seed1", "seeds-recipe", "full", 1, 0.79, 500, 1_000_000),
        {**fake_result("ia3-seed1", "ia3", "ia3", 1, 0, 1, 1), "status": "failed", "error": "unknown method 'ia3'"},
    ])
    text, files = render(tmp_path)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| variant | method |")
    assert table[1].startswith("| full | full |") and "**0.8200 ± 0.0283**" in table[1]  # sorted by mean accuracy
    assert "| **200** |" in table[2] and "**10.0**" not in table[2]  # lowest peak in bold; ties are not marked
    assert "seeds-recipe (reference)" in text
    assert "- lora: -1.0 accuracy points vs full, peak memory 0.49× of full's" in text
    assert "| ia3-seed1 | failed | – | – | – | – | – | unknown method 'ia3' |" in text
    assert "| lora-seed1 | ok | 200 | train | 600 | 220 | 10 |  |" in text
    assert "Peak: private memory (CPU: RssAnon)" in text
    rows = list(csv.DictReader((tmp_path / "results.csv").open(encoding="utf-8")))
    assert len(rows) == 5 and {r["status"] for r in rows} == {"ok", "failed"}
    assert [f.name for f in files[2:]] == ["metric_vs_memory.png", "metric_vs_params.png"]
    for png in files[2:]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    # the frontier from the report's own data: lora (200 MiB, 0.81) then full (410 MiB, 0.82); seeds-recipe
    # (500 MiB, 0.79) is beaten on both axes and the failed cell is not plotted
    frontier = plots["metric_vs_memory.png"]["Pareto frontier"]
    assert frontier == [pytest.approx((200, 0.81)), pytest.approx((410, 0.82))]


def test_one_cell_accuracy_plot_has_no_empty_legend_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One point has no Pareto line: the plot has no frontier and no legend naming one."""
    from matplotlib.figure import Figure

    legends: dict[str, list[str]] = {}
    real = Figure.savefig

    def savefig(self: Figure, fname: Any, *args: Any, **kwargs: Any) -> Any:
        legends[Path(fname).name] = [t.get_text() for ax in self.axes if ax.get_legend()
                                     for t in ax.get_legend().get_texts()]
        return real(self, fname, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    write_fake(tmp_path, "accuracy", [fake_result("lora-seed1", "lora", "lora", 1, 0.81, 200, 10_000)])
    render(tmp_path)
    assert legends == {"metric_vs_memory.png": [], "metric_vs_params.png": []}


def test_scaling_report_ratio_and_floor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plots = plotted_lines(monkeypatch)
    write_fake(tmp_path, "scaling", [
        fake_result("full-small", "full", "full", 1, 0, 400, 10**6, size="small"),
        fake_result("qlora-nf4-small", "qlora-nf4", "qlora", 1, 0, 100, 10**4, size="small"),
    ])
    text, files = render(tmp_path)
    assert "| small | qlora-nf4 | 1.0M | **10.0k** | **100** | train | 300 | 50 | 110 | 10 | 0.25 |" in text
    assert "- qlora-nf4 at small: peak memory 0.25× of full's (analytic floor 50 vs 200 MiB)" in text
    assert files[-1].name == "memory_vs_size.png" and files[-1].read_bytes()[:4] == b"\x89PNG"
    lines = plots["memory_vs_size.png"]  # one parameter count (1 M): measured peak and analytic floor per variant
    assert lines["qlora-nf4 (measured)"] == [pytest.approx((1.0, 100))]
    assert lines["qlora-nf4 (floor: weights + trainable state)"] == [pytest.approx((1.0, 50))]
    assert lines["full (measured)"] == [pytest.approx((1.0, 400))]


def test_cli_bench_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "report"]) == 2
    assert "name the bench directory" in capsys.readouterr().err
    assert main(["bench", "report", str(tmp_path)]) == 2
    assert "has no suite.yaml" in capsys.readouterr().err


def test_padding_option_fixes_batch_length(write_recipe: Any, tmp_path: Path) -> None:
    from peftkit.config.load import load_recipe
    from peftkit.training.build import build_trainer

    data = tmp_path / "varied.csv"  # texts of 5 to 9 words, so dynamic padding varies from batch to batch
    write_csv(data, [{**r, "text": r["text"] + " really" * (i % 5)} for i, r in enumerate(make_sentiment_rows(200))])
    for padding, expected in (("max_length", {32}), ("longest_in_dataset", None), ("dynamic", None)):
        recipe = load_recipe(write_recipe({"data.padding": padding, "data.source": str(data)}))
        prepared = build_trainer(recipe, Path(recipe.output_dir))
        collate = prepared.trainer.data_collator
        train = prepared.tokenized["train"]
        longest = max(len(ids) for part in prepared.tokenized.values() for ids in part["input_ids"])
        lengths = {collate([train[i] for i in range(j, j + 4)])["input_ids"].shape[1] for j in range(0, 40, 4)}
        if padding == "longest_in_dataset":
            expected = {longest}
        if padding == "dynamic":
            assert len(lengths) > 1 and max(lengths) <= longest
        else:
            assert lengths == expected


def test_random_init_needs_flag_and_matches_estimate(tmp_path: Path, sentiment_csv: Path) -> None:
    from peftkit.config.load import recipe_from_dict
    from peftkit.hardware.auto import estimate_on
    from peftkit.model.params import count_parameters
    from peftkit.training.build import build_trainer

    raw = bench_recipe(sentiment_csv, "minilm-l6")
    raw["model"]["config_overrides"] = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                                        "intermediate_size": 128}
    with pytest.raises(PeftkitError, match=r"'model\.config_overrides' changes the architecture; it needs "
                                           r"model\.random_init"):
        recipe_from_dict(raw)
    raw["model"]["random_init"] = True
    raw["method"] = {"name": "full"}
    recipe = recipe_from_dict(raw)
    recipe.output_dir = str(tmp_path / "run")
    model = build_trainer(recipe, tmp_path / "run").trainer.model
    assert model.config.hidden_size == 64 and model.config.num_hidden_layers == 2
    predicted = estimate_on(recipe)
    assert (predicted.trainable_params, predicted.total_params) == count_parameters(model)
    assert predicted.weights == 4 * predicted.total_params


def test_tfidf_baseline_learns_and_reads_the_same_split(tmp_path: Path, sentiment_csv: Path) -> None:
    import random

    from peftkit.bench.tfidf import run_tfidf
    from peftkit.config.load import recipe_from_dict

    fitted = run_tfidf(recipe_from_dict(bench_recipe(sentiment_csv, "minilm-l6")))
    assert fitted["test_examples"] == 40 and fitted["train_examples"] == 360
    assert fitted["metrics"]["accuracy"] >= 0.95 and set(fitted["metrics"]) >= {"accuracy", "f1_macro"}
    assert fitted["parameters"]["trainable"] == fitted["features"] + 1  # binary: one weight per feature + bias
    rows = list(csv.DictReader(sentiment_csv.open(encoding="utf-8")))
    labels = [r["label"] for r in rows]
    random.Random(0).shuffle(labels)
    shuffled = tmp_path / "shuffled.csv"
    write_csv(shuffled, [{"text": r["text"], "label": label} for r, label in zip(rows, labels, strict=True)])
    shuffled_recipe = recipe_from_dict(bench_recipe(shuffled, "minilm-l6"))
    assert run_tfidf(shuffled_recipe)["metrics"]["accuracy"] < 0.75  # no signal, no score


def test_tfidf_baseline_refuses_token_classification(sentiment_csv: Path) -> None:
    from peftkit.bench.tfidf import run_tfidf
    from peftkit.config.load import recipe_from_dict

    recipe = recipe_from_dict({**bench_recipe(sentiment_csv, "minilm-l6"), "task": {"head": "ner"}})
    with pytest.raises(PeftkitError, match=r"baseline 'tfidf': needs a single-label sequence classification head"):
        run_tfidf(recipe)


def test_tfidf_uses_characters_for_chinese() -> None:
    from peftkit.bench.tfidf import vectorizer

    assert vectorizer(["这部电影很好看", "质量太差了"]).analyzer == "char"
    assert vectorizer(["a good film", "dull plot"]).analyzer == "word"


def test_suite_baseline_row_runs_beside_variants(tmp_path: Path, sentiment_csv: Path) -> None:
    path = write_suite(tmp_path / "s.yaml", sentiment_csv, baselines=["tfidf"], quick={"variants": ["lora"]})
    assert [c.id for c in expand(load_suite(path))][-2:] == ["broken-seed2", "tfidf-seed2"]
    assert [c.id for c in expand(load_suite(path), quick=True)] == ["lora-seed1", "tfidf-seed1", "lora-seed2",
                                                                     "tfidf-seed2"]
    suite = yaml.safe_load(path.read_text(encoding="utf-8"))
    suite["variants"] = {"broken": {"method": {"name": "no_such_method"}}}
    suite["grid"] = {"train.seed": [1]}
    suite["quick"] = {}
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    outcome = run_suite(path, directory=tmp_path / "out", progress=lambda line: None)
    assert outcome.failed == ["broken-seed1"] and "tfidf-seed1" in outcome.ran
    result = json.loads((tmp_path / "out" / "cells" / "tfidf-seed1.json").read_text(encoding="utf-8"))
    assert result["status"] == "ok" and result["method"] == "tfidf-logreg" and result["metrics"]["accuracy"] >= 0.95
    text, _ = render(tmp_path / "out")
    assert "| tfidf | tfidf-logreg | none |" in text
    suite["variants"] = {"tfidf": {}}
    path.write_text(yaml.safe_dump(suite), encoding="utf-8")
    with pytest.raises(PeftkitError, match=r"variant 'tfidf' has the name of a baseline"):
        load_suite(path)


def test_jobs_run_real_cells_side_by_side_and_the_report_says_so(tmp_path: Path, sentiment_csv: Path) -> None:
    path = write_suite(tmp_path / "s.yaml", sentiment_csv, baselines=["tfidf"],
                       variants={"broken": {"method": {"name": "no_such_method"}}})
    lines: list[str] = []
    outcome = run_suite(path, directory=tmp_path / "out", progress=lines.append, jobs=2)
    assert sorted(outcome.ran) == ["broken-seed1", "broken-seed2", "tfidf-seed1", "tfidf-seed2"]
    assert sorted(outcome.failed) == ["broken-seed1", "broken-seed2"]
    assert lines[:2] == ["cell 1/4: broken-seed1", "cell 2/4: tfidf-seed1"]  # both started before either ended
    assert "  broken-seed1: failed: cell broken-seed1: 'method.name': unknown method 'no_such_method'" in " ".join(
        lines) or any(line.startswith("  broken-seed1: failed: ") for line in lines)
    results = {r["cell"]: r for r in load_results(tmp_path / "out")}
    assert results["tfidf-seed1"]["status"] == results["tfidf-seed2"]["status"] == "ok"
    assert results["tfidf-seed2"]["cells_at_a_time"] == 2
    assert "Cells ran up to 2 at a time (`--jobs 2`): times and throughput share the machine" in render(
        tmp_path / "out")[0]


def test_an_interrupt_stops_every_running_cell_process() -> None:
    import subprocess
    import sys
    import threading
    import time

    from peftkit.bench.runner import CellProcesses

    processes, codes = CellProcesses(), []
    command = [sys.executable, "-c", "import time; time.sleep(60)"]
    threads = [threading.Thread(target=lambda: codes.append(processes.run(command, subprocess.DEVNULL, None, {})))
               for _ in range(2)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    time.sleep(1)
    processes.stop()
    for thread in threads:
        thread.join(timeout=10)
    assert codes == ["interrupted", "interrupted"] and time.perf_counter() - started < 10
    assert processes.run(command, subprocess.DEVNULL, None, {}) == "interrupted"  # nothing starts after a stop
