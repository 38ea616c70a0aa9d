"""The image-domain part of a backbone: what image-domain pre-training trains and a probe reads."""

from torch import nn

__all__ = ["bottom_up"]


def bottom_up(backbone: nn.Module) -> nn.Module:
    """An FPN's bottom-up network (``backbone.bottom_up``), else the backbone itself: the network
    that maps images to stage features, without the FPN's top-down path."""
    return getattr(backbone, "bottom_up", backbone)
