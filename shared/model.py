"""The denoiser (a small U-Net) and the sprite classifier, parts before the whole.

The denoiser sees a noisy sprite x_t (B, 3, 16, 16), its time t (B,) and an optional context
(B, 9): a one-hot group, a mixture of groups, or a zero row for "no context", which selects a
learned embedding (what classifier-free guidance contrasts, Ho & Salimans 2022). Its config names
its noise schedule, so a loaded model carries it as `model.schedule`. Three resolutions (16, 8, 4),
attention only at 4x4: most arithmetic on small maps suits a laptop CPU (docs/design.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .checks import check_images, check_timesteps, describe
from .flow import StraightPath
from .schedule import SCHEDULE_KINDS, NoiseSchedule

PREDICTION_TYPES = ("eps", "x0", "v", "velocity")  # velocity: a flow model's dx/dt


@dataclass
class DenoiserConfig:
    image_size: int = 16
    image_channels: int = 3
    context_dim: int = 9  # one entry per Unicode emoji group
    base_channels: int = 32  # channels at 16x16; powers of two keep the CPU convolutions fast
    channel_mults: tuple[int, ...] = (1, 2, 4)  # 32 channels at 16x16, 64 at 8x8, 128 at 4x4
    embed_dim: int = 128
    T: int = 500  # integer timesteps 0..T (a flow model's time is continuous in [0, 1] instead)
    prediction: str = "eps"  # what forward returns: the noise, the clean image, v, or a flow's velocity
    schedule: str = "cosine"  # the noise schedule's kind, or "flow" for the straight path

    def __post_init__(self):
        self.channel_mults = tuple(self.channel_mults)
        if self.prediction not in PREDICTION_TYPES:
            raise ValueError(f"prediction must be one of {PREDICTION_TYPES}, got {self.prediction!r}")
        if self.schedule not in SCHEDULE_KINDS + ("flow",):
            raise ValueError(f"schedule must be one of {SCHEDULE_KINDS + ('flow',)}, got {self.schedule!r}")
        if (self.schedule == "flow") != (self.prediction == "velocity"):
            raise ValueError("a flow model (schedule 'flow') predicts the velocity, and only a flow model does")
        if self.image_size % 2 ** (len(self.channel_mults) - 1):
            raise ValueError("image_size must be divisible by 2 for every downsampling level")

    @property
    def continuous_time(self) -> bool:
        return self.schedule == "flow"


def timestep_embedding(t: torch.Tensor, dim: int, T: int) -> torch.Tensor:
    """Sinusoidal features of t/T (Vaswani et al. 2017), (B,) -> (B, dim); T = 1 for flow times."""
    half = dim // 2
    frequencies = torch.exp(-math.log(10_000) * torch.arange(half, device=t.device) / half)
    angles = (t.float() / T * 1000)[:, None] * frequencies[None, :]  # (B, half)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions; the embedding scales and shifts the features between them (FiLM)."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(8, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(embed_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(8, out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        # Starting the residual branch at zero makes every block the identity at init,
        # which trains faster and more stably (Goyal et al. 2017; Dhariwal & Nichol 2021).
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # in place where nothing else reads the tensor: ~5% faster sampling (docs/design.md)
        h = self.conv1(F.silu(self.norm1(x), inplace=True))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h, inplace=True))
        return h.add_(self.skip(x))


class SelfAttention(nn.Module):
    """Multi-head self-attention over the positions of a small feature map."""

    def __init__(self, channels: int, heads: int = 4):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(8, channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, self.heads, C // self.heads, H * W).unbind(1)
        # (B, heads, HW, C/heads) each, as scaled_dot_product_attention expects
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2), v.transpose(-1, -2))
        return x + self.out(h.transpose(-1, -2).reshape(B, C, H, W))


class Denoiser(nn.Module):
    """U-Net predicting the noise (or x0, or v) in x_t, conditioned on t and an optional context."""

    def __init__(self, config: DenoiserConfig | None = None):
        super().__init__()
        self.config = config = config or DenoiserConfig()
        # buffers only, none saved: the config rebuilds it
        self.schedule = StraightPath() if config.continuous_time else NoiseSchedule(config.T, config.schedule)
        channels = [config.base_channels * m for m in config.channel_mults]  # e.g. [32, 64, 128]
        E = config.embed_dim

        self.time_mlp = nn.Sequential(nn.Linear(E, E), nn.SiLU(), nn.Linear(E, E))
        self.context_embedding = nn.Linear(config.context_dim, E, bias=False)
        self.no_context_embedding = nn.Parameter(torch.zeros(E))

        self.conv_in = nn.Conv2d(config.image_channels, channels[0], 3, padding=1)
        self.down_blocks, self.downsamples = nn.ModuleList(), nn.ModuleList()
        previous = channels[0]
        for level, width in enumerate(channels):
            self.down_blocks.append(ResidualBlock(previous, width, E))
            previous = width
            if level < len(channels) - 1:
                self.downsamples.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.middle_block = ResidualBlock(previous, previous, E)
        self.middle_attention = SelfAttention(previous)
        self.up_blocks, self.upsamples = nn.ModuleList(), nn.ModuleList()
        for level in reversed(range(len(channels))):
            width = channels[level]
            self.up_blocks.append(ResidualBlock(previous + width, width, E))  # + skip connection
            previous = width
            if level > 0:
                # 2x2, stride 2: each output pixel from one input pixel, so no checkerboard
                self.upsamples.append(nn.ConvTranspose2d(width, channels[level - 1], 2, stride=2))
                previous = channels[level - 1]
        self.norm_out = nn.GroupNorm(8, previous)
        self.conv_out = nn.Conv2d(previous, config.image_channels, 3, padding=1)

    def embed(self, t: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Time embedding plus context embedding, (B, embed_dim); zero context rows get the learned null."""
        T = 1 if self.config.continuous_time else self.config.T
        features = timestep_embedding(t, self.config.embed_dim, T).to(self.no_context_embedding.dtype)
        emb = self.time_mlp(features)
        null = self.no_context_embedding.expand_as(emb)
        if context is None:
            return emb + null
        has_context = (context.abs().sum(dim=1, keepdim=True) > 0).to(emb.dtype)  # (B, 1)
        return emb + has_context * self.context_embedding(context) + (1 - has_context) * null

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self.check_inputs(x, t, context)
        emb = self.embed(t, context)
        h = self.conv_in(x)
        skips = []
        for level, block in enumerate(self.down_blocks):
            h = block(h, emb)
            skips.append(h)
            if level < len(self.downsamples):
                h = self.downsamples[level](h)
        h = self.middle_attention(self.middle_block(h, emb))
        for level, block in enumerate(self.up_blocks):
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            if level < len(self.upsamples):
                h = self.upsamples[level](h)  # (B, C, H, W) -> (B, C', 2H, 2W)
        return self.conv_out(F.silu(self.norm_out(h), inplace=True))

    def check_inputs(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None) -> None:
        c = self.config
        check_images(x, c, self.conv_in.weight)
        check_timesteps(t, None if c.continuous_time else c.T, x.shape[0], x.device)
        if context is not None:
            if not isinstance(context, torch.Tensor) or context.shape != (x.shape[0], c.context_dim):
                raise ValueError(f"context must have shape ({x.shape[0]}, {c.context_dim}) or be None, got {describe(context)}")
            if context.device != x.device:
                raise ValueError(f"context is on {context.device} but the model is on {x.device}")
            if context.dtype != x.dtype:
                raise ValueError(f"context has dtype {context.dtype} but x has {x.dtype} (F.one_hot gives integers: add .float())")


@dataclass
class StepwiseDenoiserConfig(DenoiserConfig):
    own_levels: tuple[int, ...] = ()  # timesteps whose rows go to their own copy of the network

    def __post_init__(self):
        super().__post_init__()
        self.own_levels = tuple(int(level) for level in self.own_levels)
        if len(set(self.own_levels)) != len(self.own_levels) or not all(0 < level <= self.T for level in self.own_levels):
            raise ValueError(f"own_levels must be distinct timesteps in 1..{self.T}, got {self.own_levels}")


class StepwiseDenoiser(nn.Module):
    """A few-step student with its own copy of the U-Net at some timesteps, the shared one at the rest (Lab 6).

    The step that decides a sprite's layout is far harder to learn than the others; a copy for it
    alone costs nothing in sampling, one call per step either way (docs/design.md).
    """

    def __init__(self, config: StepwiseDenoiserConfig):
        super().__init__()
        self.config = config
        network = DenoiserConfig(**{key: value for key, value in asdict(config).items() if key != "own_levels"})
        self.shared = Denoiser(network)
        self.own = nn.ModuleDict({str(level): Denoiser(network) for level in config.own_levels})

    @property
    def schedule(self) -> NoiseSchedule:
        return self.shared.schedule

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        self.shared.check_inputs(x, t, context)
        networks = {int(level): network for level, network in self.own.items()}
        if t.numel() and bool((t == t[0]).all()):  # sampling: every row at the same step
            return networks.get(int(t[0]), self.shared)(x, t, context)
        output = torch.empty_like(x)
        for level in t.unique().tolist():
            rows = t == level
            output[rows] = networks.get(level, self.shared)(x[rows], t[rows], None if context is None else context[rows])
        return output


@dataclass
class ClassifierConfig:
    image_size: int = 16
    image_channels: int = 3
    n_classes: int = 9
    width: int = 64
    feature_dim: int = 64  # features for the Frechet distance; small so 1000 samples estimate its covariance
    noise_aware: bool = False  # True: also takes t, for classifier guidance (Dhariwal & Nichol 2021)
    T: int = 500


class SpriteClassifier(nn.Module):
    """A small CNN: sprite (B, 3, 16, 16) -> group logits (B, 9); `features` gives (B, feature_dim)."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        w = config.width

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
            )

        self.stages = nn.ModuleList([stage(config.image_channels, w), stage(w, 2 * w), stage(2 * w, 2 * w)])
        self.time_mlp = nn.Linear(w, w) if config.noise_aware else None
        self.to_features = nn.Sequential(nn.Linear(2 * w, config.feature_dim), nn.SiLU())
        self.head = nn.Linear(config.feature_dim, config.n_classes)

    def features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        check_images(x, c, self.head.weight)
        if c.noise_aware:
            if t is None:
                raise ValueError("this classifier is noise-aware: pass the timesteps t of shape (B,)")
            check_timesteps(t, c.T, x.shape[0], x.device)
        h = x
        for i, stage in enumerate(self.stages):
            h = stage(h)
            if i == 0 and self.time_mlp is not None:
                h = h + self.time_mlp(timestep_embedding(t, c.width, c.T).to(h.dtype))[:, :, None, None]
            if i < len(self.stages) - 1:
                h = F.avg_pool2d(h, 2)
        return self.to_features(h.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, t))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, weight by weight: the average samples better than the last weights."""
    for ema_param, param in zip(ema.parameters(), model.parameters()):
        ema_param.lerp_(param, 1 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers()):
        ema_buffer.copy_(buffer)
