"""Inference-only rewrites of a frozen CNN that keep its outputs: batch norm folded into the
preceding convolution, TF "same" padding of stride-2 convolutions made static, pointwise
convolutions kept on oneDNN.

On a CPU, EfficientNet-Lite0's batch norms took 20 % of the forward pass and the per-call padding
of its five stride-2 convolutions (a zero-filled copy of the input) another 13 %; both are pure
overhead once the weights are frozen.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A convolution computing ``bn(conv(x))`` (eval-mode statistics) in one step."""
    mean, var = bn.running_mean, bn.running_var
    if mean is None or var is None:
        raise ValueError(f"cannot fold a norm without running statistics: {bn}")
    scale = bn.weight / torch.sqrt(var + bn.eps)
    folded = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        stride=conv.stride,  # type: ignore[arg-type]
        padding=conv.padding,  # type: ignore[arg-type]
        dilation=conv.dilation,  # type: ignore[arg-type]
        groups=conv.groups,
        bias=True,
    )
    bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
    with torch.no_grad():
        folded.weight.copy_(conv.weight * scale.view(-1, 1, 1, 1))
        folded.bias.copy_((bias - mean) * scale + bn.bias)  # type: ignore[union-attr]
    return folded


class EvenSameConv2d(nn.Conv2d):
    """TF "same" padding of a stride-2 convolution, valid for inputs of even height and width.

    On an even side n, "same" pads (k - 2) // 2 before and k // 2 after; that equals a convolution
    with a kernel one larger, zero in its first row and column, and the symmetric static padding
    k // 2, which needs no copy of the input. Odd sides are refused rather than computed wrongly.
    """

    @classmethod
    def from_same(cls, conv: nn.Conv2d) -> EvenSameConv2d:
        kh, kw = conv.kernel_size
        if conv.stride != (2, 2) or conv.dilation != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
            raise ValueError(f"only odd kernels with stride 2 are supported, got {conv}")
        out = cls(
            conv.in_channels,
            conv.out_channels,
            (kh + 1, kw + 1),
            stride=2,
            padding=(kh // 2, kw // 2),
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        with torch.no_grad():
            out.weight.zero_()
            out.weight[:, :, 1:, 1:] = conv.weight
            if conv.bias is not None:
                out.bias.copy_(conv.bias)  # type: ignore[union-attr]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            raise ValueError(f"EvenSameConv2d needs even input sides, got {tuple(x.shape[-2:])}")
        return super().forward(x)


def reference_same_conv(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """TF "same" convolution by explicit padding (what timm's Conv2dSame computes); for tests."""
    ih, iw = x.shape[-2:]
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    ph = max((-(-ih // sh) - 1) * sh + kh - ih, 0)
    pw = max((-(-iw // sw) - 1) * sw + kw - iw, 0)
    x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, 0, conv.dilation, conv.groups)


def fold_block(block: nn.Module, pairs: tuple[tuple[str, str], ...]) -> None:
    """Fold each (conv, norm) attribute pair of ``block`` in place; the norm keeps only its activation.

    timm's BatchNormAct2d applies the activation after the norm, so the norm becomes the bare
    activation (``act``), and a same-padded stride-2 convolution becomes an ``EvenSameConv2d``.
    """
    for conv_name, bn_name in pairs:
        conv, bn = getattr(block, conv_name), getattr(block, bn_name)
        folded = fold_conv_bn(conv, bn)
        if type(conv).__name__ == "Conv2dSame":
            folded = EvenSameConv2d.from_same(folded)
        setattr(block, conv_name, folded)
        setattr(block, bn_name, _activation_of(bn))


def _activation_of(bn: nn.Module) -> nn.Module:
    act = getattr(bn, "act", None)
    drop = getattr(bn, "drop", None)
    if drop is not None and not isinstance(drop, nn.Identity):
        raise ValueError(f"cannot fold a norm with dropout: {bn}")
    return act if isinstance(act, nn.Module) else nn.Identity()


class OneDnnPointwiseConv2d(nn.Conv2d):
    """A 1x1, stride-1 convolution that always runs on oneDNN for CPU fp32 inference.

    ATen's ``use_mkldnn`` heuristic sends such a convolution elsewhere on one thread: with a batch
    under 16 to its im2col path ("slow_conv2d", which first copies a channels-last input to NCHW),
    and with a batch of one and a small input (under 20,480 values) to its native kernels. A CPU
    worker runs one thread and inspects small batches when its streams keep up; EfficientNet-Lite0
    took 18.7 ms per frame at batch 8 on im2col and 12.2 ms on oneDNN, with identical outputs.
    (An earlier rewrite set dilation 2 on the one-tap kernel instead; at batch 1 that sent the
    small late-stage layers to ``slow_conv_dilated2d``, 5x slower.)
    """

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if (
            input.device.type == "cpu"
            and input.dtype == torch.float32
            and torch.backends.mkldnn.is_available()
            and not (torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad))
        ):
            return torch.ops.aten.mkldnn_convolution(input, weight, bias, [0, 0], [1, 1], [1, 1], self.groups)
        return super()._conv_forward(input, weight, bias)


def keep_pointwise_on_onednn(model: nn.Module) -> int:
    """Make every 1x1, stride-1, unpadded convolution a ``OneDnnPointwiseConv2d`` (same weights,
    same outputs); returns how many changed."""
    changed = 0
    for m in model.modules():
        if (
            type(m) is nn.Conv2d
            and m.kernel_size == (1, 1)
            and m.stride == (1, 1)
            and m.dilation == (1, 1)
            and m.padding in ((0, 0), "valid")
        ):
            m.__class__ = OneDnnPointwiseConv2d
            changed += 1
    return changed
