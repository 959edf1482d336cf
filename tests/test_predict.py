"""Batch inference (mtl_final.predict) against a tiny ESMM run trained once for the module, and its clear
errors (exit code 2) for a bad --out, --input, --threads, best.pt or encoders.json."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mtl_final.config import load_config
from mtl_final.data.errors import DataError
from mtl_final.data.features import Batch
from mtl_final.data.schema import DatasetSchema
from mtl_final.data.store import EncodedStore
from mtl_final.models import build_model
from mtl_final.nn import cpu_matmul
import mtl_final.predict as predict_module
from mtl_final.predict import load_run_model, main as predict_main, predict

torch.set_num_threads(1)


def _quiet(*args, **kwargs):
    return predict(*args, log=None, **kwargs)


def _direct_probs(run_dir: Path, root: Path, tmp: Path) -> dict[str, np.ndarray]:
    """The trained model (rebuilt here by hand) on the cached store's test tensors."""
    cfg = load_config(run_dir / "config.yaml")
    schema = DatasetSchema.from_yaml(root / "schema.yaml").select_tasks(["ctr", "cvr"])
    store = EncodedStore.build_or_load(schema, root, tmp / "cache", log=None)
    assert store.from_cache
    model = build_model(cfg, store.feature_spec, list(schema.tasks))
    model.load_state_dict(torch.load(run_dir / "best.pt", weights_only=False)["model"])
    model.eval()
    test = store.tensors("test")
    with torch.no_grad():
        out = model(Batch(test.cat, test.num))
    return {k: v.numpy() for k, v in out.probs.items()}


def test_predictions_match_the_model_on_the_store_and_keep_row_order(esmm_run, tmp_path):
    root, run_dir, tmp = esmm_run
    summary = _quiet(run_dir, root / "test.csv", tmp_path / "pred.csv", keep=["a", "click"])
    got = pd.read_csv(tmp_path / "pred.csv")
    src = pd.read_csv(root / "test.csv")
    assert list(got.columns) == ["a", "click", "p_ctr", "p_cvr", "p_ctcvr"]
    assert summary["rows"] == len(got) == len(src) == 100
    assert summary["columns"] == list(got.columns) and summary["seconds"] >= 0
    assert got["a"].tolist() == src["a"].tolist() and got["click"].tolist() == src["click"].tolist()
    direct = _direct_probs(run_dir, root, tmp)
    for name in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_allclose(got[f"p_{name}"].to_numpy(), direct[name], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["p_ctcvr"], got["p_ctr"] * got["p_cvr"], rtol=0, atol=1e-6)
    assert summary["oov"] == {"a": 0, "b": 0, "c": 0}


def test_chunking_does_not_change_the_output(esmm_run, tmp_path):
    root, run_dir, _ = esmm_run
    _quiet(run_dir, root / "test.csv", tmp_path / "default.csv")
    _quiet(run_dir, root / "test.csv", tmp_path / "chunked.csv", chunk_rows=7)
    assert (tmp_path / "default.csv").read_bytes() == (tmp_path / "chunked.csv").read_bytes()
    # forward batches of exactly batch_size rows, whatever the chunks: bytes equal for any chunk_rows
    _quiet(run_dir, root / "test.csv", tmp_path / "b16.csv", batch_size=16)
    _quiet(run_dir, root / "test.csv", tmp_path / "b16_c7.csv", chunk_rows=7, batch_size=16)
    assert (tmp_path / "b16.csv").read_bytes() == (tmp_path / "b16_c7.csv").read_bytes()
    # another batch size may round differently in the last bit, no more
    a, b = pd.read_csv(tmp_path / "default.csv"), pd.read_csv(tmp_path / "b16.csv")
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=0, atol=1e-6)


def test_labels_are_not_needed_and_unseen_values_score_as_oov(esmm_run, tmp_path):
    root, run_dir, _ = esmm_run
    rows = "a,b,c,x\n1,2,3,0.5\nzzz,2,3,0.5\nnever-seen,2,3,0.5\n,2,3,\n"
    (tmp_path / "in.csv").write_text(rows)
    summary = _quiet(run_dir, tmp_path / "in.csv", tmp_path / "out.csv")
    got = pd.read_csv(tmp_path / "out.csv")
    assert len(got) == 4
    assert summary["oov"] == {"a": 2, "b": 0, "c": 0}
    assert summary["missing"] == {"a": 1, "b": 0, "c": 0} and summary["filled_na"] == {"x": 1}
    # an explicit OOV row: encode row 1 with the saved encoders, then put a's OOV index in by hand
    model, encoders, _ = load_run_model(run_dir)
    cat, num = encoders.transform(pd.DataFrame({"a": ["1"], "b": ["2"], "c": ["3"], "x": ["0.5"]}))
    cat[0, 0] = encoders.categorical[0].oov_index
    with torch.no_grad():
        ref = model(Batch(torch.from_numpy(cat.astype(np.int64)), torch.from_numpy(num))).probs
    for name in ("ctr", "cvr", "ctcvr"):
        assert got[f"p_{name}"][1] == pytest.approx(float(ref[name][0]), abs=1e-6)
        assert got[f"p_{name}"][2] == got[f"p_{name}"][1]
    assert got["p_ctr"][0] != got["p_ctr"][1]  # a=1 is in the vocabulary


def test_missing_column_and_bad_numeric_raise_data_errors(esmm_run, tmp_path):
    root, run_dir, _ = esmm_run
    (tmp_path / "nob.csv").write_text("a,c,x\n1,3,0.5\n")
    with pytest.raises(DataError) as err:
        _quiet(run_dir, tmp_path / "nob.csv", tmp_path / "out.csv")
    assert err.value.column == "b" and err.value.file == str(tmp_path / "nob.csv")
    assert "nob.csv" in str(err.value) and "'b'" in str(err.value)

    (tmp_path / "bad.csv").write_text("a,b,c,x\n1,2,3,0.5\n1,2,3,0.25\n1,2,3,abc\n1,2,3,1\n")
    with pytest.raises(DataError) as err:
        _quiet(run_dir, tmp_path / "bad.csv", tmp_path / "out.csv", chunk_rows=2)
    e = err.value
    assert (e.file, e.column, e.line, e.value) == (str(tmp_path / "bad.csv"), "x", 4, "abc")
    assert "line 4" in str(e)
    assert not (tmp_path / "out.csv").exists() and not list(tmp_path.glob(".out.csv.tmp-*"))


def test_parquet_input_and_output_match_csv(esmm_run, tmp_path):
    root, run_dir, _ = esmm_run
    frame = pd.read_csv(root / "test.csv").drop(columns=["click", "conv"])  # a, b, c int64; x float64
    frame.to_parquet(tmp_path / "test.parquet", index=False)
    _quiet(run_dir, root / "test.csv", tmp_path / "from_csv.csv")
    _quiet(run_dir, tmp_path / "test.parquet", tmp_path / "from_pq.parquet", chunk_rows=33, keep=["b"])
    a = pd.read_csv(tmp_path / "from_csv.csv")
    b = pd.read_parquet(tmp_path / "from_pq.parquet")
    assert b["b"].tolist() == [str(v) for v in frame["b"]]
    for name in ("p_ctr", "p_cvr", "p_ctcvr"):
        np.testing.assert_array_equal(a[name].to_numpy(np.float32), b[name].to_numpy())


def test_cli(esmm_run, tmp_path, capsys):
    root, run_dir, _ = esmm_run
    out = tmp_path / "cli.csv"
    assert predict_main(["--run", str(run_dir), "--input", str(root / "test.csv"), "--out", str(out),
                         "--keep", "c"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["rows"] == 100 and list(pd.read_csv(out).columns) == ["c", "p_ctr", "p_cvr", "p_ctcvr"]
    assert predict_main(["--run", str(run_dir), "--input", str(root / "test.csv"), "--out", str(out),
                         "--keep", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_missing_schema_file_is_named(esmm_run, tmp_path):
    root, run_dir, _ = esmm_run
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    text = (copy / "config.yaml").read_text().replace(str(root / "schema.yaml"), str(tmp_path / "gone.yaml"))
    (copy / "config.yaml").write_text(text)
    # the run's own copy of the schema is enough: the file data.schema names is not needed
    assert (copy / "schema.yaml").read_bytes() == (root / "schema.yaml").read_bytes()
    _quiet(copy, root / "test.csv", tmp_path / "out.csv")
    expected = pd.read_csv(tmp_path / "out.csv")
    assert list(expected.columns) == ["p_ctr", "p_cvr", "p_ctcvr"] and len(expected) > 0
    # a run made before the copy was written: data.schema names the file, which must exist
    (copy / "schema.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="gone.yaml"):
        _quiet(copy, root / "test.csv", tmp_path / "out2.csv")


def test_simulator_runs_resolve_the_schema_in_the_simulator_cache(tmp_path):
    from mtl_final.data.simulator import ensure_simulated
    from mtl_final.predict import run_schema_path

    cfg = load_config(None, ["data.simulator={n_rows: 1000, seed: 3}", f"data.cache_dir={tmp_path}"])
    assert run_schema_path(cfg) == ensure_simulated(tmp_path, n_rows=1000, seed=3) / "schema.yaml"


def test_scoring_runs_at_exact_float32_matmul_precision(esmm_run):
    _, run_dir, _ = esmm_run
    torch.set_float32_matmul_precision("medium")  # e.g. left by a Trainer with train.matmul_precision=medium
    load_run_model(run_dir)
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.parametrize("vendor, backend", [("AuthenticAMD", "medium"), ("GenuineIntel", "highest")])
def test_scoring_multiplies_in_the_runs_cpu_matmul_scope(esmm_run, tmp_path, monkeypatch, vendor, backend):
    """train.cpu_matmul=auto scores through oneDNN (float32 matmul precision medium while the model runs)
    on an AMD CPU where medium does not round, through BLAS elsewhere; highest is restored after."""
    root, run_dir, _ = esmm_run
    monkeypatch.setattr(cpu_matmul, "medium_matmul_rounds", lambda: False)
    monkeypatch.setattr(cpu_matmul, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(cpu_matmul, "_backend", cpu_matmul._backend)  # restored after the test
    seen: list[str] = []

    def load_recording(run_dir):
        model, encoders, cfg = load_run_model(run_dir)
        model.register_forward_hook(lambda *_: seen.append(torch.get_float32_matmul_precision()))
        return model, encoders, cfg

    monkeypatch.setattr(predict_module, "load_run_model", load_recording)
    _quiet(run_dir, root / "test.csv", tmp_path / "pred.csv", batch_size=64)
    assert seen == [backend, backend]  # 100 rows in batches of 64
    assert torch.get_float32_matmul_precision() == "highest"


def test_int_dtype_fields_read_spellings_alike_and_locate_bad_cells(tmp_path):
    from tests.support.tiny_data import tiny_overrides, write_tiny_dataset
    from mtl_final.train.__main__ import main as train_main

    root = write_tiny_dataset(tmp_path / "data", n=300)
    schema = root / "schema.yaml"
    schema.write_text(schema.read_text().replace("{name: a, type: categorical}", "{name: a, type: categorical, dtype: int}"))
    run_dir = tmp_path / "run"
    assert train_main(["--out", str(run_dir), *tiny_overrides(root, tmp_path), "model=mlp", "tasks=[ctr]",
                       "train.epochs=1", "train.tensorboard=false", "train.num_threads=1"]) == 0
    (tmp_path / "in.csv").write_text("a,b,c,x\n7,2,3,0.5\n07,2,3,0.5\n+7.0,2,3,0.5\n")
    _quiet(run_dir, tmp_path / "in.csv", tmp_path / "out.csv")
    probs = pd.read_csv(tmp_path / "out.csv")["p_ctr"].to_numpy()
    assert probs[0] == probs[1] == probs[2]  # one value, three spellings
    (tmp_path / "bad.csv").write_text("a,b,c,x\n7,2,3,0.5\n7.5,2,3,0.5\n")
    with pytest.raises(DataError) as err:
        _quiet(run_dir, tmp_path / "bad.csv", tmp_path / "out2.csv")
    assert (err.value.file, err.value.column, err.value.line, err.value.value) == (
        str(tmp_path / "bad.csv"), "a", 3, "7.5")


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def test_predict_out_naming_an_existing_folder_is_refused_before_scoring(esmm_run, tmp_path, capsys, monkeypatch):
    root, run_dir, _ = esmm_run
    (tmp_path / "pred.csv").mkdir()
    import mtl_final.predict as predict_module

    monkeypatch.setattr(predict_module, "load_run_model", lambda *_: pytest.fail("scored before checking --out"))
    assert predict_main(["--run", str(run_dir), "--input", str(root / "test.csv"),
                         "--out", str(tmp_path / "pred.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {tmp_path / 'pred.csv'} is a folder; name the output file")
    assert (tmp_path / "pred.csv").is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["pred.csv"]


def test_predict_missing_input_names_the_input_not_the_dataset_schema(esmm_run, tmp_path):
    _, run_dir, _ = esmm_run
    with pytest.raises(DataError) as err:
        predict(run_dir, tmp_path / "nope.csv", tmp_path / "out.csv", log=None)
    assert err.value.file == str(tmp_path / "nope.csv")
    assert str(err.value) == (f"file {tmp_path / 'nope.csv'}: the input file is not found. "
                              "Fix: check the --input path.")
    assert not (tmp_path / "out.csv").exists()


def test_predict_corrupt_best_pt_is_a_clear_error(esmm_run, tmp_path, capsys):
    root, run_dir, _ = esmm_run
    copy = _copy_run(run_dir, tmp_path)
    (copy / "best.pt").write_bytes((run_dir / "best.pt").read_bytes()[:1000])  # cut short
    assert predict_main(["--run", str(copy), "--input", str(root / "test.csv"), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {copy / 'best.pt'} (")
    assert err.rstrip().endswith("train the run again or restore the file")
    assert "Traceback" not in err


def test_predict_corrupt_encoders_json_names_the_file(esmm_run, tmp_path, capsys):
    root, run_dir, _ = esmm_run
    copy = _copy_run(run_dir, tmp_path)
    (copy / "encoders.json").write_text("{")
    assert predict_main(["--run", str(copy), "--input", str(root / "test.csv"), "--out", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {copy / 'encoders.json'} (")
    assert err.rstrip().endswith("train the run again or restore the file")


def test_predict_reads_a_best_pt_that_is_a_plain_state_dict(esmm_run, tmp_path):
    """README (data-parallel training): 'best.pt is a plain state dict, so predict and export work on it'."""
    root, run_dir, _ = esmm_run
    copy = _copy_run(run_dir, tmp_path)
    torch.save(torch.load(run_dir / "best.pt", weights_only=False)["model"], copy / "best.pt")
    predict(run_dir, root / "test.csv", tmp_path / "want.csv", log=None)
    predict(copy, root / "test.csv", tmp_path / "got.csv", log=None)
    assert (tmp_path / "got.csv").read_bytes() == (tmp_path / "want.csv").read_bytes()


def test_predict_negative_threads_is_a_usage_error(esmm_run, tmp_path, capsys):
    root, run_dir, _ = esmm_run
    with pytest.raises(SystemExit) as exit_:
        predict_main(["--run", str(run_dir), "--input", str(root / "test.csv"), "--out", str(tmp_path / "o.csv"),
                      "--threads", "-1"])
    assert exit_.value.code == 2
    assert "--threads must be >= 0 (0 = torch default), got -1" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()
