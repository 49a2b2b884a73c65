"""The non-learned baseline of tracing QC: image intensity along the trace (methods/neuron_qc.md 5, model A).

A node's score is ``1 - m / median(m)``: ``m`` is the mean image intensity in a radius-2 tube around the
node's parent-to-node segment, divided by the neuron's median ``m`` so that thresholds carry over
between volumes of different brightness (the normalisation is our choice [I]). A tracing that leaves
the signal (drift, spur into background) scores high; one that jumps onto a bright neighbouring
neurite does not, by construction.
"""

from __future__ import annotations

import numpy as np

from medlearn.data.trace_raster import tube_mean_intensity
from medlearn.io.blocks import BlockReader
from medlearn.io.swc import SWCTree

__all__ = ["intensity_scores"]


def intensity_scores(reader: BlockReader, tree: SWCTree, radius: float = 2.0, swc_offset: float = 0.0) -> np.ndarray:
    """Per-node baseline scores of ``tree`` on the volume of ``reader`` (blocks read around each segment)."""
    xyz = tree.xyz - swc_offset
    par = tree.parent_index()
    m = np.empty(len(tree))
    for i, p in enumerate(par.tolist()):
        a, b = xyz[p if p >= 0 else i], xyz[i]
        centre = (a + b)[::-1] / 2
        size = 2 * np.ceil(np.abs(a - b)[::-1] / 2 + radius + 1).astype(int) + 1
        block = reader.block(centre, size)
        start = np.rint(centre).astype(int) - size // 2
        m[i] = tube_mean_intensity(block, a - start[::-1], b - start[::-1], radius)
    med = float(np.nanmedian(m)) if np.isfinite(m).any() else 1.0
    return np.nan_to_num(1.0 - m / (med if med > 0 else 1.0), nan=1.0)
