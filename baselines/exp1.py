"""Experiment 1 — the skeleton: a plain conv stack that learns, with no tricks."""

from ..space import Arch, Conv, Pool, Recipe

TARGET = (
    "Get the set-up right: data, loop, evaluation. A plain two-stage conv stack, "
    "a max-pool after the receptive field reaches ~7px (edges, gradients), a 1x1 "
    "transition to cut channels, a flatten+linear head. Under 20k parameters, no "
    "BatchNorm, no dropout, no augmentation, constant learning rate."
)

ARCH = Arch(
    blocks=(Conv(8), Conv(16), Conv(16), Pool(), Conv(8, k=1), Conv(16), Conv(16), Conv(16)),
    head="flatten",
    bn=False,
    dropout=0.0,
    recipe=Recipe(optimizer="sgd", lr=0.01, schedule="none", epochs=15, batch_size=128),
)

ANALYSIS = (
    "The skeleton trains: {params:,} parameters reach {best_test:.2f}% test accuracy at best. "
    "The gap between train ({last_train:.2f}%) and test ({last_test:.2f}%) in the last epoch, "
    "and a last-3 minimum of {min_last3:.2f}%, show it is neither stable nor regularised. "
    "Without BatchNorm the first epoch is slow ({first_test:.2f}% test). The flatten head "
    "alone holds a large share of the weights: that is where the next step cuts."
)
