"""mmaction's ResNet with a width knob, for the synthetic action teachers at a quarter of ResNet-18's width.

mmdet's and mmseg's ResNets take ``base_channels`` (the stem's and first stage's width; stage ``i`` has
``base_channels * 2**i``); mmaction2's hard-codes 64. :class:`NarrowResNet` adds the knob and nothing else, so a
recognizer over it is an ordinary mmaction model (TSN, TRN, ...). It registers in mmaction's ``MODELS``, where
recognizers build their backbones, like any custom module of an OpenMMLab project: import it with
``custom_imports=dict(imports=['mmlego.models.mmaction_resnet'])`` and use ``backbone=dict(type='NarrowResNet',
depth=18, base_channels=16, ...)``. Not imported by :mod:`mmlego.models` (serving does not import mmaction).
"""
from __future__ import annotations

from mmaction.models.backbones.resnet import ResNet, make_res_layer
from mmaction.registry import MODELS
from mmcv.cnn import ConvModule


@MODELS.register_module()
class NarrowResNet(ResNet):
    """mmaction's :class:`~mmaction.models.backbones.ResNet` with ``base_channels`` (64: mmaction's own).

    Args:
        depth: 18, 34, 50, 101 or 152.
        base_channels: Output channels of the stem and of the first stage's blocks (before the bottleneck
            expansion); stage ``i`` has ``base_channels * 2**i``. The backbone's ``feat_dim`` follows (512 at 64).
        **kwargs: The arguments of mmaction's ResNet (``pretrained`` must stay ``None`` below 64: torchvision's
            weights are full width).
    """

    def __init__(self, depth: int, base_channels: int = 64, **kwargs) -> None:
        if base_channels < 1:
            raise ValueError(f'base_channels must be >= 1, got {base_channels}')
        if base_channels != 64 and kwargs.get('pretrained') is not None:
            raise ValueError(f'pretrained={kwargs["pretrained"]!r} holds full-width weights; with base_channels='
                             f'{base_channels} train from scratch (pretrained=None)')
        super().__init__(depth, **kwargs)
        self.base_channels = base_channels
        if base_channels == 64:
            return
        # Rebuild what mmaction's ResNet built at width 64 (its stem and stages), at base_channels.
        self.conv1 = ConvModule(self.in_channels, base_channels, kernel_size=7, stride=2, padding=3, bias=False,
                                conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg, act_cfg=self.act_cfg)
        self.inplanes = base_channels
        for i, layer_name in enumerate(self.res_layers):
            planes = base_channels * 2**i
            setattr(self, layer_name, make_res_layer(
                self.block, self.inplanes, planes, self.stage_blocks[i], stride=self.strides[i],
                dilation=self.dilations[i], style=self.style, conv_cfg=self.conv_cfg, norm_cfg=self.norm_cfg,
                act_cfg=self.act_cfg, with_cp=self.with_cp))
            self.inplanes = planes * self.block.expansion
        self.feat_dim = self.block.expansion * base_channels * 2**(len(self.stage_blocks) - 1)
