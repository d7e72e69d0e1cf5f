"""The Kellgren-Lawrence grading CNN: a narrow single-channel ResNet.

Default architecture, chosen by measurement on this project's 2-core CPU (AMD EPYC, AVX2,
no AVX-512-bf16/AMX, so bf16 autocast is emulated and much *slower* than fp32 here). Batch
32 at 224 px, 2 threads, channels_last, eval mode for inference; training is an AdamW step:

==============================  ======  =========  ==========  ==========  ===========
blocks per stage, base width    params  MACs/img   fp32 img/s  bf16 img/s  train img/s
==============================  ======  =========  ==========  ==========  ===========
(2, 2, 2, 2), 64 (ResNet-18)    11.2 M  1.735 G    23          3.5         -
(2, 2, 2, 2), 32                2.80 M  0.444 G    95          10          19
(1, 1, 1, 1), 32 (default)      1.23 M  0.212 G    130         10          44
(1, 1, 1, 1), 16                0.31 M  0.058 G    257         50          -
==============================  ======  =========  ==========  ==========  ===========

The default keeps ResNet-18's stem, four stages and receptive field (joint-space narrowing
and osteophytes are local features, so resolution matters more than depth) at an eighth
of its multiply-adds: it scores 10,000 images in under two minutes on two cores and trains
about 50,000 image-epochs in 20 minutes. On CPUs with AVX-512-bf16/AMX and on CUDA the
same card runs faster under autocast; ``koa_core.model.inference`` picks the precision.
"""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from koa_core.model.card import DEFAULT_DEPTH, DEFAULT_WIDTH, ModelCard
from koa_core.schema import NUM_CLASSES, adjacent_mixing

ModuleT = TypeVar("ModuleT", bound=nn.Module)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (projected when the shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu_(out + self.downsample(x))


class PooledGrader(nn.Module):
    """What every grader shares: feature maps, global average pooling, one linear layer.

    The head is linear on pooled maps, so a class-activation map is one weighted sum of
    ``feature_maps`` with ``fc``'s weights. Subclasses build ``feature_maps``. With a
    reader-noise share the head's logits go through ``reader_noise_logits``.
    """

    reader_log_mixing: torch.Tensor | None

    def _add_head(self, channels: int, drop_rate: float, reader_noise: float) -> None:
        # Built after the feature layers: parameters are initialised in creation order,
        # and a seeded network must stay the same network.
        self.num_features = channels
        self.dropout = nn.Dropout(drop_rate)
        self.fc = nn.Linear(channels, NUM_CLASSES)
        # Not persistent: the card's share rebuilds it, and weights saved before the layer
        # existed load unchanged.
        log_mixing = reader_log_mixing(reader_noise) if reader_noise else None
        self.register_buffer("reader_log_mixing", log_mixing, persistent=False)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last convolutional maps, shape (N, ``num_features``, h, w)."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features, shape (N, ``num_features``)."""
        return self.feature_maps(x).mean(dim=(2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """KL 0-4 logits, shape (N, 5), from pooled features."""
        logits: torch.Tensor = self.fc(self.dropout(features))
        if self.reader_log_mixing is None:
            return logits
        return reader_noise_logits(logits, self.reader_log_mixing)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class KLNet(PooledGrader):
    """ResNet for one-channel radiographs with five KL-grade logits.

    Args:
        depth: BasicBlocks per stage; stage ``i`` has ``width * 2**i`` channels and
            halves the resolution (except the first, which follows the stem's max-pool).
        width: channels of the stem and the first stage.
        drop_rate: dropout on the pooled features during training.
        reader_noise: the reader-noise layer's share (0: none).
    """

    def __init__(
        self,
        depth: tuple[int, ...] = DEFAULT_DEPTH,
        width: int = DEFAULT_WIDTH,
        drop_rate: float = 0.2,
        reader_noise: float = 0.0,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 7, 2, 3, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, 1),
        )
        stages: list[nn.Module] = []
        channels = width
        for index, blocks in enumerate(depth):
            out_channels = width * 2**index
            layers = [BasicBlock(channels, out_channels, 1 if index == 0 else 2)]
            layers += [BasicBlock(out_channels, out_channels, 1) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*layers))
            channels = out_channels
        self.stages = nn.Sequential(*stages)
        self._add_head(channels, drop_rate, reader_noise)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        # Zero the last BN of each block so every residual branch starts as identity.
        for module in self.modules():
            if isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's maps, shape (N, ``num_features``, H/32, W/32)."""
        maps: torch.Tensor = self.stages(self.stem(x))
        return maps


class PlainNet(PooledGrader):
    """Stages of 3x3 convolution + BN + ReLU, each closed by a 2x2 max-pool; no stem.

    Full resolution in the first stage keeps the thin joint space and small osteophytes
    that a strided 7x7 stem blurs away. Same ``forward_features``/``forward_head`` split
    as ``KLNet``: global average pooling, then one linear layer.

    Args:
        depth: convolutions per stage; stage ``i`` has ``width * 2**i`` channels.
        width: channels of the first stage.
        drop_rate: dropout on the pooled features during training.
        reader_noise: the reader-noise layer's share (0: none).
    """

    def __init__(
        self,
        depth: tuple[int, ...],
        width: int,
        drop_rate: float = 0.2,
        reader_noise: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        for index, convolutions in enumerate(depth):
            out_channels = width * 2**index
            for _ in range(convolutions):
                layers += [
                    nn.Conv2d(channels, out_channels, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(out_channels),
                    nn.ReLU(inplace=True),
                ]
                channels = out_channels
            layers.append(nn.MaxPool2d(2))
        self.stages = nn.Sequential(*layers)
        self._add_head(channels, drop_rate, reader_noise)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """The last stage's maps, shape (N, ``num_features``, H/2**stages, W/2**stages)."""
        maps: torch.Tensor = self.stages(x)
        return maps


GraderNet = PooledGrader
ARCHITECTURES: dict[str, type[KLNet] | type[PlainNet]] = {"resnet": KLNet, "plain": PlainNet}


def build_model(card: ModelCard) -> GraderNet:
    """A freshly initialised network for ``card``'s architecture."""
    arch = card.architecture
    if arch.name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch.name!r}; koa builds {sorted(ARCHITECTURES)}")
    network: GraderNet = ARCHITECTURES[arch.name](
        arch.depth, arch.width, arch.drop_rate, arch.reader_noise
    )
    return network


def reader_log_mixing(share: float) -> torch.Tensor:
    """log of ``schema.adjacent_mixing(share)``, float32 (-inf where a reader never records
    that grade)."""
    if not 0.0 <= share < 0.5:
        raise ValueError(f"reader_noise must lie in [0, 0.5), not {share}")
    return torch.log(torch.as_tensor(adjacent_mixing(share), dtype=torch.float32))


def reader_noise_logits(logits: torch.Tensor, log_mixing: torch.Tensor) -> torch.Tensor:
    """log P(recorded grade) = log(softmax(logits) @ mixing), float32 (N, 5).

    A noise-adaptation layer (forward-corrected cross-entropy, Patrini et al. 2017): trained
    on labels that readers move onto a neighbouring grade, the head below it learns the
    knee's grade and this layer the readers' spread, so the clearest knee is no longer
    predicted with a confidence its recorded labels never reach. Computed in log space so
    that a grade the head rules out keeps a finite log-probability and gradient.
    """
    log_probs = torch.log_softmax(logits.float(), dim=1)
    return torch.logsumexp(log_probs.unsqueeze(2) + log_mixing, dim=1)


def kl_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the five KL grades."""
    return torch.softmax(logits.float(), dim=1)


def count_macs(model: nn.Module, input_size: int) -> int:
    """Multiply-accumulates of one forward pass on a single ``input_size`` image."""
    param = next(model.parameters())
    x = torch.zeros(1, 1, input_size, input_size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return counter.get_total_flops() // 2


def place(model: ModuleT, device: str | torch.device) -> ModuleT:
    """Move ``model`` to ``device`` with channels_last weights (faster convolutions)."""
    # torch's stubs omit Module.to's memory_format keyword, which it does accept.
    model.to(device=device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model
