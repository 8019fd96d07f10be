"""Factored layers: SVD of a layer's matricization and the two-layer replacement built from it."""

from edgecomp.factor.build import factored_skeleton, factorize_model, get_module, set_module
from edgecomp.factor.modules import FactoredConv2d, FactoredLinear, make_factored
from edgecomp.factor.recipe import is_compressed_dir, load_compressed, load_model_or_outdir, save_compressed
from edgecomp.factor.schemes import Spectrum, factor_weights, matricize, svd_factors, unmatricize

__all__ = [
    "FactoredConv2d",
    "FactoredLinear",
    "Spectrum",
    "factor_weights",
    "factored_skeleton",
    "factorize_model",
    "get_module",
    "is_compressed_dir",
    "load_compressed",
    "load_model_or_outdir",
    "make_factored",
    "matricize",
    "save_compressed",
    "set_module",
    "svd_factors",
    "unmatricize",
]
