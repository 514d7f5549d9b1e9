"""The search space: the Arch value and the functions of it (count, build, sample, derive)."""

from budgetnas.space.arch import Arch, Block, Conv, Pool, Recipe, feature_shape
from budgetnas.space.build import build, count_params, scale_to_budget
from budgetnas.space.sample import SpaceConfig, min_params, params_of, sample_arch

__all__ = ["Arch", "Block", "Conv", "Pool", "Recipe", "SpaceConfig", "build", "count_params", "feature_shape",
           "min_params", "params_of", "sample_arch", "scale_to_budget"]
