"""Experiment 2 — lighter, with BatchNorm."""

from ..space import Arch, Conv, Pool, Recipe

TARGET = (
    "Same skeleton, fewer channels (under 10k parameters), and BatchNorm after every "
    "conv so that a higher constant learning rate trains stably and fast."
)

ARCH = Arch(
    blocks=(Conv(8), Conv(12), Conv(12), Pool(), Conv(8, k=1), Conv(12), Conv(12), Conv(12)),
    head="flatten",
    bn=True,
    dropout=0.0,
    recipe=Recipe(optimizer="sgd", lr=0.02, schedule="none", epochs=15, batch_size=128),
)

ANALYSIS = (
    "{params:,} parameters ({param_ratio_prev:.0%} of exp1) now reach {best_test:.2f}% at best and "
    "{first_test:.2f}% after one epoch: BatchNorm makes the start fast. Train accuracy "
    "({last_train:.2f}%) runs ahead of test ({last_test:.2f}%): the model over-fits, and the flatten "
    "head still spends most of the budget. Next: regularise and replace it by GAP."
)
