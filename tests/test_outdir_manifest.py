"""Nothing of the user's is lost: `compress -o DIR` on an earlier output replaces only the files edgecomp
wrote there (its manifest, which convert and verify add to), keeps every other file, and refuses, saying
which file, rather than replace one the user wrote or changed."""

import hashlib
import json

import onnx
import pytest
from click.testing import CliRunner

from edgecomp.cli import main
from edgecomp.compression.run import CompressRequest, run_compress
from edgecomp.errors import UserInputError
from edgecomp.outdir import COMPRESS_FILES, MANIFEST_FILE, check_replaceable, read_manifest

OWN = sorted((*COMPRESS_FILES, MANIFEST_FILE))


def compress(outdir, mac_budget="0.5", log=None):
    return run_compress(CompressRequest(model="zoo:tiny_cnn", outdir=str(outdir), mac_budget=mac_budget,
                                        memory_budget="0.5", method="pos-cvx", progress=False),
                        log=log or (lambda _: None))


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture
def outdir(tmp_path, single_thread):
    out = tmp_path / "out"
    compress(out)
    return out


def test_new_outdir_lists_every_file_it_wrote(outdir):
    assert sorted(p.name for p in outdir.iterdir()) == OWN
    manifest = read_manifest(outdir)
    assert sorted(manifest) == sorted(COMPRESS_FILES)
    assert all(entry["by"] == "compress" and entry["sha256"] == digest(outdir / name)
               for name, entry in manifest.items())
    assert not [p for p in outdir.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_rerun_keeps_the_users_files_and_replaces_edgecomps(outdir, tmp_path):
    (outdir / "notes.txt").write_text("mine")
    result = cli("convert", outdir, "--format", "ort", "-o", outdir)  # model.onnx (in place), model.ort, config
    assert result.exit_code == 0, result.output
    assert read_manifest(outdir)["model.ort"]["by"] == "convert"
    assert read_manifest(outdir)["model.onnx"]["by"] == "convert"
    before = {p.name: digest(p) for p in outdir.iterdir()}

    lines = []
    compress(outdir, mac_budget="0.4", log=lines.append)
    assert (outdir / "notes.txt").read_text() == "mine"
    assert digest(outdir / "model.ort") == before["model.ort"]  # convert's file from the earlier model: kept
    assert any("kept" in line and "model.ort" in line for line in lines)
    assert digest(outdir / "model.safetensors") != before["model.safetensors"]  # the new model
    assert digest(outdir / "model.onnx") != before["model.onnx"]
    manifest = read_manifest(outdir)
    assert manifest["model.onnx"]["by"] == "compress" and manifest["model.onnx"]["sha256"] == digest(outdir / "model.onnx")
    assert "notes.txt" not in manifest and "previous_sha256" not in json.dumps(manifest)


def test_refuses_to_replace_a_file_the_user_changed(outdir):
    (outdir / "report.json").write_text('{"mine": true}\n')
    before = {p.name: digest(p) for p in outdir.iterdir()}
    result = cli("compress", "zoo:tiny_cnn", "--mac-budget", "0.4", "--method", "pos-cvx", "-o", outdir)
    assert result.exit_code == 2, result.output
    assert "report.json" in result.output and "refusing to replace it" in result.output and "another -o" in result.output
    assert {p.name: digest(p) for p in outdir.iterdir()} == before
    assert not [p for p in outdir.parent.iterdir() if p.name.startswith(".")]


def test_refuses_a_file_edgecomp_did_not_write(outdir):
    manifest = json.loads((outdir / MANIFEST_FILE).read_text())
    del manifest["files"]["ranks.png"]  # as if the user had put their own ranks.png there
    (outdir / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(UserInputError, match="ranks.png exists and edgecomp did not write it"):
        check_replaceable(outdir, COMPRESS_FILES)
    foreign = outdir.parent / "foreign"
    foreign.mkdir()
    (foreign / "report.json").write_text("{}")
    with pytest.raises(UserInputError, match="not an edgecomp output directory"):
        compress(foreign)
    assert [p.name for p in foreign.iterdir()] == ["report.json"]


def test_directory_from_before_manifests_is_adopted(tmp_path):
    """An OUTDIR without model.onnx or manifest (older edgecomp): verify exports and records model.onnx, and
    a re-run of compress replaces the known files while keeping the user's."""
    from edgecomp.factor import save_compressed
    from edgecomp.models import load_model

    out = tmp_path / "old"
    save_compressed(out, load_model("zoo:tiny_cnn").module, {"source": {"spec": "zoo:tiny_cnn", "weights": None},
                                                              "scheme": "channel", "ranks": {},
                                                              "input_shape": [1, 1, 28, 28]})
    (out / "notes.txt").write_text("mine")
    result = cli("verify", out, "--device", "x86-host", "--target", "local", "--warmup", "0.02", "--min-duration",
                 "0.02", "--iterations", "64", "--cv-threshold", "1e6", "--latency-budget-ms", "1000")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(out)
    assert manifest["model.onnx"]["by"] == "verify" and "recipe.json" in manifest and "notes.txt" not in manifest

    compress(out)
    assert (out / "notes.txt").read_text() == "mine"
    assert read_manifest(out)["model.onnx"]["by"] == "compress"


def test_convert_into_an_outdir_never_replaces_its_float_model_or_a_users_file(outdir, tmp_path):
    onnx_before = digest(outdir / "model.onnx")
    (outdir / "model.int8.onnx").write_text("the user's own file")
    for out in (outdir, outdir / "model.int8.onnx"):
        refused = cli("convert", outdir, "--format", "onnx", "--precision", "int8", "--calib-data",
                      "fashion-mnist:train", "-o", out)
        assert refused.exit_code == 2 and "edgecomp did not write it" in refused.output
        assert (outdir / "model.int8.onnx").read_text() == "the user's own file"
    (outdir / "model.int8.onnx").unlink()
    done = cli("convert", outdir, "--format", "onnx", "--precision", "int8", "--calib-data", "fashion-mnist:train",
               "-o", outdir)
    assert done.exit_code == 0, done.output
    assert onnx.load(outdir / "model.int8.onnx").graph.node  # the INT8 model beside the float one
    assert digest(outdir / "model.onnx") == onnx_before  # the float model is never replaced by the INT8 one
