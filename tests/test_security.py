"""No code from a file the user did not name on the command line runs, and no pickle loads unless the
user says so. A received output directory names a malicious .py file or pickle in its recipe.json (each
touches a marker file when it runs); evaluate, verify and convert of it, run as a user runs them
(`python -m edgecomp` in a subprocess), either work from its model.onnx or exit 2 with one clear line,
and the marker never appears. User code that calls sys.exit() fails with exit 2; corrupt files are
called corrupt, not pickled."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from edgecomp.compression.run import CompressRequest, run_compress
from edgecomp.errors import UnsafeModelError, UserInputError

FAST = ["--warmup", "0.02", "--min-duration", "0.02", "--iterations", "64", "--target", "local",
        "--cv-threshold", "1e6", "--latency-budget-ms", "1000"]

EVIL_PY = textwrap.dedent('''
    import pathlib
    pathlib.Path({marker!r}).touch()  # runs on import: what an untrusted file could do

    from edgecomp.models.zoo import get_zoo_model

    def Net():
        return get_zoo_model("tiny_cnn")
''')


class TouchMarker:
    """Unpickling this opens (creates) the marker file: a stand-in for arbitrary code in a pickle."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def edgecomp(*args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "edgecomp", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


def assert_clear_refusal(result, *needles):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1, result.stderr
    for needle in needles:
        assert needle in error[0], error[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory, single_thread):
    """A real `compress` output directory of zoo:tiny_cnn, and labelled data for it."""
    d = tmp_path_factory.mktemp("security")
    x = np.random.default_rng(0).random((40, 1, 28, 28), dtype=np.float32)
    np.savez(d / "d.npz", x=x, y=np.arange(40) % 10)
    run_compress(CompressRequest(model="zoo:tiny_cnn", outdir=str(d / "made"), mac_budget="0.5", memory_budget="0.5",
                                 method="pos-cvx", eval_data=f"npz:{d / 'd.npz'}", progress=False), log=lambda _: None)
    return d


def received(made, tmp_path, source: dict, *, keep_onnx: bool = True):
    """A copy of the output directory whose recipe.json names `source`: what someone could send."""
    out = tmp_path / "received"
    shutil.copytree(made / "made", out)
    recipe = json.loads((out / "recipe.json").read_text())
    recipe["source"] = source
    (out / "recipe.json").write_text(json.dumps(recipe))
    if not keep_onnx:
        (out / "model.onnx").unlink()
    return out


def evil_py(tmp_path):
    marker = tmp_path / "MARKER"
    (tmp_path / "evil.py").write_text(EVIL_PY.format(marker=str(marker)))
    return f"{tmp_path / 'evil.py'}:Net", marker


def test_a_directory_naming_a_py_file_works_from_model_onnx_and_runs_nothing(made, tmp_path):
    spec, marker = evil_py(tmp_path)
    outdir = received(made, tmp_path, {"spec": spec, "weights": None})
    data = f"npz:{made / 'd.npz'}"

    result = edgecomp("evaluate", outdir, "--data", data, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["evaluated_with"].startswith("onnxruntime")

    result = edgecomp("verify", outdir, "--device", "x86-host", *FAST, "--data", data, "--json", cwd=tmp_path)
    assert result.returncode in (0, 1), result.stderr  # measured from model.onnx; the gate's verdict is not the point
    doc = json.loads(result.stdout)
    assert any("--trust-code" in note and spec in note for note in doc["report"]["notes"])  # reference not run
    acc = next(g for g in doc["gates"] if g["name"] == "accuracy drop")
    assert acc["details"]["reference_source"] == "report.json original_accuracy"

    result = edgecomp("convert", outdir, "--format", "ort", "-o", tmp_path / "mobile", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mobile" / "model.ort").is_file() and "without rebuilding the model" in result.stdout

    result = edgecomp("convert", outdir, "--format", "onnx", "--opset", "13", "-o", tmp_path / "o13", cwd=tmp_path)
    assert_clear_refusal(result, "--opset 13", spec, "--trust-code")
    assert not marker.exists()

    # Trusted explicitly, the same code runs and rebuilds the model.
    result = edgecomp("convert", outdir, "--format", "onnx", "--opset", "13", "--trust-code", "-o", tmp_path / "o13",
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert marker.exists() and (tmp_path / "o13" / "model.onnx").is_file()


def test_a_directory_without_model_onnx_needs_the_spec_or_trust_code(made, tmp_path):
    spec, marker = evil_py(tmp_path)
    outdir = received(made, tmp_path, {"spec": spec, "weights": None}, keep_onnx=False)
    data = f"npz:{made / 'd.npz'}"

    assert_clear_refusal(edgecomp("evaluate", outdir, "--data", data, cwd=tmp_path), "no model.onnx", spec,
                         "--trust-code")
    assert_clear_refusal(edgecomp("verify", outdir, "--device", "x86-host", *FAST, cwd=tmp_path), spec, "--reference",
                         "--trust-code")
    assert_clear_refusal(edgecomp("convert", outdir, "--format", "onnx", "-o", tmp_path / "o", cwd=tmp_path), spec)
    assert not marker.exists() and not (outdir / "model.onnx").exists()

    # The model spec on the user's own command line rebuilds it; verify then keeps the export it made.
    result = edgecomp("verify", outdir, "--device", "x86-host", *FAST, "--reference", spec, "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["report"]["artifact"]["exported_now"]
    manifest = json.loads((outdir / ".edgecomp-manifest.json").read_text())
    assert manifest["files"]["model.onnx"]["by"] == "verify"


def test_a_recipe_cannot_switch_on_pickle_loading(made, tmp_path):
    marker = tmp_path / "MARKER"
    torch.save({"model": TouchMarker(marker)}, tmp_path / "evil.pt")
    outdir = received(made, tmp_path, {"spec": str(tmp_path / "evil.pt"), "weights": None, "trust_pickle": True},
                      keep_onnx=False)
    data = f"npz:{made / 'd.npz'}"

    assert_clear_refusal(edgecomp("evaluate", outdir, "--data", data, cwd=tmp_path), "--trust-pickle")
    assert_clear_refusal(edgecomp("verify", outdir, "--device", "x86-host", *FAST, cwd=tmp_path), "--trust-pickle")
    assert_clear_refusal(edgecomp("convert", outdir, "--format", "onnx", "-o", tmp_path / "o", cwd=tmp_path),
                         "--trust-pickle")
    assert not marker.exists()

    from edgecomp.factor import load_compressed

    with pytest.raises(UserInputError, match="--trust-pickle"):
        load_compressed(outdir, trust_code=True)  # trusting code is not trusting pickles
    assert not marker.exists()


def test_onnx_metadata_cannot_name_a_reference_model_to_run(made, tmp_path):
    from edgecomp.exporters.from_outdir import reuse_onnx
    from edgecomp.runtime.artifacts import resolve_artifact
    from edgecomp.runtime.reference import find_reference, load_reference

    spec, marker = evil_py(tmp_path)
    reuse_onnx(made / "made" / "model.onnx", tmp_path / "sent.onnx", input_shape=(1, 1, 28, 28),
               metadata={"edgecomp.source_model": spec})
    ref = find_reference(resolve_artifact(tmp_path / "sent.onnx"))
    assert ref.spec == spec and ref.origin == "ONNX metadata"
    with pytest.raises(UserInputError, match="--trust-code"):
        load_reference(ref)
    assert not marker.exists()
    load_reference(find_reference(resolve_artifact(tmp_path / "sent.onnx"), trust_code=True))
    assert marker.exists()


def test_sys_exit_in_a_reference_factory_fails_verify_with_exit_2(made, tmp_path):
    (tmp_path / "quits.py").write_text("import sys\n\ndef Net():\n    sys.exit(0)\n")
    result = edgecomp("verify", made / "made", "--device", "x86-host", *FAST, "--data", f"npz:{made / 'd.npz'}",
                      "--reference", "quits.py:Net", cwd=tmp_path)
    assert_clear_refusal(result, "sys.exit(0)", "a model factory must return an nn.Module")


def test_sys_exit_in_a_forward_during_export_is_exit_2_never_a_pass(tmp_path):
    """The pipeline runs the user's forward in many places (tracing, compression, evaluation): wherever
    it calls sys.exit(0), the command must fail, not end with the user's exit code."""
    (tmp_path / "exits.py").write_text(textwrap.dedent("""
        import sys
        import torch
        from torch import nn

        class Net(nn.Module):
            input_shape = (1, 1, 28, 28)

            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(784, 10)

            def forward(self, x):
                if not torch.jit.is_tracing() and x.shape[0] > 4:  # only on real batches
                    sys.exit(0)
                return self.fc(x.flatten(1))
    """))
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.random((16, 1, 28, 28), dtype=np.float32), y=rng.integers(0, 10, 16))
    result = edgecomp("export", "exits.py:Net", "--device", "x86-host", "--mac-budget", "0.5", "--method", "pos-cvx",
                      "--eval-data", f"npz:{tmp_path / 'd.npz'}", "-o", "out", cwd=tmp_path)
    assert_clear_refusal(result, "sys.exit(0)")


def test_sys_exit_in_user_code_is_an_error_never_an_exit(tmp_path):
    from edgecomp.data import load_dataset
    from edgecomp.models import load_model

    (tmp_path / "on_import.py").write_text("import sys\nsys.exit(0)\n\ndef Net():\n    pass\n")
    (tmp_path / "data_quits.py").write_text("import sys\n\ndef data():\n    sys.exit(3)\n")
    with pytest.raises(UserInputError, match=r"importing .*on_import.py failed: the code called sys.exit\(0\)"):
        load_model(f"{tmp_path / 'on_import.py'}:Net")
    with pytest.raises(UserInputError, match=r"calling it failed: the code called sys.exit\(3\)"):
        load_dataset(f"{tmp_path / 'data_quits.py'}:data")


def test_corrupt_files_are_called_corrupt_not_pickled(tmp_path):
    from edgecomp.data import load_dataset
    from edgecomp.models import load_model, load_weights
    from edgecomp.models.zoo import get_zoo_model

    noise = np.random.default_rng(0).bytes(4096)
    for name in ("noise.pt", "noise.pth"):
        (tmp_path / name).write_bytes(noise)
        with pytest.raises(UserInputError, match="corrupt or not a PyTorch checkpoint") as info:
            load_model(str(tmp_path / name))
        assert not isinstance(info.value, UnsafeModelError) and "pickled" not in str(info.value)
        with pytest.raises(UserInputError, match="corrupt or not a PyTorch checkpoint"):
            load_weights(get_zoo_model("tiny_cnn"), tmp_path / name)
    (tmp_path / "noise.npz").write_bytes(noise)
    with pytest.raises(UserInputError, match="corrupt or not an .npz file") as info:
        load_dataset(f"npz:{tmp_path / 'noise.npz'}")
    assert "pickled" not in str(info.value)

    torch.save(torch.nn.Linear(2, 2), tmp_path / "full.pt")  # a genuine pickle that needs code
    with pytest.raises(UnsafeModelError, match="contains pickled Python objects.*--trust-pickle"):
        load_model(str(tmp_path / "full.pt"))
