"""Which INT8 weight range is exact on the CPU that will run a QDQ model (stdlib only; numpy optional).

ONNX Runtime on x86 rewrites a QDQ model's int8 activations to uint8 (a + 128) when it loads it, so
its integer kernels multiply u8 activations a in [0, 255] by s8 weights w. Without VNNI they use
VPMADDUBSW, which adds each pair of neighbouring products into a *saturating* int16:

    a1*w1 + a2*w2  is clipped to [-32768, 32767]
    full-range weights, |w| <= 127:  2 * 255 * 127 = 64770  -> overflows, the result is wrong
    7-bit weights (reduce_range), |w| <= 64:  2 * 255 * 64 = 32640  -> always exact

VNNI (VPDPBUSD: AVX512_VNNI, AVX_VNNI; AMX) accumulates the products in int32, and ARM kernels
widen every product before adding it, so both are exact at full range. Activations are not
affected by the choice (they keep their int8 range, symmetric where TensorRT needs it).

Decision (`int8_settings`): full-range weights where the CPU that runs the model is known to be
exact with them (x86 with a VNNI flag, ARM, or a TensorRT GPU), 7-bit weights everywhere else
(x86 without VNNI, other or unknown CPUs): they are exact on every CPU and cost one bit of weight
resolution.

Flags use Linux /proc/cpuinfo names ("flags" on x86, "Features" on ARM). The on-device agent
(runtime/agent.py) reports the target's with the same parser, so `cpu_from_agent` reads them.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from typing import Mapping

VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")  # int32 accumulation of u8*s8 products on x86
# Flags worth recording next to the decision (what the x86 / ARM int8 kernels can use).
INT8_FLAGS = ("sse4_1", "avx2", "avx512bw", *VNNI_FLAGS, "asimd", "asimddp", "i8mm")
X86_MACHINES = ("x86_64", "amd64", "x64", "i386", "i486", "i586", "i686", "x86")
ARM_MACHINES = ("aarch64", "arm64", "armv7l", "armv8l", "armv7", "armv8", "arm")
# ONNX Runtime session option (onnxruntime_session_options_config_keys.h): on x86 CPUs whose u8*s8
# kernels saturate, run quantized MatMul/Conv with exact u8*u8 kernels instead; no effect elsewhere.
EXACT_X86_INT8 = "session.x64quantprecision"
RUNS_ON = ("host", "unknown", "gpu")  # or a CpuInfo (e.g. the target's, from the agent)

# numpy's CPUID probe (a cross-check of /proc/cpuinfo, and the only source off Linux).
_NUMPY_NAMES = {"SSE41": "sse4_1", "AVX2": "avx2", "AVX512BW": "avx512bw", "AVX512VNNI": "avx512_vnni",
                "ASIMD": "asimd", "ASIMDDP": "asimddp"}
_X86_PROBED = frozenset({"sse4_1", "avx2", "avx512bw", "avx512_vnni"})


@dataclass(frozen=True)
class CpuInfo:
    """A CPU as seen by whoever described it: machine (platform.machine()), flags, and the source."""

    machine: str
    flags: frozenset = field(default_factory=frozenset)
    source: str = "host"  # "host" (this machine) | "target" (reported by the agent) | "given"
    detail: str = ""  # where the flags came from

    @property
    def family(self) -> str:
        name = self.machine.lower()
        if name in X86_MACHINES:
            return "x86"
        if name in ARM_MACHINES or name.startswith("arm"):
            return "arm"
        return "other"


@dataclass(frozen=True)
class Int8Settings:
    """The weight range chosen for the CPU (or GPU) that will run the model, and why."""

    reduce_range: bool  # True: weights in [-64, 64] (7 bits); False: [-127, 127]
    runs_on: str  # "host" | "target" | "given" | "unknown" | "gpu"
    machine: str | None
    cpu_flags: tuple  # the int8-relevant flags the decision saw
    reason: str

    @property
    def weight_range(self) -> tuple[int, int]:
        return (-64, 64) if self.reduce_range else (-127, 127)


def parse_cpuinfo(text: str) -> frozenset:
    """The flags of the first processor in /proc/cpuinfo text ('flags' on x86, 'Features' on ARM), lower case."""
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            return frozenset(value.lower().split())
    return frozenset()


def _numpy_flags() -> frozenset | None:
    """Flags from numpy's runtime CPUID probe (Linux names), or None where numpy does not expose it."""
    try:
        try:
            from numpy._core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            from numpy.core._multiarray_umath import __cpu_features__ as features
    except ImportError:
        return None
    return frozenset(name for key, name in _NUMPY_NAMES.items() if features.get(key))


def cpu_from_flags(machine: str, cpuinfo_text: str | None, probed: frozenset | None, source: str = "host") -> CpuInfo:
    """Combine /proc/cpuinfo text and a CPUID probe into a CpuInfo (pure; host_cpu feeds it the real ones).

    /proc/cpuinfo is the primary source (it knows AVX_VNNI and AMX, which the probe cannot see). But
    when it lists an x86 flag the CPUID probe can see and reports absent, it describes another CPU
    than the one executing (e.g. under an emulator, which passes the host's text through), and the
    kernels follow CPUID: the probe's flags are used. Without /proc/cpuinfo the probe's flags are used.
    """
    if cpuinfo_text:
        flags, detail = parse_cpuinfo(cpuinfo_text), "/proc/cpuinfo"
        contradicted = sorted((flags & _X86_PROBED) - probed) if probed is not None and "avx2" in probed else []
        if contradicted:
            flags = probed
            detail = f"CPUID probe: /proc/cpuinfo lists {', '.join(contradicted)}, which CPUID does not report"
    elif probed is not None:
        flags, detail = probed, "numpy CPUID probe (no /proc/cpuinfo)"
    else:
        flags, detail = frozenset(), "no CPU flags available"
    return CpuInfo(machine=machine, flags=flags, source=source, detail=detail)


def host_cpu(cpuinfo_path: str = "/proc/cpuinfo") -> CpuInfo:
    """This machine's CPU."""
    try:
        with open(cpuinfo_path, encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        text = None
    return cpu_from_flags(platform.machine(), text, _numpy_flags(), source="host")


def cpu_from_agent(environment: Mapping) -> CpuInfo:
    """The target's CPU from the agent's `environment` report ({"machine": ..., "cpu_flags": [...]})."""
    flags = environment.get("cpu_flags")
    detail = "agent report" if flags is not None else "agent report without cpu_flags (older agent)"
    return CpuInfo(machine=str(environment.get("machine") or ""), flags=frozenset(flags or ()), source="target",
                   detail=detail)


def saturates(cpu: CpuInfo) -> bool:
    """True where ONNX Runtime's u8*s8 kernels add product pairs in saturating int16: x86 without VNNI."""
    return cpu.family == "x86" and not (cpu.flags & set(VNNI_FLAGS))


def int8_settings(runs_on="host") -> Int8Settings:
    """The weight range for `runs_on`: "host", "gpu" (TensorRT), "unknown", or a CpuInfo (e.g. the target's).

    full range  iff  GPU, or ARM, or x86 with one of VNNI_FLAGS; 7-bit (reduce_range) otherwise.
    """
    if isinstance(runs_on, str):
        if runs_on not in RUNS_ON:
            raise ValueError(f"runs_on must be one of {RUNS_ON} or a CpuInfo, got {runs_on!r}")
        if runs_on == "gpu":
            return Int8Settings(False, "gpu", None, (), "TensorRT accumulates int8 products in int32 on the GPU")
        if runs_on == "unknown":
            return Int8Settings(True, "unknown", None, (),
                                "the CPU that will run the model is unknown: 7-bit weights are exact on every CPU")
        runs_on = host_cpu()
    cpu = runs_on
    seen = tuple(f for f in INT8_FLAGS if f in cpu.flags)
    where = f"{cpu.source} CPU {cpu.machine or '?'}"
    if cpu.family == "arm":
        return Int8Settings(False, cpu.source, cpu.machine, seen,
                            f"{where}: ARM int8 kernels accumulate in int32, full-range weights are exact")
    if cpu.family == "x86" and not saturates(cpu):
        vnni = ", ".join(f for f in VNNI_FLAGS if f in cpu.flags)
        return Int8Settings(False, cpu.source, cpu.machine, seen,
                            f"{where} has {vnni}: u8*s8 products accumulate in int32, full-range weights are exact")
    if cpu.family == "x86":
        return Int8Settings(True, cpu.source, cpu.machine, seen,
                            f"{where} has no VNNI ({cpu.detail}): its u8*s8 kernels add product pairs in saturating "
                            f"int16, exact only for 7-bit weights (2*255*64 <= 32767)")
    return Int8Settings(True, cpu.source, cpu.machine, seen,
                        f"{where}: int8 kernel accumulation unknown, 7-bit weights are exact on every CPU")


def int8_runs_on(runtime: str | None, local: bool, environment: Mapping | None = None):
    """What runs an INT8 model made for `runtime` ("tensorrt" | "onnxruntime" | None): "gpu", "host",
    the remote target's CpuInfo (from its agent's `environment` report), or "unknown".

    A local run (no device, or a stand-in on this machine) is the host; a remote CPU is unknown until
    its agent reports. The one decision the convert command, the API and the pipeline all use.
    """
    if runtime == "tensorrt":
        return "gpu"
    if local:
        return "host"
    return cpu_from_agent(environment) if environment else "unknown"
