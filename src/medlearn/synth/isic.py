"""Correlated-class skin-lesion phantoms written in the ISIC 2018 Task 3 layout.

The public dataset is ISIC 2018 Task 3 (Codella et al., arXiv:1902.03368; HAM10000, Tschandl et
al., Scientific Data 2018): dermoscopy JPEGs, a one-hot ground-truth CSV
``image,MEL,NV,BCC,AKIEC,BKL,DF,VASC`` and lesion groupings. :func:`write_isic2018` writes a small
phantom set in that layout so the CCL-Net demo (Wei et al., "Learning and Exploiting Interclass
Visual Correlations for Medical Image Classification", MICCAI 2020) goes through the real reader
(:func:`medlearn.data.isic2018.read_isic2018`).

The recipe is the CCL spec's CPU experiment (``methods/ccl.md`` section 5): 7 classes in 4
super-groups ``{MEL, NV, BCC}``, ``{AKIEC, BKL}``, ``{DF}``, ``{VASC}`` (class indices
``{0, 1, 2}, {3, 4}, {5}, {6}``), so some class pairs really are visually related:

* a fixed world (``world_seed``, default 1234): 4 group templates and 7 class templates, each
  Gaussian noise smoothed three times by a 5x5 box filter (periodic borders), centred and scaled to
  standard deviation ``template_sd`` (default 0.5). The spec does not give the templates' scale;
  unscaled box-filtered noise (sd ~0.1) left our small CNN near 0.3 balanced accuracy and unit sd
  made the task trivial (0.99); 0.5 gives hard labels about 0.75, near the pilot's 0.70;
* image = ``a * group_template[g(k)] + b * class_template[k] + noise * N(0, 1)`` with
  ``a ~ 1 + 0.3 N(0, 1)``, ``b ~ U(0.45, 0.70)``, then a random integer shift in [-2, 2] per axis
  and image (periodic);
* imbalanced training counts (default ``120, 500, 80, 60, 120, 40, 40``: NV dominates as in ISIC)
  and a balanced official test set (``ISIC2018_Task3_Test_*``, default 200 per class).

The gray value ``u = clip(0.5 + x / 7, 0, 1)`` is written through a linear brown-to-skin colour
ramp as an RGB JPEG (quality 95, no chroma subsampling), so the mean over colour channels is an
affine function of ``u``. About a third of the lesions have 2-3 images (same class, ``a`` and
``b``; new shift and noise), listed in ``ISIC2018_Task3_Training_LesionGroupings.csv``, so a split
that ignores ``lesion_id`` leaks.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import uniform_filter

from medlearn.console import track
from medlearn.data.isic2018 import ISIC2018_CLASSES
from medlearn.io import atomic_write_text
from medlearn.synth import register_synth

__all__ = ["SUPER_GROUPS", "GROUP_OF", "RELATED_PAIRS", "DEFAULT_COUNTS", "world_templates", "render_lesion",
           "write_isic2018"]

#: Super-groups of class indices (MEL, NV, BCC | AKIEC, BKL | DF | VASC).
SUPER_GROUPS: tuple[tuple[int, ...], ...] = ((0, 1, 2), (3, 4), (5,), (6,))
GROUP_OF: tuple[int, ...] = tuple(g for k in range(7) for g, members in enumerate(SUPER_GROUPS) if k in members)
#: The truly related class pairs (same super-group), ``i < j``.
RELATED_PAIRS: tuple[tuple[int, int], ...] = tuple(
    (i, j) for members in SUPER_GROUPS for a, i in enumerate(members) for j in members[a + 1:])
DEFAULT_COUNTS = "120,500,80,60,120,40,40"
_DARK = np.array([0.36, 0.22, 0.14])
_LIGHT = np.array([0.96, 0.82, 0.74])


def world_templates(size: int, world_seed: int = 1234, template_sd: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """The world's templates: smoothed Gaussian noise, zero mean, standard deviation ``template_sd``.

    Returns:
        ``(group templates (4, S, S), class templates (7, S, S))``.
    """
    rng = np.random.default_rng(world_seed)

    def smooth(n: int) -> np.ndarray:
        t = rng.normal(size=(n, size, size))
        for _ in range(3):
            t = uniform_filter(t, size=(1, 5, 5), mode="wrap")
        t = t - t.mean(axis=(1, 2), keepdims=True)
        return template_sd * t / t.std(axis=(1, 2), keepdims=True)

    return smooth(len(SUPER_GROUPS)), smooth(len(ISIC2018_CLASSES))


def render_lesion(rng: np.random.Generator, k: int, a: float, b: float, groups: np.ndarray, classes: np.ndarray,
                  noise: float = 1.2) -> np.ndarray:
    """One ``(S, S, 3)`` uint8 RGB image of class ``k`` (see the module docstring)."""
    x = a * groups[GROUP_OF[k]] + b * classes[k] + noise * rng.normal(size=classes.shape[1:])
    x = np.roll(x, tuple(int(s) for s in rng.integers(-2, 3, size=2)), axis=(0, 1))
    u = np.clip(0.5 + x / 7.0, 0.0, 1.0)[..., None]
    return np.round(255.0 * (_DARK + u * (_LIGHT - _DARK))).astype(np.uint8)



def _write_split(out: Path, split: str, counts: list[int], start_id: int, rng: np.random.Generator,
                 groups: np.ndarray, classes: np.ndarray, noise: float, lesions: bool) -> tuple[int, list[str]]:
    """Images and ground truth of one split; returns the next free id and the grouping rows."""
    inp = out / f"ISIC2018_Task3_{split}_Input"
    gt = out / f"ISIC2018_Task3_{split}_GroundTruth"
    inp.mkdir(parents=True, exist_ok=True)
    gt.mkdir(parents=True, exist_ok=True)
    plan: list[tuple[int, int]] = []  # (class, lesion number)
    n_lesions = 0
    for k, n in enumerate(counts):
        left = n
        while left > 0:
            m = min(left, int(rng.choice([1, 2, 3], p=[0.7, 0.2, 0.1])) if lesions else 1)
            plan += [(k, n_lesions)] * m
            n_lesions += 1
            left -= m
    order = rng.permutation(len(plan))
    lesion_ab = {les: (1.0 + 0.3 * rng.normal(), rng.uniform(0.45, 0.70)) for _, les in plan}
    rows, grouping = [], []
    for j, idx in enumerate(track(order, description=f"ISIC 2018 {split.lower()} images")):
        k, les = plan[idx]
        name = f"ISIC_{start_id + j:07d}"
        a, b = lesion_ab[les]
        pixels = render_lesion(rng, k, a, b, groups, classes, noise)
        tmp = inp / f".{name}.jpg.tmp"
        Image.fromarray(pixels, mode="RGB").save(tmp, format="JPEG", quality=95, subsampling=0)
        os.replace(tmp, inp / f"{name}.jpg")
        rows.append(name + "," + ",".join("1.0" if c == k else "0.0" for c in range(len(ISIC2018_CLASSES))))
        confirm = ("histo", "follow_up", "consensus", "confocal")[int(rng.integers(4))]
        grouping.append(f"{name},HAM_{les:07d},{confirm}")
    header = "image," + ",".join(ISIC2018_CLASSES)
    atomic_write_text(gt / f"ISIC2018_Task3_{split}_GroundTruth.csv", header + "\n" + "".join(r + "\n" for r in rows))
    return start_id + len(plan), grouping


@register_synth("isic", help="correlated-class skin-lesion phantoms in the ISIC 2018 Task 3 layout (CCL-Net demo)")
def write_isic2018(
    out: str | Path,
    counts: str = DEFAULT_COUNTS,
    n_test_per_class: int = 200,
    size: int = 24,
    noise: float = 1.2,
    seed: int = 0,
    world_seed: int = 1234,
    template_sd: float = 0.5,
    overwrite: bool = False,
) -> Path:
    """Write correlated-class skin-lesion phantoms in the ISIC 2018 Task 3 layout.

    Layout written::

        out/ISIC2018_Task3_Training_Input/ISIC_0000000.jpg ...     RGB JPEGs, size x size
        out/ISIC2018_Task3_Training_GroundTruth/ISIC2018_Task3_Training_GroundTruth.csv
        out/ISIC2018_Task3_Training_LesionGroupings.csv           image,lesion_id,diagnosis_confirm_type
        out/ISIC2018_Task3_Test_Input/ + ISIC2018_Task3_Test_GroundTruth/   (balanced; unless 0 per class)
        out/README.txt                                            says this is synthetic, with the arguments

    Images are written first, the ground-truth tables last. Output depends only on the arguments.

    Args:
        out: output folder.
        counts: training images per class, comma-separated, in the order MEL,NV,BCC,AKIEC,BKL,DF,VASC.
        n_test_per_class: images per class in the official Test split (0: no Test split).
        size: image side in pixels.
        noise: standard deviation of the pixel noise (the spec's 1.2).
        seed: draws of the images (>= 0); a new seed gives new images of the same world.
        world_seed: the fixed templates (the spec's 1234).
        template_sd: standard deviation of every template (sets how hard the task is).
        overwrite: allow writing into a non-empty folder.

    Returns:
        The output folder.

    Raises:
        FileExistsError: ``out`` is not empty and ``overwrite`` is False.
        ValueError: bad counts, size or seed.
    """
    try:
        n_per_class = [int(c) for c in str(counts).split(",")]
    except ValueError:
        raise ValueError(f"counts must be 7 comma-separated integers, got {counts!r}") from None
    if len(n_per_class) != len(ISIC2018_CLASSES) or min(n_per_class) < 0 or sum(n_per_class) < 1:
        raise ValueError(f"counts must be 7 non-negative integers (not all 0), got {counts!r}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    if seed < 0 or n_test_per_class < 0:
        raise ValueError("seed and n_test_per_class must be >= 0")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; refusing to write into it (pass overwrite=True)")
    out.mkdir(parents=True, exist_ok=True)
    groups, classes = world_templates(size, world_seed, template_sd)
    rng = np.random.default_rng([seed, 7])
    next_id, grouping = _write_split(out, "Training", n_per_class, 0, rng, groups, classes, noise, lesions=True)
    if n_test_per_class:
        _write_split(out, "Test", [n_test_per_class] * len(ISIC2018_CLASSES), next_id + 1000, rng, groups,
                     classes, noise, lesions=False)
    atomic_write_text(out / "ISIC2018_Task3_Training_LesionGroupings.csv",
                 "image,lesion_id,diagnosis_confirm_type\n" + "".join(r + "\n" for r in grouping))
    atomic_write_text(out / "README.txt",
                 "Synthetic phantom set generated by medlearn (medlearn.synth.isic.write_isic2018).\n"
                 "NOT patient data. Layout of ISIC 2018 Task 3 (Codella et al., arXiv:1902.03368).\n"
                 f"counts={counts} n_test_per_class={n_test_per_class} size={size} noise={noise} seed={seed} "
                 f"world_seed={world_seed} template_sd={template_sd}\n"
                 "Super-groups of visually related classes: {MEL, NV, BCC}, {AKIEC, BKL}, {DF}, {VASC}.\n")
    return out
