"""COBLA's loss/gradient oracle: the speed switches leave E(m) and dE/dm unchanged, and the dynamic
sample size (Byrd et al. 2012's norm test) grows the sample only when the gradient is noise."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgecomp.compression.masked import masked_model, sequential_split
from edgecomp.compression.oracle import MaskLossOracle, norm_test
from edgecomp.compression.problem import compute_spectra
from edgecomp.data import ArrayDataset
from edgecomp.graph import analyze_model
from edgecomp.models.zoo.tiny_cnn import tiny_cnn

pytestmark = pytest.mark.usefixtures("single_thread")
SHAPE = (1, 1, 28, 28)
SWITCHES = [{}, {"inference_mode": True}, {"shared_weights": True}, {"cache_sample": True},
            {"inference_mode": True, "shared_weights": True, "cache_sample": True, "cache_upstream": True},
            {"dynamic": True, "initial_sample": 40}]


def _images(n: int, labels: bool = True, seed: int = 0) -> ArrayDataset:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
    return ArrayDataset(x, rng.integers(0, 10, n) if labels else None, name="synthetic", num_classes=10)


def _masked(model: nn.Module, shape=SHAPE, exclude=()):
    cost = analyze_model(model, shape, "spatial")
    spectra = compute_spectra(model, cost)
    order = [lc.name for lc in cost.decomposable if lc.name not in exclude]
    masked, masks = masked_model(model, cost, spectra, order)
    m = np.random.default_rng(1).uniform(0.2, 1.0, masks.value.numel())
    return masked, masks, m


@pytest.fixture(scope="module")
def tiny():
    return tiny_cnn().eval(), _masked(tiny_cnn().eval())


def _reference(masked, masks, data, indices, m, teacher=None):
    """E(m) and dE/dm in one batch, straight from the definition."""
    value = torch.as_tensor(m, dtype=masks.value.dtype).clone().requires_grad_(True)
    masks.value = value
    x, y = data.get_batch(indices)
    logits = masked(x)
    if teacher is None:
        loss = F.cross_entropy(logits, y)
    else:
        with torch.no_grad():
            target = F.log_softmax(teacher(x), dim=1)
        loss = F.kl_div(F.log_softmax(logits, dim=1), target, log_target=True, reduction="sum") / len(x)
    loss.backward()
    masks.value = value.detach()
    return float(loss.detach()), value.grad.double().numpy()


@pytest.mark.parametrize("switches", SWITCHES, ids=lambda s: ",".join(s) or "default")
@pytest.mark.parametrize("labels", [True, False], ids=["labels", "distill"])
def test_switches_keep_loss_and_gradient(tiny, switches, labels):
    teacher, (masked, masks, m) = tiny
    data = _images(300, labels)
    oracle = MaskLossOracle(masked, masks, data, sample=120, batch_size=32, teacher=teacher, **switches)
    ref_loss, ref_grad = _reference(masked, masks, data, oracle.indices(3), m, None if labels else teacher)
    loss_only = oracle.loss(m, 3)  # first: a cache made here must still serve the gradient call
    loss, grad = oracle(m, 3)
    assert loss_only == pytest.approx(loss, rel=1e-6)
    assert loss == pytest.approx(ref_loss, rel=1e-5)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6 * np.abs(ref_grad).max())
    assert oracle.loss(m, 3) == pytest.approx(loss, rel=1e-6)  # again, from the cache where there is one


def test_default_path_is_bitwise_the_same_on_repeat_and_loss_only_equals_grad_path(tiny):
    _, (masked, masks, m) = tiny
    oracle = MaskLossOracle(masked, masks, _images(300), sample=100, batch_size=32)
    loss, grad = oracle(m, 0)
    again, grad2 = oracle(m, 0)
    assert loss == again and np.array_equal(grad, grad2)
    assert oracle.loss(m, 0) == loss
    assert not np.array_equal(oracle.indices(0), oracle.indices(1))


def test_cache_is_bounded_to_one_sub_sample_and_by_bytes(tiny):
    _, (masked, masks, m) = tiny
    data = _images(300)
    oracle = MaskLossOracle(masked, masks, data, sample=64, batch_size=32, cache_sample=True)
    oracle(m, 0)
    oracle(m, 1)
    cached_indices, _, batches = oracle._batch_cache
    assert np.array_equal(cached_indices, oracle.indices(1)) and sum(b.size for b in batches) == 64
    small = MaskLossOracle(masked, masks, data, sample=64, batch_size=32, cache_sample=True, cache_bytes=1000)
    assert small(m, 0)[0] == pytest.approx(oracle(m, 0)[0], rel=1e-6)
    assert small._batch_cache is None


def test_upstream_cache_on_a_sequential_prefix():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                        nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(inplace=True)),
                        nn.Flatten(), nn.Linear(8 * 28 * 28, 10)).eval()
    masked, masks, m = _masked(net, exclude=("0",))  # conv 0 left out of the problem: it runs upstream
    prefix, rest = sequential_split(masked)
    assert len(prefix) == 2 and len(rest) == 4
    data = _images(200)
    plain = MaskLossOracle(masked, masks, data, sample=64, batch_size=16)
    cached = MaskLossOracle(masked, masks, data, sample=64, batch_size=16, cache_upstream=True)
    loss, grad = plain(m, 0)
    for _ in range(2):
        c_loss, c_grad = cached(m, 0)
        assert c_loss == pytest.approx(loss, rel=1e-6)
        np.testing.assert_allclose(c_grad, grad, rtol=1e-5, atol=1e-9)
    assert all(b.upstream and b.inputs.shape[1] == 4 for b in cached._batch_cache[2])


def test_no_upstream_split_for_custom_forward_or_a_masked_first_layer(tiny):
    _, (masked, _, _) = tiny
    assert sequential_split(masked) is None  # TinyCNN has its own forward
    net = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 4)).eval()
    assert sequential_split(_masked(net, (1, 8))[0]) is None  # the first layer is masked: no prefix


class _Dot(nn.Module):
    """loss_i = x_i . m: the per-sample gradient is x_i itself."""

    def __init__(self, masks):
        super().__init__()
        self.masks = masks

    def forward(self, x):
        return x @ self.masks.value


def _dot_oracle(mean: float, noise: float, **kwargs) -> MaskLossOracle:
    from edgecomp.compression.masked import MaskVector

    rng = np.random.default_rng(0)
    x = (mean + noise * rng.standard_normal((4000, 20))).astype(np.float32)
    masks = MaskVector(20)
    return MaskLossOracle(_Dot(masks), masks, ArrayDataset(x, None, name="dot"), sample=2000, batch_size=64,
                          loss_fn=lambda model, batch: model(batch[0]).mean(), dynamic=True,
                          initial_sample=100, **kwargs)


def test_dynamic_sample_grows_when_the_gradient_is_noise():
    # Pure noise: ||g_S||^2 ~ ||sigma^2||_1 / |S|, so the test asks for about |S| / theta^2 each time.
    oracle = _dot_oracle(mean=0.0, noise=1.0, theta=0.5)
    for k in range(4):
        oracle(np.ones(20), k)
    assert not any(t.passed for t in oracle.norm_tests[:3]) and oracle.norm_tests[0].chunks >= 8
    sizes = oracle.sample_sizes
    assert sizes[0] == 100 and 200 < sizes[1] < 1000 and sizes[1] < sizes[2] and sizes[3] == 2000  # capped
    default_theta = _dot_oracle(mean=0.0, noise=1.0)
    for k in range(3):
        default_theta(np.ones(20), k)
    assert default_theta.sample_sizes[0] < default_theta.sample_sizes[1] < default_theta.sample_sizes[2]


def test_dynamic_sample_stays_small_when_the_gradient_is_signal():
    oracle = _dot_oracle(mean=1.0, noise=0.3)
    for k in range(3):
        oracle(np.ones(20), k)
    assert oracle.sample_sizes == [100, 100, 100]
    assert all(t.passed for t in oracle.norm_tests)


def test_norm_test_counts_only_test_indices():
    oracle = _dot_oracle(mean=0.0, noise=1.0)
    oracle.test_indices = np.arange(0)  # nothing to test: an empty gradient is never noise
    oracle(np.ones(20), 0)
    assert oracle.norm_tests[0].passed


def test_trial_points_of_one_iteration_share_their_sample():
    oracle = _dot_oracle(mean=0.0, noise=1.0)
    seen: list[tuple[int, frozenset]] = []
    get_batch = oracle.data.get_batch

    def logged(chunk, k=None):
        seen[-1][1].update(int(i) for i in chunk)
        return get_batch(chunk)

    oracle.data.get_batch = logged
    rng = np.random.default_rng(2)
    for k in range(3):
        for call in ("grad", "loss", "grad"):  # the start point, then trial points of the line search
            seen.append((k, set()))
            m = rng.uniform(0, 1, 20)
            oracle(m, k) if call == "grad" else oracle.loss(m, k)
    for k in range(3):
        samples = [s for j, s in seen if j == k]
        assert all(s == samples[0] for s in samples) and len(samples[0]) == oracle.sample_sizes[k]
    assert seen[0][1] != seen[-1][1]


def test_norm_test_formula():
    same = np.tile([1.0, -2.0], (4, 1))
    assert norm_test(np.array([10, 10, 10, 10]), same, 0.9, 1000).passed  # no spread: no noise
    means = np.array([[1.0], [-1.0]])
    result = norm_test(np.array([5, 5]), means, 0.5, 10**9)
    # g = 0: any spread fails and asks for the whole pool
    assert not result.passed and result.required == 10**9
    means = np.array([[2.0], [0.0]])  # g = 1, sigma^2 = 5 (1 + 1) / 1 = 10
    result = norm_test(np.array([5, 5]), means, 0.5, 10**9)
    assert result.variance == pytest.approx(10 / 10 - 10 / 10**9)
    assert not result.passed and result.required == 40  # 10 / (0.25 * 1)
    assert norm_test(np.array([20, 20]), means, 0.5, 40).passed  # the whole pool has no noise


class _ConvBN(nn.Module):
    """conv-BN-ReLU twice, then linear-BN1d-ReLU-linear, in a custom forward; `leak` lets the second conv's
    output be read again after its BN (then that BN must not be folded)."""

    def __init__(self, leak: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8, affine=False)
        self.fc1, self.bn3, self.fc2 = nn.Linear(8 * 4 * 4, 16), nn.BatchNorm1d(16), nn.Linear(16, 10)
        self.leak = leak
        for bn in (self.bn1, self.bn2, self.bn3):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            if bn.affine:
                nn.init.uniform_(bn.weight, 0.5, 1.5)
                nn.init.uniform_(bn.bias, -0.2, 0.2)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        y = self.conv2(x)
        x = torch.relu(self.bn2(y)) + (y if self.leak else 0)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 4), 1)
        return self.fc2(torch.relu(self.bn3(self.fc1(x))))


@pytest.mark.parametrize("leak", [False, True], ids=["pure", "read-again"])
def test_fold_batchnorm_keeps_loss_and_gradient(leak):
    data = _images(200)
    plain_model, folded_model = _masked(_ConvBN(leak).eval()), _masked(_ConvBN(leak).eval())
    plain = MaskLossOracle(plain_model[0], plain_model[1], data, sample=64, batch_size=32)
    folded = MaskLossOracle(folded_model[0], folded_model[1], data, sample=64, batch_size=32, fold_batchnorm=True,
                            shared_weights=True)
    expected = ["bn1", "bn3"] if leak else ["bn1", "bn2", "bn3"]
    assert folded.folded == expected
    assert sum(isinstance(mod, nn.BatchNorm1d | nn.BatchNorm2d) for mod in folded.model.modules()) == 3 - len(expected)
    m = plain_model[2]
    loss, grad = plain(m, 0)
    f_loss, f_grad = folded(m, 0)
    assert f_loss == pytest.approx(loss, rel=1e-5)
    np.testing.assert_allclose(f_grad, grad, rtol=1e-3, atol=1e-5 * np.abs(grad).max())
