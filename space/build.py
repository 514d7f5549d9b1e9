"""Arch -> nn.Module, and the exact parameter count computed from the value alone."""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from .arch import Arch, Conv, feature_shape


def count_params(arch: Arch) -> int:
    """Trainable parameters of `build(arch)`, without building it (microseconds)."""
    n, c = 0, arch.in_channels
    for b in arch.blocks:
        if isinstance(b, Conv):
            n += b.k * b.k * (c // b.groups) * b.out + (2 * b.out if arch.bn else b.out)  # BN affine, else bias
            c = b.out
    c, h, w = feature_shape(arch)
    features = c if arch.head == "gap" else c * h * w
    return n + features * arch.classes  # head linear has no bias: logits feed a softmax


def scale_to_budget(arch: Arch, budget: int) -> Arch | None:
    """`arch` with every conv's width scaled by the largest one factor (up or down, even widths,
    at least 2) that keeps it within the budget; None if even width 2 does not fit. A depthwise
    conv keeps one group a channel."""

    def scaled_conv(b: Conv, f: float) -> Conv:
        out = max(2, 2 * round(b.out * f / 2))
        return replace(b, out=out, groups=out if b.groups > 1 else 1)

    for f in (x / 100 for x in range(400, 4, -1)):
        scaled = replace(arch, blocks=tuple(scaled_conv(b, f) if isinstance(b, Conv) else b for b in arch.blocks))
        if count_params(scaled) <= budget:
            return scaled
    return None


def build(arch: Arch) -> nn.Module:
    layers: list[nn.Module] = []
    c = arch.in_channels
    for b in arch.blocks:
        if isinstance(b, Conv):
            layers.append(nn.Conv2d(c, b.out, b.k, padding=b.pad, groups=b.groups, bias=not arch.bn))
            if arch.bn:
                layers.append(nn.BatchNorm2d(b.out))
            layers.append(nn.ReLU(inplace=True))
            if arch.dropout > 0:
                layers.append(nn.Dropout(arch.dropout))
            c = b.out
        else:
            layers.append(nn.MaxPool2d(b.size))
    c, h, w = feature_shape(arch)
    if arch.head == "gap":
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, arch.classes, bias=False)]
    else:
        layers += [nn.Flatten(), nn.Linear(c * h * w, arch.classes, bias=False)]
    return nn.Sequential(*layers)
