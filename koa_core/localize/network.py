"""The localizer network: a small fully convolutional encoder-decoder with a heatmap head.

Output channels at ``output_stride`` (see ``heatmap``): a joint-centre logit per cell, the
sub-cell offset (x, y) of the centre in cells, a handedness logit (the knee looks like
a right knee as displayed: fibula on the viewer's left) and, with a view head, a second
heat class: the centre of a side-view knee joint, whose maximum over the film says whether
it is a lateral view. A film-level label alone (multiple-instance, only the maximum cell
answering) learnt the wrong cue on phantoms: it named one-leg PA films lateral as often as
lateral ones; trained on where the side-view joint lies, the head looks at the joint.

Handedness is read from an early encoder stage on purpose (``handed_stage``, a receptive
field of about 40 input pixels, some 120 mm at 3 mm/px): it sees one knee's fibula but not
the other knee. With a film-wide view a network learns the shortcut that on a bilateral
film the knee on the viewer's left looks right (true flipped or not), and then guesses on
a one-knee film, exactly where a wrong-side check needs the anatomy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from koa_core.localize.card import LocalizerArchitecture

HEAT, OFFSET_X, OFFSET_Y, HANDED, VIEW = range(5)
# Initial heat logit: sigmoid(-4.6) ~ 0.01, CenterNet's prior, so early training is stable.
HEAT_PRIOR_LOGIT = -4.6


def _conv(in_channels: int, out_channels: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class LocalizerNet(nn.Module):
    """Encoder of stride-2 stages, a top-down pathway to ``output_stride``, a 4-channel head
    (5 with the view head)."""

    def __init__(self, arch: LocalizerArchitecture) -> None:
        super().__init__()
        self.arch = arch
        self.min_stride = 2 ** len(arch.widths)
        self.stages = nn.ModuleList()
        previous = 1
        for index, width in enumerate(arch.widths):
            # The stem is a single conv: at full input resolution a second one costs most.
            layers = [_conv(previous, width, 2)] + ([_conv(width, width)] if index else [])
            self.stages.append(nn.Sequential(*layers))
            previous = width
        # Lateral 1x1 projections for the stages at and below output_stride's resolution.
        self.keep = [i for i in range(len(arch.widths)) if 2 ** (i + 1) >= arch.output_stride]
        self.lateral = nn.ModuleList(
            nn.Conv2d(arch.widths[i], arch.decoder_width, 1) for i in self.keep
        )
        self.smooth = _conv(arch.decoder_width, arch.decoder_width)
        # Heat and offsets from the merged pathway; handedness from the local stage only.
        self.head = nn.Conv2d(arch.decoder_width, HANDED, 1)
        bias = torch.zeros(HANDED)
        bias[HEAT] = HEAT_PRIOR_LOGIT
        self.head.bias = nn.Parameter(bias)
        self.handed = nn.Sequential(
            _conv(arch.widths[arch.handed_stage], arch.decoder_width),
            nn.Conv2d(arch.decoder_width, 1, 1),
        )
        # A second heat class: side-view joints, read off the knees' features without
        # training them (see forward_head).
        self.view: nn.Sequential | None = None
        if arch.view_head:
            out = nn.Conv2d(arch.decoder_width, 1, 1)
            out.bias = nn.Parameter(torch.full((1,), HEAT_PRIOR_LOGIT))
            self.view = nn.Sequential(_conv(arch.decoder_width, arch.decoder_width), out)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(decoder features at ``output_stride``, ``handed_stage`` features) of a (N, 1, H,
        W) input, H and W a multiple of ``min_stride``."""
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        merged: torch.Tensor | None = None
        for lateral, index in zip(reversed(self.lateral), reversed(self.keep), strict=True):
            projected = lateral(features[index])
            if merged is not None:
                merged = F.interpolate(merged, size=projected.shape[-2:], mode="nearest")
                projected = projected + merged
            merged = projected
        assert merged is not None
        return self.smooth(merged), features[self.arch.handed_stage]

    def forward_head(self, features: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(N, 4 or 5, H/stride, W/stride) raw maps: heat logit, offset x, offset y,
        handedness, and the side-view joint's heat logit with a view head."""
        merged, local = features
        maps = self.head(merged)
        handed = F.interpolate(self.handed(local), size=maps.shape[-2:], mode="nearest")
        # The side-view class trains the shared features at a fraction of its gradient:
        # at full share it cost the handedness 3-26 points on held-out one-knee films
        # (three seeds); detached, it learnt nothing from them.
        views = () if self.view is None else (self.view(_scaled_gradient(merged)),)
        return torch.cat((maps, handed, *views), dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


VIEW_GRADIENT_SHARE = 0.1
"""Share of the view loss's gradient that reaches the shared features (measured: 1 cost
handedness, 0 and 0.05-0.2 at weight 1 left the head unlearnt on some seeds; 0.1 at
``view_weight`` 4 named 36-40 of 40 held-out side views and kept the handedness)."""


def _scaled_gradient(features: torch.Tensor) -> torch.Tensor:
    """``features`` unchanged forward; backward, ``VIEW_GRADIENT_SHARE`` of the gradient."""
    share = VIEW_GRADIENT_SHARE
    return features * share + features.detach() * (1.0 - share)


def view_logits(maps: torch.Tensor) -> torch.Tensor:
    """(N,) film-level lateral-view logits of raw maps with a view channel: their maximum."""
    return maps[:, VIEW].amax(dim=(-2, -1))


def build_localizer(arch: LocalizerArchitecture) -> LocalizerNet:
    """A freshly initialised network for ``arch``.

    Raises:
        ValueError: an unknown architecture name or an output stride the encoder lacks.
    """
    if arch.name != "heatmap-fpn":
        raise ValueError(f"unknown localizer architecture {arch.name!r}")
    strides = {2 ** (i + 1) for i in range(len(arch.widths))}
    if arch.output_stride not in strides:
        raise ValueError(f"output_stride {arch.output_stride} is not one of {sorted(strides)}")
    if not 0 <= arch.handed_stage < len(arch.widths):
        raise ValueError(f"handed_stage {arch.handed_stage} is not a stage of {arch.widths}")
    return LocalizerNet(arch)
