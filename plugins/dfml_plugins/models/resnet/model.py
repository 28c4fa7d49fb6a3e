"""ResNet-10 / ResNet-18 for small images (docs/protocol.md section 3).

3x3 stem conv (no bias) -> BN, no stem ReLU or max-pool; four stages of basic blocks with
widths w, 2w, 4w, 8w (w = 64 in the paper), stride 2 at the first block of stages 2-4;
1x1 conv + BN shortcut when the shape changes; global average pool -> linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfml_plugins.models.resnet import ResNetParams


def _bn(channels: int, running_stats: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, track_running_stats=running_stats)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a residual connection."""

    def __init__(self, cin: int, cout: int, stride: int, running_stats: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _bn(cout, running_stats)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _bn(cout, running_stats)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _bn(cout, running_stats))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """A small-image ResNet; `blocks` per stage, e.g. (1,1,1,1) = ResNet-10, (2,2,2,2) = ResNet-18."""

    def __init__(self, blocks: tuple[int, int, int, int], num_classes: int, width: int = 64,
                 running_stats: bool = False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), _bn(width, running_stats))
        layers, cin = [], width
        for stage, n in enumerate(blocks):
            cout = width * 2**stage
            for b in range(n):
                layers.append(BasicBlock(cin, cout, 2 if (b == 0 and stage > 0) else 1, running_stats))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(x))
        return self.classifier(h.mean(dim=(2, 3)))


def build_resnet10(params: ResNetParams, num_classes: int, image_size: int | None, *,
                   running_stats: bool = False) -> ResNet:
    """ResNet-10 (about 4.9M parameters at width 64); any input size (global pooling)."""
    return ResNet((1, 1, 1, 1), num_classes, params.width, running_stats)


def build_resnet18(params: ResNetParams, num_classes: int, image_size: int | None, *,
                   running_stats: bool = False) -> ResNet:
    """ResNet-18 (about 11.2M parameters at width 64); any input size (global pooling)."""
    return ResNet((2, 2, 2, 2), num_classes, params.width, running_stats)
