"""Networks shared by the methods: the backbone factory and small heads."""

from __future__ import annotations

from medlearn.nn.backbones import Backbone, PlainCNN, SmallCNN, build_backbone, list_backbones

__all__ = ["Backbone", "PlainCNN", "SmallCNN", "build_backbone", "list_backbones"]
