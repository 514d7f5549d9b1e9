"""Dropout masks drawn cheaply on a CPU, for the search stages only.

On one CPU thread torch's `nn.Dropout` draws its mask with `bernoulli_`, a float drawn an element:
a quarter of the headline model's training step (`budgetnas bench --profile`, docs/performance.md).
`FastDropout` cuts four 16-bit lanes from each 64-bit draw of the same generator and keeps an
element when its lane clears a threshold: the same rate (p to 1/65536), the same scaling, other
random numbers, so it changes a training's trajectory. Its accuracy parity with torch's masks is
measured (docs/performance.md); Verify and the exported modules keep `nn.Dropout`, which
reproduces them seed for seed.
"""

import torch
from torch import nn

LANES = 65536  # values of one 16-bit lane


class FastDropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.cut = round(p * LANES) - LANES // 2  # an element is kept when its int16 lane is >= cut
        self.scale = 1.0 / (1.0 - (self.cut + LANES // 2) / LANES)  # 1 / (1 - the rate drawn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.cut == -LANES // 2:
            return x
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), None)  # all 64 bits
        lanes = words.view(torch.int16)[:n]
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            n_, c, h, w = x.shape  # lay the lanes out as x is laid out: an elementwise op across layouts is slow
            lanes = lanes.view(n_, h, w, c).permute(0, 3, 1, 2)
        else:
            lanes = lanes.view(x.shape)
        return x * (lanes >= self.cut).to(x.dtype).mul_(self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def with_fast_masks(model: nn.Module) -> nn.Module:
    """`model` with every `nn.Dropout` replaced by a `FastDropout` of its rate (in place; returned)."""
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p))
    return model
