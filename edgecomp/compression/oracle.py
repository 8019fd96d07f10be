"""The loss/gradient oracle COBLA's solver calls: E(m) and dE/dm on a random sub-sample of the data.

Each SQP iteration k draws a fresh, seeded sub-sample (default 5% of the training data, as in
COBLA's sub-sampled gradients); the line search of that iteration reuses the same sub-sample so its
loss values are comparable. With labels the loss is cross-entropy; without labels it is the KL
divergence from the original model's predictions (self-distillation), so no labels are needed.
A user's `loss_fn(model, batch)` (the mean loss of one batch; edgecomp.finetune.callables) replaces
both: E(m) = sum over batches B of loss_fn(masked model, B) * |B| / n, for any data whose batches
the dataset's get_batch (or torch's default_collate of its items) makes.

Less work per call (constructor switches, all off by default; each leaves E and dE/dm unchanged up
to float rounding; benchmarks/bench_oracle.py measures them):
* inference_mode: loss-only calls run under torch.inference_mode instead of torch.no_grad.
* shared_weights: each masked layer's W(m) is built once per call, not once per batch
  (edgecomp.compression.masked.SharedWeights).
* cache_sample: the batches of the current sub-sample (and, for distillation, the teacher's
  log-probabilities) are kept as tensors until another sub-sample is evaluated, so the trial points
  of a line search and the loss-only calls on the same indices do not collate or run the teacher
  again. Bounded by cache_bytes (a larger sub-sample streams as without the cache); never the
  whole dataset unless the sub-sample is. The built-in losses only: a user's loss_fn may change
  its batch, so its batches are always made afresh.
* fold_batchnorm: eval-mode BatchNorms that read a masked layer's output are folded into it
  (masked.fold_batchnorm, verified on a batch of the data; `masked` is changed in place), so their
  forward and backward passes disappear. The built-in losses only (the check runs the model on x).
* cache_upstream: as cache_sample, and the cached inputs are the output of the layers upstream of
  the first masked layer, when masked.sequential_split can cut them off safely (a plain
  nn.Sequential model); otherwise the same as cache_sample.

Dynamic sample size (dynamic=True; Byrd, Chin, Nocedal & Wu 2012, "Sample size selection in
optimization methods for machine learning", Math. Program. 134, section 3). Iteration k uses |S_k|
samples, starting at `initial_sample` and never above `sample`. The step of iteration k follows
g = grad E_{S_k}(m_k); the norm test asks that the noise of g be small against g itself:

    E ||g - grad E(m_k)||^2 = ||Var_S(grad l)||_1 / |S_k|  <=  theta^2 ||g||^2,

and the paper's practical form, eq. (3.9), replaces the population variance by the sample
variance on S_k. Here the variance comes from the K chunk means gbar_B (one backward pass per
chunk of b_B samples; chunks of at most |S_k| / variance_chunks samples, so K >= variance_chunks):
Var(gbar_B) = sigma^2 / b_B, hence the unbiased per-sample variance estimate
    sigma_j^2 = sum_B b_B (gbar_Bj - g_j)^2 / (K - 1),
and, sampling without replacement from a pool of N, Var(g) = ||sigma^2||_1 (1/|S_k| - 1/N) (the
finite-population factor, so the full pool has no noise; the paper's 1/|S_k| for N -> inf).
If the test fails, iteration k+1 uses the sample size at which it would hold, as in the paper:
    |S_{k+1}| = ceil(||sigma^2||_1 / (theta^2 ||g||^2 + ||sigma^2||_1 / N)),
capped at `sample`; sizes never shrink. The test runs on the first gradient of each iteration
(the one at m_k that sets the direction); every later call of iteration k (trial points, loss-only
calls) uses the same S_k, so the L-BFGS pairs compare gradients on one sample. `test_indices`
(default: all masks) restricts the norms to the masks the solver moves (fixed masks only shift the
budgets, and their gradients would inflate ||g||). `sample_sizes` records |S_k| per iteration and
`norm_tests` each test's numbers.

Many processes (edgecomp.distributed, `dist` with world_size W > 1). The SQP and the rounding run on
rank 0 only; the other ranks only evaluate. Each evaluation rank 0 starts sends them the request
(the masks m, the sample's indices, grad or not: `broadcast_object`); each rank evaluates the chunks
k = rank, rank + W, ... of the single-process batching of the sample (`shard_chunks`: the very
batches one process would run), sums its losses (each divided by the *total* count n) and its
mask-gradient, and one float64 all-reduce sums [E, dE/dm] (with the norm test, also each chunk's mean
gradient in its row of a K x n matrix). So E(m) and dE/dm equal the single-process values up to the
order of the final float sums, and every rank holds the same numbers. Why rank 0 alone decides rather
than every rank running the same deterministic SQP on identical numbers: the SQP's time limit, its
"allocation stable" rule and the rounding's deadline read the clock, which no two processes read
alike; one rank deciding and broadcasting the masks is the arrangement in which the ranks cannot
diverge. `serve()` is the other ranks' loop; rank 0 ends it with `finish(payload)` (the payload is
what serve() returns on every rank). BatchNorms stay in eval mode (masked_model), so every rank
computes with the same running statistics and no batch statistic crosses ranks.

Device (edgecomp.torch_device). The oracle computes on the device of the masked model it is given
(run_cobla places it, and the teacher, on the run's --torch-device): each batch and the mask vector
are moved there, and the gradient comes back to the CPU as a float64 numpy vector; the SQP, the
rounding and the cost model stay on the CPU in float64. The sub-samples are drawn by numpy from the
seed and the iteration number, so they are the same on every device. Mixed precision (--amp) is not
applied here, on purpose: the SQP steers on dE/dm and on differences of E between nearby mask
vectors (the line search, the rounding candidates), which are small against E itself; bf16's 8-bit
mantissa (relative error ~4e-3) and fp16's range would drown them, and the masks' gradients are
sums over many tiny per-sample contributions.
"""

from __future__ import annotations

import itertools
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from edgecomp.compression.masked import MaskVector, SharedWeights, masked_layers, sequential_split
from edgecomp.compression.masked import fold_batchnorm as fold_batchnorm_into
from edgecomp.distributed import Dist, all_reduce_sum, broadcast_object, current, shard_chunks
from edgecomp.distributed.channel import collective
from edgecomp.errors import UserInputError
from edgecomp.finetune.callables import LossFn, check_callable
from edgecomp.torch_device import module_device, moved_to


@dataclass
class _Batch:
    inputs: Any  # x; the upstream layers' output (upstream=True); the user's batch (loss_fn)
    labels: torch.Tensor | None
    target: torch.Tensor | None  # the teacher's log-probabilities, when cached
    size: int
    upstream: bool = False


@dataclass(frozen=True)
class _Request:  # rank 0 -> the other ranks: evaluate this (MaskLossOracle._evaluate's arguments)
    m: np.ndarray
    indices: np.ndarray
    grad: bool
    size: int
    per_chunk: bool


@dataclass(frozen=True)
class _Finish:  # rank 0 -> the other ranks: stop serving, return `payload`
    payload: Any


@dataclass
class NormTest:
    """One norm test (module docstring): variance = ||Var(g)||_1, grad_norm2 = ||g||^2."""

    size: int
    chunks: int
    variance: float
    grad_norm2: float
    passed: bool
    required: int  # the sample size at which the test would hold


def batch_to(value: Any, device: torch.device) -> Any:
    """A batch with its tensors on `device` (also inside tuples, named tuples, lists and dicts, as a
    user's loss_fn may get them); anything else as it is."""
    from edgecomp.metrics import map_tensors

    return map_tensors(lambda tensor: tensor.to(device), value)


def sample_count(sample: float | int, n: int) -> int:
    """A fraction (0, 1] of n or a count, as a number of samples in [1, n]; 1.0 is all n."""
    if sample == 1.0:
        return n
    return int(min(n, max(1, round(sample * n) if sample < 1 else sample)))


def norm_test(sizes: np.ndarray, means: np.ndarray, theta: float, population: int) -> NormTest:
    """The norm test on chunk mean gradients `means` (K x n) of chunks with `sizes` samples (module docstring)."""
    sizes = np.asarray(sizes, dtype=np.float64)
    s, k = float(sizes.sum()), len(sizes)
    g = sizes @ means / s
    grad_norm2 = float(g @ g)
    sigma2 = float(np.sum(sizes[:, None] * (means - g) ** 2)) / (k - 1) if k > 1 else 0.0
    variance = sigma2 * max(0.0, 1.0 / s - 1.0 / population)
    passed = variance <= theta**2 * grad_norm2
    if passed:
        required = int(s)
    elif grad_norm2 == 0.0:
        required = population
    else:
        required = math.ceil(sigma2 / (theta**2 * grad_norm2 + sigma2 / population))
    return NormTest(int(s), k, variance, grad_norm2, bool(passed), min(population, max(int(s), required)))


class MaskLossOracle:
    def __init__(
        self,
        masked: nn.Module,
        masks: MaskVector,
        data,
        *,
        sample: float | int = 0.05,
        batch_size: int = 256,
        seed: int = 0,
        teacher: nn.Module | None = None,
        indices: np.ndarray | None = None,
        loss_fn: LossFn | None = None,
        inference_mode: bool = False,
        shared_weights: bool = False,
        cache_sample: bool = False,
        cache_upstream: bool = False,
        cache_bytes: int = 256 * 2**20,
        fold_batchnorm: bool = False,
        dynamic: bool = False,
        initial_sample: float | int = 0.01,
        theta: float = 0.9,
        variance_chunks: int = 8,
        dist: Dist | None = None,
    ):
        """sample: a fraction (0, 1] of the data or a number of samples; 1.0 = full batch (with
        dynamic=True the largest sample; initial_sample the first). dist: the processes that share
        the evaluations (default: edgecomp.distributed.current()). Other switches: module docstring."""
        check_callable(loss_fn, "loss_fn")
        if not 0 < theta:
            raise ValueError("theta must be positive")
        if variance_chunks < 2:
            raise ValueError("variance_chunks must be >= 2")
        self.loss_fn = loss_fn
        self.model = masked
        self.masks = masks
        self.data = data
        self.pool = np.arange(len(data)) if indices is None else np.asarray(indices)
        n = len(self.pool)
        self.n_sample = sample_count(sample, n)
        self.batch_size = batch_size
        self.seed = seed
        self.teacher = None if (loss_fn is not None or data.has_labels) else teacher
        if loss_fn is None and not data.has_labels and teacher is None:
            raise ValueError("unlabeled data needs a teacher model for the distillation loss")
        self.inference_mode = inference_mode
        self.device = module_device(masked)
        self.folded: list[str] = []
        if fold_batchnorm and loss_fn is None and n:
            self.folded = self._fold(data.get_batch(self.pool[: min(n, 32)])[0])
        self.layers = masked_layers(masked) if shared_weights else None
        self.cache_bytes = cache_bytes if (cache_sample or cache_upstream) and loss_fn is None else 0
        self.split = sequential_split(masked) if cache_upstream and loss_fn is None else None
        self.dynamic = dynamic
        self.theta = theta
        self.variance_chunks = variance_chunks
        self.test_indices: np.ndarray | None = None
        self._next_size = min(self.n_sample, sample_count(initial_sample, n)) if dynamic else self.n_sample
        self._sizes: dict[int, int] = {}
        self._tested: set[int] = set()
        self.norm_tests: list[NormTest] = []
        self._cache: tuple[int, np.ndarray] | None = None
        self._batch_cache: tuple[np.ndarray, int, list[_Batch]] | None = None
        self.seconds = 0.0
        self.calls = 0
        self.dist = dist or current()

    def _fold(self, example: torch.Tensor) -> list[str]:
        """fold_batchnorm on the CPU (its probe masks are CPU tensors), then back on the model's device."""
        cpu = torch.device("cpu")
        on_device = self.masks.value
        self.masks.value = on_device.to(cpu)
        try:
            with moved_to(cpu, self.model):
                return fold_batchnorm_into(self.model, example.to(cpu))
        finally:
            self.masks.value = on_device

    @property
    def sample_sizes(self) -> list[int]:
        """|S_k| of every iteration k evaluated so far, in iteration order."""
        return [self._sizes[k] for k in sorted(self._sizes)]

    def sample_size(self, iteration: int) -> int:
        return self._sizes.setdefault(iteration, self._next_size)

    def indices(self, iteration: int) -> np.ndarray:
        size = self.sample_size(iteration)
        if size == len(self.pool):
            return self.pool
        if self._cache is None or self._cache[0] != iteration or len(self._cache[1]) != size:
            rng = np.random.default_rng([self.seed, iteration])
            self._cache = (iteration, np.sort(rng.choice(self.pool, size, replace=False)))
        return self._cache[1]

    def _chunk(self, n: int) -> int:
        if not self.dynamic:
            return self.batch_size
        return max(1, min(self.batch_size, math.ceil(n / self.variance_chunks)))

    # -- batches -------------------------------------------------------------------------------

    def _collate(self, chunk: np.ndarray) -> Any:
        if hasattr(self.data, "get_batch"):
            return self.data.get_batch(chunk)
        return default_collate([self.data[int(i)] for i in chunk])

    def _stream(self, indices: np.ndarray, size: int) -> Iterator[_Batch]:
        for i in range(0, len(indices), size):
            chunk = indices[i : i + size]
            if self.loss_fn is not None:
                yield _Batch(batch_to(self._collate(chunk), self.device), None, None, len(chunk))
            else:
                x, y = self.data.get_batch(chunk)
                yield _Batch(x.to(self.device), None if y is None else y.to(self.device), None, len(chunk))

    def _batches(self, indices: np.ndarray, size: int) -> Iterable[_Batch]:
        """The batches of `indices`: cached when enabled and within cache_bytes, else streamed.
        Called outside inference mode, so cached tensors stay usable by later gradient calls."""
        if not self.cache_bytes:
            return self._stream(indices, size)
        cached = self._batch_cache
        if cached is not None and cached[1] == size and np.array_equal(cached[0], indices):
            return cached[2]
        self._batch_cache = None  # one sub-sample at a time
        stream = self._stream(indices, size)
        out, used = [], 0
        with torch.no_grad():
            for batch in stream:
                if self.teacher is not None:
                    batch.target = F.log_softmax(self.teacher(batch.inputs), dim=1)
                if self.split is not None:
                    batch.inputs, batch.upstream = self.split[0](batch.inputs), True
                out.append(batch)
                used += sum(t.element_size() * t.numel() for t in (batch.inputs, batch.labels, batch.target)
                            if t is not None)
                if used * len(indices) / sum(b.size for b in out) > self.cache_bytes:
                    return itertools.chain(out, stream)  # too large to keep: stream the rest
        self._batch_cache = (indices.copy(), size, out)
        return out

    # -- losses --------------------------------------------------------------------------------

    def _loss(self, batch: _Batch) -> torch.Tensor:
        """Summed cross-entropy or distillation loss of one batch."""
        if batch.upstream:
            logits = self.split[1](batch.inputs.clone())
        else:
            logits = self.model(batch.inputs.clone() if self.cache_bytes else batch.inputs)
        if self.teacher is None:
            return F.cross_entropy(logits, batch.labels, reduction="sum")
        target = batch.target
        if target is None:
            with torch.no_grad():
                target = F.log_softmax(self.teacher(batch.inputs), dim=1)
        return F.kl_div(F.log_softmax(logits, dim=1), target, log_target=True, reduction="sum")

    def _user_loss(self, batch: Any, grad: bool) -> torch.Tensor:
        loss = self.loss_fn(self.model, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise UserInputError(f"loss_fn must return a scalar tensor (the batch's mean loss), got "
                                 f"{type(loss).__name__}{tuple(loss.shape) if isinstance(loss, torch.Tensor) else ''}")
        if grad and not loss.requires_grad:
            raise UserInputError("loss_fn's loss does not depend on the model's outputs (no gradient): compute it "
                                 "from model(...) on the batch, without torch.no_grad() or .detach()")
        return loss.reshape(())

    # -- evaluation ----------------------------------------------------------------------------

    def evaluate(self, m: np.ndarray, indices: np.ndarray, grad: bool) -> tuple[float, np.ndarray | None]:
        """Mean loss over `indices` (and its gradient with respect to the flat masks)."""
        total, g, _ = self._evaluate(m, indices, grad, self.batch_size, False)
        return total, g

    def _evaluate(self, m: np.ndarray, indices: np.ndarray, grad: bool, size: int,
                  per_chunk: bool) -> tuple[float, np.ndarray | None, list[tuple[int, np.ndarray]]]:
        """(mean loss, gradient, [(chunk size, chunk mean gradient)] when per_chunk); with several
        processes rank 0 asks the others to evaluate their shares first (module docstring)."""
        if not self.dist.active:
            return self._evaluate_local(m, indices, grad, size, per_chunk)
        if not self.dist.is_main:
            raise RuntimeError("only rank 0 starts evaluations; the other ranks serve() them")
        with collective():
            broadcast_object(_Request(np.asarray(m), np.asarray(indices), grad, size, per_chunk), self.dist)
            return self._evaluate_shared(m, indices, grad, size, per_chunk)

    def serve(self) -> Any:
        """The other ranks' loop: evaluate rank 0's requests until it calls finish(payload); returns payload."""
        while True:
            message = broadcast_object(None, self.dist)
            if isinstance(message, _Finish):
                return message.payload
            self._evaluate_shared(message.m, message.indices, message.grad, message.size, message.per_chunk)

    def finish(self, payload: Any = None) -> Any:
        """Rank 0: end the other ranks' serve() loops, which return `payload` (a picklable value)."""
        if self.dist.active:
            broadcast_object(_Finish(payload), self.dist)
        return payload

    def _evaluate_shared(self, m: np.ndarray, indices: np.ndarray, grad: bool, size: int,
                         per_chunk: bool) -> tuple[float, np.ndarray | None, list[tuple[int, np.ndarray]]]:
        """This rank's chunks of the sample (shard_chunks), then one all-reduce of [E, dE/dm, chunk means]."""
        dist = self.dist
        indices = np.asarray(indices)
        chunks = shard_chunks(len(indices), size, dist.rank, dist.world_size)
        mine = np.concatenate([indices[a:b] for a, b in chunks]) if chunks else indices[:0]
        total, g, parts = self._evaluate_local(m, mine, grad, size, per_chunk, n=len(indices))
        n_masks = self.masks.value.numel()
        n_chunks = math.ceil(len(indices) / size)
        vector = [np.array([total])]
        if grad:
            vector.append(g)
            if per_chunk:
                rows = np.zeros((n_chunks, n_masks))
                for (a, _), (_, mean) in zip(chunks, parts):
                    rows[a // size] = mean
                vector.append(rows.reshape(-1))
        summed = all_reduce_sum(np.concatenate(vector), dist)
        total = float(summed[0])
        if not grad:
            return total, None, []
        g = summed[1 : 1 + n_masks]
        if per_chunk:
            rows = summed[1 + n_masks :].reshape(n_chunks, n_masks)
            parts = [(min(size, len(indices) - k * size), rows[k]) for k in range(n_chunks)]
        return total, g, parts

    def _evaluate_local(self, m: np.ndarray, indices: np.ndarray, grad: bool, size: int, per_chunk: bool,
                        n: int | None = None) -> tuple[float, np.ndarray | None, list[tuple[int, np.ndarray]]]:
        """This process's part: losses over `indices`, each divided by n (default len(indices))."""
        start = time.perf_counter()
        value = torch.as_tensor(np.asarray(m), dtype=self.masks.value.dtype, device=self.device)
        value = value.clone().requires_grad_(grad)
        self.masks.value = value
        n = len(indices) if n is None else n
        batches = self._batches(indices, size)
        # E summed in float64 on the device, read once at the end (no host sync per batch); the same
        # float64 sums, in the same order, as adding each batch's float(loss) on the host.
        total_t = torch.zeros((), dtype=torch.float64, device=self.device)
        parts = []
        mode = torch.inference_mode() if (self.inference_mode and not grad) else torch.set_grad_enabled(grad)
        with mode:
            shared = SharedWeights(self.layers, self.masks, grad) if self.layers is not None else None
            with shared or nullcontext():
                seen = torch.zeros_like(value)
                for batch in batches:
                    if self.loss_fn is None:
                        loss = self._loss(batch) / n
                    else:
                        loss = self._user_loss(batch.inputs, grad) * (batch.size / n)
                    if grad:
                        loss.backward()
                        if per_chunk:
                            part = self._pull(shared, value, seen)
                            parts.append((batch.size, part.double().cpu().numpy() * (n / batch.size)))
                    total_t += loss.detach().double()
        g, total = None, float(total_t)
        if grad:
            if shared is None:
                g_t = value.grad if value.grad is not None else torch.zeros_like(value)
            else:
                g_t = seen if per_chunk else shared.pull()
            g = g_t.detach().double().cpu().numpy().copy()
        self.masks.value = value.detach()
        self.seconds += time.perf_counter() - start
        self.calls += 1
        return total, g, parts

    @staticmethod
    def _pull(shared: SharedWeights | None, value: torch.Tensor, seen: torch.Tensor) -> torch.Tensor:
        """dE/dm added by the last backward pass; `seen` (the running sum) is updated in place."""
        if shared is not None:
            part = shared.pull()
        else:
            current = value.grad if value.grad is not None else torch.zeros_like(value)
            part = current - seen
        seen += part
        return part

    def __call__(self, m: np.ndarray, iteration: int) -> tuple[float, np.ndarray]:
        indices = self.indices(iteration)
        test = self.dynamic and iteration not in self._tested
        total, g, parts = self._evaluate(m, indices, True, self._chunk(len(indices)), test)
        if test:
            self._tested.add(iteration)
            self._grow(parts)
        return total, g

    def loss(self, m: np.ndarray, iteration: int) -> float:
        indices = self.indices(iteration)
        return self._evaluate(m, indices, False, self._chunk(len(indices)), False)[0]

    def _grow(self, parts: list[tuple[int, np.ndarray]]) -> None:
        sizes = np.array([size for size, _ in parts])
        means = np.stack([mean for _, mean in parts])
        if self.test_indices is not None:
            means = means[:, self.test_indices]
        result = norm_test(sizes, means, self.theta, len(self.pool))
        self.norm_tests.append(result)
        self._next_size = min(self.n_sample, max(self._next_size, result.required))
