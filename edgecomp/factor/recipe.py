"""Save and rebuild a compressed model without pickle: weights (safetensors) + a JSON recipe.

recipe.json holds the source model spec (how to build the original architecture), the scheme and
the rank of every factored layer: an int; a Tucker-2 layer of scheme "tucker2": the pair [r1, r2]; under
scheme "auto", where each layer has its own scheme, {"scheme": S, "rank": R} (S one of spatial, channel, cp,
tucker2, linear; R an int, or [r1, r2] for tucker2). Older recipes (ints, pairs) read as before, so the format
version is unchanged. Loading rebuilds the original architecture, swaps in factored skeletons of those
ranks and loads model.safetensors strictly.

An output directory may come from someone else, so its recipe never decides what code runs:
rebuilding from a built-in `zoo:` spec is always allowed, from a user's .py file or module only
when the caller names the spec itself (`model_spec`, from the user's command line) or passes
`trust_code`, from a pickle only with the caller's `trust_pickle`. Whatever needs no code (the
directory's model.onnx) does not rebuild the model at all.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from edgecomp import __version__
from edgecomp.errors import UserInputError
from edgecomp.formats import check, stamp, tag
from edgecomp.io import atomic_path, write_json
from edgecomp.outdir import ONNX_FILE, RECIPE_FILE, WEIGHTS_FILE, is_outdir

RECIPE_FORMAT = tag("recipe")  # "edgecomp-recipe/1"; edgecomp.formats reads older and refuses newer ones
RECIPE_KEYS = {"source": dict, "scheme": str, "ranks": dict, "input_shape": list}  # what rebuilding needs


def save_compressed(outdir: str | Path, module: nn.Module, recipe: dict) -> Path:
    """Write model.safetensors and recipe.json into `outdir` (each file atomically)."""
    from safetensors.torch import save_file

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    missing = RECIPE_KEYS.keys() - recipe.keys()
    if missing:
        raise ValueError(f"recipe lacks {sorted(missing)}")
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    with atomic_path(outdir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_json(outdir / RECIPE_FILE, stamp({"edgecomp_version": __version__, **recipe}, "recipe"))
    return outdir


def read_recipe(outdir: str | Path) -> dict:
    """recipe.json of `outdir`, checked: its format version is one this edgecomp reads (one without a
    version, from before versions, is read as version 0) and it has every field rebuilding needs."""
    path = Path(outdir) / RECIPE_FILE
    if not path.is_file():
        raise UserInputError(f"{outdir} is not an edgecomp output directory (no {RECIPE_FILE})")
    try:
        recipe = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: unreadable recipe: {exc}") from exc
    check(recipe, "recipe", path)
    missing = sorted(RECIPE_KEYS.keys() - recipe.keys())
    wrong = [key for key, kind in RECIPE_KEYS.items() if key in recipe and not isinstance(recipe[key], kind)]
    ranks = recipe.get("ranks") if isinstance(recipe.get("ranks"), dict) else {}
    if missing or wrong or not all(isinstance(k, str) and _rank_entry(v) for k, v in ranks.items()):
        what = f"lacks {', '.join(missing)}" if missing else f"{', '.join(wrong) or 'ranks'} of the wrong type"
        raise UserInputError(f"{path}: malformed recipe ({what}); it was not written by edgecomp or was edited: "
                             "compress again")
    return recipe


ENTRY_SCHEMES = ("spatial", "channel", "cp", "tucker2", "linear")  # the schemes an "auto" entry may name


def _rank_entry(value) -> bool:
    """A recipe rank: a positive int, a Tucker-2 pair [r1, r2] of positive ints, or (scheme auto)
    {"scheme": S, "rank": one of those} with S in ENTRY_SCHEMES (a pair for tucker2 only)."""
    def positive(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v >= 1

    def pair(v) -> bool:
        return isinstance(v, list) and len(v) == 2 and all(positive(x) for x in v)

    if isinstance(value, dict):
        scheme, rank = value.get("scheme"), value.get("rank")
        return (set(value) == {"scheme", "rank"} and scheme in ENTRY_SCHEMES
                and (pair(rank) if scheme == "tucker2" else positive(rank)))
    return positive(value) or pair(value)


def recipe_ranks(recipe: dict) -> dict:
    """The recipe's rank entries as factored_skeleton takes them: pairs as tuples, ints as ints, auto entries
    as {"scheme": S, "rank": int or (r1, r2)}."""
    def entry(value):
        if isinstance(value, dict):
            return {"scheme": value["scheme"], "rank": entry(value["rank"])}
        return tuple(value) if isinstance(value, list) else int(value)

    return {k: entry(v) for k, v in recipe["ranks"].items()}


is_compressed_dir = is_outdir  # the name this package has always exported


def is_outdir_target(target: str, weights: str | None = None) -> bool:
    """True when TARGET names a compress output directory, which has its own weights (so --weights is
    a mistake there: UserInputError)."""
    if not is_outdir(target):
        return False
    if weights:
        raise UserInputError(f"{target} is a compress output directory; it has its own weights (drop --weights)")
    return True


def source_spec(recipe: dict, outdir: str | Path) -> str:
    source = recipe.get("source") or {}
    if source.get("in_memory"):
        raise UserInputError(
            f"{outdir}'s model was compressed from an in-memory {source['in_memory']} (the Python API), which no "
            f"spec rebuilds: use its {ONNX_FILE}, which needs no code, name the model's spec (--reference SPEC, "
            f"model_spec=), or load it with edgecomp.factor.load_compressed(DIR, source_module=YourModel())")
    spec = source.get("spec")
    if not isinstance(spec, str) or not spec.strip():
        raise UserInputError(f"{Path(outdir) / RECIPE_FILE} names no source model spec")
    return spec.strip()


def rebuild_spec(outdir: str | Path, recipe: dict, *, model_spec: str | None = None, trust_code: bool = False,
                 trust_pickle: bool = False, allow_hint: str = "--trust-code") -> str:
    """The spec that builds the source architecture of `outdir`'s model, once running it is allowed:
    `model_spec` (the caller's own) if given, else the recipe's when it is a zoo spec, a .py/module spec
    with trust_code, or a pickle with trust_pickle. Else UserInputError saying how to allow it."""
    from edgecomp.models.loading import spec_kind

    if model_spec:
        return model_spec
    outdir = Path(outdir)
    spec = source_spec(recipe, outdir)
    kind = spec_kind(spec)
    onnx = outdir / ONNX_FILE
    if onnx.is_file():
        why, instead = f"{outdir}'s model is built", f", or use {onnx}, which needs no code"
    else:
        why, instead = f"{outdir} has no {ONNX_FILE}, and its model is built", ""
    if kind == "code" and not trust_code:
        raise UserInputError(
            f"{why} by {spec}, code that its recipe.json names and this command did not: rebuilding the model "
            f"runs it. Pass {allow_hint} only if you trust that code{instead}"
        )
    if kind == "pickle" and not trust_pickle:
        raise UserInputError(
            f"{why} from the pickle {spec}, which its recipe.json names: loading it may run code from that file. "
            f"Pass --trust-pickle only if you trust it{instead}"
        )
    return spec


def load_compressed(outdir: str | Path, *, model_spec: str | None = None, trust_code: bool = False,
                    trust_pickle: bool = False, allow_hint: str = "--trust-code", source_module=None):
    """Rebuild the compressed model saved in `outdir`; returns edgecomp.models.LoadedModel.

    The source architecture comes from `model_spec` (the caller's, e.g. the spec on the user's
    command line) or the recipe's spec as rebuild_spec allows; `trust_pickle` is the caller's, never
    the recipe's. `source_module` (an in-memory nn.Module, the Python API's) replaces both.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from edgecomp.factor.build import factored_skeleton
    from edgecomp.models import LoadedModel, load_model

    outdir = Path(outdir)
    recipe = read_recipe(outdir)
    if source_module is not None:
        spec, source = str(model_spec or "<in-memory model>"), LoadedModel(module=source_module, spec=str(model_spec))
    else:
        spec = rebuild_spec(outdir, recipe, model_spec=model_spec, trust_code=trust_code, trust_pickle=trust_pickle,
                            allow_hint=allow_hint)
        source = load_model(spec, trust_pickle=trust_pickle)
    module = factored_skeleton(source.module, recipe_ranks(recipe), recipe["scheme"])
    weights = outdir / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as exc:
        raise UserInputError(f"{weights}: cannot read compressed weights: {exc}") from exc
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserInputError(
            f"{weights} does not match the recipe's architecture (built by {spec}): missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    module.eval()
    return LoadedModel(
        module=module,
        spec=str(outdir),
        input_shape=tuple(recipe["input_shape"]),
        num_classes=recipe.get("num_classes"),
        weights=str(weights),
        recipe=recipe,
    )


def load_model_or_outdir(target: str, weights: str | None = None, *, trust_pickle: bool = False,
                         trust_code: bool = False):
    """A compress OUTDIR (it has a recipe.json) or a model spec, as edgecomp.models.LoadedModel."""
    from edgecomp.models import load_model

    if is_outdir_target(target, weights):
        return load_compressed(target, trust_code=trust_code, trust_pickle=trust_pickle)
    return load_model(target, weights, trust_pickle=trust_pickle)
