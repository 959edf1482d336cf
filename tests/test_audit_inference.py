"""Inference-path audit: mtl_final.predict / mtl_final.export / mtl_final.onnx_encoders give clear errors (file,
the fix, exit code 2) instead of raw tracebacks, honour --opset, and read best.pt as documented."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import onnx
import pandas as pd
import pytest
import torch

from mtl_final.data.encoders import FeatureEncoders
from mtl_final.data.errors import DataError
from mtl_final.data.schema import FieldSpec
from mtl_final.export import ExportError, export_onnx, main as export_main
from mtl_final.onnx_encoders import with_raw_inputs
from mtl_final.predict import load_run_model, main as predict_main, predict

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def encoded_onnx(esmm_run):
    """The run's model exported at the default opset (encoded inputs), and the run's encoders."""
    _, run_dir, tmp = esmm_run
    model, encoders, _ = load_run_model(run_dir)
    path = tmp / "encoded.onnx"
    export_onnx(model, encoders.feature_spec(), path, check_rows=8)
    return onnx.load(str(path)), encoders


def _copy_run(run_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


# ----------------------------------------------------------------------------- predict
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


# ----------------------------------------------------------------------------- export
def test_export_out_naming_an_existing_file_is_refused(esmm_run, tmp_path, capsys):
    _, run_dir, _ = esmm_run
    target = tmp_path / "model_dir"
    target.write_text("keep me")
    assert export_main(["--run", str(run_dir), "--out", str(target), "--check-rows", "8"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {target} is a file; name a folder for the export\n"
    assert target.read_text() == "keep me"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_export_refuses_an_opset_it_cannot_write(esmm_run, tmp_path):
    _, run_dir, _ = esmm_run
    model, encoders, _ = load_run_model(run_dir)
    seen = _Records()
    logging.getLogger("onnxscript").addHandler(seen)
    try:
        with pytest.raises(ExportError) as err:
            export_onnx(model, encoders.feature_spec(), tmp_path / "m.onnx", opset=5, check_rows=8)
    finally:
        logging.getLogger("onnxscript").removeHandler(seen)
    assert str(err.value) == ("torch.onnx could not write ONNX opset 5 for ESMM (the file has opset 18); "
                              "choose another --opset (18, the default, always works)")
    assert not seen.records  # the converter's notice and traceback are not printed


def test_export_cli_opset_is_the_files_opset(esmm_run, tmp_path, capsys):
    _, run_dir, _ = esmm_run
    out = tmp_path / "ex"
    assert export_main(["--run", str(run_dir), "--out", str(out), "--opset", "5", "--check-rows", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run_dir}: torch.onnx could not write ONNX opset 5 for ESMM")
    assert err.rstrip().endswith(f"{out} was left as it was") and not out.exists()


# ----------------------------------------------------------------------------- raw inputs
@pytest.mark.parametrize("field", ["categorical", "numeric", "unseen_values", "enc/oov_ids", "enc/axis1"])
def test_a_field_named_like_a_name_inside_the_encoder_graph_is_refused(encoded_onnx, field):
    model, _ = encoded_onnx
    fields = [FieldSpec(field if field != "numeric" else "a", "categorical"),
              FieldSpec(field if field == "numeric" else "x", "numeric", norm="standard")]
    names = [f.name for f in fields]
    encoders = FeatureEncoders(fields).fit([pd.DataFrame({names[0]: ["u", "v"], names[1]: [1.0, 2.0]})])
    with pytest.raises(ValueError) as err:
        with_raw_inputs(model, encoders)
    assert str(err.value) == (f"field name(s) {[field]} are also names inside the exported model's graph; "
                              "rename the field(s) in the dataset schema to export raw inputs")
