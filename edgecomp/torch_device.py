"""The one place the torch device, mixed precision and data-loading workers of a run are chosen.

    resolve_torch_device("auto" | "cpu" | "cuda" | "cuda:N" | "mps") -> torch.device
    resolve_amp("off" | "bf16" | "fp16", device)                      -> torch.dtype | None
    resolve_placement(torch_device, amp, workers)                     -> Placement (all three, checked)

A device or precision the user asks for that is not there is refused (TorchDeviceError, exit 2)
with the reason and what to do; nothing silently falls back to the CPU. `auto` is the only spec
that chooses: CUDA when torch sees a GPU, else Apple's MPS, else the CPU.

What runs where (edgecomp.compression.run passes the Placement down): COBLA's loss/gradient oracle
and its rounding evaluations, the Fisher scores of choice layers, fine-tuning, distillation (the
teacher too), LC's L steps and evaluation run on the device; SVDs, the cost model and the
rank-selection SQP stay on the CPU in float64; the factored model comes back to the CPU before it
is saved or exported to ONNX.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from typing import Iterator

import torch

from edgecomp.errors import UserInputError

DEVICE_SPECS = ("auto", "cpu", "cuda", "cuda:N", "mps")
AMP_SPECS = ("off", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_CUDA_INDEX = re.compile(r"cuda:(\d+)")


class TorchDeviceError(UserInputError):
    """--torch-device / --amp asks for hardware or a precision this machine's torch cannot use."""


def _cuda_missing(spec: str) -> str | None:
    """Why `spec` (cuda or cuda:N) cannot run here, or None when it can."""
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        return (f"--torch-device {spec}: torch {torch.__version__} was built without CUDA; install a CUDA build of "
                "torch or use --torch-device cpu")
    if not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hint = f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else ""
        return (f"--torch-device {spec}: torch {torch.__version__} sees no CUDA device{hint}; check the driver "
                "(nvidia-smi) or use --torch-device cpu")
    match = _CUDA_INDEX.fullmatch(spec)
    count = torch.cuda.device_count()
    if match and int(match.group(1)) >= count:
        return (f"--torch-device {spec}: there {'is' if count == 1 else 'are'} only {count} CUDA device"
                f"{'' if count == 1 else 's'} (cuda:0..cuda:{count - 1})")
    return None


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def check_device_spec(spec: str) -> str:
    """The spec, normalised (lower case, no blanks), if it is one of DEVICE_SPECS' forms; UserInputError if not."""
    text = str(spec).strip().lower()
    if text in ("auto", "cpu", "cuda", "mps") or _CUDA_INDEX.fullmatch(text):
        return text
    raise TorchDeviceError(f"--torch-device {spec!r}: expected one of {', '.join(DEVICE_SPECS)} (N a GPU index)")


def resolve_torch_device(spec: str = "auto") -> torch.device:
    """The torch.device `spec` names, checked to exist; TorchDeviceError (exit 2) saying why when it does not.

    auto: cuda if torch.cuda.is_available(), else mps if available, else cpu. A plain "cuda" is the
    current CUDA device (cuda:0, or cuda:LOCAL_RANK once edgecomp.distributed has set it per process).
    """
    text = check_device_spec(spec)
    if text == "auto":
        if torch.cuda.is_available():  # the current device: cuda:LOCAL_RANK under torchrun (edgecomp.distributed)
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            built = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_built()
            why = "MPS is not available on this machine (Apple silicon with macOS 12.3+ needed)" if built else \
                f"torch {torch.__version__} was built without MPS"
            raise TorchDeviceError(f"--torch-device mps: {why}; use --torch-device cpu")
        return torch.device("mps")
    why = _cuda_missing(text)
    if why:
        raise TorchDeviceError(why)
    match = _CUDA_INDEX.fullmatch(text)
    return torch.device("cuda", int(match.group(1)) if match else torch.cuda.current_device())


def resolve_amp(spec: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of --amp on `device`: off -> None (plain float32, bit-identical to no AMP).

    fp16 needs CUDA (and a GradScaler, which fine-tuning and LC then use). bf16 runs on CUDA GPUs that
    support it (Ampere and newer) and on the CPU, but only when asked for explicitly: on CPUs without
    native bfloat16 arithmetic (AVX512-BF16 / AMX, i.e. most machines before Intel Sapphire Rapids)
    torch emulates it, which is slower than float32 and only loses precision; it is useful on the CPU
    to try the bf16 path before a GPU run, or on those newer CPUs.
    """
    text = str(spec).strip().lower()
    if text not in AMP_SPECS:
        raise TorchDeviceError(f"--amp {spec!r}: expected one of {', '.join(AMP_SPECS)}")
    if text == "off":
        return None
    if text == "fp16" and device.type != "cuda":
        raise TorchDeviceError(f"--amp fp16 needs a CUDA device (the torch device is {device}); use --amp bf16 "
                               "or --amp off")
    if text == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise TorchDeviceError(f"--amp bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support; use "
                               "--amp fp16")
    if text == "bf16" and device.type == "mps":
        raise TorchDeviceError("--amp bf16 is not supported on MPS; use --amp off")
    return AMP_DTYPES[text]


def amp_name(dtype: torch.dtype | None) -> str:
    return next((name for name, d in AMP_DTYPES.items() if d == dtype), "off")


def default_workers(device: torch.device) -> int:
    """DataLoader workers when --workers is not given: 0 on the CPU, where worker processes would compete
    with torch's own intra-op threads for the same cores (and in-process loading keeps a dataset's
    random augmentation on the run's seeded RNG); on a GPU min(4, CPUs - 1), so that decoding the next
    batches overlaps the GPU's work on this one."""
    if device.type == "cpu":
        return 0
    return max(0, min(4, (os.cpu_count() or 1) - 1))


@dataclass(frozen=True)
class Placement:
    """Where and how a run's torch work computes: the device, the autocast dtype (None: off) and the
    DataLoader workers for datasets that are not held in memory (edgecomp.finetune.batches)."""

    device: torch.device = torch.device("cpu")
    amp: torch.dtype | None = None
    workers: int = 0

    @property
    def pin_memory(self) -> bool:
        """Page-locked host batches (faster, asynchronous copies to the GPU): CUDA only."""
        return self.device.type == "cuda"

    def describe(self) -> dict:
        """What the report records."""
        return {"torch_device": str(self.device), "amp": amp_name(self.amp), "workers": self.workers}


def resolve_placement(torch_device: str = "auto", amp: str = "off", workers: int | None = None) -> Placement:
    """All three settings, checked together before any work (TorchDeviceError, exit 2)."""
    device = resolve_torch_device(torch_device)
    dtype = resolve_amp(amp, device)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise UserInputError(f"--workers must be a whole number >= 0, got {workers!r}")
    return Placement(device, dtype, default_workers(device) if workers is None else int(workers))


def autocast(placement: Placement | None):
    """torch.autocast at the placement's dtype; a no-op context when AMP is off (nothing changes)."""
    if placement is None or placement.amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=placement.device.type, dtype=placement.amp)


def grad_scaler(placement: Placement | None):
    """A torch.amp.GradScaler for fp16 (whose small range underflows gradients), else None."""
    if placement is None or placement.amp != torch.float16:
        return None
    return torch.amp.GradScaler(placement.device.type)


def module_device(module: torch.nn.Module | None) -> torch.device:
    """The device of a module's first parameter or buffer (cpu for one with neither)."""
    if module is None:
        return torch.device("cpu")
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def moved_to(device: torch.device | None, *modules: torch.nn.Module | None) -> Iterator[None]:
    """Move `modules` to `device` in place for the block and back to where each was afterwards
    (parameters keep their identity: nn.Module.to replaces their data). device None: leave them."""
    homes = [(m, module_device(m)) for m in modules if m is not None]
    if device is not None:
        for m, _ in homes:
            m.to(device)
    try:
        yield
    finally:
        if device is not None:
            for m, home in homes:
                if home != device:
                    m.to(home)


def rng_devices(device: torch.device) -> list[int]:
    """The CUDA devices whose RNG torch.random.fork_rng must fork for a run on `device`."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]
