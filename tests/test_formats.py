"""Versioned on-disk formats (edgecomp.formats): every writer stamps "format": "<name>/<version>", an
unversioned file (version 0) that is otherwise valid still reads, and a newer one is refused in one line
that says to upgrade edgecomp."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest

from edgecomp import formats
from edgecomp.compression.run import CompressRequest, run_compress
from edgecomp.errors import UserInputError
from edgecomp.factor.recipe import load_compressed, read_recipe
from edgecomp.formats import check, read_optional, stamp, tag
from edgecomp.outdir import MANIFEST_FILE, RECIPE_FILE, REPORT_FILE, read_manifest
from edgecomp.pipeline.fingerprints import STAGE_FILE, check_stage_files


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def newer(kind: str) -> str:
    return f"{formats.FORMATS[kind].name}/{formats.FORMATS[kind].version + 1}"


@pytest.fixture(scope="module")
def outdir(tmp_path_factory, single_thread):
    out = tmp_path_factory.mktemp("formats") / "out"
    run_compress(CompressRequest(model="zoo:tiny_cnn", outdir=str(out), mac_budget="0.5", memory_budget="0.5",
                                 method="pos-cvx", progress=False), log=lambda _: None)
    return out


@pytest.fixture()
def copy_of(outdir, tmp_path):
    return shutil.copytree(outdir, tmp_path / "copy")


# ---- writers ------------------------------------------------------------------------------------

def test_compress_stamps_recipe_report_and_manifest_first(outdir):
    for name, kind in ((RECIPE_FILE, "recipe"), (REPORT_FILE, "compress-report"), (MANIFEST_FILE, "manifest")):
        doc = load(outdir / name)
        assert next(iter(doc)) == "format" and doc["format"] == tag(kind), name
    assert tag("recipe") == "edgecomp-recipe/1"  # what recipes were already stamped with: they stay current


class Written(Exception):
    """Stops write_summary once report.json is written: the Markdown and HTML pages are not needed here."""


def test_export_report_is_stamped(monkeypatch, tmp_path):
    from edgecomp.pipeline import summary

    written = {}

    def capture(path, doc):
        written[path.name] = doc
        raise Written

    monkeypatch.setattr(summary, "write_json", capture)
    req = SimpleNamespace(settings_note=None, profile=SimpleNamespace(name="jetson"), target_url=lambda: "local",
                          model="zoo:tiny_cnn", weights=None, precision="fp32", method="pos-cvx", cost="macs",
                          finetune_epochs=0.0, data=None, cobla={}, eval_data=None)
    verify = {"latency": {"p50": 1.0}, "context": "here", "verdict": "PASS", "exit_code": 0}
    history = [{"round": 1, "verify": verify, "export": {"notes": []}}]
    with pytest.raises(Written):
        summary.write_summary(req, tmp_path, {}, history, [])
    assert written["report.json"]["format"] == tag("export-report") == "edgecomp-export-report/1"


def test_harness_reports_are_stamped(tmp_path):
    from edgecomp.runtime.report import ProfileReport, VerifyResult
    from edgecomp.runtime.reports import write_error_reports, write_reports
    from edgecomp.runtime.stats import summarize

    report = ProfileReport(artifact={}, device={}, target={"url": "local"}, runtime={}, settings={}, inputs={},
                           latency=summarize([1.0, 1.1, 0.9, 1.0]), timing={}, memory={})
    write_reports(VerifyResult(0, [], report), json_path=tmp_path / "verify.json")
    write_reports(report, json_path=tmp_path / "profile.json")
    write_error_reports("no such device", json_path=tmp_path / "error.json")
    verify = load(tmp_path / "verify.json")
    assert verify["format"] == tag("verify-report") and verify["report"]["format"] == tag("profile-report")
    assert load(tmp_path / "profile.json")["format"] == tag("profile-report")
    assert load(tmp_path / "error.json")["format"] == tag("verify-report")


def test_stage_record_is_stamped(tmp_path):
    from edgecomp.pipeline.stages import Stages

    Stages(tmp_path, log=lambda _: None).run("analyze", "analyze", {"x": 1}, lambda folder: {"ok": True})
    assert load(tmp_path / "analyze" / STAGE_FILE)["format"] == tag("stage")


# ---- readers ------------------------------------------------------------------------------------

def test_unversioned_recipe_reads_as_version_0_and_still_loads(copy_of):
    recipe = load(copy_of / RECIPE_FILE)
    del recipe["format"]
    (copy_of / RECIPE_FILE).write_text(json.dumps(recipe))
    assert check(recipe, "recipe", copy_of / RECIPE_FILE) == 0
    assert read_recipe(copy_of)["ranks"] == recipe["ranks"]
    assert load_compressed(copy_of).module is not None


def test_unversioned_recipe_lacking_a_field_says_which(copy_of):
    recipe = load(copy_of / RECIPE_FILE)
    del recipe["format"], recipe["scheme"]
    (copy_of / RECIPE_FILE).write_text(json.dumps(recipe))
    with pytest.raises(UserInputError, match="malformed recipe \\(lacks scheme\\)"):
        read_recipe(copy_of)


def test_recipe_from_a_newer_edgecomp_is_refused_in_one_line(copy_of):
    recipe = load(copy_of / RECIPE_FILE)
    (copy_of / RECIPE_FILE).write_text(json.dumps({**recipe, "format": newer("recipe")}))
    with pytest.raises(UserInputError) as err:
        load_compressed(copy_of)
    message = str(err.value)
    assert "\n" not in message and f"recipe.json in {copy_of}" in message
    assert "newer edgecomp" in message and "upgrade edgecomp" in message and newer("recipe") in message


def test_other_documents_are_not_read_as_a_recipe(copy_of):
    report = load(copy_of / REPORT_FILE)
    (copy_of / RECIPE_FILE).write_text(json.dumps(report))
    with pytest.raises(UserInputError, match="is not an edgecomp recipe .*edgecomp-compress-report/1"):
        read_recipe(copy_of)


def test_too_old_a_version_says_how_to_rewrite_the_file(monkeypatch, tmp_path):
    monkeypatch.setitem(formats.FORMATS, "recipe", formats.FORMATS["recipe"].__class__(
        **{**vars(formats.FORMATS["recipe"]), "oldest": 1}))
    with pytest.raises(UserInputError) as err:
        check({"ranks": {}}, "recipe", tmp_path / RECIPE_FILE)
    assert str(err.value) == (f"recipe.json in {tmp_path} was written by an older edgecomp (no format version); "
                              f"re-run `edgecomp compress MODEL -o {tmp_path}` to rewrite it")


def test_newer_manifest_and_compress_report_are_refused(copy_of):
    manifest = load(copy_of / MANIFEST_FILE)
    (copy_of / MANIFEST_FILE).write_text(json.dumps({**manifest, "format": newer("manifest")}))
    with pytest.raises(UserInputError, match="newer edgecomp"):
        read_manifest(copy_of)
    report = load(copy_of / REPORT_FILE)
    assert read_optional(copy_of / REPORT_FILE, "compress-report")["format"] == tag("compress-report")
    (copy_of / REPORT_FILE).write_text(json.dumps({**report, "format": newer("compress-report")}))
    with pytest.raises(UserInputError, match="report.json in .* newer edgecomp"):
        read_optional(copy_of / REPORT_FILE, "compress-report")
    del report["format"]
    (copy_of / REPORT_FILE).write_text(json.dumps(report))
    assert read_optional(copy_of / REPORT_FILE, "compress-report")["original_accuracy"] == report["original_accuracy"]
    assert read_optional(copy_of / "absent.json", "compress-report") is None


def test_stage_records_of_a_newer_edgecomp_stop_export_before_any_work(tmp_path):
    (tmp_path / "analyze").mkdir()
    (tmp_path / "round-1" / "verify").mkdir(parents=True)
    (tmp_path / "analyze" / STAGE_FILE).write_text(json.dumps({"stage": "analyze", "result": {}}))  # version 0
    (tmp_path / "round-1" / "verify" / STAGE_FILE).write_text("{not json")  # left to the stage to redo
    check_stage_files(tmp_path)
    (tmp_path / "round-1" / "verify" / STAGE_FILE).write_text(json.dumps(stamp({"stage": "verify"}, "stage")))
    check_stage_files(tmp_path)
    (tmp_path / "round-1" / "verify" / STAGE_FILE).write_text(json.dumps({"format": newer("stage")}))
    with pytest.raises(UserInputError, match="newer edgecomp.*upgrade edgecomp.*or pass --force"):
        check_stage_files(tmp_path)


def test_stamp_puts_the_current_format_first_and_replaces_an_old_one():
    doc = stamp({"a": 1, "format": "edgecomp-recipe/0"}, "recipe")
    assert list(doc) == ["format", "a"] and doc["format"] == "edgecomp-recipe/1"
    with pytest.raises(UserInputError, match="a JSON list"):
        check([], "stage", "x/stage.json")
