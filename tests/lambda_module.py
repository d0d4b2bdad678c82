"""`Lambda(fn)`: an nn.Module whose forward is `fn`, for lowering a one-line function through torch.export in tests."""

from torch import nn


class Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)
