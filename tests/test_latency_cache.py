"""The per-user cache of per-layer latencies (edgecomp.latency) and the table measured through it."""

import json
import platform
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from edgecomp.cli import main
from edgecomp.latency import LatencyCache, MeasurementContext, cache_root, entry_key, measured_where
from edgecomp.latency.cache import FOLDER
from edgecomp.latency.keys import DENSE, key_digest

SHAPE = {"kind": "conv2d", "in_channels": 8, "out_channels": 16, "kernel": [3, 3], "stride": [1, 1],
         "padding": [1, 1], "dilation": [1, 1], "groups": 1, "bias": True, "input": [8, 12, 12]}


def context(**changes) -> MeasurementContext:
    base = dict(where={"transport": "local", "node": "box", "machine": "x86_64", "cpu_model": "cpu", "cpu_flags": "ab"},
                runtime="onnxruntime", runtime_version="1.0", providers=("CPUExecutionProvider",),
                graph_optimization_level="all", precision="fp32", threads=1, batch=1)
    return MeasurementContext(**{**base, **changes})


class Counter:
    """A fake timing function: returns fixed latencies and counts its calls."""

    def __init__(self, ms: float = 0.5):
        self.calls, self.ms = 0, ms

    def __call__(self) -> float:
        self.calls += 1
        return self.ms


def test_round_trip_hits_without_measuring_again(tmp_path):
    key = entry_key(context(), SHAPE, "spatial", 4)
    timer = Counter(0.25)
    first = LatencyCache(tmp_path)
    assert first.measure(key, timer) == 0.25 and timer.calls == 1
    again = LatencyCache(tmp_path)  # a later run: a new cache object on the same folder
    assert again.measure(key, timer) == 0.25 and timer.calls == 1
    assert (again.stats.hits, again.stats.misses) == (1, 0)
    entry = json.loads((tmp_path / FOLDER / f"{key_digest(key)}.json").read_text())
    assert entry["format"] == "edgecomp-latency-cache/1" and entry["key"]["rank"] == 4


@pytest.mark.parametrize("change", [
    {"threads": 2},
    {"providers": ("CUDAExecutionProvider",)},
    {"runtime_version": "1.1"},
    {"precision": "fp16"},
    {"batch": 8},
    {"where": {"transport": "ssh", "host": "board", "port": None, "node": "box"}},
])
def test_every_key_part_separates_entries(tmp_path, change):
    cache, timer = LatencyCache(tmp_path), Counter()
    cache.measure(entry_key(context(), SHAPE, "spatial", 4), timer)
    cache.measure(entry_key(context(**change), SHAPE, "spatial", 4), timer)
    assert timer.calls == 2 and cache.info()["entries"] == 2


def test_shape_scheme_and_rank_separate_entries_and_dense_is_its_own(tmp_path):
    cache, timer = LatencyCache(tmp_path), Counter()
    keys = [entry_key(context(), SHAPE, "spatial", 4), entry_key(context(), SHAPE, "spatial", 5),
            entry_key(context(), SHAPE, "channel", 4), entry_key(context(), {**SHAPE, "input": [8, 24, 24]}, "spatial", 4),
            entry_key(context(), SHAPE, DENSE, DENSE)]
    for key in keys:
        cache.measure(key, timer)
    assert timer.calls == len(keys) == len({key_digest(k) for k in keys})
    with pytest.raises(ValueError):
        entry_key(context(), SHAPE, "spatial", DENSE)


@pytest.mark.parametrize("damage", [
    lambda doc: "{ not json",
    lambda doc: json.dumps({**doc, "latency_ms": -1.0}),
    lambda doc: json.dumps({**doc, "latency_ms": "fast"}),
    lambda doc: json.dumps({**doc, "format": "something-else/1"}),
    lambda doc: json.dumps({**doc, "key": {**doc["key"], "rank": 99}}),  # a file under another key's name
    lambda doc: json.dumps([1, 2, 3]),
])
def test_a_corrupt_entry_is_ignored_and_measured_again(tmp_path, damage):
    key = entry_key(context(), SHAPE, "spatial", 4)
    cache = LatencyCache(tmp_path)
    cache.measure(key, Counter(0.25))
    path = cache.path_of(key)
    path.write_text(damage(json.loads(path.read_text())))
    timer = Counter(0.75)
    again = LatencyCache(tmp_path)
    assert again.measure(key, timer) == 0.75 and timer.calls == 1 and again.stats.corrupt == 1
    assert LatencyCache(tmp_path).get(key) == 0.75  # rewritten whole


def test_no_cache_measures_afresh_and_refreshes_the_entry(tmp_path):
    key = entry_key(context(), SHAPE, "spatial", 4)
    LatencyCache(tmp_path).measure(key, Counter(0.25))
    timer = Counter(0.5)
    assert LatencyCache(tmp_path).measure(key, timer, use_cache=False) == 0.5 and timer.calls == 1
    assert LatencyCache(tmp_path).get(key) == 0.5


def test_cache_root_follows_the_override_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("EDGECOMP_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root() == tmp_path / "mine"
    monkeypatch.delenv("EDGECOMP_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "edgecomp"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # the XDG spec says to ignore it
    assert cache_root() == Path.home() / ".cache" / "edgecomp"


def test_where_is_the_machine_that_ran_it_never_the_device_name():
    local = measured_where("local", {"node": "jetson-orin"})
    assert local["node"] == platform.node() and local["transport"] == "local" and "jetson" not in json.dumps(local)
    remote = measured_where("ssh://me@orin.lan:2222", {"node": "orin", "machine": "aarch64", "cpu_flags": ["fp", "asimd"]})
    assert (remote["host"], remote["port"], remote["node"], remote["machine"]) == ("orin.lan", 2222, "orin", "aarch64")
    assert remote["cpu_flags"] == measured_where("ssh://orin.lan", {"cpu_flags": ["asimd", "fp"]})["cpu_flags"]


def test_cache_clear_removes_only_what_it_wrote(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMP_CACHE_DIR", str(tmp_path))
    cache = LatencyCache()
    for rank in (1, 2, 3):
        cache.measure(entry_key(context(), SHAPE, "spatial", rank), Counter())
    folder = tmp_path / FOLDER
    foreign = {"notes.txt": "mine", f"{'0' * 64}.json": json.dumps({"format": "not-edgecomp/1"})}
    for name, text in foreign.items():
        (folder / name).write_text(text)
    (tmp_path / "other-tool.json").write_text("{}")  # beside the latency folder: never looked at
    (folder / "link.json").symlink_to(tmp_path / "other-tool.json")
    runner = CliRunner()
    info = json.loads(runner.invoke(main, ["cache", "info", "--json"]).output)
    assert info["entries"] == 4 and info["path"] == str(folder)  # by name: the foreign one is counted here
    result = runner.invoke(main, ["cache", "clear", "--json"])
    assert result.exit_code == 0, result.output
    cleared = json.loads(result.output)
    assert cleared["removed"] == 3 and sorted(cleared["kept"]) == sorted([*foreign, "link.json"])
    assert sorted(p.name for p in folder.iterdir()) == sorted([*foreign, "link.json"])
    assert (tmp_path / "other-tool.json").read_text() == "{}"
    human = runner.invoke(main, ["cache", "clear"])
    assert human.exit_code == 0 and "removed 0 entries" in human.output and "kept 3 files" in human.output


def test_cache_clear_on_an_empty_cache_is_fine(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGECOMP_CACHE_DIR", str(tmp_path / "never-made"))
    result = CliRunner().invoke(main, ["cache", "clear"])
    assert result.exit_code == 0 and "removed 0 entries" in result.output
    assert not (tmp_path / "never-made").exists()


# ---- the table, measured through the cache ----------------------------------------------------------

def _tiny_cnn():
    from edgecomp.models import load_model

    return load_model("zoo:tiny_cnn", None)


def _request():
    return SimpleNamespace(scheme="spatial", target_url=lambda: "local")


def _facts(threads=1):
    return {"runtime": "onnxruntime", "runtime_version": "test", "providers": ["CPUExecutionProvider"],
            "graph_optimization_level": "all", "precision": "fp32", "threads": threads, "batch": 1, "environment": {}}


def test_the_table_reuses_cached_layers_and_only_times_the_whole_model(tmp_path, monkeypatch):
    from edgecomp.pipeline import latency_table
    from edgecomp.pipeline.latency_table import Timed, measure_latency_table

    monkeypatch.setattr(latency_table, "rank_grid", lambda break_even, max_rank, **kw: [1])  # fewer exports

    loaded = _tiny_cnn()
    analysis = {"input_shape": list(loaded.input_shape)}
    calls = []

    def timer(path):
        calls.append(Path(path).name)
        return Timed(1.0 if path.name == "model.onnx" else 0.1, _facts())

    def table(**kw):
        calls.clear()
        cache = LatencyCache(tmp_path / "cache")
        out = measure_latency_table(_request(), analysis, tmp_path / "run", lambda m: None,
                                    loaded=loaded, providers=None, timer=timer, cache=cache, **kw)
        return out, list(calls)

    first, timed = table()
    n_layers = sum(1 + len(row["ranks"]) for row in first["layers"].values())
    assert len(timed) == 1 + n_layers and first["cache"]["misses"] == n_layers
    second, timed = table()
    assert timed == ["model.onnx"] and second["cache"]["hits"] == n_layers  # nothing re-exported or re-timed
    assert second["layers"] == first["layers"]
    refreshed, timed = table(use_cache=False)
    assert len(timed) == 1 + n_layers and refreshed["cache"]["used"] is False


def test_a_real_onnx_runtime_table_on_this_host_is_written_then_reused(tmp_path):
    """Real exports timed by ONNX Runtime in this process (the harness's agent is exercised by the export
    pipeline tests): entries are written, then reused. No assertion on speed."""
    import numpy as np
    import onnxruntime as ort

    from edgecomp.pipeline.latency_table import Timed, measure_latency_table

    def ort_timer(path):
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
                for i in session.get_inputs()}
        times = []
        for _ in range(5):
            start = time.perf_counter()
            session.run(None, feed)
            times.append((time.perf_counter() - start) * 1e3)
        facts = {**_facts(), "runtime_version": ort.__version__}
        return Timed(max(float(np.median(times)), 1e-6), facts)

    loaded = _tiny_cnn()
    analysis = {"input_shape": list(loaded.input_shape)}
    cache = LatencyCache(tmp_path / "cache")
    first = measure_latency_table(_request(), analysis, tmp_path / "a", lambda m: None, loaded=loaded,
                                  providers=None, timer=ort_timer, cache=cache)
    written = cache.info()["entries"]
    assert written == first["cache"]["misses"] > 0 and set(first["layers"]) == {"conv1", "conv2", "fc"}
    assert first["context"]["runtime_version"] == ort.__version__
    again = measure_latency_table(_request(), analysis, tmp_path / "b", lambda m: None, loaded=loaded,
                                  providers=None, timer=ort_timer, cache=LatencyCache(tmp_path / "cache"))
    assert again["cache"]["hits"] == written and again["cache"]["misses"] == 0
    assert again["layers"] == first["layers"]


def test_a_group_is_reused_whole_or_measured_whole(tmp_path):
    cache = LatencyCache(tmp_path / "cache")
    keys = [{"k": 1}, {"k": 2}]
    calls = []

    def measure():
        calls.append(1)
        return [1.0, 2.0]

    assert cache.get_all(keys) is None
    assert cache.measure_group(keys, measure) == [1.0, 2.0] and cache.stats.misses == 2
    assert cache.measure_group(keys, measure) == [1.0, 2.0] and cache.stats.hits == 2 and len(calls) == 1
    cache.path_of(keys[1]).unlink()  # one member gone: the group is measured again, together
    assert cache.get_all(keys) is None and cache.measure_group(keys, measure) == [1.0, 2.0] and len(calls) == 2
    assert cache.measure_group(keys, measure, use_cache=False) and len(calls) == 3
    with pytest.raises(ValueError, match="2 keys"):
        cache.measure_group(keys, lambda: [1.0], use_cache=False)
