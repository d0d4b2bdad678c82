"""ResNet-18 in plain torch.nn, the zoo's one architecture that transformers does not provide."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ResNetConfig:
    """A ResNet with BasicBlocks (two 3x3 convolutions each).

    Stage i has `blocks_per_stage` blocks of width `widths[i]`; only the first `num_stages` stages
    are built. Every stage after the first halves the spatial size.
    """

    widths: tuple[int, ...] = (64, 128, 256, 512)
    num_stages: int = 4
    blocks_per_stage: int = 2
    stem_width: int = 64
    num_classes: int = 1000
    image_size: int = 224
    num_channels: int = 3


class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn, plus the (possibly 1x1-projected) input, then relu."""

    def __init__(self, in_width: int, width: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_width, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_width != width:
            self.downsample = nn.Sequential(nn.Conv2d(in_width, width, 1, stride=stride, bias=False), nn.BatchNorm2d(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.downsample(x))


class ResNet(nn.Module):
    """ResNet-18 layout: 7x7/2 stem, 3x3/2 max-pool, residual stages, global average pool, linear.

    Takes `pixel_values` of shape (batch, num_channels, image_size, image_size); returns logits.
    """

    main_input_name = "pixel_values"

    def __init__(self, config: ResNetConfig):
        super().__init__()
        self.config = config
        self.conv1 = nn.Conv2d(config.num_channels, config.stem_width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(config.stem_width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_width = config.stem_width
        for index, width in enumerate(config.widths[: config.num_stages]):
            blocks = []
            for block in range(config.blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(in_width, width, stride))
                in_width = width
            self.add_module(f"layer{index + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_width, config.num_classes)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(pixel_values))))
        for index in range(self.config.num_stages):
            x = getattr(self, f"layer{index + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))
