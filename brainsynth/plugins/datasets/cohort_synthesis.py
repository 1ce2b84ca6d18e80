"""Synthetic subjects from the MNI ICBM152 2009a template, with known morphology and a diagnosis.

Each subject is the template seen through one smooth backward map (output point -> template
point), composed of three parts, none of which folds space:

1. head size: an isotropic scale about the brain centre (men larger by ~3.6 % in length, with
   individual noise);
2. atrophy: ``x = c + (y - c)(1 + a r^2)`` with ``r`` the ellipsoidal radius (1 at the brain's
   outer edge), so the cortex moves inwards while the centre stays put; ``a`` grows with age;
3. ventricular enlargement: the flow, for ``d`` mm, of the velocity field ``-grad(G * V)``
   scaled to a peak speed of 1 (``V`` the template's lateral-ventricle mask, ``G`` a Gaussian of
   `VENTRICLE_SMOOTHING_MM`). It points out of the ventricles across their walls, i.e. radially
   away from their centre line, so their walls move out by up to ``d`` mm while the tissue
   around them is pushed aside and compressed, and nothing moves a few mm further out. Being
   the flow of a smooth field it never folds, and a negative ``d`` narrows the ventricles.
   ``d`` grows with age. (A scaling about one centre point does not suit these thin, C-shaped
   cavities: it either barely enlarges them or drags the whole deep brain with them.)

A subject may carry a diagnosis (1, "AD-like" neurodegeneration; 0 control), drawn with a
probability that rises logistically with age from 10 % at 45 to 50 % at 82 (about 27 % of a
cohort). Its regional signature moves with the subject's anatomy, being a function of the
template point each output point shows:

* medial temporal tissue loss: within `medial_temporal_weight` w (hippocampus, amygdala and
  parahippocampal gyrus, both sides, soft-edged), a share ``f w`` of the tissue becomes CSF: the
  GM+WM map is scaled by ``1 - f w`` and the T1 mixed towards the ventricles' CSF intensity by
  ``f w`` (exactly what a voxel that is a tissue/CSF mixture would show). ``f`` is
  `MEDIAL_TEMPORAL_LOSS` ± `MEDIAL_TEMPORAL_LOSS_NOISE` for diagnosed subjects, 0 for controls;
* ventricles enlarged by a further `DIAGNOSIS_VENTRICLE_DILATION` mm.

The four maps (T1, GM+WM, ventricular CSF = CSF probability inside the ventricle mask grown by
one voxel, brain mask) are first blurred to the output spacing (Gaussian with a FWHM of the
spacing) and then sampled once at the mapped points with trilinear interpolation. The recorded
volumes are the sums of the warped tissue maps on the output grid, i.e. measured on what was
written, not derived from the parameters; the medial temporal volume is the warped GM+WM map
summed inside the fixed MNI region `medial_temporal_mask` resampled to the output grid (the
region the morphology measurement reads). A smooth multiplicative bias field (MONAI
`RandBiasField`) and Gaussian noise inside the brain complete the T1.
"""

from __future__ import annotations

import dataclasses
import math
from functools import lru_cache

import numpy as np
import torch
from scipy import ndimage

from brainsynth.library.mni_template import (
    MniTemplate,
    load_mni_template,
    medial_temporal_weight,
    template_mask_on_grid,
    voxel_world_coordinates,
)

AGE_RANGE = (45.0, 82.0)
"""Ages are drawn uniformly here (the UK Biobank imaging range)."""

HEAD_SCALE_BY_SEX = 0.018
"""Half the male/female difference in linear head size (volume differs by about 11 %)."""

HEAD_SCALE_NOISE = 0.025
ATROPHY_PER_YEAR = 0.0015
ATROPHY_NOISE = 0.008
VENTRICLE_DILATION_AT_45 = -1.0
VENTRICLE_DILATION_PER_YEAR = 0.16
"""With these, lateral ventricles hold about 13 ml at 45 and 40 ml at 82 (template: 17 ml)."""

VENTRICLE_DILATION_NOISE = 1.2
VENTRICLE_SMOOTHING_MM = 4.0
"""Width (Gaussian sigma) of the zone around the ventricles that is pushed aside as they grow."""

MAX_DILATION_MM = 12.0
"""Ventricle wall displacements are clipped to +-this (far beyond the drawn ones)."""

FLOW_STEPS = 4
"""Midpoint (RK2) steps integrating the ventricular flow."""

DIAGNOSIS_RISK_AGES = (45.0, 82.0)
DIAGNOSIS_RISK = (0.10, 0.50)
"""The probability of the diagnosis at those ages; logistic in age in between and beyond."""

MEDIAL_TEMPORAL_LOSS_AT_45 = 0.10
MEDIAL_TEMPORAL_LOSS_PER_YEAR = 0.003
MEDIAL_TEMPORAL_LOSS_NOISE = 0.07
"""Everyone's share of medial temporal tissue turned CSF (at the region's core): ageing and individual
variation, without which a fixed region deep in tissue would hold nearly the same volume in everyone."""

DIAGNOSIS_LOSS = 0.20
DIAGNOSIS_LOSS_NOISE = 0.06
"""What the diagnosis adds to that share."""

MEDIAL_TEMPORAL_LOSS_RANGE = (0.0, 0.7)

DIAGNOSIS_VENTRICLE_DILATION = 2.0
"""Further outward movement (mm) of a diagnosed subject's ventricle walls."""

BIAS_COEFFICIENTS = (-0.1, 0.1)
NOISE_FRACTION = 0.025
"""Noise standard deviation as a fraction of the template's mean white-matter intensity."""


@dataclasses.dataclass(frozen=True)
class SubjectVariables:
    """What one synthetic subject is made of: its variables and the deformation they drive."""

    name: str
    age: float
    sex: int
    """0 female, 1 male (the UK Biobank field 31 coding)."""
    diagnosis: int
    """0 control, 1 "AD-like" neurodegeneration (see the module docstring)."""
    head_scale: float
    atrophy: float
    ventricle_dilation: float
    """How far (mm, at the fastest point) the ventricle walls move outwards."""
    medial_temporal_loss: float
    """Share ``f`` of the medial temporal tissue turned into CSF (see the module docstring)."""
    seed: int


def draw_subject(index: int, seed: int) -> SubjectVariables:
    """Subject `index` of the cohort with `seed`; independent of the cohort size.

    Sex alternates so that every cohort is balanced; age drives atrophy and ventricular growth,
    each with its own noise, so the two volumes are related but not redundant. The diagnosis and
    its severity are drawn last, so every other variable is what cohort version 1 drew.
    """
    rng = np.random.default_rng([seed, index])
    age = float(rng.uniform(*AGE_RANGE))
    sex = index % 2
    head_scale = 1.0 + HEAD_SCALE_BY_SEX * (2 * sex - 1) + HEAD_SCALE_NOISE * float(rng.standard_normal())
    years = age - AGE_RANGE[0]
    atrophy = max(0.0, ATROPHY_PER_YEAR * years + ATROPHY_NOISE * float(rng.standard_normal()))
    dilation = VENTRICLE_DILATION_AT_45 + VENTRICLE_DILATION_PER_YEAR * years
    dilation += VENTRICLE_DILATION_NOISE * float(rng.standard_normal())
    image_seed = int(rng.integers(0, 2**31 - 1))
    diagnosis = int(rng.uniform() < diagnosis_probability(age))
    loss = MEDIAL_TEMPORAL_LOSS_AT_45 + MEDIAL_TEMPORAL_LOSS_PER_YEAR * years
    loss += MEDIAL_TEMPORAL_LOSS_NOISE * float(rng.standard_normal())
    loss += diagnosis * (DIAGNOSIS_LOSS + DIAGNOSIS_LOSS_NOISE * float(rng.standard_normal()))
    return SubjectVariables(
        name=f"sub-{index:04d}",
        age=round(age, 2),
        sex=sex,
        diagnosis=diagnosis,
        head_scale=head_scale,
        atrophy=atrophy,
        ventricle_dilation=dilation + DIAGNOSIS_VENTRICLE_DILATION * diagnosis,
        medial_temporal_loss=float(np.clip(loss, *MEDIAL_TEMPORAL_LOSS_RANGE)),
        seed=image_seed,
    )


def diagnosis_probability(age: float) -> float:
    """The chance of the diagnosis at `age`: logistic, through `DIAGNOSIS_RISK` at `DIAGNOSIS_RISK_AGES`."""
    logits = [math.log(p / (1.0 - p)) for p in DIAGNOSIS_RISK]
    slope = (logits[1] - logits[0]) / (DIAGNOSIS_RISK_AGES[1] - DIAGNOSIS_RISK_AGES[0])
    return 1.0 / (1.0 + math.exp(-(logits[0] + slope * (age - DIAGNOSIS_RISK_AGES[0]))))


@dataclasses.dataclass(frozen=True)
class CohortGrid:
    """The output grid: the template's field of view tiled by voxels of `spacing` mm."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: float

    @property
    def voxel_volume_ml(self) -> float:
        return self.spacing**3 / 1000.0


def cohort_grid(spacing: float, template: MniTemplate | None = None) -> CohortGrid:
    """Voxels of `spacing` mm whose blocks start at the template's first voxel edge."""
    template = template or load_mni_template()
    step = np.diag(template.affine)[:3]
    shape = tuple(int(math.ceil(n * abs(s) / spacing)) for n, s in zip(template.t1.shape, step))
    affine = np.array(template.affine, dtype=np.float64)
    affine[:3, :3] = affine[:3, :3] / np.abs(step) * spacing
    # first output voxel centre = template's first voxel edge + half an output voxel
    affine[:3, 3] = template.affine[:3, 3] + np.sign(step) * (spacing - np.abs(step)) / 2.0
    return CohortGrid(shape=shape, affine=affine, spacing=float(spacing))


@dataclasses.dataclass(frozen=True)
class _Prepared:
    """Template maps blurred for one spacing, plus the geometry the deformations need."""

    maps: torch.Tensor
    """[1, 4, X, Y, Z] float32: T1, GM+WM, ventricular CSF, brain mask."""
    world_to_grid: np.ndarray
    """3x4: MNI mm -> grid_sample's normalised coordinates (z, y, x order)."""
    brain_centre: np.ndarray
    brain_radii: np.ndarray
    ventricle_velocity: torch.Tensor
    """[1, 3, X, Y, Z] float32: outward unit-peak velocity (mm per unit time) around the ventricles."""
    velocity_to_grid: np.ndarray
    """3x4: MNI mm -> normalised coordinates of the (cropped) velocity grid."""
    velocity_box: tuple[np.ndarray, np.ndarray]
    """World (mm) corners of the velocity grid: outside it the velocity is zero."""
    wm_intensity: float
    csf_intensity: float
    """The ventricles' CSF intensity in the template T1: what wasted tissue turns into."""
    medial_temporal: torch.Tensor
    """[1, 1, X, Y, Z] float32: `medial_temporal_weight` on the template grid (unblurred)."""


def _grid_sample_coordinates(shape: tuple[int, ...], affine: np.ndarray) -> np.ndarray:
    """3x4 map from MNI mm to grid_sample's normalised (z, y, x) coordinates of a volume."""
    size = np.array(shape, dtype=np.float64)
    voxel_from_world = np.linalg.inv(affine)[:3]
    # align_corners=True: index 0 -> -1, index n-1 -> +1; grid_sample wants (W, H, D) = (z, y, x)
    normalise = np.diag(2.0 / (size - 1.0))
    to_grid = np.concatenate([normalise @ voxel_from_world[:, :3], normalise @ voxel_from_world[:, 3:] - 1.0], axis=1)
    return to_grid[::-1].astype(np.float32)


def _ventricle_velocity_field(template: MniTemplate) -> tuple[np.ndarray, np.ndarray]:
    """Minus the gradient of the smoothed ventricle mask, scaled to a peak speed of 1 mm.

    It points out of the ventricles across their walls, so its flow thickens them along their
    normals. It is computed on a crop around the ventricles (zero beyond), with its affine.
    """
    margin = int(math.ceil(3 * VENTRICLE_SMOOTHING_MM))  # the speed there is ~1 % of its peak
    index = np.argwhere(template.ventricles)
    low = np.maximum(index.min(axis=0) - margin, 0)
    high = np.minimum(index.max(axis=0) + margin + 1, template.ventricles.shape)
    crop = template.ventricles[low[0] : high[0], low[1] : high[1], low[2] : high[2]].astype(np.float32)
    step = np.abs(np.diag(template.affine)[:3])
    smooth = ndimage.gaussian_filter(crop, VENTRICLE_SMOOTHING_MM / step, mode="constant")
    gradient = np.stack(np.gradient(smooth, *step))
    world_gradient = np.sign(np.diag(template.affine)[:3])[:, None, None, None] * gradient
    velocity = -world_gradient / np.sqrt((world_gradient**2).sum(axis=0)).max()
    affine = np.array(template.affine)
    affine[:3, 3] = template.affine[:3, :3] @ low + template.affine[:3, 3]
    return np.ascontiguousarray(velocity, dtype=np.float32), affine


def _world_box(shape: tuple[int, ...], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    corners = np.array([[0, 0, 0], np.array(shape) - 1], dtype=np.float64)
    world = corners @ affine[:3, :3].T + affine[:3, 3]
    return world.min(axis=0).astype(np.float32), world.max(axis=0).astype(np.float32)


@lru_cache(maxsize=4)
def _prepare(spacing: float) -> _Prepared:
    template = load_mni_template()
    ventricle_csf = template.csf * ndimage.binary_dilation(template.ventricles, iterations=1)
    maps = np.stack([template.t1, template.gm + template.wm, ventricle_csf, template.brain.astype(np.float32)])
    sigma = math.sqrt(max(spacing**2 - 1.0, 0.0)) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    if sigma > 0:
        maps = np.stack([ndimage.gaussian_filter(m, sigma, mode="constant") for m in maps])
    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[None]

    to_grid = _grid_sample_coordinates(template.t1.shape, template.affine)
    index = np.argwhere(template.brain)
    corners = np.stack([index.min(axis=0), index.max(axis=0)]).astype(np.float64)
    world_corners = corners @ template.affine[:3, :3].T + template.affine[:3, 3]
    low, high = world_corners.min(axis=0), world_corners.max(axis=0)
    velocity, velocity_affine = _ventricle_velocity_field(template)
    return _Prepared(
        maps=tensor,
        world_to_grid=to_grid,
        brain_centre=(low + high) / 2.0,
        brain_radii=(high - low) / 2.0,
        ventricle_velocity=torch.from_numpy(velocity)[None],
        velocity_to_grid=_grid_sample_coordinates(velocity.shape[1:], velocity_affine),
        velocity_box=_world_box(velocity.shape[1:], velocity_affine),
        wm_intensity=float(template.t1[template.wm > 0.9].mean()),
        csf_intensity=float(template.t1[template.ventricles & (template.csf > 0.9)].mean()),
        medial_temporal=torch.from_numpy(medial_temporal_weight(template))[None, None],
    )


def _sample(maps: torch.Tensor, points: np.ndarray, to_grid: np.ndarray) -> np.ndarray:
    """Trilinear values of `maps` [1, C, X, Y, Z] at world points (3, N) -> (C, N); 0 outside."""
    normalised = to_grid[:, :3] @ points + to_grid[:, 3:]
    grid = torch.from_numpy(np.ascontiguousarray(normalised.T)).view(1, 1, 1, -1, 3)
    values = torch.nn.functional.grid_sample(maps, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return values.view(maps.shape[1], -1).numpy()


def backward_map(points: np.ndarray, subject: SubjectVariables, prepared: _Prepared) -> np.ndarray:
    """Template coordinates (mm) that each output point (3, N) shows; see the module docstring."""
    centre = prepared.brain_centre[:, None].astype(np.float32)
    y = centre + (points - centre) / np.float32(subject.head_scale)
    offset = y - centre
    radius2 = ((offset / prepared.brain_radii[:, None].astype(np.float32)) ** 2).sum(axis=0)
    y = centre + offset * (1.0 + np.float32(subject.atrophy) * radius2)
    # the ventricles widen along the flow of a smooth velocity field, which never folds;
    # walking it backwards finds the template point each output point shows
    dilation = float(np.clip(subject.ventricle_dilation, -MAX_DILATION_MM, MAX_DILATION_MM))
    step = -np.float32(dilation / FLOW_STEPS)
    field, to_grid = prepared.ventricle_velocity, prepared.velocity_to_grid
    # a point further than |dilation| from where the velocity lives never reaches it
    reach = np.float32(abs(dilation))
    low, high = prepared.velocity_box[0][:, None] - reach, prepared.velocity_box[1][:, None] + reach
    moving = np.all(y >= low, axis=0) & np.all(y <= high, axis=0)
    near = y[:, moving]
    for _ in range(FLOW_STEPS):
        midpoint = near + 0.5 * step * _sample(field, near, to_grid)
        near = near + step * _sample(field, midpoint, to_grid)
    y[:, moving] = near
    return y


@dataclasses.dataclass(frozen=True)
class SyntheticSubject:
    """One generated subject: its T1 on the cohort grid and the volumes measured on its maps."""

    variables: SubjectVariables
    t1: np.ndarray
    ventricular_volume: float
    brain_volume: float
    medial_temporal_volume: float


@lru_cache(maxsize=4)
def _medial_temporal_region(shape: tuple[int, int, int], affine_bytes: bytes) -> np.ndarray:
    affine = np.frombuffer(affine_bytes, dtype=np.float64).reshape(4, 4)
    return template_mask_on_grid(load_mni_template().medial_temporal, shape, affine)


def synthesize(subject: SubjectVariables, grid: CohortGrid) -> SyntheticSubject:
    """Warp the template into `subject` on `grid`, add bias field and noise, measure volumes."""
    prepared = _prepare(grid.spacing)
    points = voxel_world_coordinates(grid.shape, grid.affine).reshape(3, -1)
    source = backward_map(points, subject, prepared)
    t1, tissue, ventricles, brain = _sample(prepared.maps, source, prepared.world_to_grid).reshape(4, *grid.shape)
    if subject.medial_temporal_loss > 0:
        weight = _sample(prepared.medial_temporal, source, prepared.world_to_grid).reshape(grid.shape)
        wasted = np.float32(subject.medial_temporal_loss) * weight * np.clip(brain, 0.0, 1.0)
        tissue = tissue * (1.0 - wasted)
        t1 = t1 * (1.0 - wasted) + np.float32(prepared.csf_intensity) * wasted

    from monai.transforms import RandBiasField  # imported when a cohort is made, not when a recipe is checked

    bias = RandBiasField(degree=3, coeff_range=BIAS_COEFFICIENTS, prob=1.0)
    bias.set_random_state(subject.seed)
    t1 = np.asarray(bias(t1[None]))[0]
    rng = np.random.default_rng(subject.seed)
    noise = rng.standard_normal(t1.shape, dtype=np.float32) * np.float32(NOISE_FRACTION * prepared.wm_intensity)
    t1 = np.clip(t1 + noise * np.clip(brain, 0.0, 1.0), 0.0, None).astype(np.float32)
    return SyntheticSubject(
        variables=subject,
        t1=t1,
        ventricular_volume=float(ventricles.sum(dtype=np.float64)) * grid.voxel_volume_ml,
        brain_volume=float(tissue.sum(dtype=np.float64)) * grid.voxel_volume_ml,
        medial_temporal_volume=float(tissue[_medial_temporal_region(grid.shape, grid.affine.tobytes())].sum(dtype=np.float64)) * grid.voxel_volume_ml,
    )
