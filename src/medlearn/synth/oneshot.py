"""One-shot atlas segmentation phantoms (LT-Net), written in the one-shot layout.

One labelled atlas and subjects made from it by smooth random deformations, intensity changes and
noise, so that a registration network can learn the atlas-to-subject correspondence (Wang et al.,
"LT-Net", CVPR 2020; methods spec ``oneshot_seg.md`` section 5). Two variants:

``"ellipses"`` (recipe A): nested ellipses (2D) or ellipsoids (3D) on a ``size`` grid. Labels 0
background, 1 outer ring, 2 inner region, 3 two small "ventricles", 4 a small central structure,
with intensities (0, 0.35, 0.7, 0.15, 1.0) (:data:`ELLIPSE_INTENSITIES`). The atlas image is the
intensity map blurred with sigma 0.7. A subject: a displacement field of ``dims`` channels of
N(0, 1) noise, Gaussian-smoothed with sigma ``7 * size / 64`` voxels and scaled so that its largest
vector has length ``amp * U(0.5, 1)`` voxels; the intensity map is warped linearly and the labels by
nearest neighbour; then intensity times ``1 + 0.1 N(0, 1)``, Gaussian noise of sigma
``U(0.03, 0.05)``, blur sigma 0.7.

``"mni"`` (recipe B): real anatomy from the MNI152 2009a template that ships inside the nilearn
wheel (read with :mod:`importlib.resources`, nilearn is never imported): T1, grey and white matter
maps, and the brain mask nilearn's ``load_mni152_brain_mask`` makes (T1 / max > 0.2). Labels:
argmax of (background = 1 - mask, CSF = mask - GM - WM clipped at 0, GM, WM) -> 0..3
(:data:`MNI_LABELS`), taken after resampling the four maps (anti-aliased, linear) onto the working
grid: the brain's bounding box at isotropic voxels, its longest side ``size`` voxels (3D, default
48: about 40 x 48 x 39 of 4.3 mm voxels) or an axial slice through the lateral ventricles (2D,
MNI z = +12 mm; default 112: about 90 x 112 of 1.6 mm pixels). A subject: a stationary velocity
field (N(0, 1) noise smoothed with sigma ``U(6, 8)`` voxels at the default size, scaled to a
largest vector of ``amp * U(0.5, 1)`` voxels) integrated by 7-step scaling and squaring (a smooth,
invertible deformation); T1 and the four tissue maps are warped linearly and the labels are the
argmax of the warped maps; then a smooth multiplicative bias field (``exp`` of a field smoothed
with sigma a quarter of the grid, amplitude ``U(0.1, 0.2)``), a gain ``1 + 0.1 N(0, 1)`` and
Gaussian noise of sigma ``U(0.02, 0.04)``.

Written files (the layout of :mod:`medlearn.data.oneshot`)::

    out/atlas/image.nii.gz, out/atlas/labels.nii.gz     float32 / uint8, the atlas
    out/images/train_0000.nii.gz ...                    unlabelled training subjects
    out/images/eval_0000.nii.gz ...                     evaluation subjects
    out/labels/eval_0000.nii.gz ...                     their label maps (uint8)
    out/labels.json                                     {"0": "background", ...}
    out/README.txt

2D images are NIfTI of shape (X, Y, 1). Affines: 1 mm voxels centred on the origin (ellipses);
the template's world coordinates at the working voxel size (mni). Subject ``i`` of the training
set draws from ``default_rng([seed, 1, i])``, evaluation subject ``i`` from
``default_rng([seed, 2, i])`` (separate streams: more training subjects never change the test
subjects). Output is identical for the same arguments.
"""

from __future__ import annotations

import importlib.resources
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from medlearn.console import track
from medlearn.data.oneshot import LABELS_JSON, to_atlas_grid
from medlearn.io import atomic_write_text, read_image, write_image
from medlearn.synth import prepare_out_dir, register_synth

__all__ = [
    "ELLIPSE_INTENSITIES",
    "ELLIPSE_LABELS",
    "MNI_FILES",
    "MNI_LABELS",
    "VARIANTS",
    "diffeomorphic_displacement",
    "ellipse_atlas",
    "mni_atlas",
    "smooth_displacement",
    "warp",
    "write_oneshot",
]

#: The phantom variants.
VARIANTS = ("ellipses", "mni")
#: Label value -> name of the ellipse phantom.
ELLIPSE_LABELS: dict[int, str] = {0: "background", 1: "outer ring", 2: "inner region", 3: "ventricles",
                                  4: "central structure"}
#: Intensity of each ellipse label, in label order.
ELLIPSE_INTENSITIES: tuple[float, ...] = (0.0, 0.35, 0.7, 0.15, 1.0)
#: Label value -> name of the MNI152 tissue labels.
MNI_LABELS: dict[int, str] = {0: "background", 1: "CSF", 2: "grey matter", 3: "white matter"}
#: The MNI152 2009a files inside the nilearn wheel (``nilearn/datasets/data/``).
MNI_FILES: dict[str, str] = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_MNI_SLICE_Z_MM = 12.0  # axial slice through the bodies of the lateral ventricles
_DEFAULT_SIZE = {("ellipses", 2): 64, ("ellipses", 3): 32, ("mni", 2): 112, ("mni", 3): 48}


# ------------------------------------------------------------------------------------ atlases


def ellipse_atlas(shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """The nested-ellipse atlas (recipe A) on a 2D or 3D grid.

    Args:
        shape: ``(X, Y)`` or ``(X, Y, Z)``.

    Returns:
        ``(intensity map float32, labels uint8)``: labels 0..4 (:data:`ELLIPSE_LABELS`), all
        present; the unblurred intensities of :data:`ELLIPSE_INTENSITIES`.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 16:
        raise ValueError(f"shape must be 2D or 3D with sides >= 16, got {shape}")
    axes = [(np.arange(n) + 0.5) / n * 2.0 - 1.0 for n in shape]
    grid = np.meshgrid(*axes, indexing="ij")
    x, y = grid[0], grid[1]
    z = grid[2] if len(shape) == 3 else np.zeros_like(x)

    def inside(cx: float, cy: float, cz: float, rx: float, ry: float, rz: float) -> np.ndarray:
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0

    labels = np.zeros(shape, np.uint8)
    labels[inside(0.0, 0.0, 0.0, 0.82, 0.66, 0.72)] = 1  # outer ring: what the inner region leaves
    labels[inside(0.0, 0.0, 0.0, 0.62, 0.48, 0.54)] = 2
    for side in (-1.0, 1.0):  # two ventricles, tilted apart
        labels[inside(side * 0.2, 0.08, 0.0, 0.1, 0.22, 0.16)] = 3
    labels[inside(0.0, -0.26, 0.0, 0.11, 0.11, 0.11)] = 4
    image = np.asarray(ELLIPSE_INTENSITIES, np.float32)[labels]
    return image, labels


def _nilearn_data() -> Path:
    try:
        root = importlib.resources.files("nilearn") / "datasets" / "data"
    except ModuleNotFoundError:
        raise ModuleNotFoundError(
            "variant='mni' reads the MNI152 template that ships inside the nilearn wheel, and nilearn is not "
            "installed: pip install nilearn"
        ) from None
    folder = Path(str(root))
    missing = [name for name in MNI_FILES.values() if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"the installed nilearn lacks the MNI152 files {missing} in {folder}; "
                                "reinstall it: pip install --force-reinstall nilearn")
    return folder


def _bbox(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last index of the true voxels of ``mask`` along each axis."""
    lo, hi = [], []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        lo.append(hit[0])
        hi.append(hit[-1])
    return np.array(lo), np.array(hi)


def _isotropic_box(mask: np.ndarray, affine: np.ndarray, longest: int) -> tuple[tuple[int, ...], np.ndarray]:
    """A grid of isotropic voxels centred on the bounding box of ``mask`` (2 voxels margin), ``longest``
    voxels on its longest side (``affine`` is assumed to have equal voxel sizes along its axes).
    """
    nd = mask.ndim
    lo, hi = _bbox(mask)
    lo = np.maximum(lo - 2, 0)
    hi = np.minimum(hi + 2, np.array(mask.shape) - 1)
    extent = hi - lo + 1
    step = float(extent.max()) / longest
    shape = tuple(max(1, round(float(e) / step)) for e in extent)
    centre = (lo + hi) / 2.0
    grid = np.eye(4)
    for axis in range(nd):
        grid[axis, axis] = step
        grid[axis, 3] = centre[axis] - step * (shape[axis] - 1) / 2.0
    return shape, np.asarray(affine, dtype=np.float64) @ grid


def _block_mean(array: np.ndarray, r: int) -> np.ndarray:
    """Means over ``r``-voxel blocks along every axis (the incomplete last blocks dropped)."""
    cut = tuple(slice(0, (n // r) * r) for n in array.shape)
    a = array[cut]
    shape: list[int] = []
    for n in a.shape:
        shape += [n // r, r]
    return a.reshape(shape).mean(axis=tuple(range(1, 2 * a.ndim, 2)))


def mni_atlas(dims: int = 3, size: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The MNI152 2009a atlas (recipe B) on the working grid.

    Args:
        dims: 3 (the brain) or 2 (an axial slice at MNI z = +12 mm).
        size: voxels on the longest side (default 48 in 3D, 112 in 2D).

    Returns:
        ``(t1, labels, tissue, affine)``: T1 scaled to [0, 1] (float32), labels 0..3
        (:data:`MNI_LABELS`, uint8), the four tissue maps ``(4, *S)`` (background, CSF, GM, WM;
        float32) whose argmax the labels are, and the grid's 4x4 affine (MNI world mm).

    Raises:
        ModuleNotFoundError: nilearn is not installed (the message says ``pip install nilearn``).
    """
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    size = size or _DEFAULT_SIZE[("mni", dims)]
    folder = _nilearn_data()
    maps: dict[str, np.ndarray] = {}
    affine = np.eye(4)
    for key, name in MNI_FILES.items():
        arr, meta = read_image(folder / name)
        maps[key] = arr[0] / max(float(arr.max()), 1e-6)
        affine = np.asarray(meta["affine"], dtype=np.float64)
    mask = (maps["t1"] > 0.2).astype(np.float32)  # nilearn's load_mni152_brain_mask
    csf = np.clip(mask - maps["gm"] - maps["wm"], 0.0, 1.0)
    stack = [maps["t1"], 1.0 - mask, csf, maps["gm"], maps["wm"]]
    if dims == 2:
        k = int(round(np.linalg.solve(affine, [0.0, 0.0, _MNI_SLICE_Z_MM, 1.0])[2]))
        stack = [s[:, :, k] for s in stack]
        mask = mask[:, :, k]
        shift = np.eye(4)
        shift[2, 3] = k
        affine = affine @ shift
    shape, grid_affine = _isotropic_box(mask > 0, affine, size)
    # crop to the brain (with room for the anti-aliasing kernel) before smoothing and resampling
    lo, hi = _bbox(mask > 0)
    lo = np.maximum(lo - 12, 0)
    hi = np.minimum(hi + 13, np.array(mask.shape))
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    stack = [s[box] for s in stack]
    crop = np.eye(4)
    crop[: len(lo), 3] = lo
    affine = affine @ crop
    # block means over whole template voxels first (cheap anti-aliasing), the rest by to_atlas_grid
    step = float(np.linalg.norm(np.linalg.solve(affine, grid_affine)[:3, 0]))
    r = max(1, int(step))
    if r > 1:
        stack = [_block_mean(s, r) for s in stack]
        pool = np.diag([float(r)] * dims + [1.0] * (4 - dims))
        pool[:dims, 3] = (r - 1) / 2.0
        affine = affine @ pool
    on_grid = [to_atlas_grid(s, affine, shape, grid_affine, order=1, smooth=True) for s in stack]
    t1 = np.clip(on_grid[0] / max(float(on_grid[0].max()), 1e-6), 0.0, 1.0).astype(np.float32)
    tissue = np.stack(on_grid[1:]).astype(np.float32)
    labels = np.argmax(tissue, axis=0).astype(np.uint8)
    return t1, labels, tissue, grid_affine


# ------------------------------------------------------------------------------- deformations


def warp(array: np.ndarray, displacement: np.ndarray, order: int = 1) -> np.ndarray:
    """Backward warping: ``out(p) = array(p + displacement(p))`` (edge values beyond the border).

    Args:
        array: ``(*S)``, or ``(C, *S)`` warped channel by channel.
        displacement: ``(nd, *S)`` in voxels.
        order: 1 linear (images), 0 nearest (labels).

    Returns:
        The warped array, ``array``'s shape, float64 (order 1) or ``array``'s dtype (order 0).
    """
    nd = displacement.shape[0]
    shape = displacement.shape[1:]
    coords = np.stack(np.meshgrid(*[np.arange(n, dtype=np.float64) for n in shape], indexing="ij")) + displacement
    if array.ndim == nd + 1:
        return np.stack([warp(a, displacement, order) for a in array])
    out = ndimage.map_coordinates(array.astype(np.float64), coords, order=order, mode="nearest")
    return out.astype(array.dtype) if order == 0 else out


def _scale_to_max(field: np.ndarray, largest: float) -> np.ndarray:
    norm = np.sqrt((field**2).sum(0)).max()
    return field * (largest / norm) if norm > 0 else field


def smooth_displacement(rng: np.random.Generator, shape: Sequence[int], sigma: float, largest: float) -> np.ndarray:
    """Gaussian-smoothed N(0, 1) noise, one channel per axis, scaled to a largest vector of ``largest`` voxels.

    Returns:
        ``(nd, *shape)`` float64.
    """
    noise = rng.normal(size=(len(shape), *shape))
    field = np.stack([ndimage.gaussian_filter(c, sigma, mode="reflect") for c in noise])
    return _scale_to_max(field, largest)


def diffeomorphic_displacement(rng: np.random.Generator, shape: Sequence[int], sigma: float, largest: float,
                               steps: int = 7, downsize: int = 2) -> np.ndarray:
    """A smooth invertible deformation: a smoothed velocity field integrated by scaling and squaring.

    The velocity is :func:`smooth_displacement` (largest vector ``largest`` voxels); it is divided
    by ``2**steps`` and composed with itself ``steps`` times (``u <- u + u o (id + u)``), as
    VoxelMorph's ``VecInt`` does, on a grid ``downsize`` times coarser (VoxelMorph's
    ``int_downsize``; the velocity is smooth, so little is lost), then brought back linearly.

    Returns:
        ``(nd, *shape)`` displacement in voxels.
    """
    shape = tuple(int(s) for s in shape)
    v = smooth_displacement(rng, shape, sigma, largest)
    small = tuple(max(2, round(n / downsize)) for n in shape)
    factors = [a / b for a, b in zip(small, shape)]
    u = np.stack([ndimage.zoom(c, factors, order=1, grid_mode=True, mode="nearest") for c in v])
    u = u * np.asarray(factors).reshape(-1, *([1] * len(shape))) / 2.0**steps
    for _ in range(steps):
        u = u + warp(u, u, order=1)
    back = [b / a for a, b in zip(small, shape)]
    full = np.stack([ndimage.zoom(c, back, order=1, grid_mode=True, mode="nearest") for c in u])
    return full * np.asarray(back).reshape(-1, *([1] * len(shape)))


# ------------------------------------------------------------------------------------- subjects


def _ellipse_subject(rng: np.random.Generator, intensity: np.ndarray, labels: np.ndarray, sigma: float,
                     amp: float) -> tuple[np.ndarray, np.ndarray]:
    disp = smooth_displacement(rng, labels.shape, sigma, amp * rng.uniform(0.5, 1.0))
    image = warp(intensity, disp, order=1)
    lab = warp(labels, disp, order=0)
    image = image * (1.0 + 0.1 * rng.normal())
    image = image + rng.normal(0.0, rng.uniform(0.03, 0.05), size=image.shape)
    image = ndimage.gaussian_filter(image, 0.7)
    return image.astype(np.float32), lab.astype(np.uint8)


def _mni_subject(rng: np.random.Generator, t1: np.ndarray, tissue: np.ndarray, sigma: float,
                 amp: float) -> tuple[np.ndarray, np.ndarray]:
    shape = t1.shape
    disp = diffeomorphic_displacement(rng, shape, sigma * rng.uniform(6.0, 8.0) / 7.0, amp * rng.uniform(0.5, 1.0))
    image = warp(t1, disp, order=1)
    lab = np.argmax(warp(tissue, disp, order=1), axis=0)
    bias = ndimage.gaussian_filter(rng.normal(size=shape), max(shape) / 4.0, mode="reflect")
    bias = bias / max(float(np.abs(bias).max()), 1e-12) * rng.uniform(0.1, 0.2)
    image = image * np.exp(bias) * (1.0 + 0.1 * rng.normal())
    image = image + rng.normal(0.0, rng.uniform(0.02, 0.04), size=shape)
    return image.astype(np.float32), lab.astype(np.uint8)


def _stored(array: np.ndarray) -> np.ndarray:
    """``(X, Y)`` -> ``(1, X, Y, 1)``; ``(X, Y, Z)`` -> ``(1, X, Y, Z)`` (the NIfTI writer's layout)."""
    return array[None, ..., None] if array.ndim == 2 else array[None]


@register_synth("oneshot", help="one-shot atlas segmentation phantoms (LT-Net): ellipses or the MNI152 template, "
                                "2D or 3D, in the one-shot layout")
def write_oneshot(
    out: str | Path,
    dims: int = 2,
    n_train: int = 30,
    n_eval: int = 10,
    size: int | None = None,
    amp: float | None = None,
    seed: int = 0,
    variant: str = "ellipses",
    overwrite: bool = False,
) -> Path:
    """Write one-shot atlas segmentation phantoms (an atlas, deformed subjects) in the one-shot layout.

    See the module docstring for the recipes and the files.

    Args:
        out: output folder; created if missing.
        dims: 2 (images of shape (X, Y, 1)) or 3.
        n_train: unlabelled training subjects (``images/train_NNNN``).
        n_eval: evaluation subjects (``images/eval_NNNN`` with ``labels/eval_NNNN``).
        size: grid side (ellipses: default 64 in 2D, 32 in 3D; mni: the longest side, default 112
            in 2D, 48 in 3D).
        amp: largest displacement in voxels before the ``U(0.5, 1)`` factor (default: ellipses
            ``7 * size / 64``, as the recipe's 7 at 64; mni ``0.05 *`` the longest side).
        seed: random seed (>= 0).
        variant: ``"ellipses"`` (recipe A) or ``"mni"`` (recipe B, needs nilearn installed).
        overwrite: allow writing into a non-empty folder (``atlas/``, ``images/``, ``labels/`` are
            replaced; other files are left alone).

    Returns:
        The output folder.

    Raises:
        FileExistsError: ``out`` is a non-empty folder (or a file) and ``overwrite`` is False.
        ValueError: on out-of-range arguments.
        ModuleNotFoundError: ``variant="mni"`` without nilearn.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    if n_train < 1 or n_eval < 0:
        raise ValueError(f"need n_train >= 1 and n_eval >= 0, got {n_train} and {n_eval}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    side = int(size) if size is not None else _DEFAULT_SIZE[(variant, dims)]
    if side < 16:
        raise ValueError(f"size must be >= 16, got {side}")
    if amp is not None and amp < 0:
        raise ValueError(f"amp must be >= 0, got {amp}")
    out = prepare_out_dir(out, overwrite)

    if variant == "ellipses":
        shape = (side,) * dims
        intensity, labels = ellipse_atlas(shape)
        atlas_image = ndimage.gaussian_filter(intensity, 0.7).astype(np.float32)
        affine = np.eye(4)
        affine[:dims, 3] = -(np.array(shape) - 1) / 2.0
        names = ELLIPSE_LABELS
        sigma = 7.0 * side / 64.0
        largest = amp if amp is not None else 7.0 * side / 64.0

        def subject(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            return _ellipse_subject(rng, intensity, labels, sigma, largest)
    else:
        atlas_image, labels, tissue, affine = mni_atlas(dims, side)
        names = MNI_LABELS
        sigma = 7.0 * max(labels.shape) / _DEFAULT_SIZE[("mni", dims)]
        largest = amp if amp is not None else 0.05 * max(labels.shape)

        def subject(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            return _mni_subject(rng, atlas_image, tissue, sigma, largest)

    out.mkdir(parents=True, exist_ok=True)
    for part in ("atlas", "images", "labels"):
        if (out / part).exists():
            shutil.rmtree(out / part)
    meta = {"affine": affine}
    write_image(out / "atlas" / "image.nii.gz", _stored(atlas_image), meta)
    write_image(out / "atlas" / "labels.nii.gz", _stored(labels), meta, dtype="uint8")
    for i in track(range(n_train), description="one-shot training images"):
        image, _ = subject(np.random.default_rng([seed, 1, i]))
        write_image(out / "images" / f"train_{i:04d}.nii.gz", _stored(image), meta)
    for i in track(range(n_eval), description="one-shot evaluation images + labels"):
        image, lab = subject(np.random.default_rng([seed, 2, i]))
        write_image(out / "images" / f"eval_{i:04d}.nii.gz", _stored(image), meta)
        write_image(out / "labels" / f"eval_{i:04d}.nii.gz", _stored(lab), meta, dtype="uint8")
    atomic_write_text(out / LABELS_JSON, json.dumps({str(k): v for k, v in names.items()}, indent=1) + "\n")
    atomic_write_text(
        out / "README.txt",
        "Synthetic one-shot atlas segmentation set generated by medlearn (medlearn.synth.oneshot.write_oneshot).\n"
        f"NOT patient data{' (the atlas is the MNI152 2009a template from nilearn)' if variant == 'mni' else ''}.\n"
        f"variant={variant} dims={dims} size={side} n_train={n_train} n_eval={n_eval} amp={largest:g} seed={seed}\n"
        "atlas/: the labelled atlas; images/: train_* unlabelled, eval_* evaluation subjects; labels/: their labels.\n",
    )
    return out
