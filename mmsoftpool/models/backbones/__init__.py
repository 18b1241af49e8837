from .mmdet_resnet import SoftPoolResNet, SoftPoolResNetV1d, SoftPoolResNeXt

__all__ = ['SoftPoolResNet', 'SoftPoolResNetV1d', 'SoftPoolResNeXt']
