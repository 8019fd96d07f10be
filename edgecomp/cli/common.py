"""Options and helpers shared by the CLI commands (click conventions: --help everywhere, --json)."""

from __future__ import annotations

import json
import sys
from typing import Any, Callable

import click

from edgecomp.errors import UserInputError
from edgecomp.io import to_jsonable
# Option types: every value is checked while the command line is parsed, before any work.
from edgecomp.option_types import (COUNT, FRACTION, NON_NEGATIVE, PERCENTILE, POSITIVE, SEED,  # noqa: F401
                                   FiniteFloat, OutputPath, SampleAmount)

json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")


def emit(obj: Any, as_json: bool, human: Callable[[Any], None]) -> None:
    """Print `obj` as JSON (stdout, nothing else) or through the human formatter."""
    if as_json:
        click.echo(json.dumps(to_jsonable(obj), indent=2))
    else:
        human(obj)


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """'1,3,224,224' -> (1, 3, 224, 224)."""
    if text is None:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise UserInputError(f"--input-shape must be comma-separated integers like 1,3,224,224, got {text!r}")
    if not shape or any(d <= 0 for d in shape):
        raise UserInputError(f"--input-shape must have positive dimensions, got {text!r}")
    return shape


def model_options(func):
    """MODEL argument plus --weights / --trust-pickle / --input-shape."""
    func = click.option(
        "--input-shape",
        default=None,
        help="Input shape N,C,H,W used to trace the model (default: the zoo entry's shape).",
    )(func)
    func = click.option(
        "--trust-pickle",
        is_flag=True,
        help="Allow loading a full pickled model (runs arbitrary code from the file: only for files you trust).",
    )(func)
    func = click.option(
        "--weights",
        type=click.Path(dir_okay=False),
        default=None,
        help="State dict to load: .pt/.pth (loaded with weights_only=True) or .safetensors.",
    )(func)
    return func


TRUST_CODE_HELP = ("Allow rebuilding an output directory's model with the Python code (or module) its recipe.json "
                   "names: that code runs. Only for directories you trust; not needed where model.onnx is used.")
trust_code_option = click.option("--trust-code", is_flag=True, help=TRUST_CODE_HELP)


def device_options(func):
    """--device NAME | --profile FILE."""
    func = click.option(
        "--profile", "profile_file", type=click.Path(dir_okay=False), default=None, help="A device profile YAML file."
    )(func)
    func = click.option(
        "--device", default=None, help="A built-in device profile name or alias (see `edgecomp devices`)."
    )(func)
    return func


class TorchDeviceSpec(click.ParamType):
    """--torch-device: auto, cpu, cuda, cuda:N or mps (its syntax checked while parsing; whether the
    device is there is checked before any work, by edgecomp.torch_device.resolve_torch_device)."""

    name = "auto|cpu|cuda|cuda:N|mps"

    def get_metavar(self, param, ctx=None) -> str:
        return "[auto|cpu|cuda|cuda:N|mps]"

    def convert(self, value, param, ctx):
        from edgecomp.torch_device import TorchDeviceError, check_device_spec

        try:
            return check_device_spec(value)
        except TorchDeviceError as exc:
            self.fail(str(exc).split(": ", 1)[-1], param, ctx)


TORCH_DEVICE_HELP = ("Where COBLA's loss and mask gradients, fine-tuning, distillation, LC's L steps and evaluation run: auto (CUDA if torch sees a "
                     "GPU, else MPS, else the CPU), cpu, cuda, cuda:N or mps. A device that is not there is an error "
                     "(exit 2), never a silent fallback. SVDs and the rank selection always run on the CPU.")
AMP_HELP = ("Mixed precision for fine-tuning and LC's L steps: off (float32; default), bf16 (CUDA, or the CPU "
            "when asked: only faster on CPUs with native bfloat16) or fp16 (CUDA only, with a gradient scaler).")
WORKERS_HELP = ("DataLoader worker processes for datasets that are not held in memory (module:callable, a torch "
                "Dataset). Default: 0 on the CPU (workers would compete with training for its cores), "
                "min(4, CPUs-1) on a GPU.")


def torch_options(func):
    """--torch-device / --amp / --workers (edgecomp.torch_device)."""
    func = click.option("--workers", type=click.IntRange(min=0), default=None, help=WORKERS_HELP)(func)
    func = click.option("--amp", type=click.Choice(["off", "bf16", "fp16"]), default="off", show_default=True,
                        help=AMP_HELP)(func)
    func = click.option("--torch-device", type=TorchDeviceSpec(), default="auto", show_default=True,
                        help=TORCH_DEVICE_HELP)(func)
    return func


def resume_options(func):
    """--checkpoint-every N / --resume (edgecomp.finetune.checkpoint)."""
    func = click.option("--resume", is_flag=True,
                        help="Continue fine-tuning / LC from the checkpoint an interrupted run with the same settings "
                             "left beside OUTDIR (.OUTDIR.checkpoint.*.pt); without one, start from step 0.")(func)
    func = click.option("--checkpoint-every", type=click.IntRange(min=1), default=None, metavar="N",
                        help="Save fine-tuning / LC progress every N optimizer steps (LC: after the mu whose L step "
                             "reaches N), atomically, beside OUTDIR; a finished run deletes it.")(func)
    return func


def resolve_profile(device: str | None, profile_file: str | None, *, required: bool = False):
    """Load the device profile named by --device or --profile (not both)."""
    if device and profile_file:
        raise UserInputError("give either --device or --profile, not both")
    if not device and not profile_file:
        if required:
            raise UserInputError("a device is required: pass --device NAME (see `edgecomp devices`) or --profile FILE")
        return None
    from edgecomp.profiles import load_profile

    return load_profile(profile_file or device)


def progress_enabled() -> bool:
    """Progress bars go to stderr, only on a terminal (CI logs stay clean)."""
    return sys.stderr.isatty()


__all__ = [
    # option types, re-exported so commands import everything CLI-wide from here
    "COUNT", "FRACTION", "NON_NEGATIVE", "PERCENTILE", "POSITIVE", "SEED", "FiniteFloat", "OutputPath", "SampleAmount",
    "TRUST_CODE_HELP", "TorchDeviceSpec", "device_options", "emit", "json_option", "model_options", "parse_input_shape",
    "progress_enabled", "resolve_profile", "resume_options", "torch_options", "trust_code_option",
]
