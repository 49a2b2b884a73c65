"""Public dataset layouts, datasets, DataModules, augmentation and sampling.

Importing this package registers every built-in layout (:mod:`medlearn.data.layouts`): each layout
module registers itself at import, and all of them are imported here. Generic modules (records,
tables, sampling, decode, volume_preprocess, layouts, info, datamodule and the DataModules) import
no dataset module; dataset modules (chestxray14, isic2018, age_asoct, brats, manifest, kits19, acdc,
inbreast, oneshot) import no other one. Every DataModule extends :class:`~medlearn.data.datamodule.SplitDataModule`,
which owns the loaders, their seeds and the cache filling.
"""

from __future__ import annotations

from medlearn.data.acdc import ACDC_LABEL_NAMES, ACDC_LABELS, read_acdc
from medlearn.data.age_asoct import AGE_CLASSES, ASOCTDataModule, read_age
from medlearn.data.augment import AugmentParams, ViewAugment, center_view
from medlearn.data.brats import (
    BRATS_LABEL_NAMES,
    BRATS_LABELS,
    BRATS_MODALITIES,
    BRATS_REGIONS,
    brats_regions,
    read_brats,
)
from medlearn.data.chestxray14 import CHESTXRAY14_LABELS, read_chestxray14
from medlearn.data.cvc_clinicdb import read_cvc_clinicdb
from medlearn.data.datamodule import SplitDataModule
from medlearn.data.datasets import RadiographDataset
from medlearn.data.decode import ImageCache, load_image, load_image2d, resize_square, to_unit_range
from medlearn.data.drishti import read_drishti
from medlearn.data.etis import read_etis
from medlearn.data.inbreast import read_inbreast
from medlearn.data.info import DataInfo
from medlearn.data.isic2018 import ISIC2018_CLASSES, find_isic2018, read_isic2018
from medlearn.data.kits19 import KITS19_LABEL_NAMES, KITS19_LABELS, read_kits19
from medlearn.data.labelled2d import LabelledImageDataModule, LabelledImageDataset, read_image_table
from medlearn.data.layouts import (
    Layout,
    RecordSet,
    detect_layout,
    get_layout,
    list_layouts,
    register_layout,
)
from medlearn.data.manifest import HEADCT_CLASSES, list_volumes, read_volume_manifest
from medlearn.data.neurons import NeuronQCDataModule, read_neurons
from medlearn.data.oneshot import (
    AtlasInImagesWarning,
    OneShotDataModule,
    OneShotDataset,
    OneShotSet,
    normalise_percentiles,
    read_oneshot,
    read_oneshot_folder,
    to_atlas_grid,
    to_image_grid,
)
from medlearn.data.radiograph import RadiographDataModule
from medlearn.data.records import (
    IMAGE_SUFFIXES,
    ImageRecord,
    LabelledImage,
    MaskedImage,
    VolumeRecord,
    list_image_files,
)
from medlearn.data.refuge import REFUGE_VALUE_MAP, read_refuge
from medlearn.data.roi import DiscROI, detect_disc_centre
from medlearn.data.sampling import (
    EpochBalancedSampler,
    EpochShuffleSampler,
    case_split,
    patient_split,
    stratified_group_split,
    subsample,
)
from medlearn.data.segmentation2d import ImageMaskDataModule, ImageMaskDataset, read_mask_table
from medlearn.data.video_folder import read_video_folder
from medlearn.data.video_frames import VideoFrame
from medlearn.data.volume_preprocess import LoadVolumed, load_volume, volume_transforms
from medlearn.data.volumes import VolumeDataModule, VolumeDataset

__all__ = [
    "AugmentParams", "ViewAugment", "center_view", "CHESTXRAY14_LABELS", "ImageRecord", "list_image_files",
    "patient_split", "read_chestxray14", "subsample", "RadiographDataset", "RadiographDataModule",
    "EpochShuffleSampler", "VolumeDataModule", "VolumeDataset", "VolumeRecord", "brats_regions", "list_volumes",
    "read_brats", "read_volume_manifest",
    "EpochBalancedSampler", "ISIC2018_CLASSES", "find_isic2018", "read_isic2018", "LabelledImage",
    "LabelledImageDataModule", "LabelledImageDataset", "load_image2d", "read_image_table", "stratified_group_split",
    "IMAGE_SUFFIXES", "ImageCache", "load_image", "resize_square", "to_unit_range",
    "BRATS_LABEL_NAMES", "BRATS_LABELS", "BRATS_MODALITIES", "BRATS_REGIONS", "HEADCT_CLASSES", "LoadVolumed",
    "case_split", "load_volume", "volume_transforms",
    "AGE_CLASSES", "ASOCTDataModule", "read_age",
    "Layout", "RecordSet", "detect_layout", "get_layout", "list_layouts", "register_layout", "DataInfo",
    "ImageMaskDataModule", "ImageMaskDataset", "MaskedImage", "read_mask_table", "SplitDataModule",
    "NeuronQCDataModule", "read_neurons",
    "DiscROI", "detect_disc_centre", "REFUGE_VALUE_MAP", "read_refuge", "read_drishti",
    "read_cvc_clinicdb", "read_etis", "read_video_folder", "VideoFrame",
    "ACDC_LABELS", "ACDC_LABEL_NAMES", "read_acdc", "KITS19_LABELS", "KITS19_LABEL_NAMES", "read_kits19",
    "read_inbreast",
    "AtlasInImagesWarning", "OneShotDataModule", "OneShotDataset", "OneShotSet", "normalise_percentiles",
    "read_oneshot", "read_oneshot_folder", "to_atlas_grid", "to_image_grid",
]
