"""The MNI ICBM152 2009a brain template that ships inside the nilearn wheel, and masks derived from it.

The demo cohort deforms this template into subjects, and the morphology measurement reads its
masks, so both share one definition of "ventricles", "brain" and the "medial temporal" region
whose tissue the cohort's diagnosis wastes. The files are read with nibabel
from the installed package folder: no download and no import of nilearn itself.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from brainsynth.core.errors import DataError

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}

VENTRICLE_BOX_MM = ((-38.0, 38.0), (-62.0, 35.0), (-15.0, 35.0))
"""World-space (MNI mm) box searched for the lateral ventricles: central, above the brain stem.
The ventricles found in it (x -35..35, y -58..30, z -4..28) touch none of its walls; a larger box
lets the temporal horns leak into the basal cisterns."""

VENTRICLE_CSF_THRESHOLD = 0.5
"""A voxel is ventricular CSF when 1 - P(GM) - P(WM) exceeds this inside the box."""

MEDIAL_TEMPORAL_CENTRE_MM = (26.0, -20.0, -14.0)
"""Centre of the right medial temporal ellipsoid (MNI mm); the left one mirrors it (x negated)."""

MEDIAL_TEMPORAL_RADII_MM = (10.0, 22.0, 10.0)
"""Its radii (x, y, z): hippocampus, amygdala and parahippocampal gyrus. On the template the two
ellipsoids hold 18.4 ml, of it 12.7 ml GM, 4.4 ml WM and 1.3 ml CSF; they lie wholly inside the
brain and outside the lateral ventricles grown by 10 mm (where ventricles are measured)."""

MEDIAL_TEMPORAL_EDGE_MM = 3.0
"""Gaussian sigma softening the ellipsoids' edges into `medial_temporal_weight`."""


@dataclasses.dataclass(frozen=True)
class MniTemplate:
    """The 1 mm template: T1 intensities, tissue probabilities and derived masks, all 197x233x189."""

    t1: np.ndarray
    """Skull-stripped T1 intensities (0 outside the brain), float32."""
    gm: np.ndarray
    """Grey-matter probability in [0, 1], float32."""
    wm: np.ndarray
    """White-matter probability in [0, 1], float32."""
    affine: np.ndarray
    """Voxel -> MNI world (mm), 4x4 float64."""
    brain: np.ndarray
    """Inside the skull-stripped brain (T1 > 0), bool."""
    csf: np.ndarray
    """CSF probability 1 - P(GM) - P(WM) inside the brain, float32."""
    ventricles: np.ndarray
    """Lateral ventricles, bool (see `ventricle_mask`)."""
    medial_temporal: np.ndarray
    """Both medial temporal ellipsoids, bool (see `medial_temporal_mask`)."""

    @property
    def voxel_volume_ml(self) -> float:
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0


def template_folder() -> Path:
    """The folder of nilearn's bundled data files, found without importing nilearn."""
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the MNI template ships inside the 'nilearn' package, which is not installed. "
            "Run: pip install nilearn"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"


def _read(name: str) -> tuple[np.ndarray, np.ndarray]:
    path = template_folder() / TEMPLATE_FILES[name]
    if not path.is_file():
        raise DataError(
            f"{path}: the MNI ICBM152 2009a {name.upper()} template is missing from the installed "
            "nilearn package. Reinstall it: pip install --force-reinstall nilearn"
        )
    image = nib.load(str(path))
    return np.asarray(image.dataobj, dtype=np.float32), np.asarray(image.affine, dtype=np.float64)


def ventricle_mask(csf: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The lateral ventricles: the largest connected blob of CSF inside a central box.

    Sulcal CSF is blurred into partial volume in the template, while the lateral ventricles are
    a large, truly dark, connected space near the centre; the largest component of
    ``csf > 0.5`` inside `VENTRICLE_BOX_MM` is therefore both lateral ventricles (the third and
    fourth ventricles are too thin in the template to separate from the cisterns, and are left
    out). On the 2009a template it holds 17.8 ml.
    """
    world = voxel_world_coordinates(csf.shape, affine)
    box = np.ones(csf.shape, dtype=bool)
    for axis, (low, high) in enumerate(VENTRICLE_BOX_MM):
        box &= (world[axis] >= low) & (world[axis] <= high)
    candidate = box & (csf > VENTRICLE_CSF_THRESHOLD)
    labels, count = ndimage.label(candidate)
    if count == 0:
        raise DataError("no ventricular CSF found in the MNI template; is the nilearn install intact?")
    sizes = ndimage.sum_labels(candidate, labels, index=np.arange(1, count + 1))
    return labels == (int(np.argmax(sizes)) + 1)


def medial_temporal_mask(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """The two medial temporal ellipsoids (`MEDIAL_TEMPORAL_CENTRE_MM`, `MEDIAL_TEMPORAL_RADII_MM`), bool.

    A fixed region of MNI space: the cohort records the tissue inside it and the morphology
    measurement sums tissue fractions inside it, so truth and measurement count the same voxels.
    """
    world = voxel_world_coordinates(shape, affine)
    centre, radii = np.array(MEDIAL_TEMPORAL_CENTRE_MM), np.array(MEDIAL_TEMPORAL_RADII_MM)
    region = np.zeros(shape, dtype=bool)
    for side in (1.0, -1.0):
        offset = (world - (centre * [side, 1.0, 1.0])[:, None, None, None]) / radii[:, None, None, None]
        region |= (offset**2).sum(axis=0) <= 1.0
    return region


def medial_temporal_weight(template: MniTemplate) -> np.ndarray:
    """`medial_temporal` with edges softened by `MEDIAL_TEMPORAL_EDGE_MM`: about 1 inside, 0.5 on the
    surface, 0 beyond; float32 on the template grid. Where the diagnosis wastes tissue, and how much."""
    step = np.abs(np.diag(template.affine)[:3])
    weight = ndimage.gaussian_filter(template.medial_temporal.astype(np.float32), MEDIAL_TEMPORAL_EDGE_MM / step)
    return np.asarray(weight, dtype=np.float32)


def template_mask_on_grid(mask: np.ndarray, shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """A 1 mm template mask resampled (trilinear, > 0.5) onto an image grid of `shape` and `affine`."""
    template = load_mni_template()
    world = voxel_world_coordinates(shape, affine).reshape(3, -1)
    to_template = np.linalg.inv(template.affine)
    voxels = to_template[:3, :3] @ world + to_template[:3, 3:]
    region = ndimage.map_coordinates(np.asarray(mask, dtype=np.float32), voxels, order=1, mode="constant", cval=0.0)
    return region.reshape(shape) > 0.5


def voxel_world_coordinates(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of every voxel centre, shape ``(3, *shape)``, float32."""
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = affine[:3, :3].astype(np.float32) @ grid + affine[:3, 3:4].astype(np.float32)
    return world.reshape((3, *shape))


@lru_cache(maxsize=1)
def load_mni_template() -> MniTemplate:
    """Read the template once per process (about 0.4 s) and derive its masks."""
    t1, affine = _read("t1")
    gm, _ = _read("gm")
    wm, _ = _read("wm")
    gm /= 255.0
    wm /= 255.0
    brain = t1 > 0
    csf = np.where(brain, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)
    ventricles = ventricle_mask(csf, affine)
    medial_temporal = medial_temporal_mask(t1.shape, affine)
    for array in (t1, gm, wm, brain, csf, ventricles, medial_temporal):
        array.setflags(write=False)
    return MniTemplate(
        t1=t1, gm=gm, wm=wm, affine=affine, brain=brain, csf=csf, ventricles=ventricles, medial_temporal=medial_temporal
    )
