"""Simulated sonographers: noisy, reproducible readings of a phantom's ground truth.

Why: the demo and the tests need double readings whose disagreements look like real inter-reader
variability, so that the consensus stage and the paper's confidence c (1 when readers agree) have
something realistic to work on. Real readers disagree more on hard lesions (low contrast, blurred
margin: the phantom's `difficulty`) and between adjacent grades of an ordered scale (hypo- vs
isoechoic), hardly ever between its ends; their boxes differ by a few pixels, more where the margin
is blurred. A reading is deterministic in (reader_seed, image_key), so re-running the demo posts the
same annotations.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from schemas.frames import Box
from schemas.vocabulary import load_vocabulary

TruthLesion = tuple[Sequence[float], Mapping[str, str], float]  # (box in original pixels, attributes, difficulty)
ReadLesion = tuple[Box, dict[str, str]]


class ReaderNoise(BaseModel):
    """How a simulated reader errs, as a function of the lesion's difficulty d in [0, 1]."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    box_jitter_base_px: float = Field(
        default=1.5, ge=0, description="sigma of each box edge on an easy lesion (where exactly to click)"
    )
    box_jitter_per_difficulty: float = Field(
        default=0.05, ge=0, description="extra edge sigma per unit d, as a share of the box side (blurred margins)"
    )
    confusion_base: float = Field(
        default=0.01, ge=0, le=1, description="p0: chance of grading an attribute one step off on an easy lesion"
    )
    confusion_per_difficulty: float = Field(
        default=0.3, ge=0, le=1, description="p1: extra chance per unit d, p = p0 + p1·d"
    )
    min_box_side_px: float = Field(default=2.0, gt=0, description="a reader's box is never thinner than this")

    @model_validator(mode="after")
    def _probability_at_most_one(self) -> ReaderNoise:
        if self.confusion_base + self.confusion_per_difficulty > 1:
            raise ValueError("confusion_base + confusion_per_difficulty must be at most 1 (p at d = 1)")
        return self

    def confusion_probability(self, difficulty: float) -> float:
        """p = p0 + p1·d: the chance that one attribute of a lesion is graded one step off."""
        return self.confusion_base + self.confusion_per_difficulty * difficulty

    def box_jitter_px(self, difficulty: float, side: float) -> float:
        """Sigma of an edge of a box of `side` pixels: sigma = base + k·d·side."""
        return self.box_jitter_base_px + self.box_jitter_per_difficulty * difficulty * side


DEFAULT_READER_NOISE = ReaderNoise()


def _lesion_rng(reader_seed: int, image_key: str, lesion_index: int) -> random.Random:
    # sha256 rather than hash(): str hashes are salted per process, and one stream per lesion keeps a
    # lesion's reading independent of how many random draws the lesions before it needed
    digest = hashlib.sha256(f"{reader_seed}\x00{image_key}\x00{lesion_index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def neighbouring_values(values: Sequence[str], value: str) -> list[str]:
    """The values one step away from `value` in vocabulary order (the order of the scale)."""
    index = list(values).index(value)
    return [values[i] for i in (index - 1, index + 1) if 0 <= i < len(values)]


def _read_attributes(
    organ: str, attributes: Mapping[str, str], difficulty: float, rng: random.Random, config: ReaderNoise
) -> dict[str, str]:
    vocabulary = load_vocabulary(organ)
    p = config.confusion_probability(difficulty)
    read = {}
    for name, raw in attributes.items():
        attribute = vocabulary.attribute(name)
        value = attribute.normalize(raw)
        confused, direction = rng.random() < p, rng.random()  # always two draws: streams stay aligned
        neighbours = neighbouring_values(attribute.canonical_values, value)
        read[name] = neighbours[int(direction * len(neighbours))] if confused and neighbours else value
    return read


def _clip_interval(low: float, high: float, limit: int, min_side: float) -> tuple[float, float]:
    """[low, high] ordered, inside [0, limit], and at least `min_side` long (grown about its centre)."""
    low, high = sorted((min(max(low, 0.0), limit), min(max(high, 0.0), limit)))
    if high - low < min_side:
        low = min(max((low + high - min_side) / 2, 0.0), limit - min_side)
        high = low + min_side
    return low, high


def _read_box(
    box: Sequence[float], difficulty: float, image_size: tuple[int, int], rng: random.Random, config: ReaderNoise
) -> Box:
    width, height = image_size
    x1, y1, x2, y2 = (float(v) for v in box)
    sigma_x = config.box_jitter_px(difficulty, x2 - x1)
    sigma_y = config.box_jitter_px(difficulty, y2 - y1)
    x1, x2 = x1 + rng.gauss(0, sigma_x), x2 + rng.gauss(0, sigma_x)
    y1, y2 = y1 + rng.gauss(0, sigma_y), y2 + rng.gauss(0, sigma_y)
    # a tiny image cannot hold the usual minimum side: then the box spans that axis
    x1, x2 = _clip_interval(x1, x2, width, min(config.min_box_side_px, width))
    y1, y2 = _clip_interval(y1, y2, height, min(config.min_box_side_px, height))
    return [x1, y1, x2, y2]


def simulate_reading(
    truth: Sequence[TruthLesion],
    organ: str,
    image_size: tuple[int, int],
    *,
    reader_seed: int,
    image_key: str,
    config: ReaderNoise = DEFAULT_READER_NOISE,
) -> list[ReadLesion]:
    """One simulated sonographer's reading of an image: a jittered box and graded attributes per lesion."""
    reading = []
    for index, (box, attributes, difficulty) in enumerate(truth):
        if not 0.0 <= difficulty <= 1.0:
            raise ValueError(f"difficulty {difficulty} of lesion {index} of {image_key!r} is outside [0, 1]")
        rng = _lesion_rng(reader_seed, image_key, index)
        read_box = _read_box(box, difficulty, image_size, rng, config)
        reading.append((read_box, _read_attributes(organ, attributes, difficulty, rng, config)))
    return reading
