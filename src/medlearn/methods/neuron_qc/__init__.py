"""Neuron-reconstruction quality control: per-node error classification of a traced neuron (Lu et al., 2020)."""

from __future__ import annotations

from medlearn.methods.neuron_qc.module import NeuronQC
from medlearn.methods.neuron_qc.recipe import demo, reproduce, write_contract_data
from medlearn.registry import MethodSpec, register

__all__ = ["NeuronQC"]

register(MethodSpec(
    name="neuron_qc",
    paper="Lu, Zhao, Xie, Ma, Liu, Zheng, Quality Control of Neuron Reconstruction Based on Deep Learning, "
          "arXiv:2003.08556, 2020",
    summary="flag the nodes of a manual neuron reconstruction (SWC) that are probably wrong, and where each wrong "
            "tracing starts, from per-node image + trace blocks; threshold set for a node false-alert rate",
    contract_configs=["demo.yaml"],
    write_contract_data=write_contract_data,
    demo=demo,
    reproduce=reproduce,
))
