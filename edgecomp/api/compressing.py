"""edgecomp.compress(): factor an in-memory nn.Module under a device's budgets, as `edgecomp compress`."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from torch import nn

from edgecomp.api.budgets import budget_text
from edgecomp.api.data import as_dataset
from edgecomp.api.devices import as_profile
from edgecomp.exporters.onnx_export import input_shapes as as_input_shape
from edgecomp.compression.cobla import CoblaOptions, check_time_budget
from edgecomp.compression.methods import LCOptions
from edgecomp.compression.run import CompressRequest, Compressed, compress_loaded, write_outdir
from edgecomp.errors import UserInputError
from edgecomp.models import LoadedModel
from edgecomp.models.loading import in_memory_label


@dataclass
class CompressionResult:
    """What edgecomp.compress returns.

    model   the factored nn.Module (eval mode), ready for the user's own training loop
    ranks   {layer name: rank} for every layer that was factored
    report  the same dict as the report.json `edgecomp compress` writes
    """

    model: nn.Module
    ranks: dict[str, int]
    report: dict
    _done: Compressed = dataclasses.field(repr=False)
    _eval_data: Any = dataclasses.field(default=None, repr=False)
    _metric: Callable | None = dataclasses.field(default=None, repr=False)
    _weights_sha: str = dataclasses.field(default="", repr=False)

    @property
    def macs(self) -> int:
        return int(self.report["macs"])

    @property
    def params(self) -> int:
        return int(self.report["params"])

    def save(self, outdir: str | os.PathLike, log: Callable[[str], None] = lambda _line: None) -> Path:
        """Write the directory `edgecomp compress -o OUTDIR` writes (model.safetensors, recipe.json,
        model.onnx, report.json, ranks.png), atomically. The current weights of `self.model` are saved,
        so fine-tune first, then save: when the weights changed since compress (your own training), the
        accuracy is measured again on eval_data, and report.json keeps the earlier one as
        accuracy_at_compress. Returns the directory. Under torchrun, call it on every rank: that
        evaluation is shared across the processes, and only rank 0 writes."""
        from edgecomp.compression.run import evaluate_accuracy

        self._done.result.model = self.model
        if _weights_sha(self.model) != self._weights_sha:
            self.report = {**self.report, "accuracy_at_compress": self.report.get("accuracy"),
                           "accuracy": evaluate_accuracy(self.model, self._eval_data, self._metric),
                           "trained_after_compress": True}
            self._done.report = self.report
            self._weights_sha = _weights_sha(self.model)
        report = write_outdir(outdir, self._done, log=log)
        self.report = {k: v for k, v in report.items() if k != "outdir"}
        return Path(outdir)


def _weights_sha(model: nn.Module) -> str:
    from edgecomp.pipeline.fingerprints import module_fingerprint

    return module_fingerprint(model)["sha256"]


def _check_targets(data, method: str, loss_fn, train_fn, finetune_epochs: float) -> None:
    """Targets that are not class labels need the user's own loss: the built-in ones are cross-entropy
    or distillation on class scores."""
    if not getattr(data, "has_targets", False):
        return
    needs = [what for what, missing in (("loss_fn= (COBLA's loss)", method == "cobla" and loss_fn is None),
                                        ("train_fn= (LC's L steps)", method == "lc" and train_fn is None),
                                        ("train_fn= (fine-tuning)", finetune_epochs > 0 and train_fn is None))
             if missing]
    if needs:
        raise UserInputError(f"data has targets that are not class labels (e.g. regression values), and the built-in "
                             f"losses are cross-entropy or distillation on class scores: pass {' and '.join(needs)}")


def _options(kind, value, what: str):
    if value is None:
        return kind()
    if isinstance(value, kind):
        return value
    if isinstance(value, dict):
        try:
            return kind(**value)
        except TypeError as exc:
            fields = ", ".join(f.name for f in dataclasses.fields(kind))
            raise UserInputError(f"{what}: {exc}; the options are {fields}") from exc
    raise UserInputError(f"{what} must be a {kind.__name__} or a dict, got {type(value).__name__}")


def compress(
    model: nn.Module,
    *,
    device: Any = None,
    input_shape: tuple[int, ...] | list[int],
    data: Any = None,
    eval_data: Any = None,
    mac_budget: float | str | None = None,
    memory_budget: float | str | None = None,
    method: str = "cobla",
    scheme: str = "spatial",
    cp_solver: str = "als",
    precision: str | None = None,
    finetune_epochs: float = 0.0,
    finetune_lr: float = 0.01,
    distill: bool = False,
    cobla: CoblaOptions | dict | None = None,
    lc: LCOptions | dict | None = None,
    time_budget_s: float | None = None,
    seed: int = 0,
    loss_fn: Callable | None = None,
    train_fn: Callable | None = None,
    metric: Callable | None = None,
    progress: bool = False,
    log: Callable[[str], None] = lambda _line: None,
    torch_device: str = "auto",
    amp: str = "off",
    workers: int | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    rank_multiple: int | None = None,
) -> CompressionResult:
    """Choose every Conv2d/Linear layer's rank under the budgets and build the factored model.

    model          an nn.Module (not modified; the result holds a new one)
    device         a profile name or alias ("jetson"), a YAML path, or a DeviceProfile; None: only the
                   budgets given here apply
    input_shape    (N, C, H, W) or (N, features): the shape the cost model traces with
    data           training data for COBLA's loss, LC's L steps and fine-tuning: a data spec string
                   ("fashion-mnist:train"), a torch Dataset or a DataLoader (see edgecomp.api.data)
    eval_data      data for the accuracy before/after (same forms); None skips it
    mac_budget     None: the device's; math.inf: unconstrained; a fraction of the original in (0, 1];
                   a number > 1: absolute MACs; or a string as on the command line ("50%", "30M", "none")
    memory_budget  the same for parameter memory (absolute values in bytes at `precision`)
    method         cobla (default), lc, uniform, cptv, pos-greedy, pos-cvx, vbmf, gavish-donoho
    scheme         spatial (default), channel, cp (CP terms fitted by cp_solver "als" or "spals"),
                   tucker2 ((r1, r2) pairs), or auto (each conv takes whichever of these serves the budgets
                   best); tucker2 and auto take every budgeted method (cobla: a Fisher-scored exact knapsack)
    cobla, lc      CoblaOptions / LCOptions (or dicts of their fields)
    time_budget_s  COBLA: wall-clock seconds for the whole rank selection (SQP and rounding; overrides
                   cobla's time_limit_s); when it runs out the best feasible ranks found so far are used
                   and report["time_budget"] says what it cut short
    loss_fn        loss_fn(model, batch) -> scalar tensor: COBLA's loss in place of cross-entropy, for
                   models whose loss is not classification (batch: what the data yields, stacked)
    train_fn       train_fn(model, penalty_fn, steps) -> None: your own training loop, run for LC's
                   L steps (penalty_fn() is LC's quadratic penalty, add it to your loss) and for
                   fine-tuning (penalty_fn() is 0); edgecomp.finetune.callables states the contract
    metric         metric(outputs, targets) -> float, higher is better: the accuracy before/after and
                   fine-tuning's checkpoint choice, where top-1 does not apply
    torch_device   where COBLA's loss/gradient oracle, fine-tuning, distillation, LC's L steps and
                   evaluation run: "auto" (CUDA, else MPS, else CPU), "cpu", "cuda", "cuda:N" or "mps"; one
                   that is not there raises TorchDeviceError (a UserInputError) before any work. The
                   result's model is on the CPU.
    amp            "off" (default), "bf16" or "fp16" (CUDA only): mixed precision in fine-tuning and LC
    workers        DataLoader workers for datasets not held in memory (None: 0 on the CPU, else up to 4)
    checkpoint     path the fine-tuning / LC checkpoints are named after (PATH.finetune.pt, PATH.lc.pt),
                   written every `checkpoint_every` optimizer steps; resume=True continues from them. They
                   are deleted when compress returns. edgecomp.finetune.checkpoint says what they hold.
    rank_multiple  round every factored rank down to a multiple of N (budgets still hold; None: the
                   device profile's runtime.rank_multiple for the precision, if any; 1: no rounding)

    Raises InfeasibleBudgetError (saying the minimum achievable) when no ranks meet the budgets, and
    UserInputError for anything else wrong with the arguments.
    """
    if not isinstance(model, nn.Module):
        raise UserInputError(f"model must be a torch.nn.Module, got {type(model).__name__} "
                             "(the CLI's `edgecomp compress SPEC` takes model specs)")
    check_time_budget(time_budget_s, "time_budget_s")
    from edgecomp.torch_device import resolve_placement

    resolve_placement(torch_device, amp, workers)  # before any work: a missing GPU is refused at once
    if (checkpoint_every is not None or resume) and checkpoint is None:
        raise UserInputError("checkpoint_every= and resume= need checkpoint=PATH (where the checkpoints go)")
    profile = as_profile(device, required=False)
    shape = as_input_shape(input_shape)
    if len(shape) != 1:
        raise UserInputError("compress takes one input shape; models with several inputs can be converted "
                             "(edgecomp.convert) and verified, but not yet compressed")
    req = CompressRequest(
        model=in_memory_label(model), outdir="", input_shape=shape[0], profile=profile,
        mac_budget=budget_text(mac_budget, "mac_budget"), memory_budget=budget_text(memory_budget, "memory_budget"),
        precision=precision, method=method, scheme=scheme, cp_solver=cp_solver,
        data=data if isinstance(data, str) else None, eval_data=eval_data if isinstance(eval_data, str) else None,
        seed=seed, cobla=_options(CoblaOptions, cobla, "cobla"), lc=_options(LCOptions, lc, "lc"),
        finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, distill=distill, progress=progress,
        loss_fn=loss_fn, finetune_fn=train_fn, metric=metric, torch_device=torch_device, amp=amp, workers=workers,
        checkpoint=None if checkpoint is None else os.fspath(checkpoint), checkpoint_every=checkpoint_every,
        resume=resume, rank_multiple=rank_multiple,
    )
    if time_budget_s is not None:
        req.cobla = dataclasses.replace(req.cobla, time_limit_s=float(time_budget_s))
    if train_fn is not None and req.lc.train_fn is None:
        req.lc = dataclasses.replace(req.lc, train_fn=train_fn)
    if profile is None and req.mac_budget is None and req.memory_budget is None:
        raise UserInputError("no budget: pass device=... or mac_budget=/memory_budget=")
    train, test = as_dataset(data, "data"), as_dataset(eval_data, "eval_data")
    _check_targets(train, method, loss_fn, train_fn, finetune_epochs)
    was_training = model.training
    loaded = LoadedModel(module=model.eval(), spec=req.model, input_shape=shape[0])
    try:
        done = compress_loaded(req, loaded, train, test, log=log)
    finally:
        model.train(was_training)
    if done.checkpoint is not None:
        done.checkpoint.remove()
    return CompressionResult(model=done.result.model, ranks=dict(done.result.factored), report=done.report, _done=done,
                             _eval_data=test, _metric=metric, _weights_sha=_weights_sha(done.result.model))
