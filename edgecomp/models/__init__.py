"""Models: the reference zoo and safe loading of user models and weights."""

from edgecomp.models.loading import SPEC_FORMS, LoadedModel, load_model
from edgecomp.models.weights import check_state_dict, load_weights, read_state_dict, save_weights
from edgecomp.models.zoo import ZOO, ZooEntry, get_zoo_model, list_zoo

__all__ = [
    "SPEC_FORMS",
    "ZOO",
    "LoadedModel",
    "ZooEntry",
    "check_state_dict",
    "get_zoo_model",
    "list_zoo",
    "load_model",
    "load_weights",
    "read_state_dict",
    "save_weights",
]
