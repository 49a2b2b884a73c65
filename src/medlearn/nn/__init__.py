"""Networks shared by the methods: the backbone factory and small heads."""

from __future__ import annotations

from medlearn.nn.backbones import Backbone, PlainCNN, SmallCNN, build_backbone, list_backbones
from medlearn.nn.unet import BackboneUNet, encoder_stages

__all__ = ["Backbone", "BackboneUNet", "PlainCNN", "SmallCNN", "build_backbone", "encoder_stages", "list_backbones"]
