"""Train a Fashion-MNIST zoo model (default the reference, zoo:fmnist_cnn) and write its weights.

    python benchmarks/train_reference.py [--model fmnist_cnn] [--epochs 4] [--lr 0.05] [--seed 0]
    python benchmarks/train_reference.py --model fmnist_resnet --out benchmarks/weights --epochs 3

(The residual benchmark net's weights live in benchmarks/weights/: they are not shipped in the package.)

Trains on fashion-mnist:train (60000 images) with edgecomp.finetune.train (SGD + momentum,
cosine schedule, no augmentation), evaluates on fashion-mnist:test (10000 images; logged once per
epoch, never used for model selection) and writes

    <out>/<model>.safetensors            the state dict (safetensors, atomic; out = edgecomp/weights)
    <out>/<model>.json                   accuracy, hyper-parameters, command, versions, date
    benchmarks/cache/<model>_train.json  the same record plus the per-epoch history
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import logging
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from edgecomp.data import load_dataset
from edgecomp.finetune import evaluate, train
from edgecomp.io import write_json
from edgecomp.models import load_model, save_weights

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = ROOT / "edgecomp" / "weights"
CACHE_DIR = ROOT / "benchmarks" / "cache"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fmnist_cnn", choices=["fmnist_cnn", "fmnist_resnet"])
    parser.add_argument("--epochs", type=float, default=4.0)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--optimizer", default="sgd", choices=["sgd", "adam", "adamw"])
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR, help="folder for <model>.{safetensors,json}")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (1 is faster on a shared, oversubscribed machine)")
    parser.add_argument("--min-accuracy", type=float, default=0.91, help="refuse to ship weights below this")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    train_ds = load_dataset("fashion-mnist:train")
    test_ds = load_dataset("fashion-mnist:test")
    model = load_model(f"zoo:{args.model}").module  # seeded initialisation (seed 0 inside the zoo)

    start = time.perf_counter()
    result = train(
        model, train_ds, epochs=args.epochs, lr=args.lr, optimizer=args.optimizer,
        weight_decay=args.weight_decay, batch_size=args.batch_size, seed=args.seed,
        eval_data=test_ds, keep_best=False,
    )
    seconds = time.perf_counter() - start
    metrics = evaluate(model, test_ds)
    for entry in result.history:
        print(f"epoch {entry['epoch']:.2f}  train loss {entry['train_loss']:.4f}  test top1 {entry['eval_accuracy']:.4f}")
    print(f"test top1 {metrics['top1']:.4f}  top5 {metrics['top5']:.4f}  loss {metrics['loss']:.4f}  "
          f"({seconds:.0f} s, {torch.get_num_threads()} threads)")
    if metrics["top1"] < args.min_accuracy:
        print(f"accuracy {metrics['top1']:.4f} < {args.min_accuracy}: weights not written", file=sys.stderr)
        return 1

    weights = save_weights(model, args.out / f"{args.model}.safetensors",
                           metadata={"model": f"zoo:{args.model}", "test_top1": f"{metrics['top1']:.4f}"})
    record = {
        "model": f"zoo:{args.model}",
        "weights": weights.name,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        "dataset": {"train": "fashion-mnist:train", "test": "fashion-mnist:test",
                    "n_train": len(train_ds), "n_test": len(test_ds)},
        "test_top1": metrics["top1"],
        "test_top5": metrics["top5"],
        "test_loss": metrics["loss"],
        "epochs": args.epochs,
        "steps": result.steps,
        "optimizer": args.optimizer,
        "lr": args.lr,
        "lr_schedule": "cosine",
        "weight_decay": args.weight_decay,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "train_seconds": round(seconds, 1),
        "threads": torch.get_num_threads(),
        "command": "python benchmarks/train_reference.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    write_json(args.out / f"{args.model}.json", record)
    write_json(CACHE_DIR / f"{args.model}_train.json", {**record, "history": result.history})
    print(f"wrote {weights} and {args.out / (args.model + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
