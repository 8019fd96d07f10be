"""report.html of `edgecomp export`: a self-contained page with tables a person reads at a glance.

The analysis/history dicts copy the shape of real runs (`edgecomp export --device jetson --target local`,
which skips compression, and a compressed fmnist_cnn run); the latency histogram is drawn by the real
runtime writer from synthetic samples.
"""

from __future__ import annotations

import base64
import copy
import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from edgecomp.compression.methods import Budgets, compress
from edgecomp.graph import analyze_model
from edgecomp.models import get_zoo_model
from edgecomp.pipeline.export import ExportRequest
from edgecomp.pipeline.summary import write_summary
from edgecomp.profiles import load_profile
from edgecomp.report import budget_rows
from edgecomp.report.facts import describe_shape
from edgecomp.report.fmt import UNBOUNDED
from edgecomp.runtime.report import ProfileReport
from edgecomp.runtime.reports.histogram import view_range, write_histogram
from edgecomp.runtime.stats import summarize

INF = float("inf")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """Tables (grouped under the preceding <h2>), images, classes and every tag of a page."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.classes: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}
        self._h2: list[str] | None = None
        self._section = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_head_row = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append(tag)
        self.classes += (attrs.get("class") or "").split()
        for name in ("src", "href"):
            if attrs.get(name) and not attrs[name].startswith(("data:", "#")):
                self.external.append(attrs[name])
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag == "h2":
            self._h2 = []
        elif tag == "thead":
            self._in_head_row = True
        elif tag == "tbody":
            self._in_head_row = False
        elif tag == "tr" and not self._in_head_row:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == "h2" and self._h2 is not None:
            self._section = "".join(self._h2).strip()
            self._h2 = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.tables.setdefault(self._section, []).append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._h2 is not None:
            self._h2.append(data)
        if self._cell is not None:
            self._cell.append(data)

    def table(self, heading: str) -> list[list[str]]:
        (key,) = [k for k in self.tables if k.startswith(heading)]
        return self.tables[key]


def _histogram(path: Path, budget_ms: float) -> Path:
    rng = np.random.default_rng(0)
    samples = 0.4 + 0.05 * rng.standard_normal(500).clip(-3, 3)
    report = ProfileReport(
        artifact={"path": "model.onnx"}, device={}, target={"url": "local"},
        runtime={"name": "onnxruntime", "version": "1"}, settings={}, inputs={},
        latency=summarize(samples.tolist()), timing={}, memory={},
    )
    return write_histogram(report, path, budget_ms=budget_ms, percentile=90)


def _analysis(**override) -> dict:
    analysis = {
        "input_shape": [1, 1, 28, 28], "num_classes": 10, "original_macs": 36387840, "original_params": 276202,
        "original_memory_bytes": 552404.0, "mac_budget": 10916352.0, "memory_budget": INF,
        "mac_budget_source": "--mac-budget 0.3", "memory_budget_source": "none", "precision": "fp16",
        "fits": False, "decomposable_layers": 3, "min_macs": 454586.0,
    }
    analysis.update(override)
    return analysis


LAYERS = [  # (name, weight shape, rank, max rank, break-even, original MACs, MACs, original params, params)
    ("features.0", [32, 1, 5, 5], 3, 5, 5, 627200, 417536, 832, 527),
    ("features.3", [64, 32, 5, 5], 20, 160, 72, 10035200, 2803200, 51264, 9664),
    ("classifier.1", [128, 3136, 1, 1], 24, 128, 124, 401408, 78336, 401536, 78464),
]


def _compress(tmp_path: Path, layers=LAYERS) -> dict:
    rows = [{"name": n, "kind": "linear" if s[2:] == [1, 1] and "classifier" in n else "conv2d",
             "shape": s[:2] if "classifier" in n else s, "rank": r, "max_rank": m, "break_even_rank": be,
             "factored": r < be, "macs": macs, "params": params, "original_macs": om, "original_params": op,
             "energy": 0.9} for n, s, r, m, be, om, macs, op, params in layers]
    return {
        "outdir": str(tmp_path / "round-1" / "compress"), "method": "cobla", "macs": 10800000, "params": 120000,
        "mac_ratio": 10800000 / 36387840, "param_ratio": 120000 / 276202, "accuracy": 0.8841,
        "original_accuracy": 0.8915, "accuracy_before_finetune": 0.8123, "mac_budget": 10916352.0, "cost": "macs",
        "layers": rows, "fingerprint": "abc",
    }


def _verify(tmp_path: Path, budget_ms: float = 5.0, status: str = "PASS") -> dict:
    hist = _histogram(tmp_path / "round-1" / "verify" / "latency.png", budget_ms)
    return {
        "exit_code": {"PASS": 0, "FAIL": 1, "INCONCLUSIVE": 3}[status], "verdict": status,
        "gates": [
            {"name": f"latency p90 <= {budget_ms:g} ms", "status": status, "measured": 0.4382, "threshold": budget_ms,
             "unit": "ms", "message": "p90 = 0.435 ms, 99% bounds [0.4326, 0.4382] ms over n=2447"},
            {"name": "accuracy drop", "status": "PASS", "measured": 0.004, "threshold": 0.01, "unit": "top-1",
             "message": "top-1 0.8840 vs reference 0.8880: drop +0.0040 <= 0.01 over 1000 samples"},
        ],
        "latency": {"mean": 0.407, "p50": 0.3888, "p90": 0.435, "p99": 0.6626, "cv": 0.04, "unstable": False, "n": 2447},
        "accuracy": {"samples": 1000, "top1": 0.884, "top1_ci95": [0.862, 0.903], "top5": 1.0},
        "reference": {"accuracy": {"samples": 1000, "top1": 0.888, "top1_ci95": [0.866, 0.906], "top5": 1.0},
                      "model": "zoo:fmnist_cnn", "origin": "--reference", "ran_on": "host (PyTorch)"},
        "context": "onnxruntime 1.32.0 [CPUExecutionProvider] fp32, batch 1, threads default on local (stand-in)",
        "files": {"histogram": str(hist), "json": "", "junit": "", "markdown": ""},
    }


def _export(tmp_path: Path) -> dict:
    return {"artifact": str(tmp_path / "round-1" / "export" / "model.onnx"), "notes": [], "stand_in": True,
            "artifact_sha256": "0" * 64}


def _req(model: str = "zoo:fmnist_cnn") -> ExportRequest:
    return ExportRequest(profile=load_profile("jetson"), outdir="unused", model=model, weights="/w/fmnist_cnn.safetensors",
                         target="local", precision="fp16", finetune_epochs=0.05, data="fashion-mnist:train",
                         eval_data="fashion-mnist:test")


def _write(tmp_path: Path, history: list[dict], analysis: dict | None = None, model: str = "zoo:fmnist_cnn"):
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    stages = [{"stage": "analyze", "folder": "analyze", "seconds": 0.3, "reused": False}]
    report = write_summary(_req(model), out, analysis or _analysis(), history, stages)
    return report, out, (out / "report.html").read_text(encoding="utf-8")


@pytest.fixture()
def compressed(tmp_path):
    history = [{"round": 1, "mac_budget_override": None, "at_minimum": False, "compress": _compress(tmp_path),
                "export": _export(tmp_path), "verify": _verify(tmp_path)}]
    return _write(tmp_path, history)


def test_compressed_run_page_has_banner_budget_layer_and_accuracy_tables(compressed):
    report, out, text = compressed
    page = Page(text)
    assert "pre" not in page.tags and "<pre" not in text
    assert page.external == []  # self-contained: nothing fetched from elsewhere
    assert "banner" in page.classes and "pass" in page.classes
    assert "PASS" in text and "stand-in" in text.lower()

    budgets = {row[0]: row for row in page.table("Budgets")}
    macs = next(v for k, v in budgets.items() if k.startswith("MACs"))
    assert macs[1].startswith("1.00\u00d7") and macs[2].startswith("0.30\u00d7") and macs[3].startswith("0.30\u00d7")
    memory = next(v for k, v in budgets.items() if k.startswith("Parameter memory"))
    assert UNBOUNDED in memory[2] and "NO BUDGET" in memory[4]
    latency = next(v for k, v in budgets.items() if k.startswith("Latency p90"))
    assert "not measured" in latency[1] and "5 ms" in latency[2]

    layers = page.table("Per-layer ranks")
    names = [row[0] for row in layers]
    assert names[:3] == [name for name, *_ in LAYERS]  # one row per decomposable layer, in order
    assert names[3] == "other layers (not decomposable)" and names[-1] == "whole model"
    assert layers[0][1] == "conv 5\u00d75, 1\u219232" and layers[2][1] == "linear 3136\u2192128"
    assert layers[1][2] == "20 / 160" and layers[2][2] == "24 / 128"
    assert "10 M" in layers[1][3] and "2.8 M" in layers[1][3]

    accuracy = {row[0]: row for row in page.table("Accuracy")}
    assert accuracy["Original model"][1] == "89.15%" and "fashion-mnist:test" in accuracy["Original model"][4]
    assert accuracy["Compressed, before fine-tuning"][1] == "81.23%"
    assert accuracy["Compressed, before fine-tuning"][3] == "\u22127.92 pt"
    assert accuracy["Compressed, after fine-tuning"][1] == "88.41%"
    assert accuracy["Exported artifact"][3] == "\u22120.40 pt"  # against the original on the same samples

    assert len(page.images) == 3  # rank allocation, budgets, latency histogram
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    for name in ("report.json", "report.md", "ranks.png", "budgets.png"):
        assert (out / name).is_file(), name
    assert report["files"]["html"] == str(out / "report.html")


def test_markdown_and_json_stay_for_ci(compressed):
    _, out, _ = compressed
    md = (out / "report.md").read_text()
    assert "**Verdict: PASS**" in md
    assert "| MACs per sample | 1.00\u00d7 original" in md and UNBOUNDED in md
    assert "| features.3 | conv 5\u00d75, 32\u219264 | 20 / 160 |" in md
    data = json.loads((out / "report.json").read_text())
    assert data["verdict"] == "PASS" and data["analysis"]["memory_budget"] == INF
    assert data["finetune_epochs"] == 0.05


def test_hostile_strings_are_escaped(tmp_path):
    evil = "<script>alert(1)</script>"
    compress = _compress(tmp_path, [(f"layer{evil}", [8, 8, 3, 3], 2, 24, 12, 1000, 400, 584, 200)])
    verify = _verify(tmp_path)
    verify["gates"][0]["message"] = f"note {evil}"
    export = _export(tmp_path)
    export["artifact"] = f"/tmp/{evil}/model.onnx"
    history = [{"round": 1, "compress": compress, "export": export, "verify": verify, "note": f"round {evil}"}]
    _, _, text = _write(tmp_path, history, model=f"zoo:{evil}")
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    page = Page(text)
    assert f"layer{evil}" in [row[0] for row in page.table("Per-layer ranks")]


def test_original_that_fits_has_no_rank_table_and_a_budget_far_above_the_model(tmp_path):
    analysis = _analysis(mac_budget=7.68e9, fits=True, mac_budget_source="derived from latency 5 ms x 1.5e12 MAC/s")
    verify = _verify(tmp_path, budget_ms=5.0, status="INCONCLUSIVE")
    history = [{"round": 1, "compress": {"skipped": True, "reason": "the original model already fits the budgets"},
                "export": _export(tmp_path), "verify": verify}]
    _, out, text = _write(tmp_path, history, analysis)
    page = Page(text)
    assert "warn" in page.classes and "INCONCLUSIVE" in text
    assert "Per-layer ranks" not in page.tables and "Not compressed" in text
    budgets = {row[0]: row for row in page.table("Budgets")}
    macs = next(v for k, v in budgets.items() if k.startswith("MACs"))
    assert macs[2].startswith("211\u00d7") and "7.68 G" in macs[2]  # a ratio, not an invisible bar
    latency = next(v for k, v in budgets.items() if k.startswith("Latency"))
    assert latency[1].startswith("1.00\u00d7")  # round 1 measured the original itself
    assert len(page.images) == 2 and not (out / "ranks.png").exists()
    accuracy = {row[0] for row in page.table("Accuracy")}
    assert accuracy == {"Original, on the same samples", "Exported artifact"}


def test_budget_rows_never_divide_by_an_infinite_budget():
    report = {"analysis": _analysis(mac_budget=INF, mac_budget_source="none"), "rounds": [],
              "final": {"round": 1, "compress": {"skipped": True}, "verify": {"gates": []}}}
    report["rounds"] = [report["final"]]
    rows = budget_rows(report)
    assert [r.status for r in rows] == ["NO BUDGET", "NO BUDGET"]
    for r in rows:
        assert r.as_ratio(r.budget) is None and r.as_ratio(r.achieved) == 1.0


def test_latency_histogram_keeps_the_samples_readable_when_the_budget_is_far(tmp_path):
    rng = np.random.default_rng(1)
    x = np.concatenate([0.4 + 0.02 * rng.standard_normal(995), [9.0] * 5])  # five slow outliers
    lo, hi = view_range(x, budget_ms=50.0)
    assert hi < 1.0 and lo > 0.2  # neither the outliers nor a far budget squash the bulk
    lo, hi = view_range(x, budget_ms=0.6)
    assert hi >= 0.6  # a budget near the samples is drawn in range
    lo, hi = view_range(x, budget_ms=0.0001)
    assert lo > 0.2  # far below: pointed at, not drawn
    assert math.isfinite(view_range(x, budget_ms=INF)[1])
    two_modes = np.concatenate([0.6 + 0.05 * rng.standard_normal(360), 12 + 2 * rng.standard_normal(70)])
    lo, hi = view_range(two_modes, budget_ms=5.0)
    assert 0 < lo < 0.6 and hi > 12 and hi / lo > 8  # both modes and the budget in range, on a log axis
    for budget in (50.0, 0.6, 0.0001):
        path = _histogram(tmp_path / f"h{budget}.png", budget)
        assert path.read_bytes().startswith(PNG_MAGIC)


def test_later_round_with_tightened_mac_budget_lists_rounds(tmp_path):
    first = {"round": 1, "compress": {"skipped": True}, "export": _export(tmp_path),
             "verify": _verify(tmp_path, budget_ms=0.3, status="FAIL")}
    second = {"round": 2, "compress": _compress(tmp_path), "export": _export(tmp_path),
              "verify": _verify(tmp_path, budget_ms=0.3, status="FAIL"), "note": "latency budget still missed"}
    second["compress"]["mac_budget"] = 2.0e7
    analysis = _analysis(mac_budget=7.68e9, fits=True)
    _, _, text = _write(tmp_path, [first, copy.deepcopy(second)], analysis)
    page = Page(text)
    assert "fail" in page.classes
    rounds = [row for rows in page.tables.values() for row in rows if row and row[0] in ("1", "2")]
    assert len(rounds) == 2 and "original (fits)" in rounds[0][1] and "20 M" in rounds[1][1]
    assert "round 2 aimed at 20,000,000 MACs" in text


def test_compress_rows_carry_each_layers_kind_and_weight_shape():
    torch.manual_seed(0)
    model = get_zoo_model("fmnist_cnn").eval()
    cost = analyze_model(model, (1, 1, 28, 28), "spatial")
    result = compress(model, (1, 1, 28, 28), Budgets(0.4 * cost.total_macs, 0.4 * cost.total_params * 4, "fp32"),
                      method="pos-cvx")
    modules = dict(model.named_modules())
    for row in result.layers:
        assert row["shape"] == list(modules[row["name"]].weight.shape), row["name"]
        assert row["kind"] == ("linear" if isinstance(modules[row["name"]], torch.nn.Linear) else "conv2d")
        assert describe_shape(row).startswith(("conv ", "linear "))
