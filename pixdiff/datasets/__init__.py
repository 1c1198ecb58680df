"""Real datasets at scale: uint8 image datasets, ``prepare_data`` and the step-exact loader.

- ``pixdiff.datasets.folder``   which files of a folder, which labels, how one file is decoded
- ``pixdiff.datasets.sources``  ``torch.utils.data.Dataset``s over folders, prepared files, npz, HF
- ``pixdiff.datasets.prepare``  ``prepare_data``: decode once into a memory-mapped ``.npy`` + manifest
- ``pixdiff.datasets.loader``   the batches of training step s (any worker count, any resume point)
- ``pixdiff.datasets.photos``   the embedded ``photos`` crops
- ``pixdiff.datasets.memory``   ``load``: any source decoded into memory
"""

from .folder import FILTER, scan_folder
from .loader import (
                     StepBatches,
                     StepBatchSampler,
                     augment,
                     augment_params,
                     global_batch_indices,
                     open_training_data,
                     sample_images,
)
from .memory import load, load_image_folder, load_photos
from .prepare import open_prepared, prepare_data, read_manifest, verify_prepared
from .sources import ArrayImages, FolderImages, HFImages, UInt8Images, open_images

__all__ = ["load", "load_image_folder", "load_photos", "FILTER", "scan_folder", "prepare_data", "open_prepared", "read_manifest", "verify_prepared", "UInt8Images",
           "ArrayImages", "FolderImages", "HFImages", "open_images", "StepBatches", "StepBatchSampler",
           "global_batch_indices", "augment", "augment_params", "open_training_data", "sample_images"]
