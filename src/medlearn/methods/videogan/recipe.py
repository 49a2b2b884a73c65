"""VideoGAN demo on two-scope colonoscopy phantom videos written in the CVC-ClinicDB / ETIS layouts.

The demo writes scope-A clips in the CVC-ClinicDB layout and scope-B clips in the ETIS-LaribPolypDB
layout (``medlearn synth endoscopy-cvc`` / ``endoscopy-etis``; the ETIS reader cuts them into
pseudo-sequences by frame difference, as for the real data), reads them back through the layouts
(:class:`~medlearn.data.video_pairs.VideoPairDataModule`, split by video) and trains, on the same
data, split and seed, VideoGAN (``configs/videogan/demo.yaml``) and the frame-wise CycleGAN
(``demo_cyclegan.yaml``); "no adaptation" is the untranslated input. Readings per arm on the
held-out scope-A videos translated to scope B: colour distance to scope B (W1), flicker, and,
because phantoms can render the same geometry in scope B's style, PSNR, tdiff and drift to that
ground truth.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from medlearn.engine.config import load_config
from medlearn.engine.run import fit_from_config
from medlearn.engine.trainer import set_cpu_threads
from medlearn.registry import DemoResult, config_dir
from medlearn.synth.endoscopy import write_cvc_phantom, write_etis_phantom

__all__ = ["ARMS", "demo", "write_contract_data", "write_two_scopes"]

#: Arm -> (config, overrides).
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "videogan": ("demo.yaml", {}),
    "cyclegan": ("demo_cyclegan.yaml", {}),
}


def write_two_scopes(root: Path, n_videos: int, n_frames: int, size: int, seed: int) -> Path:
    """Scope A in ``root/CVC-ClinicDB`` and scope B in ``root/ETIS-LaribPolypDB`` (phantoms)."""
    write_cvc_phantom(root / "CVC-ClinicDB", n_videos=n_videos, n_frames=n_frames, size=size, seed=seed,
                      overwrite=True)
    write_etis_phantom(root / "ETIS-LaribPolypDB", n_videos=n_videos, n_frames=n_frames, size=size,
                       seed=seed + 1000, overwrite=True)
    return root


def write_contract_data(folder: Path) -> Path:
    """A tiny two-scope set for the contract tests."""
    return write_two_scopes(Path(folder) / "endo", n_videos=4, n_frames=4, size=32, seed=1)


def _cfg(config: str, root: Path, seed: int, **over: Any) -> dict[str, Any]:
    return load_config(config_dir("videogan") / config, {"data.init_args.root": str(root), "seed_everything": seed,
                                                         **over})


def demo(out_dir: str | Path = "runs/demo/videogan", n_videos: int = 24, n_frames: int = 12, epochs: int = 8,
         threads: int | None = None) -> DemoResult:
    """VideoGAN vs frame-wise CycleGAN vs no adaptation on two-scope phantom videos.

    Args:
        out_dir: where the data and the run folders go.
        n_videos: clips per scope (a quarter held out for testing).
        n_frames: frames per clip.
        epochs: training epochs of each arm.
        threads: torch threads (default: :func:`medlearn.runtime.default_threads`).
    """
    set_cpu_threads(threads)
    out = Path(out_dir)
    t0 = time.perf_counter()
    root = write_two_scopes(out / "data", n_videos, n_frames, 32, seed=0)
    m: dict[str, float] = {}
    for arm, (config, over) in ARMS.items():
        r = fit_from_config(_cfg(config, root, 0, **{"trainer.max_epochs": epochs, **over}), out / arm,
                            prefix=f"[{arm}] ")
        for k, v in (r.test or {}).items():
            if isinstance(v, (int, float)):
                m[f"{k.split('/')[-1]}_{arm}"] = float(v)
    def g(key: str) -> float:
        return m.get(key, float("nan"))

    headline = (f"A->B colour distance W1 to scope B: VideoGAN {g('w1_ab_videogan'):.4f}, CycleGAN "
                f"{g('w1_ab_cyclegan'):.4f}, no adaptation {g('w1_identity_ab_videogan'):.4f}; PSNR to the scope-B "
                f"truth {g('psnr_ab_videogan'):.1f} / {g('psnr_ab_cyclegan'):.1f} dB; flicker "
                f"{g('flicker_ab_videogan'):+.4f} / {g('flicker_ab_cyclegan'):+.4f}")
    passed = m.get("w1_ab_videogan", 1.0) < m.get("w1_identity_ab_videogan", 0.0)
    return DemoResult("videogan", headline, passed, time.perf_counter() - t0, out, m)
