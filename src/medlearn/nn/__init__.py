"""Networks shared by the methods: the backbone factory, U-Nets, shared blocks, keypoint heatmaps and registration."""

from __future__ import annotations

from medlearn.nn.backbones import Backbone, PlainCNN, SmallCNN, build_backbone, list_backbones
from medlearn.nn.heatmaps import decode_heatmap, gaussian_heatmap, soft_argmax
from medlearn.nn.inference import argmax_labels, label_dtype, sliding_window_labels, sliding_window_memory
from medlearn.nn.pyramid_pooling import PyramidPooling
from medlearn.nn.registration import RegistrationUNet, SpatialTransformer, compose, integrate_velocity, warp
from medlearn.nn.unet import BackboneUNet, encoder_stages

__all__ = ["Backbone", "BackboneUNet", "PlainCNN", "PyramidPooling", "SmallCNN", "build_backbone", "decode_heatmap",
           "encoder_stages", "gaussian_heatmap", "list_backbones", "soft_argmax", "RegistrationUNet",
           "SpatialTransformer", "compose", "integrate_velocity", "warp", "argmax_labels", "label_dtype",
           "sliding_window_labels", "sliding_window_memory"]
