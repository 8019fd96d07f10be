"""LC vs fine-tuning on the Fashion-MNIST reference CNN, with the same number of SGD steps for each:

  direct + FT   truncated SVD at pos-cvx ranks (data-free), then `steps` SGD steps of fine-tuning
  COBLA + FT    COBLA ranks and m_hat-scaled factors, then `steps` SGD steps of fine-tuning
  LC (budget)   LC with ranks chosen in every C step under the budgets, `steps` SGD steps in all
  COBLA + LC    LC with the ranks fixed to COBLA's, `steps` SGD steps in all

Both budgets = eta x original (spatial scheme); top-1 on the 10k test set; wall time per approach.

    python benchmarks/bench_lc_vs_finetune.py [--etas 0.3,0.5] [--steps 500]

Writes benchmarks/results/lc_vs_finetune.json.
"""

from __future__ import annotations

import argparse
import time

from common import reference_model, write_results

from edgecomp.compression.cobla import CoblaOptions
from edgecomp.compression.methods import Budgets, compress, split_heldout
from edgecomp.data import SubsetDataset, load_dataset
from edgecomp.finetune import evaluate, train
from edgecomp.graph import analyze_model
from edgecomp.lc import run_lc

BATCH = 128


def finetune(model, data, steps, seed):
    train_idx, held_idx = split_heldout(len(data), 0.1, seed)
    return train(model, SubsetDataset(data, train_idx), epochs=100, max_steps=steps, lr=0.01, batch_size=BATCH,
                 seed=seed, eval_data=SubsetDataset(data, held_idx), progress=False).model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--etas", default="0.3,0.5")
    parser.add_argument("--steps", type=int, default=500, help="SGD steps per approach")
    parser.add_argument("--cobla-iter", type=int, default=10)
    parser.add_argument("--n-mu", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    model = reference_model().module.eval()
    shape = (1, 1, 28, 28)
    data, test = load_dataset("fashion-mnist:train"), load_dataset("fashion-mnist:test")
    cost = analyze_model(model, shape, "spatial")
    steps_per_mu = max(1, args.steps // args.n_mu)
    rows = []
    for eta in [float(e) for e in args.etas.split(",")]:
        budgets = Budgets(eta * cost.total_macs, eta * cost.total_params * 4, "fp32")

        def record(name, fn):
            t0 = time.perf_counter()
            built, extra = fn()
            row = {"eta": eta, "approach": name, "top1": evaluate(built, test)["top1"],
                   "seconds": time.perf_counter() - t0, "sgd_steps": args.steps, **extra}
            rows.append(row)
            write_results("lc_vs_finetune", {"rows": rows, "settings": vars(args)})
            print(f"eta={eta:.1f} {name:12} top1={row['top1']:.4f} {row['seconds']:.0f}s", flush=True)

        direct = compress(model, shape, budgets, method="pos-cvx", scheme="spatial")
        direct_before = evaluate(direct.model, test)["top1"]  # before train() changes the model in place
        record("direct + FT", lambda: (finetune(direct.model, data, args.steps, args.seed),
                                       {"before_ft": direct_before}))
        t0 = time.perf_counter()
        cobla = compress(model, shape, budgets, method="cobla", scheme="spatial", data=data,
                         cobla=CoblaOptions(max_iter=args.cobla_iter, seed=args.seed))
        cobla_s = time.perf_counter() - t0
        before = evaluate(cobla.model, test)["top1"]
        record("COBLA + FT", lambda: (finetune(cobla.model, data, args.steps, args.seed),
                                      {"before_ft": before, "cobla_seconds": cobla_s}))
        lc_kwargs = dict(scheme="spatial", input_shape=shape, n_mu=args.n_mu, steps_per_mu=steps_per_mu,
                         batch_size=BATCH, seed=args.seed, progress=False)
        record("LC (budget)", lambda: (lambda r: (r.model, {"ranks": r.ranks}))(
            run_lc(model, data, problem_budgets=(budgets.macs, budgets.params), **lc_kwargs)))
        record("COBLA + LC", lambda: (lambda r: (r.model, {"ranks": r.ranks, "cobla_seconds_not_included": cobla_s}))(
            run_lc(model, data, ranks=cobla.factored, **lc_kwargs)))


if __name__ == "__main__":
    main()
