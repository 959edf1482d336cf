"""Tests of the paper-reproduction benchmark: the 80 benchmark configs, the runner (cells, resume,
CSV, failures) on a tiny dataset, and the markdown report (statistics, paper column, Welch t-test)."""
from __future__ import annotations

import csv
import re
import math
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps

from mtl_final.benchmark import paper_numbers, report, runner
from mtl_final.benchmark.__main__ import main
from mtl_final.config import load_config
from mtl_final.models import build_model
from tests.support.benchmark_checks import assert_rerun_runs_nothing
from tests.support.model_fixtures import tasks, tiny_batch, tiny_features
from tests.support.scripts import load_script
from tests.support.tiny_benchmark import benchmark_argv as _argv

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs" / "benchmarks"
DATASETS = ("frappe_x1", "movielenslatest_x1", "criteo_x1", "avazu_x1")
EMB_REG = {"frappe_x1": 0.1, "movielenslatest_x1": 0.01, "criteo_x1": 1e-5, "avazu_x1": 0.05}
# the BARS configs: block 1 (units, dropout), block 2 (units, dropout), field gate
FINAL_1B = {
    "frappe_x1": ([400, 400], 0.2, False),
    "movielenslatest_x1": ([400], 0.1, False),
    "criteo_x1": ([1000, 1000], 0.2, True),
    "avazu_x1": ([400, 400, 400], 0.2, False),
}
FINAL_2B = {
    "frappe_x1": ([400, 400], 0.1, [400], 0.1),
    "movielenslatest_x1": ([400, 400], 0.0, [500], 0.0),
    "criteo_x1": ([400, 400], 0.1, [400, 400], 0.0),
    "avazu_x1": ([800], 0.3, [800, 800], 0.2),
}
MODEL_NAME = {
    "LR": "lr", "FM": "fm", "AFM": "afm", "CrossNet": "crossnet", "CrossNetV2": "crossnetv2", "CIN": "cin",
    "DCN": "dcn", "DCNV2": "dcnv2", "DeepFM": "deepfm", "AutoInt": "autoint", "xDeepFM": "xdeepfm",
    "SAM": "sam", "MLP": "mlp", "FINAL_1B": "final", "FINAL_dual": "final", "FINAL_2B_KD": "final",
    "MLP_FINAL": "mlp", "DeepFM_FINAL": "deepfm", "xDeepFM_FINAL": "xdeepfm", "DCN_FINAL": "dcn",
}
DEEP_BASELINES = ("DCN", "DCNV2", "DeepFM", "AutoInt", "xDeepFM", "MLP")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread is ~40x faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ the 80 configs


def test_model_ids_are_the_twenty_in_paper_order() -> None:
    assert list(runner.MODEL_IDS) == list(MODEL_NAME)
    assert len(runner.MODEL_IDS) == 20


# Frappe models without a deep part keep their BARS-tuned embedding regularizer: with the dataset's
# 0.1 on whole tables they cannot grow their embeddings (measured; see results/frappe_x1.md notes).
# Models without a deep part use their Frappe_x1-tuned embedding regularizer on every dataset whose
# FINAL value would starve them (Criteo's 1e-5 does not).
EXPLICIT_ONLY_REG = {"LR": 1e-5, "FM": 5e-6, "AFM": 1e-5, "CIN": 5e-4, "CrossNet": 1e-5, "CrossNetV2": 1e-5, "SAM": 1e-3}
EMB_REG_EXCEPTIONS = {(dataset, model): reg for dataset in ("frappe_x1", "movielenslatest_x1", "avazu_x1")
                      for model, reg in EXPLICIT_ONLY_REG.items()}


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("model_id", runner.MODEL_IDS)
def test_every_benchmark_config_loads(dataset: str, model_id: str) -> None:
    path = CONFIGS / dataset / f"{model_id.lower()}.yaml"
    cfg = load_config(path)
    m, b, t = cfg["model"], cfg["block"], cfg["train"]
    assert m["name"] == MODEL_NAME[model_id]
    # shared settings (the FINAL paper's protocol and BARS configs)
    expected_reg = EMB_REG_EXCEPTIONS.get((dataset, model_id), EMB_REG[dataset])
    assert m["embedding_dim"] == 10 and m["embedding_regularizer"] == expected_reg
    assert (t["batch_size"], t["lr"], t["epochs"], t["patience"], t["monitor"]) == (4096, 1e-3, 100, 2, "ctr.auc")
    assert cfg["data"]["schema"] == f"configs/datasets/{dataset}.yaml"
    assert cfg["data"]["root"] == f"../shared/datasets/{dataset}"
    assert cfg["tasks"] == ["ctr"]
    if model_id in DEEP_BASELINES:
        assert (b["kind"], b["hidden_units"]) == ("mlp", [400, 400, 400])
    if model_id.endswith("_FINAL"):  # Table 2 drop-in: the baseline's file with a FINAL block, K = N = 2
        base = load_config(CONFIGS / dataset / f"{model_id[:-len('_FINAL')].lower()}.yaml")
        assert (b["kind"], b["hidden_units"], b["num_steps"]) == ("final", [400, 400], 2)
        assert {k: v for k, v in b.items() if k not in ("kind", "hidden_units")} == \
               {k: v for k, v in base["block"].items() if k not in ("kind", "hidden_units")}
        assert m == base["model"]
    if model_id == "AutoInt":
        assert m["use_deep"] is True  # the paper's AutoInt is AutoInt+
    if model_id == "FINAL_1B":
        units, drop, gate = FINAL_1B[dataset]
        assert (m["num_blocks"], m["kd"], m["field_gate"]) == (1, False, gate)
        assert (b["kind"], b["hidden_units"], b["dropout"], b["num_steps"]) == ("final", units, drop, 2)
    if model_id in ("FINAL_2B_KD", "FINAL_dual"):
        u1, d1, u2, d2 = FINAL_2B[dataset]
        assert (m["num_blocks"], m["kd"], m["field_gate"]) == (2, model_id == "FINAL_2B_KD", True)
        assert (b["kind"], b["hidden_units"], b["dropout"], b["num_steps"]) == ("final", u1, d1, 2)
        assert m["block2"] == {"hidden_units": u2, "dropout": d2}
    if model_id == "FINAL_dual":
        kd = load_config(CONFIGS / dataset / "final_2b_kd.yaml")
        assert cfg == {**kd, "model": {**kd["model"], "kd": False}}


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_benchmark_model_builds_and_trains_a_step(dataset: str) -> None:
    torch.manual_seed(0)
    for model_id in runner.MODEL_IDS:
        cfg = load_config(CONFIGS / dataset / f"{model_id.lower()}.yaml")
        model = build_model(cfg, tiny_features(), tasks("ctr"))
        model.train()
        loss, _ = model.loss(model(tiny_batch(16)), tiny_batch(16))
        loss.backward()
        assert torch.isfinite(loss), model_id


# ------------------------------------------------------------------------ tiny dataset + configs


def _fake_metrics(auc: float = 0.75) -> dict:
    ms = {"ctr": {"auc": auc, "logloss": 0.5, "rows": 80}}
    return {"valid": ms, "test": ms, "best_epoch": 1, "train_seconds": 0.25}


def test_runner_runs_cells_resumes_and_retries(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    csv_file = tiny["out"] / "tiny.csv"
    assert main(_argv(tiny)) == 0
    with csv_file.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["model", "seed", "valid_auc", "valid_logloss", "test_auc", "test_logloss",
                       "best_epoch", "seconds"]
    assert [(r[0], r[1]) for r in rows[1:]] == [("LR", "1"), ("LR", "2"), ("MLP", "1"), ("MLP", "2")]
    for r in rows[1:]:
        assert 0.0 <= float(r[4]) <= 1.0 and float(r[5]) > 0 and int(r[6]) == 1 and float(r[7]) >= 0
    for model in ("LR", "MLP"):
        for seed in (1, 2):
            assert (tiny["runs"] / "tiny" / model / f"seed{seed}" / "metrics.json").is_file()
    assert (tiny["out"] / "tiny.md").is_file()

    # second invocation: every cell is in the CSV, nothing may run, the CSV is untouched
    before = assert_rerun_runs_nothing(monkeypatch, csv_file, _argv(tiny))

    # delete one row: only that cell runs again, with the config of its seed and the overrides
    lines = before.decode().splitlines(keepends=True)
    csv_file.write_text("".join(line for line in lines if not line.startswith("MLP,1,")))
    calls = []

    def fake_run(cfg, run_dir, log, resume=False):
        calls.append((cfg["model"]["name"], cfg["seed"], cfg["data"]["root"], cfg["train"]["progress"], Path(run_dir)))
        return _fake_metrics()

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    assert main(_argv(tiny)) == 0
    assert calls == [("mlp", 1, str(tiny["data"]), False, tiny["runs"] / "tiny" / "MLP" / "seed1")]
    rows = runner.read_rows(csv_file)
    assert [(r["model"], r["seed"]) for r in rows] == [("LR", 1), ("LR", 2), ("MLP", 2), ("MLP", 1)]
    assert rows[-1]["test_auc"] == 0.75 and rows[-1]["seconds"] == 0.25


def test_failed_cell_is_reported_not_written_and_retried(tiny: dict[str, Path],
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    def flaky(cfg, run_dir, log, resume=False):
        if cfg["model"]["name"] == "lr" and cfg["seed"] == 2:
            raise RuntimeError("boom")
        return _fake_metrics()

    monkeypatch.setattr(runner, "run_experiment", flaky)
    assert main(_argv(tiny)) == 1
    out = capsys.readouterr().out
    assert "FAILED tiny LR seed 2: RuntimeError: boom" in out and "LR seed 2: RuntimeError: boom" in out
    rows = runner.read_rows(tiny["out"] / "tiny.csv")
    assert [(r["model"], r["seed"]) for r in rows] == [("LR", 1), ("MLP", 1), ("MLP", 2)]

    calls = []
    monkeypatch.setattr(runner, "run_experiment",
                        lambda cfg, run_dir, log, resume=False: calls.append((cfg["model"]["name"], cfg["seed"])) or _fake_metrics())
    assert main(_argv(tiny)) == 0
    assert calls == [("lr", 2)]
    assert len(runner.read_rows(tiny["out"] / "tiny.csv")) == 4


def test_interrupted_cell_continues_from_its_checkpoint(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from mtl_final.train.trainer import Trainer

    extra = ["train.epochs=3", "train.eval_every_steps=2", "block.dropout=0.1"]  # 4 steps per epoch
    reference = {**tiny, "out": tiny["out"].parent / "ref", "runs": tiny["runs"].parent / "ref_runs"}
    assert main(_argv(reference, models="MLP", seeds="1") + extra) == 0
    step = Trainer.train_step

    def crash(self, batch, params):
        if self.global_step == 5:
            raise RuntimeError("killed")
        return step(self, batch, params)

    monkeypatch.setattr(Trainer, "train_step", crash)
    assert main(_argv(tiny, models="MLP", seeds="1") + extra) == 1
    monkeypatch.setattr(Trainer, "train_step", step)
    capsys.readouterr()
    assert main(_argv(tiny, models="MLP", seeds="1") + extra) == 0
    assert "resumed" in capsys.readouterr().out
    (row,), (ref,) = runner.read_rows(tiny["out"] / "tiny.csv"), runner.read_rows(reference["out"] / "tiny.csv")
    assert {k: v for k, v in row.items() if k != "seconds"} == {k: v for k, v in ref.items() if k != "seconds"}
    # a finished cell run again (its row deleted) trains again, and so does another config
    for more in ([], ["train.lr=0.01"]):
        capsys.readouterr()
        (tiny["out"] / "tiny.csv").unlink()
        assert main(_argv(tiny, models="MLP", seeds="1") + extra + more) == 0
        out = capsys.readouterr().out
        assert "resumed" not in out and "epoch 1 step 2:" in out, out  # trained from step 1


def test_unknown_model_id_lists_valid_ids(tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_argv(tiny, models="LR,NoSuchNet")) == 2
    err = capsys.readouterr().err
    assert "NoSuchNet" in err and "FINAL_2B_KD" in err and "xDeepFM_FINAL" in err
    assert not (tiny["out"] / "tiny.csv").exists()
    with pytest.raises(runner.BenchmarkError, match="missing benchmark config"):
        runner.resolve_models("all", "tiny", tiny["configs"])  # only LR and MLP exist there
    assert [m for m, _ in runner.resolve_models("mlp,lr", "tiny", tiny["configs"])] == ["MLP", "LR"]
    assert [m for m, _ in runner.resolve_models("all", "frappe_x1")] == list(runner.MODEL_IDS)


def test_truncated_last_row_does_not_swallow_the_next(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    runner.append_row(path, runner.metrics_row("LR", 1, _fake_metrics()))
    with path.open("a") as fh:
        fh.write("LR,2,0.7")  # a crash mid-write
    assert [r["seed"] for r in runner.read_rows(path)] == [1]
    runner.append_row(path, runner.metrics_row("LR", 3, _fake_metrics()))
    assert [r["seed"] for r in runner.read_rows(path)] == [1, 3]


# ---------------------------------------------------------------------------------- the report

FAKE = [  # model, seed, test_auc, test_logloss
    ("FINAL_2B_KD", 2021, 0.9850, 0.13), ("FINAL_2B_KD", 2022, 0.9860, 0.14), ("FINAL_2B_KD", 2023, 0.9870, 0.15),
    ("DCNV2", 2021, 0.9840, 0.15), ("DCNV2", 2022, 0.9842, 0.16), ("DCNV2", 2023, 0.9850, 0.17),
    ("MLP", 2021, 0.9700, 0.20), ("MLP", 2022, 0.9720, 0.22),
    ("LR", 2021, 0.9356, 0.30),
]


def _write_fake_csv(out: Path, rows=FAKE) -> None:
    for model, seed, auc, ll in rows:
        runner.append_row(out / "frappe_x1.csv", {
            "model": model, "seed": seed, "valid_auc": auc, "valid_logloss": ll, "test_auc": auc,
            "test_logloss": ll, "best_epoch": 3, "seconds": 10.0})


def _row_of(text: str, model: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith(f"| {model} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_report_statistics_paper_column_and_welch(tmp_path: Path) -> None:
    out = tmp_path / "results"
    _write_fake_csv(out)
    path = report.write_report("frappe_x1", out, command="python -m mtl_final.benchmark --report-only", log=None)
    text = path.read_text()

    # FINAL_2B_KD: AUC×100 98.5, 98.6, 98.7 -> mean 98.600, sample std 0.100; logloss 0.14 ± 0.01
    final = _row_of(text, "FINAL_2B_KD")
    assert final[1:5] == ["3", "2021,2022,2023", "98.600 ± 0.100", "0.1400 ± 0.0100"]
    assert final[6:9] == ["98.95 (Table 1)", "-0.350", ""]  # paper figure, ours − paper, no flag
    # DCNV2: 98.40, 98.42, 98.50 -> mean 98.440, std sqrt((.04²+.02²+.06²)/2) = 0.0529
    dcnv2 = _row_of(text, "DCNV2")
    assert dcnv2[3:5] == ["98.440 ± 0.053", "0.1600 ± 0.0100"]
    assert dcnv2[6:9] == ["98.45 (Table 1)", "-0.010", ""]
    # MLP: 97.0, 97.2 -> 97.100 ± 0.141; paper (Table 2) 98.33 -> -1.230, flagged
    mlp = _row_of(text, "MLP")
    assert mlp[3] == "97.100 ± 0.141" and mlp[6:8] == ["98.33 (Table 2)", "-1.230"] and mlp[8].startswith("⚠")
    assert _row_of(text, "LR")[3] == "93.560 ± –"  # one seed: no std
    # table order = paper order
    table = text[:text.index("## 95% interval")]
    order = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    assert order[1:] == ["LR", "DCNV2", "MLP", "FINAL_2B_KD"]
    # intervals: FINAL_2B_KD 98.6 ± t(0.975, 2)·0.1/√3 = 98.6 ± 4.302653·0.057735 = [98.352, 98.848];
    # MLP 97.1 ± t(0.975, 1)·0.141421/√2 = 97.1 ± 12.706205·0.1 = [95.829, 98.371]; LR (one seed) left out
    intervals = text[text.index("## 95% interval"):text.index("## Significance")]
    assert "| FINAL_2B_KD | 3 | 98.600 | [98.352, 98.848] |" in intervals
    assert "| MLP | 2 | 97.100 | [95.829, 98.371] |" in intervals
    assert "| LR |" not in intervals

    # Welch t-test of FINAL_2B_KD against the best non-FINAL baseline (DCNV2), equal to scipy's
    a = [r[2] for r in FAKE if r[0] == "FINAL_2B_KD"]
    b = [r[2] for r in FAKE if r[0] == "DCNV2"]
    res = sps.ttest_ind(a, b, equal_var=False)
    assert "best non-FINAL baseline by mean test AUC, DCNV2 (98.440, n=3)" in text
    assert f"t = {res.statistic:.6f}," in text
    assert f"p (two-sided) = {res.pvalue:.4f}" in text
    got = report.welch_ttest(a, b)
    assert got["t"] == pytest.approx(res.statistic, rel=1e-12) and got["p_two_sided"] == pytest.approx(res.pvalue)
    va, vb = statistics.variance(a) / 3, statistics.variance(b) / 3
    assert got["df"] == pytest.approx((va + vb) ** 2 / (va**2 / 2 + vb**2 / 2))
    assert "Does the FINAL family beat it? **yes**" in text
    assert "`python -m mtl_final.benchmark --report-only`" in text
    assert "## Commands" in text and report.NOTES_MARKER in text


def test_report_not_enough_seeds_and_notes_are_kept(tmp_path: Path) -> None:
    out = tmp_path / "results"
    _write_fake_csv(out, [r for r in FAKE if not (r[0] == "FINAL_2B_KD" and r[1] != 2021)])
    path = report.write_report("frappe_x1", out, log=None)
    text = path.read_text()
    assert "not enough seeds (FINAL_2B_KD n=1, DCNV2 n=3" in text
    assert "t = " not in text

    notes = f"{report.NOTES_MARKER}\n## Notes\n\nhand-written: seed 2022 ran on a busy machine.\n"
    path.write_text(text.split(report.NOTES_MARKER)[0] + notes)
    _write_fake_csv(out, [("FINAL_2B_KD", 2022, 0.9860, 0.14)])
    text = report.write_report("frappe_x1", out, log=None).read_text()
    assert text.endswith(notes) and text.count(report.NOTES_MARKER) == 1
    assert "| FINAL_2B_KD | 2 |" in text and "t = " in text


def test_report_only_cli_and_command_log(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "run_experiment", lambda cfg, run_dir, log, resume=False: _fake_metrics())
    argv = _argv(tiny, models="LR", seeds="7")
    assert main(argv) == 0
    logged = report.read_commands(tiny["out"], "tiny")
    assert len(logged) == 1 and logged[0][3].endswith(" ".join(argv[:-1]) + f" data.root={tiny['data']}")
    monkeypatch.setattr(runner, "run_experiment", lambda *a, **k: pytest.fail("--report-only ran a cell"))
    assert main(["--dataset", "tiny", "--out", str(tiny["out"]), "--report-only"]) == 0
    text = (tiny["out"] / "tiny.md").read_text()
    assert "| LR | 1 | 7 | 75.000 ± –" in text and logged[0][3] in text and "--report-only" in text
    assert len(report.read_commands(tiny["out"], "tiny")) == 1  # report-only runs nothing, logs nothing


def test_command_log_names_the_script_that_ran_the_benchmark() -> None:
    import shlex

    from mtl_final.benchmark.__main__ import command_line

    assert command_line(["--seeds", "1"]) == shlex.join([sys.executable, "-m", "mtl_final.benchmark", "--seeds", "1"])
    assert command_line(["--seeds", "1"], entry="benchmarks/x.py") == shlex.join(
        [sys.executable, "benchmarks/x.py", "--seeds", "1"])
    assert command_line(["--seeds", "1"], entry=["benchmarks/x.py", "--masks", "m"]) == shlex.join(
        [sys.executable, "benchmarks/x.py", "--masks", "m", "--seeds", "1"])


def test_paper_numbers_cover_every_model_and_dataset() -> None:
    for dataset in DATASETS:
        for model in runner.MODEL_IDS:
            value, table = paper_numbers.paper_auc(dataset, model)
            assert 90 <= value <= 100 if dataset in ("frappe_x1", "movielenslatest_x1") else 70 <= value <= 85
    assert paper_numbers.paper_auc("frappe_x1", "FINAL_2B_KD") == (98.95, "Table 1")
    assert paper_numbers.paper_auc("criteo_x1", "DCN_FINAL") == (81.48, "Table 2")
    assert paper_numbers.paper_auc("avazu_x1", "MLP") == (76.30, "Table 2")
    assert paper_numbers.paper_auc("tiny", "LR") is None


def test_generated_results_pages_match_the_committed_reports():
    # README's results block, docs/results.md and docs/frappe_x1_investigation.md are generated from
    # results/*; after a report is regenerated, `python benchmarks/readme_results.py` must be re-run.
    module = load_script("benchmarks/readme_results.py")
    for path, expected in module.outputs().items():
        assert path.read_text(encoding="utf-8") == expected, f"{path.name}: run python benchmarks/readme_results.py"
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index(module.BEGIN):readme.index(module.END)]
    assert module.glance_table() in block and module.glance_table() in module.results_doc()
    # the at-a-glance row of FINAL(2B)+KD: mean of the three acceptance runs, FuxiCTR's six runs
    with open(REPO_ROOT / "results" / "frappe_x1_native" / "frappe_x1.csv", newline="") as f:
        ours = [float(r["test_auc"]) * 100 for r in csv.DictReader(f) if r["model"] == "FINAL_2B_KD"]
    row = next(line for line in module.glance_table().splitlines() if line.startswith("| FINAL_2B_KD |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith(f"{sum(ours) / 3:.3f} ± ") and cells[3].endswith("(6)")
    frappe_table = module.first_table((REPO_ROOT / "results" / "frappe_x1.md").read_text(encoding="utf-8"))
    assert frappe_table.splitlines()[0].startswith("| model | n | seeds | test AUC")
    with pytest.raises(SystemExit, match="no section"):
        module.section("# title\n\nbody\n", "## Missing")


@pytest.mark.parametrize("script", ["final_search.py", "kernel_paths.py"])
def test_generated_result_summaries_match_their_csvs(script):
    # results/frappe_x1_{2b_kd,1b}_search/summary.md and results/frappe_x1_kernels.md are written from the
    # committed CSVs; after a CSV changes, the script must be re-run (this test says so).
    done = subprocess.run([sys.executable, str(REPO_ROOT / "benchmarks" / script), "--check"], cwd=REPO_ROOT)
    assert done.returncode == 0, f"run: python benchmarks/{script}"


def test_readme_and_docs_speak_of_the_project_only():
    # The front door stays short, and prose carries no provenance: commit hashes, issue numbers and
    # paths outside the repository belong in the results files.
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for path in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]:
        text = path.read_text(encoding="utf-8")
        hashes = [w for w in re.findall(r"\b[0-9a-f]{7,40}\b", text) if re.search(r"[a-f]", w) and re.search(r"\d", w)]
        assert not hashes, f"{path.name}: commit-hash-like tokens {hashes[:5]}"
        assert "../shared" not in text and "/work/" not in text, path.name
        assert not re.search(r"(?<![\w`])#\d+\b|\bissue\b", text), path.name


def test_mean_interval_is_the_student_t_interval() -> None:
    lo, hi = report.mean_interval([1.0, 2.0, 3.0])  # mean 2, s 1, n 3: 2 ± 4.302653 / √3
    assert (lo, hi) == pytest.approx((2 - 2.484138, 2 + 2.484138), abs=1e-6)
    lo, hi = report.mean_interval([1.0, 2.0, 3.0], level=0.9)  # t(0.95, 2) = 2.919986
    assert hi - 2 == pytest.approx(2.919986 / 3 ** 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 values"):
        report.mean_interval([1.0])


# --- audit regressions of the runner and report (each failed before its fix) ----------------------
AUDIT_CSV_HEADER = ",".join(runner.CSV_COLUMNS) + "\n"


def _must_not_run(*args, **kwargs):
    raise AssertionError("run_experiment called")


def test_non_finite_csv_row_is_skipped_reported_and_rerun(tmp_path: Path, tiny: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # A nan row (not written by the runner, which refuses non-finite metrics) crashed the report
    # with AttributeError from statistics.stdev, and resume counted its cell as done.
    out = tmp_path / "r"
    out.mkdir()
    (out / "frappe_x1.csv").write_text(AUDIT_CSV_HEADER + "DCN,1,0.9,0.1,0.9,0.1,1,1.0\nDCN,2,0.9,0.1,nan,0.1,1,1.0\n")
    logged: list[str] = []
    rows = runner.read_rows(out / "frappe_x1.csv", logged.append)
    assert [(r["model"], r["seed"]) for r in rows] == [("DCN", 1)]
    assert len(logged) == 1 and "frappe_x1.csv:3: malformed row skipped (non-finite test_auc 'nan')" in logged[0]
    text = report.write_report("frappe_x1", out, log=None).read_text()
    assert "| DCN | 1 | 1 | 90.000 ± – |" in text

    tiny["out"].mkdir()
    (tiny["out"] / "tiny.csv").write_text(AUDIT_CSV_HEADER + "LR,1,0.7,0.5,0.7,0.5,1,0.1\nLR,2,0.7,0.5,inf,0.5,1,0.1\n")
    calls = []
    monkeypatch.setattr(runner, "run_experiment",
                        lambda cfg, run_dir, log, resume=False: calls.append(cfg["seed"]) or _fake_metrics())
    assert main(_argv(tiny, models="LR")) == 0
    assert calls == [2]


def test_welch_with_zero_variance_in_both_groups_is_undefined(tmp_path: Path) -> None:
    # scipy gives t = inf, p = 0 for constant groups of different means: the report printed
    # "t = nan ... p = 0.0000" and "Significant ...: yes".
    res = report.welch_ttest([0.99, 0.99], [0.98, 0.98])
    assert all(math.isnan(res[k]) for k in ("t", "df", "p_two_sided", "p_greater"))
    res = report.welch_ttest([0.99, 0.995], [0.98, 0.98])  # one constant group: still defined
    assert res["df"] == pytest.approx(1.0) and res["t"] == pytest.approx(5.0)
    out = tmp_path / "r"
    for model, seed, auc in [("DCN", 1, 0.98), ("DCN", 2, 0.98), ("FINAL_2B_KD", 1, 0.99), ("FINAL_2B_KD", 2, 0.99)]:
        runner.append_row(out / "frappe_x1.csv", {
            "model": model, "seed": seed, "valid_auc": auc, "valid_logloss": 0.1, "test_auc": auc,
            "test_logloss": 0.1, "best_epoch": 1, "seconds": 1.0})
    text = report.write_report("frappe_x1", out, log=None).read_text()
    assert "t = nan, df = nan, p (two-sided) = nan, p (one-sided, FINAL_2B_KD > DCN) = nan." in text
    assert "Significant at p < 0.05 (one-sided, as the paper claims): undefined (both have zero variance)." in text


def test_single_task_bad_override_exits_2_before_anything_runs_or_is_logged(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # It ran every cell, each failing with ConfigError, exit 1, and logged the command; the grid
    # mode (plan_grid) already refused it with exit 2.
    monkeypatch.setattr(runner, "run_experiment", _must_not_run)
    assert main(_argv(tiny) + ["train.nosuchkey=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.nosuchkey'" in err and "lr.yaml" in err
    assert not (tiny["out"] / "tiny.commands").exists() and not (tiny["out"] / "tiny.csv").exists()


def test_csv_of_other_columns_exits_2_before_the_command_is_logged(
        tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(runner, "run_experiment", _must_not_run)
    tiny["out"].mkdir()
    (tiny["out"] / "tiny.csv").write_text(",".join(runner.MTL_CSV_COLUMNS) + "\n")
    assert main(_argv(tiny)) == 2
    assert "expected ['model', 'seed'," in capsys.readouterr().err
    assert not (tiny["out"] / "tiny.commands").exists()
