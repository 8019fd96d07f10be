"""Cost model: MACs and parameter memory per layer, and the exact per-rank cost of each factored form.

Per sample, a Conv2d with f output channels, c input channels, groups g and a kh x kw kernel costs
    MACs = H_out * W_out * f * (c/g) * kh * kw,      params = f * (c/g) * kh * kw (+ f bias)
and a Linear(in, out) costs in*out MACs per output position.

Factored forms keep r components; their cost is exactly linear in r (COBLA, Li & Shi, eq. 3-4):
  spatial (Tai et al. 2016): (kh x 1, stride (sh,1), pad (ph,0)) c -> r, then (1 x kw, stride (1,sw),
      pad (0,pw)) r -> f. The first conv's output is H_out x W_in, so
        MACs/rank = c*kh*H_out*W_in + f*kw*H_out*W_out,   params/rank = c*kh + f*kw
  channel (Zhang et al. 2016): (kh x kw) c -> r then (1 x 1) r -> f:
        MACs/rank = (c*kh*kw + f) * H_out*W_out,         params/rank = c*kh*kw + f
  linear (Linear, and 1x1 convs): in -> r -> out:
        MACs/rank = positions * (in + out),              params/rank = in + out
  cp (Lebedev et al. 2015; edgecomp.factor.cp_conv): 1x1 c -> r, depthwise kh x 1, depthwise 1 x kw,
      1x1 r -> f; per rank-1 term (edgecomp.factor.cp_conv.cp_costs, summed over calls):
        MACs/rank = c*H_in*W_in + kh*H_out*W_in + kw*H_out*W_out + f*H_out*W_out,
        params/rank = c + kh + kw + f
      CP has no matricization rank, so its largest rank is the break-even rank itself (the rank at
      which the layer stays unfactored), capped at min(f*c, c*kh*kw, f*kh*kw) (the largest rank of
      the kernel's three matricizations that pair one output/input mode with the kernel window) so
      that the fit at that rank stays tractable; see `cp_rank_bound`.
  tucker2 (Kim et al. 2016; edgecomp.factor.tucker_conv): 1x1 c -> r1, kh x kw r1 -> r2, 1x1 r2 -> f,
      bilinear in (r1, r2) (edgecomp.factor.tucker.tucker2_costs, summed over calls):
        MACs = c*r1*H_in*W_in + (r1*r2*kh*kw + r2*f)*H_out*W_out,   params = c*r1 + r1*r2*kh*kw + r2*f
      It has no per-rank cost: its Decomposition records the (1, 1) pair's cost as macs/params_per_rank
      and the layer's choices ((r1, r2) pairs and the dense layer, which need the weights) are made by
      edgecomp.compression.problem (`tucker2_layer_costs` gives any pair's exact cost).
  auto: every conv layer that is not 1x1 may take spatial, channel, cp or tucker2 (`auto_schemes`; spatial
      is left out for kx1 / 1xk kernels, where it is channel), whichever serves the budget best; 1x1 convs
      and Linear layers take their linear SVD. Its Decomposition lists each scheme's own Decomposition
      (`options`; a scheme whose cheapest form is no cheaper than the layer is left out) and copies the
      per-rank fields of the first of them (for displays); the layer's choices (the Pareto frontier of
      the union of every option's choices, which need the weights) are made by edgecomp.compression.problem.
The bias stays on the second factor (a constant f params). The break-even rank is the smallest rank
at which the factored layer is no cheaper than the original in MACs or in parameters; a layer kept
at or above it stays unfactored (see edgecomp.ranks.problem.LayerSpectrum).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from edgecomp.graph.trace import LayerInfo, trace_layers
from edgecomp.ranks.problem import LayerSpectrum

SCHEMES = ("spatial", "channel", "cp", "tucker2", "auto")
AUTO_SCHEMES = ("spatial", "channel", "cp", "tucker2")  # what --scheme auto weighs for each conv layer
CHOICE_SCHEMES = ("tucker2", "auto")  # schemes whose layers are explicit choices (edgecomp.ranks.choices)
BYTES_PER_PARAM = {"fp32": 4, "fp16": 2, "int8": 1}


@dataclass(frozen=True)
class Decomposition:
    """How one layer factors: its matricization and exact per-rank costs."""

    scheme: str  # "spatial" | "channel" | "linear" | "cp" | "tucker2" | "auto"
    matrix_shape: tuple[int, int]  # (rows, cols) of the matricization (cp: the channel one, f x c*kh*kw)
    macs_per_rank: int
    params_per_rank: int
    bias_params: int
    original_macs: int
    original_params: int
    rank_cap: int | None = None  # cp: the largest rank fitted (cp_rank_bound); None: min(matrix_shape)
    options: tuple["Decomposition", ...] = ()  # auto: the Decomposition of every scheme it weighs

    @property
    def max_rank(self) -> int:
        return min(self.matrix_shape) if self.rank_cap is None else int(self.rank_cap)

    def spectrum(self, name: str, sigma) -> LayerSpectrum:
        return LayerSpectrum(
            name=name,
            sigma=sigma,
            compute_per_rank=float(self.macs_per_rank),
            params_per_rank=float(self.params_per_rank),
            original_compute=float(self.original_macs),
            original_params=float(self.original_params),
            bias_params=float(self.bias_params),
            shape=self.matrix_shape,
        )

    @property
    def break_even_rank(self) -> int:
        # Same rule as LayerSpectrum.break_even_rank, without needing the spectrum.
        r_mac = -(-self.original_macs // self.macs_per_rank)
        r_par = -(-(self.original_params - self.bias_params) // self.params_per_rank)
        return int(max(1, min(r_mac, r_par, self.max_rank + 1)))


def cp_tractable_rank(f: int, c: int, kh: int, kw: int) -> int:
    """min(f*c, c*kh*kw, f*kh*kw): the cap on a CP layer's largest rank (a bound on the rank a fit of
    an f x c x kh x kw kernel needs in practice, and what keeps ALS at that rank tractable)."""
    return int(min(f * c, c * kh * kw, f * kh * kw))


def cp_rank_bound(macs_per_rank: int, params_per_rank: int, original_macs: int, weight_params: int,
                  tractable: int) -> int:
    """The largest CP rank worth fitting: the break-even rank min(ceil(MACs / MACs per term),
    ceil(weight params / params per term)) -- the smallest rank no cheaper than the dense layer, which the
    rank problem reads as "left unfactored" -- capped at `tractable` (cp_tractable_rank)."""
    r_mac = -(-original_macs // macs_per_rank)
    r_par = -(-weight_params // params_per_rank)
    return int(max(1, min(r_mac, r_par, tractable)))


def layer_scheme(layer: LayerInfo, scheme: str) -> str:
    """The scheme actually applied: pointwise layers always use 'linear'; under 'spatial', kx1 / 1xk
    kernels use 'channel'; under 'cp' / 'tucker2' / 'auto' every other (ungrouped) conv is 'cp' / 'tucker2' /
    'auto' (whose scheme is chosen per layer among `auto_schemes`)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; choose one of {SCHEMES}")
    if layer.is_pointwise:
        return "linear"
    if scheme == "spatial" and 1 in layer.kernel_size:
        return "channel"
    return scheme


def auto_schemes(layer: LayerInfo) -> tuple[str, ...]:
    """The schemes --scheme auto weighs for `layer`: ("linear",) for a Linear or 1x1 conv; ("channel", "cp",
    "tucker2") for a kx1 / 1xk kernel (where spatial is channel); else all of AUTO_SCHEMES."""
    if layer.is_pointwise:
        return ("linear",)
    if 1 in layer.kernel_size:
        return ("channel", "cp", "tucker2")
    return AUTO_SCHEMES


def decompose_layer(layer: LayerInfo, scheme: str) -> tuple[Decomposition | None, str]:
    """The layer's decomposition under `scheme`, or (None, reason it is left alone)."""
    if layer.groups != 1:
        kind = "depthwise" if layer.groups == layer.in_channels else "grouped"
        return None, f"{kind} conv (groups={layer.groups}) is left alone"
    if layer.padding_mode != "zeros":
        return None, f"padding_mode={layer.padding_mode!r} is not supported by the factored convs"
    applied = layer_scheme(layer, scheme)
    c, f = layer.in_channels, layer.out_channels
    kh, kw = layer.kernel_size
    if applied == "spatial":
        shape = (c * kh, f * kw)
        macs = sum(c * kh * call.out_shape[1] * call.in_shape[2] + f * kw * layer.output_positions(call) for call in layer.calls)
        params = c * kh + f * kw
    elif applied == "channel":
        shape = (f, c * kh * kw)
        macs = sum((c * kh * kw + f) * layer.output_positions(call) for call in layer.calls)
        params = c * kh * kw + f
    elif applied == "cp":
        return _cp_decomposition(layer)
    elif applied == "tucker2":
        return _tucker2_decomposition(layer)
    elif applied == "auto":
        return _auto_decomposition(layer)
    else:
        shape = (f, c)
        macs = sum((c + f) * layer.output_positions(call) for call in layer.calls)
        params = c + f
    dec = Decomposition(
        scheme=applied,
        matrix_shape=shape,
        macs_per_rank=int(macs),
        params_per_rank=int(params),
        bias_params=f if layer.bias else 0,
        original_macs=int(layer.macs),
        original_params=int(layer.params),
    )
    if dec.break_even_rank <= 1:
        return None, "too small to gain: even rank 1 is no cheaper than the original layer"
    return dec, ""


def _cp_decomposition(layer: LayerInfo) -> tuple[Decomposition | None, str]:
    from edgecomp.factor.cp_conv import cp_costs  # lazy: edgecomp.factor imports this module

    c, f = layer.in_channels, layer.out_channels
    kh, kw = layer.kernel_size
    macs = params = 0
    for call in layer.calls:
        macs_call, params = cp_costs(f, c, kh, kw, call.in_shape[1], call.in_shape[2], layer.stride, layer.padding,
                                     layer.dilation)
        macs += macs_call
    cap = cp_rank_bound(macs, params, layer.macs, layer.weight_params, cp_tractable_rank(f, c, kh, kw))
    dec = Decomposition("cp", (f, c * kh * kw), int(macs), int(params), f if layer.bias else 0, int(layer.macs),
                        int(layer.params), rank_cap=cap)
    if dec.break_even_rank <= 1:
        return None, "too small to gain: even rank 1 is no cheaper than the original layer"
    return dec, ""


def tucker2_layer_costs(layer: LayerInfo, r1, r2) -> tuple:
    """Exact (MACs, params) of `layer` as a Tucker-2 conv at ranks (r1, r2) (broadcastable int arrays or
    ints), MACs summed over the layer's calls, params with the bias (on the last 1x1 conv)."""
    from edgecomp.factor.tucker import tucker2_costs  # lazy: edgecomp.factor imports this module

    c, f = layer.in_channels, layer.out_channels
    kh, kw = layer.kernel_size
    macs = params = 0
    for call in layer.calls:
        macs_call, params = tucker2_costs(f, c, kh, kw, call.in_shape[1], call.in_shape[2], layer.stride,
                                          layer.padding, layer.dilation, r1, r2, bias=layer.bias)
        macs = macs + macs_call
    return macs, params


def _tucker2_decomposition(layer: LayerInfo) -> tuple[Decomposition | None, str]:
    c, f = layer.in_channels, layer.out_channels
    macs, params = tucker2_layer_costs(layer, 1, 1)
    if macs >= layer.macs and params >= layer.params:
        return None, "too small to gain: even ranks (1, 1) are no cheaper than the original layer"
    bias = f if layer.bias else 0
    dec = Decomposition("tucker2", (f, c), int(macs), int(params - bias), bias, int(layer.macs), int(layer.params))
    return dec, ""


def _auto_decomposition(layer: LayerInfo) -> tuple[Decomposition | None, str]:
    options = tuple(dec for dec, _ in (decompose_layer(layer, s) for s in auto_schemes(layer)) if dec is not None)
    if not options:
        return None, "too small to gain: no scheme's cheapest form is cheaper than the original layer"
    first = options[0]
    dec = Decomposition("auto", first.matrix_shape, first.macs_per_rank, first.params_per_rank, first.bias_params,
                        first.original_macs, first.original_params, rank_cap=first.rank_cap, options=options)
    return dec, ""


@dataclass
class LayerCost:
    layer: LayerInfo
    decomposition: Decomposition | None
    skip_reason: str = ""

    @property
    def name(self) -> str:
        return self.layer.name

    @property
    def macs(self) -> int:
        return self.layer.macs

    @property
    def params(self) -> int:
        return self.layer.params


@dataclass
class ModelCost:
    """Per-layer costs and totals for one traced model and scheme."""

    input_shape: tuple[int, ...]
    scheme: str
    layers: list[LayerCost]
    total_params: int  # every parameter of the model (BatchNorm included)
    layer_params: dict[str, int] = field(default_factory=dict)

    @property
    def total_macs(self) -> int:
        return sum(lc.macs for lc in self.layers)

    @property
    def decomposable(self) -> list[LayerCost]:
        return [lc for lc in self.layers if lc.decomposition is not None]

    @property
    def skipped(self) -> list[LayerCost]:
        return [lc for lc in self.layers if lc.decomposition is None]

    @property
    def fixed_macs(self) -> int:
        """MACs of everything that is not decomposed."""
        return sum(lc.macs for lc in self.skipped)

    @property
    def fixed_params(self) -> int:
        """Parameters of everything that is not decomposed (BatchNorm, depthwise convs, ...)."""
        return self.total_params - sum(lc.params for lc in self.decomposable)

    def memory_bytes(self, precision: str = "fp32", params: float | None = None) -> float:
        return float(self.total_params if params is None else params) * BYTES_PER_PARAM[precision]


def analyze_model(model: nn.Module, input_shape: tuple[int, ...], scheme: str = "spatial") -> ModelCost:
    """Trace `model` and compute every layer's cost and decomposition under `scheme`."""
    layers = trace_layers(model, input_shape)
    costs = [LayerCost(layer, *decompose_layer(layer, scheme)) for layer in layers]
    total_params = sum(p.numel() for p in model.parameters())
    return ModelCost(tuple(input_shape), scheme, costs, int(total_params))
