"""The search space: the Arch value and the functions of it (count, build, sample, derive)."""

from .arch import Arch, Block, Conv, Pool, Recipe, feature_shape
from .build import build, count_params, scale_to_budget
from .errors import BadInput, ShapeError
from .sample import SpaceConfig, min_params, params_of, sample_arch

__all__ = ["Arch", "BadInput", "Block", "Conv", "Pool", "Recipe", "ShapeError", "SpaceConfig", "build", "count_params", "feature_shape",
           "min_params", "params_of", "sample_arch", "scale_to_budget"]
