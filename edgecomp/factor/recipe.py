"""Save and rebuild a compressed model without pickle: weights (safetensors) + a JSON recipe.

recipe.json holds the source model spec (how to build the original architecture), the scheme and
the rank of every factored layer; loading rebuilds the original architecture, swaps in factored
skeletons of those ranks and loads model.safetensors strictly.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

from edgecomp import __version__
from edgecomp.errors import UserInputError
from edgecomp.io import atomic_path, write_json

RECIPE_FORMAT = "edgecomp-recipe/1"
RECIPE_FILE = "recipe.json"
WEIGHTS_FILE = "model.safetensors"


def save_compressed(outdir: str | Path, module: nn.Module, recipe: dict) -> Path:
    """Write model.safetensors and recipe.json into `outdir` (each file atomically)."""
    from safetensors.torch import save_file

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    required = {"source", "scheme", "ranks", "input_shape"}
    missing = required - recipe.keys()
    if missing:
        raise ValueError(f"recipe lacks {sorted(missing)}")
    state = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
    with atomic_path(outdir / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp))
    write_json(outdir / RECIPE_FILE, {"format": RECIPE_FORMAT, "edgecomp_version": __version__, **recipe})
    return outdir


def read_recipe(outdir: str | Path) -> dict:
    path = Path(outdir) / RECIPE_FILE
    if not path.is_file():
        raise UserInputError(f"{outdir} is not an edgecomp output directory (no {RECIPE_FILE})")
    try:
        recipe = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserInputError(f"{path}: unreadable recipe: {exc}") from exc
    if recipe.get("format") != RECIPE_FORMAT:
        raise UserInputError(f"{path}: unknown recipe format {recipe.get('format')!r} (expected {RECIPE_FORMAT})")
    return recipe


def is_compressed_dir(path: str | Path) -> bool:
    return (Path(path) / RECIPE_FILE).is_file()


def load_compressed(outdir: str | Path):
    """Rebuild the compressed model saved in `outdir`; returns edgecomp.models.LoadedModel."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from edgecomp.factor.build import factored_skeleton
    from edgecomp.models import LoadedModel, load_model

    outdir = Path(outdir)
    recipe = read_recipe(outdir)
    source = load_model(recipe["source"]["spec"], trust_pickle=bool(recipe["source"].get("trust_pickle", False)))
    module = factored_skeleton(source.module, {k: int(v) for k, v in recipe["ranks"].items()}, recipe["scheme"])
    weights = outdir / WEIGHTS_FILE
    try:
        state = load_file(str(weights))
    except (OSError, SafetensorError) as exc:
        raise UserInputError(f"{weights}: cannot read compressed weights: {exc}") from exc
    result = module.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise UserInputError(
            f"{weights} does not match the recipe's architecture: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
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


def load_model_or_outdir(target: str, weights: str | None = None, *, trust_pickle: bool = False):
    """A compress OUTDIR (it has a recipe.json) or a model spec, as edgecomp.models.LoadedModel."""
    from edgecomp.models import load_model

    if is_compressed_dir(target):
        if weights:
            raise UserInputError(f"{target} is a compress output directory; it has its own weights (drop --weights)")
        return load_compressed(target)
    return load_model(target, weights, trust_pickle=trust_pickle)
