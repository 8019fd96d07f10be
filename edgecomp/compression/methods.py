"""compress(): profile budgets -> cost model -> rank selection -> factored model, with checked costs.

Python API hooks for models whose loss is not classification cross-entropy (callables, never read
from files; contracts in edgecomp.finetune.callables): LCOptions.train_fn (LC's L step),
compress(loss_fn=...) (COBLA's loss oracle; a compress() argument rather than a CoblaOptions field,
because CoblaOptions' fields are the settings that requests and files may set), and
FinetuneOptions.train_fn / .metric (fine-tuning of the built model, compress(finetune=...)).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from edgecomp.compression.cobla import CoblaOptions, run_cobla
from edgecomp.compression.problem import build_problem, compute_spectra
from edgecomp.profiles.profile import Budgets
from edgecomp.errors import InfeasibleBudgetError, UserInputError
from edgecomp.factor.build import factorize_model
from edgecomp.finetune.callables import LossFn, MetricFn, TrainFn, check_callable
from edgecomp.graph.cost import BYTES_PER_PARAM, CHOICE_SCHEMES, analyze_model
from edgecomp.ranks.problem import RankProblem, RankSelection

BUDGETED_METHODS = ("cobla", "lc", "uniform", "cptv", "pos-greedy", "pos-cvx")
REPORTED_METHODS = ("vbmf", "gavish-donoho")
METHODS = BUDGETED_METHODS + REPORTED_METHODS
# The methods that choose among a layer's explicit choices (schemes tucker2 and auto: Tucker-2 (r1, r2) pairs,
# or each conv's spatial / channel / cp ranks and Tucker-2 pairs): edgecomp.ranks.baselines on choice layers.
CHOICE_METHODS = ("pos-cvx", "uniform", "cptv", "pos-greedy")
# tucker2 and auto also take COBLA (the exact knapsack over Fisher-scored choices,
# edgecomp.compression.choice_scores) and LC (its C step re-derives the choices from w - lambda/mu, edgecomp.lc.choices)
TUCKER2_METHODS = ("cobla", "lc", *CHOICE_METHODS)


def check_scheme_method(scheme: str, method: str, latency: bool = False) -> None:
    """UserInputError for a method (or --cost latency) that cannot choose ranks under `scheme`."""
    if scheme == "cp" and method in REPORTED_METHODS:
        raise UserInputError(f"--method {method} estimates ranks from singular values; --scheme cp has CP term "
                             f"weights instead: use one of {', '.join(BUDGETED_METHODS)}")
    if scheme == "tucker2" and method not in TUCKER2_METHODS:
        raise UserInputError(f"--method {method} does not support --scheme tucker2: tucker2's cost is bilinear in "
                             f"(r1, r2): it is chosen among explicit (r1, r2) choices by cobla (Fisher-scored exact "
                             f"knapsack), lc, pos-cvx (the exact knapsack), uniform, cptv or pos-greedy")
    if scheme == "auto" and method not in TUCKER2_METHODS:
        raise UserInputError(f"--method {method} does not support --scheme auto: each layer's options are explicit "
                             f"(scheme, rank) choices, chosen by cobla (Fisher-scored exact knapsack), lc, pos-cvx "
                             f"(the exact knapsack), uniform, cptv or pos-greedy")
    if scheme in CHOICE_SCHEMES and latency:
        raise UserInputError(f"--cost latency is not implemented for --scheme {scheme} (its costs are per choice, "
                             "not per rank): use the MAC budget")


@dataclass
class LCOptions:
    """LC (learning-compression) settings; defaults and their justification in edgecomp.lc.algorithm."""

    ranks_from: str | None = None  # None: ranks chosen in every C step under the budgets
    n_mu: int | None = None
    steps_per_mu: int | None = None
    lr: float | None = None
    variant: str = "al"
    seed: int = 0
    progress: bool = False
    train_fn: TrainFn | None = None  # the user's L step: train_fn(model, penalty_fn, steps) (Python API only)
    # edgecomp.torch_device.Placement (device, AMP, workers) and edgecomp.finetune.checkpoint.Checkpoint
    placement: object | None = None
    checkpoint: object | None = None

    def kwargs(self) -> dict:
        names = ("n_mu", "steps_per_mu", "lr", "train_fn", "placement", "checkpoint")
        extra = {k: getattr(self, k) for k in names if getattr(self, k) is not None}
        return {"variant": self.variant, "seed": self.seed, "progress": self.progress, **extra}


@dataclass
class FinetuneOptions:
    """Fine-tuning of the built model (what the CLI's --finetune-epochs, --finetune-lr and --distill set).

    The best checkpoint is chosen on a held-out tenth of the *training* data (never the evaluation
    data) by top-1, by agreement with the original model (distillation or unlabeled data), or by
    `metric(outputs, targets)` (higher is better). train_fn(model, penalty_fn, steps) replaces the
    built-in loop (penalty_fn() = 0; edgecomp.finetune.callables); without data it gets max_steps.
    """

    epochs: float = 1.0
    lr: float = 0.01
    distill: bool = False
    seed: int = 0
    progress: bool = False
    max_steps: int | None = None
    train_fn: TrainFn | None = None
    metric: MetricFn | None = None
    placement: object | None = None  # edgecomp.torch_device.Placement: device, AMP, workers (None: CPU, fp32)
    checkpoint: object | None = None  # edgecomp.finetune.checkpoint.Checkpoint: --checkpoint-every / --resume


@dataclass
class CompressResult:
    model: nn.Module
    selection: RankSelection
    problem: RankProblem
    ranks: dict[str, int]  # every decomposable layer's chosen rank
    factored: dict[str, int]  # the layers actually factored (rank below break-even)
    macs: int
    params: int
    layers: list[dict]
    timings: dict = field(default_factory=dict)
    finetune: dict | None = None  # what finetune_compressed() reports, when compress(finetune=...) ran it


def resolve_budgets(cost, precision: str, profile=None, mac_budget: str | None = None, memory_budget: str | None = None) -> Budgets:
    """Budgets from the device profile, overridden by --mac-budget / --memory-budget."""
    from edgecomp.profiles import parse_mac_budget, parse_memory_budget

    original_bytes = cost.memory_bytes(precision)
    if profile is not None:
        return profile.resolve_budgets(cost.total_macs, original_bytes, mac_budget, memory_budget, precision=precision)
    if mac_budget is None and memory_budget is None:
        raise UserInputError("no budget: pass --device NAME / --profile FILE, or --mac-budget and/or --memory-budget")
    macs = parse_mac_budget(mac_budget, cost.total_macs) if mac_budget else float("inf")
    memory = parse_memory_budget(memory_budget, original_bytes) if memory_budget else float("inf")
    return Budgets(
        macs, memory, precision,
        f"--mac-budget {mac_budget}" if mac_budget else "none",
        f"--memory-budget {memory_budget}" if memory_budget else "none",
    )


def check_satisfiable(problem: RankProblem, precision: str, budgets: Budgets | None = None) -> None:
    if problem.is_satisfiable():
        return
    if problem.extra:  # a latency budget: name every budget that is over and its minimum
        from edgecomp.ranks.problem import infeasible_budget_error

        raise infeasible_budget_error(problem, "the budget is below the smallest model this scheme can build:")
    from edgecomp.profiles.units import read_as_absolute

    min_compute, min_params = problem.min_cost
    unit = problem.compute_unit
    nbytes = min_params * BYTES_PER_PARAM[precision]
    hints = []  # a plain "--mac-budget 1.5" is 1.5 MACs: say so, and how to give a fraction
    if (budgets is not None and unit == "MACs" and min_compute > problem.compute_budget
            and budgets.mac_source.startswith("--mac-budget ")):
        hints.append(read_as_absolute(budgets.mac_source.split(" ", 1)[1]))
    if budgets is not None and min_params > problem.param_budget and budgets.memory_source.startswith("--memory-budget "):
        hints.append(read_as_absolute(budgets.memory_source.split(" ", 1)[1], "--memory-budget", "bytes"))
    hint = "".join(f"; {h}" for h in hints if h)
    raise InfeasibleBudgetError(
        f"the budget is below the smallest model this scheme can build (every decomposable layer at its cheapest "
        f"choice: rank 1, Tucker-2 ranks (1, 1), or under --scheme auto each layer's cheapest choice): "
        f"minimum achievable is {_count(min_compute)} {unit} and {min_params:,.0f} parameters ({nbytes:,.0f} bytes at "
        f"{precision}); asked for {_count(problem.compute_budget)} {unit} and {_count(problem.param_budget)} parameters{hint}",
        min_macs=min_compute,
        min_params=min_params,
    )


def _count(value: float) -> str:
    """A budget as the user reads it: "unlimited" for +inf, thousands separators, small values unrounded."""
    if value == float("inf"):
        return "unlimited"
    return f"{value:,.0f}" if value >= 100 else f"{value:.6g}"


def split_heldout(n: int, heldout: float, seed: int, max_heldout: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, held-out indices) of the training data; the held-out part picks rounding draws."""
    rng = np.random.default_rng([seed, 7])
    perm = rng.permutation(n)
    k = int(min(max_heldout, max(1, round(heldout * n)))) if n > 1 else 0
    return np.sort(perm[k:]), np.sort(perm[:k])


def select(method: str, problem: RankProblem, **kwargs) -> RankSelection:
    from edgecomp.ranks.baselines import BASELINES

    if method not in BASELINES:
        raise UserInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    return BASELINES[method](problem)


def select_choices(method: str, problem: RankProblem, scheme: str = "tucker2") -> RankSelection:
    """Schemes tucker2 and auto: a CHOICE_METHODS method over every layer's explicit choices (ChoiceLayer)
    and SVD ranks: pos-cvx, the exact knapsack (edgecomp.ranks.choices.select_choices_min_error); uniform,
    cptv and pos-greedy as defined on choice layers in edgecomp.ranks.baselines.on_choices (and, for
    tucker2's uniform, edgecomp.ranks.choices.select_choices_uniform)."""
    check_scheme_method(scheme, method)
    return select(method, problem)


def select_tucker2(method: str, problem: RankProblem) -> RankSelection:
    """Scheme tucker2 (select_choices)."""
    return select_choices(method, problem, "tucker2")


def _built_rank(layer, rank: int, scheme: str = ""):
    """What the build and the recipe take for a layer's selected rank: the rank; a Tucker-2 choice's [r1, r2]
    (edgecomp.ranks.choices.ChoiceLayer); under scheme auto {"scheme": S, "rank": R} (S the choice's scheme,
    "linear" for an SVD layer; {"scheme": "dense"} for a layer left whole)."""
    from edgecomp.ranks.choices import ChoiceLayer

    if scheme == "auto":
        if not isinstance(layer, ChoiceLayer):
            return {"scheme": "linear", "rank": int(rank)}
        entry = layer.rank_entry(rank)
        return {"scheme": "dense"} if entry is None else {"scheme": layer.scheme(rank), "rank": entry}
    return list(layer.pair(rank)) if isinstance(layer, ChoiceLayer) else int(rank)


def compress(
    model: nn.Module,
    input_shape: tuple[int, ...],
    budgets: Budgets,
    *,
    method: str = "cobla",
    scheme: str = "spatial",
    data=None,
    cobla: CoblaOptions | None = None,
    lc: LCOptions | None = None,
    heldout: float = 0.1,
    callback=None,
    latency_table: dict | None = None,
    latency_budget_ms: float | None = None,
    loss_fn: LossFn | None = None,
    finetune: FinetuneOptions | None = None,
    cp_solver: str = "als",
    seed: int = 0,
    never_slower_table: dict | None = None,
    rank_multiple: int | None = None,
) -> CompressResult:
    """Choose ranks under the budgets and build the factored model; costs are checked on the built model.

    With a latency table (measured on the target), latency in ms is a third budget beside MACs and memory
    (edgecomp.ranks.latency.with_latency_budget, latency_budget_ms); a MAC budget derived from the latency
    budget (budgets.mac_source "derived from latency ...") is dropped, any other stays. Every budgeted
    method takes it; the choice schemes (tucker2, auto) refuse it.
    loss_fn(model, batch): COBLA's loss (also for cobla ranks under --ranks-from) in place of
    cross-entropy / distillation. finetune: fine-tune the built model afterwards (finetune_compressed;
    result.finetune says how); the costs do not change.
    scheme "cp": conv layers are CP-factored (edgecomp.factor.cp_conv), fitted at their largest rank by
    `cp_solver` ("als" or "spals", seeded by `seed`) and refitted at the chosen rank; each such layer's
    report row has "cp_refit" (relative errors and fits before/after the refit).
    scheme "auto": each conv layer takes spatial, channel, cp or tucker2, whichever the method finds best
    under the budgets (edgecomp.compression.problem.auto_choices); result.ranks / .factored hold
    {"scheme": S, "rank": R} per layer and every report row names its "scheme".
    never_slower_table: a per-layer latency table measured on the target (edgecomp.pipeline.latency_table);
    each layer is left dense from the rank on where its factored form is not measurably faster
    (edgecomp.ranks.latency.apply_latency_break_even), whatever the method.
    rank_multiple: round each factored rank down to a multiple of it once the ranks are chosen
    (edgecomp.factor.rank_rounding; None or 1: no rounding; not under method lc, whose ranks come with
    its trained weights). selection.info["rank_rounding"] records each layer's rank before and after.
    """
    check_callable(loss_fn, "loss_fn")
    result = _compress(model, input_shape, budgets, method, scheme, data, cobla, lc, heldout, callback,
                       latency_table, latency_budget_ms, loss_fn, cp_solver, seed, never_slower_table,
                       rank_multiple)
    if finetune is not None:
        result.finetune = finetune_compressed(result, model, data, finetune)
        result.timings["total_s"] += result.timings["finetune_s"]
    return result


def _compress(model, input_shape, budgets, method, scheme, data, cobla, lc, heldout, callback, latency_table,
              latency_budget_ms, loss_fn, cp_solver="als", seed=0, never_slower_table=None,
              rank_multiple=None) -> CompressResult:
    if method not in METHODS:
        raise UserInputError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check_scheme_method(scheme, method, latency_table is not None)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    model = model.eval()
    cost = analyze_model(model, input_shape, scheme)
    if not cost.decomposable:
        raise UserInputError("no layer of this model can be decomposed (see `edgecomp inspect`)")
    spectra = compute_spectra(model, cost, cp_solver=cp_solver, seed=seed)
    problem = build_problem(cost, spectra, budgets.macs, budgets.params)
    cost_problem = problem  # MACs: what the built model is checked against
    if latency_table is not None:
        from edgecomp.ranks.latency import with_latency_budget

        if budgets.mac_source.startswith("derived from latency"):
            # the measured latency replaces its MAC estimate; a MAC budget of its own stays in force
            problem = build_problem(cost, spectra, float("inf"), budgets.params)
        problem = cost_problem = with_latency_budget(problem, latency_table, latency_budget_ms)
    if never_slower_table is not None:
        from edgecomp.ranks.latency import apply_latency_break_even

        # both: the built model is checked against cost_problem's break-even ranks
        if cost_problem is problem:
            problem = cost_problem = apply_latency_break_even(problem, never_slower_table)
        else:
            problem, cost_problem = (apply_latency_break_even(p, never_slower_table) for p in (problem, cost_problem))
    timings["analysis_s"] = time.perf_counter() - t0
    if method in BUDGETED_METHODS:
        check_satisfiable(problem, budgets.precision, budgets)

    t1 = time.perf_counter()
    if method == "lc":
        return _compress_lc(model, input_shape, budgets, problem, scheme, data, cobla, lc or LCOptions(), heldout,
                            callback, timings, t0, loss_fn, cp_solver, seed, never_slower_table)
    components = scales = None
    # The run's Placement (edgecomp.torch_device) reaches compress() in LCOptions (compress_loaded sets it for
    # every method, as it sets FinetuneOptions'): COBLA's oracle and Fisher scoring run on its device too.
    placement = lc.placement if lc is not None else None
    if method == "cobla" and scheme in CHOICE_SCHEMES:
        from edgecomp.compression.choice_scores import select_choices_by_scores

        if data is None:
            raise UserInputError("--method cobla needs training data for its loss estimates: pass --data SPEC")
        options = cobla or CoblaOptions()
        train_idx, heldout_idx = split_heldout(len(data), heldout, options.seed)
        selection = select_choices_by_scores(problem, model, cost, spectra, data, indices=train_idx,
                                             sample=options.sample, seed=options.seed, loss_fn=loss_fn,
                                             placement=placement, heldout=heldout_idx)
    elif method == "cobla":
        if data is None:
            raise UserInputError("--method cobla needs training data for its gradients: pass --data SPEC")
        options = cobla or CoblaOptions()
        train_idx, heldout_idx = split_heldout(len(data), heldout, options.seed)
        selection, kept, m_hat = run_cobla(
            problem, model, cost, spectra, data, train_idx=train_idx, heldout_idx=heldout_idx,
            teacher=model, options=options, callback=callback, loss_fn=loss_fn, placement=placement,
        )
        components = {layer.name: kept[i] for i, layer in enumerate(problem.layers)}
        scales = {layer.name: m_hat[problem.offsets[i] + kept[i]] for i, layer in enumerate(problem.layers)}
    elif scheme in CHOICE_SCHEMES:
        selection = select_choices(method, problem, scheme)
    else:
        selection = select(method, problem)
    timings["selection_s"] = time.perf_counter() - t1
    if rank_multiple is not None and rank_multiple > 1:  # the ranks are final: align them (budgets still hold)
        from edgecomp.factor.rank_rounding import round_selection

        selection, components, scales = round_selection(problem, selection, rank_multiple, components, scales)

    t2 = time.perf_counter()
    ranks = {layer.name: _built_rank(layer, int(r), scheme) for layer, r in zip(problem.layers, selection.ranks)}
    factored = {layer.name: ranks[layer.name] for layer, r in zip(problem.layers, selection.ranks)
                if layer.is_factored(int(r))}
    built = factorize_model(
        model, factored, scheme,
        components={k: components[k] for k in factored} if components else None,
        scales={k: scales[k] for k in factored} if scales else None,
        spectra=spectra,
    ).eval()
    timings["build_s"] = time.perf_counter() - t2
    result = finish(built, cost_problem, selection, input_shape, scheme, timings, selection_problem=problem,
                    original=cost)
    timings["total_s"] = time.perf_counter() - t0
    return result


def _compress_lc(model, input_shape, budgets, problem, scheme, data, cobla, options: LCOptions, heldout, callback,
                 timings, t0, loss_fn, cp_solver="als", seed=0, never_slower_table=None) -> CompressResult:
    """LC with ranks fixed by another method (options.ranks_from) or chosen in each C step under the budgets
    (and `problem`'s extra budgets, e.g. latency; the never-slower rule as an unbounded latency row whose
    break-even is not-measurably-faster, since each C step rebuilds its problem from new spectra).
    With options.train_fn the L steps are the user's and need no data here."""
    from edgecomp.lc import run_lc

    if data is None and options.train_fn is None:
        raise UserInputError("--method lc needs training data for its L steps: pass --data SPEC")
    fixed, choices = None, {}
    if options.ranks_from and scheme == "auto":
        raise UserInputError("--ranks-from does not apply to --scheme auto: LC chooses each layer's scheme and "
                             "ranks in its C steps; drop --ranks-from, or fix the scheme (--scheme spatial, ...)")
    if scheme == "auto":
        from edgecomp.lc.choices import AutoChoices

        auto = AutoChoices(analyze_model(model, input_shape, scheme), cp_solver=cp_solver, seed=seed)
        choices = {"choices_fn": auto, "project_fn": auto.project}
    if options.ranks_from:
        if options.ranks_from == "lc" or options.ranks_from not in BUDGETED_METHODS:
            raise UserInputError(f"--ranks-from must be one of {', '.join(m for m in BUDGETED_METHODS if m != 'lc')}")
        fixed = compress(model, input_shape, budgets, method=options.ranks_from, scheme=scheme, data=data,
                         cobla=cobla, heldout=heldout, callback=callback, loss_fn=loss_fn, cp_solver=cp_solver,
                         seed=seed, lc=LCOptions(placement=options.placement)).factored
    extra = problem.extra
    if never_slower_table is not None and fixed is None and scheme not in CHOICE_SCHEMES:
        from dataclasses import replace

        from edgecomp.ranks.latency import latency_budget

        extra = (*extra, replace(latency_budget(problem, never_slower_table, float("inf"), never_slower=True),
                                 name="never-slower"))
    if extra:
        choices["extra_budgets"] = extra
    t1 = time.perf_counter()
    result = run_lc(model, data, scheme=scheme, input_shape=input_shape, ranks=fixed,
                    problem_budgets=None if fixed is not None else (budgets.macs, budgets.params), **choices,
                    **options.kwargs())
    timings["selection_s"] = time.perf_counter() - t1
    from edgecomp.ranks.choices import ChoiceLayer

    if result.problem is not None:  # Tucker-2 C steps: the last one's choices are what was built
        problem, ranks = result.problem, list(result.selection.ranks)
    else:
        ranks = [
            layer.choice_of(*result.layer_ranks[layer.name])
            if isinstance(layer, ChoiceLayer) and layer.name in result.layer_ranks
            else result.layer_ranks.get(layer.name, result.ranks.get(layer.name,
                                                                      max(layer.max_rank, layer.break_even_rank)))
            for layer in problem.layers
        ]
    selection = RankSelection("lc", ranks, info={
        "ranks_from": options.ranks_from or "budgets (exact C step)",
        "lc_history": result.history,
        "lc_converged": result.converged,
        "lc_warning": result.warning,
        "lc_seconds": result.seconds,
    })
    out = finish(result.model.eval(), problem, selection, input_shape, scheme, timings,
                 original=analyze_model(model, input_shape, scheme))
    timings["total_s"] = time.perf_counter() - t0
    return out


def finetune_compressed(result: CompressResult, original: nn.Module, data, options: FinetuneOptions) -> dict:
    """Fine-tune result.model in place (labels), or distill it from `original` (--distill, or data
    without labels), on the training data; the best checkpoint is chosen on a held-out tenth of it.
    Returns what the report records of it; sets result.model and result.timings["finetune_s"]."""
    from edgecomp.finetune import train

    check_callable(options.train_fn, "train_fn")
    if data is None and options.train_fn is None:
        raise UserInputError("--finetune-epochs needs training data: pass --data SPEC")
    train_data = heldout_data = teacher = None
    if data is not None:
        train_idx, heldout_idx = split_heldout(len(data), 0.1, options.seed)
        from edgecomp.finetune.batches import subset

        train_data, heldout_data = subset(data, train_idx), subset(data, heldout_idx)
        teacher = original if (options.distill or not getattr(data, "has_labels", True)) else None
    trained = train(
        result.model, train_data, epochs=options.epochs, lr=options.lr, seed=options.seed, eval_data=heldout_data,
        teacher=teacher, distill_alpha=1.0 if teacher is not None else 0.0, progress=options.progress,
        max_steps=options.max_steps, train_fn=options.train_fn, metric=options.metric,
        placement=options.placement, checkpoint=options.checkpoint,
    )
    result.model = trained.model.eval()
    result.timings["finetune_s"] = trained.seconds
    mode = "train_fn" if options.train_fn is not None else ("distillation" if teacher is not None else "labels")
    return {
        "epochs": options.epochs,
        "lr": options.lr,
        "mode": mode,
        "steps": trained.steps,
        "best_step": trained.best_step,
        "best_heldout": trained.best_accuracy,
        "metric": trained.metric,
        "curve": trained.history,
    }


def finish(built: nn.Module, problem: RankProblem, selection: RankSelection, input_shape, scheme: str,
           timings: dict, selection_problem: RankProblem | None = None, original=None) -> CompressResult:
    """Check the built model's costs against the cost model and the budgets; describe every layer.

    `problem` is in MACs; `selection_problem` (default: the same) is what the budgets were set on;
    `original` (the source model's ModelCost) gives each layer's kind and weight shape for the report.
    """
    from edgecomp.ranks.choices import ChoiceLayer

    infos = {lc.name: lc.layer for lc in original.layers} if original is not None else {}
    decs = {lc.name: lc.decomposition for lc in original.decomposable} if original is not None else {}
    selection_problem = selection_problem or problem
    built_cost = analyze_model(built, input_shape, scheme)
    expected = problem.cost(selection.ranks)
    if (built_cost.total_macs, built_cost.total_params) != (round(expected[0]), round(expected[1])):
        raise RuntimeError(  # a bug, never a user error: the cost model and the built model disagree
            f"built model costs {built_cost.total_macs} MACs / {built_cost.total_params} params, "
            f"cost model predicted {expected}"
        )
    if selection.enforces_budgets and not selection_problem.feasible(selection.ranks):
        raise RuntimeError(f"method {selection.method} returned ranks that break the budgets")
    ranks = {layer.name: _built_rank(layer, int(r), scheme) for layer, r in zip(problem.layers, selection.ranks)}
    layers = []
    for layer, r in zip(problem.layers, selection.ranks):
        macs, params = layer.cost(int(r))
        if isinstance(layer, ChoiceLayer):
            row_of = _choice_row if layer.mixed else _tucker2_row
            layers.append(row_of(built, layer, int(r), infos.get(layer.name), decs.get(layer.name)))
            continue
        dec = decs.get(layer.name)
        layers.append({
            "name": layer.name,
            "scheme": dec.scheme if dec is not None else scheme,
            "rank": int(r),
            "max_rank": layer.max_rank,
            "break_even_rank": layer.break_even_rank,
            "factored": layer.is_factored(int(r)),
            "macs": int(macs),
            "params": int(params),
            "original_macs": int(layer.original_compute),
            "original_params": int(layer.original_params),
            "energy": layer.energy(int(r)),
            **_layer_shape(infos.get(layer.name)),
            **_cp_refit(built, layer.name),
        })
    if selection_problem.compute_unit == "ms" or any(b.unit == "ms" for b in selection_problem.extra):
        from edgecomp.ranks.latency import predicted_latency_ms

        selection.info["predicted_latency_ms"] = predicted_latency_ms(selection_problem, selection.ranks)
    return CompressResult(
        model=built, selection=selection, problem=problem, ranks=ranks,
        factored={row["name"]: ranks[row["name"]] for row in layers if row["factored"]},
        macs=built_cost.total_macs, params=built_cost.total_params, layers=layers, timings=timings,
    )


def _tucker2_row(built: nn.Module, layer, choice: int, info, dec=None) -> dict:
    """A Tucker-2 layer's report row: r1, r2, the squared HOSVD truncation error the knapsack saw ("error")
    and its share of ||W||^2, the built HOOI fit's relative error; "rank" / "max_rank" are the core's
    size r1 * r2 / c * f (what the rank chart shows), "choice" / "n_choices" the knapsack's option."""
    r1, r2 = layer.pair(choice)
    c, f = layer.pair(layer.max_rank)
    macs, params = layer.cost(choice)
    factored = layer.is_factored(choice)
    module = built.get_submodule(layer.name) if factored else None
    return {
        "name": layer.name, "scheme": "tucker2", "r1": r1, "r2": r2, "rank": r1 * r2, "max_rank": c * f,
        "break_even_rank": c * f + 1, "factored": factored, "choice": choice, "n_choices": layer.max_rank,
        "macs": int(macs), "params": int(params), "original_macs": int(layer.original_compute),
        "original_params": int(layer.original_params), "energy": layer.energy(choice),
        "error": float(layer.errors[choice - 1]),
        "relative_squared_error": 1.0 - layer.energy(choice),
        "hooi_relative_error": float(getattr(module, "relative_error", 0.0)) if factored else 0.0,
        **_layer_shape(info),
    }


def _choice_row(built: nn.Module, layer, choice: int, info, dec) -> dict:
    """A scheme-auto layer's report row: "scheme" is the choice's (spatial, channel, cp, tucker2, or dense for
    a layer left whole), "relative_squared_error" the error the method saw (||W - W_hat||^2 / ||W||^2 of the
    SVD truncation, the CP fit's kept terms, or the HOSVD truncation), "choice" / "n_choices" the option.
    A tucker2 choice's row is _tucker2_row's; a ranked one's "rank" / "max_rank" / "break_even_rank" are its
    scheme's (and a cp one has "cp_refit"); the dense layer's are its first scheme's (the Decomposition's)."""
    scheme = layer.scheme(choice)
    if scheme == "tucker2":
        return _tucker2_row(built, layer, choice, info, dec)
    macs, params = layer.cost(choice)
    row = {"name": layer.name, "scheme": scheme, "factored": layer.is_factored(choice), "choice": choice,
           "n_choices": layer.max_rank, "macs": int(macs), "params": int(params),
           "original_macs": int(layer.original_compute), "original_params": int(layer.original_params),
           "energy": layer.energy(choice), "relative_squared_error": 1.0 - layer.energy(choice)}
    if scheme == "dense":
        top = dec.max_rank if dec is not None else layer.max_rank
        return {**row, "rank": top, "max_rank": top, "break_even_rank": dec.break_even_rank if dec is not None else top,
                **_layer_shape(info)}
    option = next((o for o in (dec.options if dec is not None else ()) if o.scheme == scheme), None)
    rank = int(layer.choice_ranks[choice - 1])
    return {**row, "rank": rank, "max_rank": option.max_rank if option else rank,
            "break_even_rank": option.break_even_rank if option else rank + 1, **_layer_shape(info),
            **(_cp_refit(built, layer.name) if scheme == "cp" else {})}


def _cp_refit(built: nn.Module, name: str) -> dict:
    """{"cp_refit": ...} for a CP-factored layer (edgecomp.factor.build.cp_refitted): the kernel's relative
    error ||K - K_r|| / ||K|| of the kept terms before the refit and after it, and the fits (1 - error)."""
    from edgecomp.factor.cp_conv import CPConv2d

    try:
        module = built.get_submodule(name)
    except AttributeError:
        return {}
    if not isinstance(module, CPConv2d) or not hasattr(module, "relative_error_before"):
        return {}
    before, after = float(module.relative_error_before), float(module.relative_error)
    return {"cp_refit": {"error_before": before, "error_after": after, "fit_before": 1.0 - before,
                         "fit_after": 1.0 - after}}


def _layer_shape(info) -> dict:
    """kind and weight shape [out, in/groups, kh, kw] (conv) or [out, in] (linear) of a traced layer."""
    if info is None:
        return {}
    if info.kind == "linear":
        return {"kind": "linear", "shape": [info.out_channels, info.in_channels]}
    return {"kind": info.kind, "shape": [info.out_channels, info.in_channels // info.groups, *info.kernel_size]}


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
