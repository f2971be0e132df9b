"""Batch-norm folding and static "same" padding give the frozen network's own outputs."""

import pytest
import timm
import torch
from torch import nn

from workers.backbones.efficientnet import EfficientNetLite0
from workers.backbones.folding import (
    EvenSameConv2d,
    fold_conv_bn,
    keep_pointwise_on_onednn,
    reference_same_conv,
)


def _randomised_bn(channels: int, seed: int) -> nn.BatchNorm2d:
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels, eps=1e-3).eval()
    with torch.no_grad():
        bn.weight.copy_(torch.rand(channels, generator=g) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=g))
        bn.running_mean.copy_(torch.randn(channels, generator=g))
        bn.running_var.copy_(torch.rand(channels, generator=g) + 0.1)
    return bn


@pytest.mark.parametrize(("groups", "bias"), [(1, False), (6, True)])
def test_folded_convolution_equals_conv_then_norm(groups, bias):
    conv = nn.Conv2d(6, 6, 3, padding=1, groups=groups, bias=bias)
    bn = _randomised_bn(6, seed=groups)
    x = torch.randn(2, 6, 10, 12)
    torch.testing.assert_close(fold_conv_bn(conv, bn)(x), bn(conv(x)), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("kernel", "groups"), [(3, 1), (3, 8), (5, 8)])
@pytest.mark.parametrize("size", [(8, 12), (16, 10)])
def test_even_same_convolution_equals_tf_same_padding(kernel, groups, size):
    torch.manual_seed(kernel + groups)
    conv = nn.Conv2d(8, 8, kernel, stride=2, groups=groups, bias=True)
    x = torch.randn(2, 8, *size)
    expected = reference_same_conv(conv, x)
    got = EvenSameConv2d.from_same(conv)(x)
    assert got.shape == expected.shape == (2, 8, size[0] // 2, size[1] // 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # the plain symmetric padding PyTorch offers is not the same: the sampling grid shifts
    assert not torch.allclose(nn.functional.conv2d(x, conv.weight, conv.bias, 2, kernel // 2, 1, groups), got)


def test_even_same_convolution_refuses_odd_sides():
    conv = EvenSameConv2d.from_same(nn.Conv2d(3, 4, 3, stride=2))
    with pytest.raises(ValueError, match="even input sides"):
        conv(torch.randn(1, 3, 9, 8))


def test_folded_backbone_matches_timm_with_batch_norm_statistics(tmp_path):
    """Through the real loading code: a state dict with non-trivial norm statistics, loaded into
    the folded backbone, gives timm's own (unfolded) features at every tapped stage."""
    reference = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in reference.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    weights = tmp_path / "lite0.pth"
    torch.save(reference.state_dict(), weights)
    folded = EfficientNetLite0(weights, stages=(2, 4, 5))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 64, 96)
    with torch.inference_mode():
        got = folded(x)
        y = reference.bn1(reference.conv_stem(folded.normalize(x)))
        expected = []
        for i, block in enumerate(reference.blocks[:6]):
            y = block(y)
            if i in (2, 4, 5):
                expected.append(y)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4 * float(b.abs().max()), rtol=1e-4)


def _conv_kernels(model: nn.Module, x: torch.Tensor) -> set[str]:
    """Names of the convolution kernels one forward pass on one thread runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode(), torch.profiler.profile() as prof:
            model(x)
    finally:
        torch.set_num_threads(threads)
    return {e.key for e in prof.key_averages() if "conv" in e.key}


def test_pointwise_rewrite_keeps_outputs_and_leaves_other_convolutions():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 16, 1), nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 4, 1, stride=2))
    net = net.eval().to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 12, 10).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        before = net(x)
    assert "aten::_slow_conv2d_forward" in _conv_kernels(net, x)  # what the rewrite avoids
    assert keep_pointwise_on_onednn(net) == 1  # only the 1x1 stride-1 one
    assert [type(m).__name__ for m in net] == ["OneDnnPointwiseConv2d", "Conv2d", "Conv2d"]
    with torch.inference_mode():
        torch.testing.assert_close(net(x), before, atol=0, rtol=0)


@pytest.mark.parametrize("batch", [1, 2])
def test_backbone_runs_only_onednn_convolutions_on_one_thread(batch):
    # batch 1 is what a worker inspects when its streams keep up: there the small late layers
    # (under 20,480 values) left oneDNN too, and a dilated rewrite ran 5x slower
    backbone = EfficientNetLite0(None, stages=(2, 4, 5))
    kernels = _conv_kernels(backbone, torch.rand(batch, 3, 256, 320))
    assert "aten::mkldnn_convolution" in kernels
    assert not {k for k in kernels if "slow_conv" in k}, kernels
