"""The baseline: a ContextUnet in the style of the DeepLearning.AI course, rebuilt from its description.

Two down levels (n_feat, 2 n_feat) of residual conv blocks with BatchNorm and GELU,
a 4x4 bottleneck pooled to a vector, transposed convolutions back up, and small
fully-connected embeddings of t and the context that scale and shift the up
path. With n_feat = 64 it has about 1.48 M parameters. Unlike the original, the
1x1 shortcut convolution is created once in __init__ instead of at random inside
forward, so the baseline is deterministic (and no slower than the original).
Used only by benchmarks/foundation.py.
"""

from __future__ import annotations

import torch
from torch import nn


class ResidualConvBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, residual: bool = False):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), nn.GELU())
        self.conv2 = nn.Sequential(nn.Conv2d(out_channels, out_channels, 3, 1, 1), nn.BatchNorm2d(out_channels), nn.GELU())
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if residual and in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.conv1(x))
        if not self.residual:
            return h
        skip = self.shortcut(x)
        return (skip + h) / 1.414


class UnetDown(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(ResidualConvBlock(in_channels, out_channels), ResidualConvBlock(out_channels, out_channels), nn.MaxPool2d(2))


class UnetUp(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.model = nn.Sequential(
            nn.ConvTranspose2d(in_channels, out_channels, 2, 2),
            ResidualConvBlock(out_channels, out_channels),
            ResidualConvBlock(out_channels, out_channels),
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.model(torch.cat([x, skip], dim=1))


class EmbedFC(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))


class ContextUnet(nn.Module):
    """forward(x, t, context) with t a float in [0, 1] (B,) and context (B, n_cfeat) or None."""

    def __init__(self, in_channels: int = 3, n_feat: int = 64, n_cfeat: int = 9, height: int = 16):
        super().__init__()
        self.n_feat, self.n_cfeat = n_feat, n_cfeat
        self.init_conv = ResidualConvBlock(in_channels, n_feat, residual=True)
        self.down1 = UnetDown(n_feat, n_feat)
        self.down2 = UnetDown(n_feat, 2 * n_feat)
        self.to_vec = nn.Sequential(nn.AvgPool2d(4), nn.GELU())
        self.timeembed1, self.timeembed2 = EmbedFC(1, 2 * n_feat), EmbedFC(1, n_feat)
        self.contextembed1, self.contextembed2 = EmbedFC(n_cfeat, 2 * n_feat), EmbedFC(n_cfeat, n_feat)
        self.up0 = nn.Sequential(
            nn.ConvTranspose2d(2 * n_feat, 2 * n_feat, height // 4, height // 4), nn.GroupNorm(8, 2 * n_feat), nn.ReLU()
        )
        self.up1 = UnetUp(4 * n_feat, n_feat)
        self.up2 = UnetUp(2 * n_feat, n_feat)
        self.out = nn.Sequential(
            nn.Conv2d(2 * n_feat, n_feat, 3, 1, 1), nn.GroupNorm(8, n_feat), nn.ReLU(), nn.Conv2d(n_feat, in_channels, 3, 1, 1)
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        x = self.init_conv(x)
        down1 = self.down1(x)  # (B, n_feat, 8, 8)
        down2 = self.down2(down1)  # (B, 2 n_feat, 4, 4)
        hidden = self.to_vec(down2)
        if context is None:
            context = torch.zeros(x.shape[0], self.n_cfeat, device=x.device)
        t = t.float().view(-1, 1)
        cemb1 = self.contextembed1(context).view(-1, 2 * self.n_feat, 1, 1)
        temb1 = self.timeembed1(t).view(-1, 2 * self.n_feat, 1, 1)
        cemb2 = self.contextembed2(context).view(-1, self.n_feat, 1, 1)
        temb2 = self.timeembed2(t).view(-1, self.n_feat, 1, 1)
        up1 = self.up0(hidden)
        up2 = self.up1(cemb1 * up1 + temb1, down2)
        up3 = self.up2(cemb2 * up2 + temb2, down1)
        return self.out(torch.cat([up3, x], dim=1))
