"""VideoGAN: video-to-video domain adaptation of endoscopy videos (Chen, Li, Ma, Zheng; AAAI 2020)."""

from __future__ import annotations

from medlearn.methods.videogan.module import VideoGAN
from medlearn.methods.videogan.recipe import demo, reproduce, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["VideoGAN"]

register(MethodSpec(
    name="videogan",
    paper="Chen, Li, Ma, Zheng, GANs for video-to-video domain adaptation (VideoGAN), AAAI 2020, arXiv:2004.08058",
    summary="translate endoscopy videos from one centre's scope to another's: CycleGAN with X-shape generators on "
            "frame pairs of one video and a colour-histogram loss; frame-wise CycleGAN and ablations as baselines",
    contract_configs=["demo.yaml", "demo_cyclegan.yaml"],
    write_contract_data=write_contract_data,
    demo=demo,
    reproduce=reproduce,
))
