"""Phantom B-mode ultrasound images: the embedded default data set.

Each image is built like a real scan is displayed: a tissue echo map (the organ's `phantom:` hints,
`phantom_tissue.py`) with lesions whose look follows their vocabulary values (`render` hints in
`schemas/vocab/*.yaml`), multiplicative Rayleigh-like speckle, depth attenuation with partial
time-gain compensation, log compression, a sector (fan) field of view, a depth scale, and a header
band with burned-in (fake) patient text for de-identification to remove. A per-lesion
`difficulty` lowers contrast and blurs the margin; the simulated readers use it to disagree.

Deterministic by seed: the same (seed, index) always gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from flows.ingest.sources.base import SourceAdapter, SourceItem
from flows.ingest.sources.phantom_scanner import (
    FAN_HALF_ANGLE_DEG,
    HEADER_HEIGHT,
    burn_in_header,
    depth_scale,
    display_geometry,
    speckle,
)
from flows.ingest.sources.phantom_tissue import background_tissue, smooth_field
from schemas.vocabulary import load_vocabulary, registered_organs

LESION_ANGLE_SAMPLES = 720
MANIFEST_NAME = "manifest.jsonl"


@dataclass(frozen=True)
class PhantomConfig:
    """What to generate; every field is recorded in the manifest."""

    width: int = 640
    height: int = 480
    organs: tuple[str, ...] = field(default_factory=registered_organs)
    max_lesions: int = 2
    second_lesion_probability: float = 0.15
    difficulty: float | None = None  # None: each lesion draws its own in [0, 1]
    images_per_patient: int = 2
    lesion_radius_range: tuple[float, float] = (22.0, 60.0)


@dataclass
class PhantomLesion:
    box: list[float]  # original pixels of the full raw image (header included)
    attributes: dict[str, str]
    difficulty: float
    mask: np.ndarray = field(repr=False)  # bool, full image


@dataclass
class PhantomCase:
    index: int
    organ: str
    patient_id: str
    image: np.ndarray = field(repr=False)  # uint8 H×W, header included
    us_region: list[int]  # [x1, y1, x2, y2] of the ultrasound image area
    lesions: list[PhantomLesion]


def _case_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


def _lesion_radius(rng: np.random.Generator, render: dict[str, Any], r0: float) -> np.ndarray:
    """r(θ) of a lesion outline: elongated ellipse, lobes, roughness and spicules from the hints."""
    theta = np.linspace(0, 2 * np.pi, LESION_ANGLE_SAMPLES, endpoint=False)
    elongation = float(render.get("elongation", rng.uniform(1.0, 1.5)))
    tilt = math.radians(float(render.get("tilt_deg", 0.0)) + rng.uniform(-12, 12))
    a, b = r0 * math.sqrt(elongation), r0 / math.sqrt(elongation)
    phi = theta - tilt
    r = a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)
    lobes = float(render.get("lobes", 0.0))
    if lobes:
        k = int(rng.integers(3, 7))
        r *= 1 + lobes * 0.5 * (np.sin(k * theta + rng.uniform(0, 6.3)) + 0.5 * np.sin((k + 2) * theta))
    roughness = float(render.get("roughness", 0.0))
    if roughness:
        noise = ndimage.gaussian_filter1d(rng.normal(0, 1, theta.size), 4, mode="wrap")
        r *= 1 + roughness * noise / (np.abs(noise).max() + 1e-6)
    spikes = int(render.get("spikes", 0))
    if spikes:
        r *= 1 + 0.35 * np.maximum(0, np.cos(spikes * theta + rng.uniform(0, 6.3))) ** 12
    return np.maximum(r, 0.3 * r0)


def _inside_fan(points_x: np.ndarray, points_y: np.ndarray, fan: tuple[float, float, float, float]) -> bool:
    apex_x, apex_y, r_min, r_max = fan
    dx, dy = points_x - apex_x, points_y - apex_y
    radius = np.hypot(dx, dy)
    angle = np.degrees(np.arctan2(dx, dy))
    return bool(np.all((radius > r_min + 8) & (radius < r_max - 8) & (np.abs(angle) < FAN_HALF_ANGLE_DEG - 3)))


def _sample_attributes(organ: str, rng: np.random.Generator) -> tuple[dict[str, str], dict[str, Any]]:
    """One value per attribute of the organ, and the merged render hints (later attributes win)."""
    attributes, render = {}, {}
    for name, attribute in load_vocabulary(organ).attributes.items():
        value = attribute.canonical_values[int(rng.integers(len(attribute.values)))]
        attributes[name] = value
        render.update(attribute.values[value].render)
    return attributes, render


def _place_lesion(
    rng: np.random.Generator,
    config: PhantomConfig,
    render: dict[str, Any],
    fan: tuple[float, float, float, float],
    taken: list[list[float]],
) -> tuple[np.ndarray, np.ndarray] | None:
    """Outline points (x, y) of a lesion that fits the fan and overlaps no other lesion."""
    apex_x, apex_y, r_min, r_max = fan
    for _ in range(50):
        r0 = rng.uniform(*config.lesion_radius_range)
        depth = rng.uniform(r_min + 0.25 * (r_max - r_min), r_min + 0.75 * (r_max - r_min))
        angle = math.radians(rng.uniform(-0.6, 0.6) * FAN_HALF_ANGLE_DEG)
        cx, cy = apex_x + depth * math.sin(angle), apex_y + depth * math.cos(angle)
        r = _lesion_radius(rng, render, r0)
        theta = np.linspace(0, 2 * np.pi, LESION_ANGLE_SAMPLES, endpoint=False)
        xs, ys = cx + r * np.cos(theta), cy + r * np.sin(theta)
        box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
        overlaps = any(
            not (box[2] + 10 < t[0] or t[2] + 10 < box[0] or box[3] + 10 < t[1] or t[3] + 10 < box[1]) for t in taken
        )
        if _inside_fan(xs, ys, fan) and not overlaps:
            return xs, ys
    return None


def _rasterize(xs: np.ndarray, ys: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    mask = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(mask).polygon(list(zip(xs.tolist(), ys.tolist(), strict=True)), fill=1)
    return np.asarray(mask, dtype=bool)


def _paint_lesion(
    echo: np.ndarray,
    mask: np.ndarray,
    render: dict[str, Any],
    difficulty: float,
    rng: np.random.Generator,
    box: list[float],
) -> None:
    """Change the echo map inside (and behind) one lesion, in place, within a window around it."""
    contrast = 1.0 - 0.75 * difficulty  # hard cases drift toward the background level
    intensity = 1.0 + (float(render.get("intensity", 0.55)) - 1.0) * contrast
    edge_blur = (float(render.get("edge_blur", 1.0)) + 4.0 * difficulty) / 1.5
    pad = int(3 * edge_blur) + 30
    top, left = max(0, int(box[1]) - pad), max(0, int(box[0]) - pad)
    right = min(echo.shape[1], int(box[2]) + pad)
    window, inside_mask = echo[top:, left:right], mask[top:, left:right]  # to the bottom: posterior features
    x1, y1, x2, y2 = box[0] - left, box[1] - top, box[2] - left, box[3] - top
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    yy, xx = np.mgrid[0 : window.shape[0], 0 : window.shape[1]].astype(np.float32)
    dist = np.hypot((xx - cx) / max(1.0, (x2 - x1) / 2), (yy - cy) / max(1.0, (y2 - y1) / 2))
    lesion = np.full(window.shape, intensity, dtype=np.float32)
    if texture := float(render.get("texture", 0.0)):
        lesion *= smooth_field(rng, window.shape, 12, 0.6 * texture)
    fluid = 1.0 + (0.04 - 1.0) * contrast  # anechoic fluid, also fainter on hard cases
    if core := float(render.get("cystic_core", 0.0)):
        lesion[dist < core] = fluid
    for _ in range(int(render.get("cystic_spots", 0))):
        sx, sy = rng.uniform(x1, x2), rng.uniform(y1, y2)
        lesion[np.hypot(xx - sx, yy - sy) < rng.uniform(2, 5)] = fluid
    soft = np.clip(ndimage.gaussian_filter(inside_mask.astype(np.float32), edge_blur), 0, 1)
    window *= 1 - soft + soft * lesion
    # posterior acoustic features: columns under the lesion, fading with depth
    posterior = 1.0 + (float(render.get("posterior", 1.0)) - 1.0) * contrast
    if posterior != 1.0 or render.get("posterior_split"):
        below = (yy > cy) & (xx > x1 + 0.15 * (x2 - x1)) & (xx < x2 - 0.15 * (x2 - x1)) & ~inside_mask
        fade = np.exp(-np.clip(yy - y2, 0, None) / 120.0)
        factor = np.where(below, 1 + (posterior - 1) * fade, 1.0)
        if render.get("posterior_split"):
            factor = np.where(below & (xx < cx), 1 + 0.5 * fade, np.where(below, 1 - 0.5 * fade, factor))
        window *= ndimage.gaussian_filter(factor.astype(np.float32), 3)
    size = float(render.get("foci_size", 1.2))
    for _ in range(int(render.get("foci", 0))):
        if render.get("foci_outside"):
            fx, fy = rng.uniform(x1 - 25, x2 + 25), rng.uniform(y1 - 25, y1)
        elif render.get("foci_rim"):
            a = rng.uniform(0, 2 * np.pi)
            fx, fy = cx + 0.45 * (x2 - x1) * math.cos(a), cy + 0.45 * (y2 - y1) * math.sin(a)
        else:
            fx = rng.uniform(x1 + 0.25 * (x2 - x1), x2 - 0.25 * (x2 - x1))
            fy = rng.uniform(y1 + 0.25 * (y2 - y1), y2 - 0.25 * (y2 - y1))
        window[np.hypot(xx - fx, yy - fy) <= size] = 3.0


def generate_case(seed: int, index: int, config: PhantomConfig = PhantomConfig()) -> PhantomCase:
    """One phantom image with its lesions; deterministic in (seed, index, config)."""
    rng = _case_rng(seed, index)
    patient = index // config.images_per_patient
    organ = config.organs[patient % len(config.organs)]  # a patient's images are of one organ
    shape = (config.height - HEADER_HEIGHT, config.width)
    h, w = shape
    fan = (w / 2, -0.12 * h, 0.18 * h, 1.1 * h)  # apex above the image: a curvilinear probe
    echo = background_tissue(load_vocabulary(organ).phantom, rng, shape)

    lesions: list[PhantomLesion] = []
    n_lesions = 1 + sum(rng.random() < config.second_lesion_probability for _ in range(config.max_lesions - 1))
    for _ in range(n_lesions):
        attributes, render = _sample_attributes(organ, rng)
        placed = _place_lesion(rng, config, render, fan, [les.box for les in lesions])
        if placed is None:
            continue
        xs, ys = placed
        box = [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]
        difficulty = float(config.difficulty if config.difficulty is not None else rng.uniform(0, 1))
        mask = _rasterize(xs, ys, shape)
        _paint_lesion(echo, mask, render, difficulty, rng, box)
        lesions.append(PhantomLesion(box=box, attributes=attributes, difficulty=difficulty, mask=mask))

    attenuation, in_fan = display_geometry(shape, fan)
    envelope = echo * speckle(rng, shape) * attenuation
    bmode = np.log1p(25 * np.maximum(envelope, 0.0)) / math.log1p(25 * 2.2)
    us = np.where(in_fan, np.clip(bmode**1.3 * 255, 0, 255), 0).astype(np.uint8)

    full = Image.new("L", (config.width, config.height), 0)
    full.paste(Image.fromarray(us), (0, HEADER_HEIGHT))
    patient_id = f"PH{seed:04d}{patient:05d}"
    burn_in_header(full, organ, patient_id, index)
    depth_scale(full, HEADER_HEIGHT)
    for lesion in lesions:  # into the full-image frame
        lesion.box = [lesion.box[0], lesion.box[1] + HEADER_HEIGHT, lesion.box[2], lesion.box[3] + HEADER_HEIGHT]
        lesion.mask = np.pad(lesion.mask, ((HEADER_HEIGHT, 0), (0, 0)))
    return PhantomCase(
        index=index,
        organ=organ,
        patient_id=patient_id,
        image=np.asarray(full),
        us_region=[0, HEADER_HEIGHT, config.width, config.height],
        lesions=lesions,
    )


def case_name(seed: int, index: int) -> str:
    return f"phantom-s{seed}-{index:06d}"


def write_case(case: PhantomCase, seed: int, folder: Path) -> dict[str, Any]:
    """Write the image and one mask per lesion; return the manifest entry."""
    name = case_name(seed, case.index)
    Image.fromarray(case.image).save(folder / f"{name}.png", compress_level=1)
    lesions = []
    for k, lesion in enumerate(case.lesions):
        mask_file = f"{name}_mask_{k}.png"
        Image.fromarray(lesion.mask.astype(np.uint8) * 255).save(folder / mask_file, compress_level=1)
        lesions.append(
            {
                "box": [round(v, 2) for v in lesion.box],
                "attributes": lesion.attributes,
                "difficulty": round(lesion.difficulty, 4),
                "mask": mask_file,
            }
        )
    return {
        "file": f"{name}.png",
        "index": case.index,
        "organ": case.organ,
        "patient_id": case.patient_id,
        "us_region": case.us_region,
        "lesions": lesions,
    }


def iter_cases(seed: int, count: int, config: PhantomConfig = PhantomConfig(), start: int = 0) -> Iterator[PhantomCase]:
    for index in range(start, start + count):
        yield generate_case(seed, index, config)


def config_digest(config: PhantomConfig, seed: int) -> str:
    """Short hash of everything that shapes the output: the folder name, so configs never mix."""
    payload = json.dumps({"config": asdict(config), "seed": seed}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:8]


def phantom_items(
    root: Path, *, seed: int, count: int, config: PhantomConfig = PhantomConfig()
) -> Iterator[SourceItem]:
    """Generate (or reuse) `count` phantom images under `root` and yield them as source items.

    Each case is written image first, masks next, and its JSON entry last (atomically), so a killed
    run regenerates only the cases without an entry.
    """
    folder = root / f"phantom-s{seed}-{config_digest(config, seed)}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / f"{MANIFEST_NAME}.partial"
    with manifest.open("w") as lines:  # streamed: memory does not grow with the count
        lines.write(json.dumps({"phantom_config": asdict(config), "seed": seed}) + "\n")
        for index in range(count):
            entry = _case_entry(folder, seed, index, config)
            lines.write(json.dumps(entry) + "\n")
            with Image.open(folder / entry["file"]) as image:
                image.load()
            yield SourceItem(
                source="phantom",
                source_ref=entry["file"],
                organ=entry["organ"],
                image=image,
                patient_id=entry["patient_id"],
                us_region=entry["us_region"],
                annotations=[
                    {"box": lesion["box"], "attributes": lesion["attributes"], "origin": "phantom"}
                    for lesion in entry["lesions"]
                ],
                # the simulated readers disagree more on harder lesions
                metadata={"lesion_difficulty": [lesion["difficulty"] for lesion in entry["lesions"]]},
            )
    manifest.replace(folder / MANIFEST_NAME)


def _case_entry(folder: Path, seed: int, index: int, config: PhantomConfig) -> dict[str, Any]:
    """The case's manifest entry, generating the case first unless an earlier run finished it."""
    entry_path = folder / f"{case_name(seed, index)}.json"
    if entry_path.exists():
        return json.loads(entry_path.read_text())
    entry = write_case(generate_case(seed, index, config), seed, folder)
    tmp = entry_path.with_suffix(".partial")
    tmp.write_text(json.dumps(entry))
    tmp.replace(entry_path)
    return entry


def iter_phantom_items(root: Path, *, organ: str | None, seed: int, count: int) -> Iterator[SourceItem]:
    """The ingest stage's call: `count` images from `seed` of one organ (or of every registered organ)."""
    config = PhantomConfig(organs=(organ,) if organ else registered_organs())
    return phantom_items(root, seed=seed, count=count, config=config)


# it generates into the workspace: the ingest stage gives it the folder, `seed` and `count`
SOURCE = SourceAdapter(
    "phantom",
    iter_phantom_items,
    path="none",
    preannotation_origins=("phantom",),
    text_outside_region_by_construction=True,  # the header band is outside us_region (phantom_scanner.py)
)
