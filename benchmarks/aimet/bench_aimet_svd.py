"""Peer benchmark: AIMET spatial SVD with greedy compression-ratio selection on a Fashion-MNIST CNN.

    /work/aimet-venv/bin/python benchmarks/aimet/bench_aimet_svd.py [--etas 0.3,0.4,0.5,0.6,0.7]
    /work/aimet-venv/bin/python benchmarks/aimet/bench_aimet_svd.py --model fmnist_resnet --etas 0.3

--model: fmnist_cnn (the reference, weights edgecomp/weights/fmnist_cnn.safetensors) or fmnist_resnet
(the residual benchmark net, weights benchmarks/weights/fmnist_resnet.safetensors from
`python benchmarks/train_reference.py --model fmnist_resnet --out benchmarks/weights --epochs 3`).

Runs in the separate AIMET virtualenv (see setup_venv.sh): aimet-torch pulls torchvision and a
stack of plotting/solver packages that the edgecomp environment must not carry.

What AIMET does (aimet_torch.compress.ModelCompressor.compress_model, CompressionScheme.spatial_svd,
auto mode): every non-grouped Conv2d W (f x c x kh x kw) is a candidate for the spatial split of
Tai et al. (2016), W ~= V (c -> r, kh x 1) then H (r -> f, 1 x kw), from the truncated SVD of W
reshaped to (c*kh) x (f*kw). Its cost is linear in r:
    MACs(r) = r * (c*kh*sw*H_out*W_out + f*kw*H_out*W_out),   params(r) = r * (c*kh + f*kw).
Greedy selection evaluates, for each layer alone, the eval score at N-1 per-layer MAC ratios
k/N (k = 1..N-1, N = num_comp_ratio_candidates), then binary-searches one score threshold: each
layer takes the smallest candidate ratio whose score stays above it, until the model's MAC ratio
(compressed / original, over all Conv2d and Linear layers) meets the target eta. Linear layers are
never compressed by spatial SVD.

Selection uses top-1 accuracy on a fixed, seeded subset of the Fashion-MNIST TRAIN split (never the
test split); the reported accuracy is on the full 10k TEST split, before any fine-tuning. The
compressed model's MACs are also counted independently here (forward hooks: per sample, for each
Conv2d/Linear, output elements * in_channels/groups * kh * kw), so AIMET's own ratio is checked.

Writes benchmarks/results/aimet_svd.json (atomically) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # the venv has no editable edgecomp install; only torch-level modules are used

from edgecomp.io import write_json  # noqa: E402  (pure stdlib + json)
from edgecomp.models.zoo.fmnist_cnn import fmnist_cnn  # noqa: E402
from edgecomp.models.zoo.fmnist_resnet import fmnist_resnet  # noqa: E402

MODELS = {"fmnist_cnn": fmnist_cnn, "fmnist_resnet": fmnist_resnet}
DEFAULT_WEIGHTS = {
    "fmnist_cnn": ROOT / "edgecomp" / "weights" / "fmnist_cnn.safetensors",
    "fmnist_resnet": ROOT / "benchmarks" / "weights" / "fmnist_resnet.safetensors",
}
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "aimet_svd.json"
DATA_DIR = Path(os.environ.get("EDGECOMP_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist")
INPUT_SHAPE = (1, 1, 28, 28)


# ----------------------------------------------------------------------------- data

def read_idx(path: Path) -> np.ndarray:
    """IDX file (gzip or raw): 2 zero bytes, type code, ndim, ndim big-endian uint32 dims, uint8 payload."""
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion_mnist(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 (N, 1, 28, 28) in [0, 1], labels int64 (N,)) of split 'train' or 't10k'."""
    def find(kind: str, nd: int) -> Path:
        for name in (f"{split}-{kind}-idx{nd}-ubyte.gz", f"{split}-{kind}-idx{nd}-ubyte"):
            if (DATA_DIR / name).is_file():
                return DATA_DIR / name
        raise SystemExit(f"Fashion-MNIST {split} {kind} not found in {DATA_DIR} (apt-get install dataset-fashion-mnist)")

    images = read_idx(find("images", 3)).astype(np.float32) / 255.0
    labels = read_idx(find("labels", 1)).astype(np.int64)
    return torch.from_numpy(images[:, None]), torch.from_numpy(labels)


@torch.no_grad()
def top1(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 500, batches: int | None = None) -> float:
    model.eval()
    correct = seen = 0
    for i, start in enumerate(range(0, len(images), batch)):
        if batches is not None and i >= batches:
            break
        logits = model(images[start:start + batch])
        correct += int((logits.argmax(1) == labels[start:start + batch]).sum())
        seen += len(logits)
    return correct / seen


# ----------------------------------------------------------------------------- costs

def count_macs(model: nn.Module) -> int:
    """Per-sample MACs of every Conv2d and Linear: output elements * in_ch/groups * kh * kw."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        per_sample = output[0].numel()
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += per_sample * (module.in_channels // module.groups) * kh * kw
        else:
            total += per_sample * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(INPUT_SHAPE))
    finally:
        for h in handles:
            h.remove()
    return total


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def split_ranks(model: nn.Module) -> dict[str, dict[str, int]]:
    """Rank r and max rank min(c*kh, f*kw) of every conv AIMET replaced by its (kh x 1, 1 x kw) pair."""
    ranks = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.Sequential) and len(m) == 2 and all(isinstance(c, nn.Conv2d) for c in m):
            first, second = m
            if first.kernel_size[1] == 1 and second.kernel_size[0] == 1:
                c, kh = first.in_channels, first.kernel_size[0]
                f, kw = second.out_channels, second.kernel_size[1]
                ranks[name] = {"rank": first.out_channels, "max_rank": min(c * kh, f * kw)}
    return ranks


# ----------------------------------------------------------------------------- model

def load_reference(name: str, weights: Path, wait_minutes: float, random_weights: bool) -> tuple[nn.Module, str]:
    """The zoo model `name` with its trained weights (polling for them), or its seeded init."""
    model = MODELS[name]()
    if random_weights:
        return model.eval(), "random (seeded zoo init; development only)"
    start = time.monotonic()
    if not weights.is_file():
        print(f"waiting up to {wait_minutes:g} min for {weights} ...", flush=True)
    while not weights.is_file():
        if time.monotonic() - start > 60 * wait_minutes:
            raise SystemExit(f"{weights} did not appear within {wait_minutes:g} min (use --random-weights to develop)")
        time.sleep(15)
    from safetensors.torch import load_file

    model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval(), str(weights.relative_to(ROOT) if weights.is_relative_to(ROOT) else weights)


# ----------------------------------------------------------------------------- AIMET

@contextlib.contextmanager
def working_dir(path: Path):
    """AIMET pickles its eval-score dict to ./data; keep that out of the repository."""
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def timed_eval_dict(record: list[float]):
    """Append the seconds AIMET spends building its per-layer eval-score dict (the greedy scan).

    Measurement only: wraps GreedyCompRatioSelectAlgo._compute_eval_scores_for_all_comp_ratio_candidates,
    so a run that reuses a saved dict can be priced as a standalone run (its seconds + this scan).
    """
    from aimet_torch.common.comp_ratio_select import GreedyCompRatioSelectAlgo

    original = GreedyCompRatioSelectAlgo._compute_eval_scores_for_all_comp_ratio_candidates

    def wrapper(self):
        t0 = time.perf_counter()
        try:
            return original(self)
        finally:
            record.append(time.perf_counter() - t0)

    GreedyCompRatioSelectAlgo._compute_eval_scores_for_all_comp_ratio_candidates = wrapper
    try:
        yield
    finally:
        GreedyCompRatioSelectAlgo._compute_eval_scores_for_all_comp_ratio_candidates = original


def aimet_compress(model, eta, eval_fn, eval_batches, candidates, saved_dict: str | None):
    """One ModelCompressor.compress_model call: spatial SVD, auto (greedy) mode, MAC cost metric."""
    from aimet_torch.common.defs import CompressionScheme, CostMetric, GreedySelectionParameters
    from aimet_torch.compress import ModelCompressor
    from aimet_torch.defs import SpatialSvdParameters

    greedy = GreedySelectionParameters(target_comp_ratio=eta, num_comp_ratio_candidates=candidates,
                                       saved_eval_scores_dict=saved_dict)
    params = SpatialSvdParameters(SpatialSvdParameters.Mode.auto, SpatialSvdParameters.AutoModeParams(greedy))
    return ModelCompressor.compress_model(
        copy.deepcopy(model), eval_callback=eval_fn, eval_iterations=eval_batches, input_shape=INPUT_SHAPE,
        compress_scheme=CompressionScheme.spatial_svd, cost_metric=CostMetric.mac, parameters=params)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etas", default="0.3,0.4,0.5,0.6,0.7", help="target MAC ratios (compressed / original)")
    parser.add_argument("--candidates", type=int, default=10, help="AIMET num_comp_ratio_candidates (N)")
    parser.add_argument("--eval-images", type=int, default=2000, help="size of the train subset used for selection")
    parser.add_argument("--eval-batch", type=int, default=500)
    parser.add_argument("--independent", action="store_true",
                        help="run every eta from scratch instead of passing the first run's per-layer "
                             "eval-score dict to the others (saved_eval_scores_dict; same selection, slower)")
    parser.add_argument("--model", default="fmnist_cnn", choices=sorted(MODELS))
    parser.add_argument("--weights", type=Path, default=None, help="default: the model's trained weights")
    parser.add_argument("--wait-minutes", type=float, default=30.0, help="poll this long for --weights")
    parser.add_argument("--random-weights", action="store_true", help="use the seeded init (development only)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="seed of the train-subset draw")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    etas = [float(e) for e in args.etas.split(",") if e]
    if not etas or any(not 0.0 < e < 1.0 for e in etas):
        parser.error("--etas must be values in (0, 1)")

    torch.set_num_threads(args.threads)
    import aimet_torch
    from aimet_torch.common.utils import AimetLogger

    AimetLogger.set_level_for_all_areas(logging.WARNING)

    model, weights_desc = load_reference(args.model, args.weights or DEFAULT_WEIGHTS[args.model], args.wait_minutes,
                                         args.random_weights)
    train_x, train_y = fashion_mnist("train")
    test_x, test_y = fashion_mnist("t10k")
    pick = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(args.seed))[: args.eval_images]
    sel_x, sel_y = train_x[pick].contiguous(), train_y[pick].contiguous()
    eval_batches = -(-len(sel_x) // args.eval_batch)
    n_evals = 0

    def eval_callback(m: nn.Module, iterations: int | None = None, use_cuda: bool = False) -> float:
        """AIMET's EvalFunction(model, iterations, use_cuda) -> score: top-1 on the train subset."""
        nonlocal n_evals
        n_evals += 1
        return top1(m, sel_x, sel_y, args.eval_batch, iterations)

    base_macs, base_params = count_macs(model), count_params(model)
    base_test = top1(model, test_x, test_y)
    base_sel = top1(model, sel_x, sel_y)
    print(f"reference: {weights_desc}; {base_macs} MACs, {base_params} params, test top-1 {base_test:.4f}, "
          f"selection-subset top-1 {base_sel:.4f}", flush=True)

    rows = []
    scan_seconds: list[float] = []  # one entry per run that built the eval-score dict itself
    with tempfile.TemporaryDirectory(prefix="aimet_svd_") as tmp, working_dir(Path(tmp)), timed_eval_dict(scan_seconds):
        saved_dict = None
        for eta in etas:
            n_evals = 0
            reused = saved_dict is not None
            t0 = time.perf_counter()
            compressed, stats = aimet_compress(model, eta, eval_callback, eval_batches, args.candidates, saved_dict)
            seconds = time.perf_counter() - t0
            pkl = Path(tmp) / "data" / "greedy_selection_eval_scores_dict.pkl"
            if not args.independent and not reused:
                if not pkl.is_file():
                    raise SystemExit(f"AIMET did not write its eval-score dict to {pkl}")
                saved_dict = str(pkl)
            macs, params = count_macs(compressed), count_params(compressed)
            row = {
                "target_mac_ratio": eta,
                "aimet_mac_ratio": float(stats.mac_compression_ratio),
                "aimet_mem_ratio": float(stats.memory_compression_ratio),
                "mac_ratio": macs / base_macs,
                "param_ratio": params / base_params,
                "macs": macs,
                "params": params,
                "test_top1": top1(compressed, test_x, test_y),
                "selection_top1": float(stats.compressed_model_accuracy),
                "seconds": seconds,
                # A reused dict skips the per-layer scan; a standalone call would also pay for it.
                "standalone_seconds": seconds + (scan_seconds[0] if reused else 0.0),
                "eval_scan_seconds": scan_seconds[0] if reused else scan_seconds[-1],
                "eval_dict_reused": reused,
                "eval_calls": n_evals,
                "per_layer_comp_ratio": {
                    ls.name: (None if ls.compression_ratio is None else float(ls.compression_ratio))
                    for ls in stats.per_layer_stats
                },
                "ranks": split_ranks(compressed),
            }
            rows.append(row)
            print(f"eta={eta:.2f}: AIMET mac ratio {row['aimet_mac_ratio']:.4f}, counted {row['mac_ratio']:.4f}, "
                  f"params {row['param_ratio']:.4f}, test top-1 {row['test_top1']:.4f}, {seconds:.1f}s "
                  f"(standalone {row['standalone_seconds']:.1f}s, {n_evals} evals)", flush=True)

    payload = {
        "benchmark": "AIMET spatial SVD + greedy comp-ratio selection (CostMetric.mac), no fine-tuning",
        "model": f"zoo:{args.model}",
        "weights": weights_desc,
        "input_shape": list(INPUT_SHAPE),
        "aimet_version": getattr(aimet_torch, "__version__", "unknown"),
        "torch_version": torch.__version__,
        "settings": {
            "num_comp_ratio_candidates": args.candidates,
            "selection_data": f"{len(sel_x)} Fashion-MNIST train images (randperm seed {args.seed})",
            "eval_batch": args.eval_batch,
            "reuse_eval_dict": not args.independent,
            "threads": args.threads,
            "test_data": f"Fashion-MNIST test, {len(test_x)} images",
        },
        "reference": {"macs": base_macs, "params": base_params, "test_top1": base_test, "selection_top1": base_sel},
        "rows": rows,
        "environment": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": shlex.join([sys.executable, *sys.argv]),
        },
    }
    write_json(args.out, payload)
    print(f"wrote {args.out}\n")
    print("| target eta | AIMET MAC ratio | counted MAC ratio | param ratio | test top-1 | seconds | standalone s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| reference | 1.0000 | 1.0000 | 1.0000 | {base_test:.4f} | - | - |")
    for r in rows:
        print(f"| {r['target_mac_ratio']:.2f} | {r['aimet_mac_ratio']:.4f} | {r['mac_ratio']:.4f} | "
              f"{r['param_ratio']:.4f} | {r['test_top1']:.4f} | {r['seconds']:.1f} | {r['standalone_seconds']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
