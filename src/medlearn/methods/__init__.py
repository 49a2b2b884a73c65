"""Method implementations; importing this package registers every method."""

from __future__ import annotations

from medlearn.methods import asoct, c2l, ccl, cross_denoise, crossover, ltnet, mgan, neuron_qc, rubik, videogan  # noqa: F401,E501
