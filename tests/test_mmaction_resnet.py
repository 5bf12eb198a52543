"""NarrowResNet: mmaction's ResNet with mmdet's ``base_channels`` knob (the synthetic action teachers)."""
import pytest
import torch
from mmaction.models.backbones import ResNet
from mmaction.registry import MODELS

from mmlego.models.mmaction_resnet import NarrowResNet


def _shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def test_base_channels_64_is_mmactions_resnet():
    assert _shapes(NarrowResNet(18)) == _shapes(ResNet(18))
    assert NarrowResNet(18).feat_dim == ResNet(18).feat_dim == 512


@pytest.mark.parametrize('depth,base,feat', [(18, 16, 128), (50, 16, 512)])
def test_narrow_widths(depth, base, feat):
    net = MODELS.build(dict(type='NarrowResNet', depth=depth, base_channels=base))
    net.init_weights()
    assert net.feat_dim == feat
    assert net.conv1.conv.out_channels == base
    assert net.layer4[-1].conv2.conv.out_channels == base * 8
    out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, feat, 2, 2)
    # every conv is base / 64 as wide as mmaction's: parameters scale by its square (the 3-channel stem conv linearly)
    ratio = sum(p.numel() for p in net.parameters()) / sum(p.numel() for p in ResNet(depth).parameters())
    assert (base / 64) ** 2 * 0.9 < ratio < (base / 64) ** 2 * 1.1


def test_errors():
    with pytest.raises(ValueError, match='from scratch'):
        NarrowResNet(18, base_channels=16, pretrained='torchvision://resnet18')
    with pytest.raises(ValueError, match='base_channels must be >= 1'):
        NarrowResNet(18, base_channels=0)
