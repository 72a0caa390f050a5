"""Near-duplicate groups and patient-level splits, stable across re-runs.

Rules, in order: an image of a test-only organ (thyroid by default, the paper's cross-domain set) is
always test; an image that is a near-duplicate of an ingested image of the same organ joins that
image's group and its split (across organs a small pHash distance means the same scanner geometry,
not the same image: sector scans of different organs collide), unless its patient already has the
other split: then it keeps the patient's split and starts its own group; otherwise an image of a
patient already seen takes that patient's split; otherwise the split is drawn from a seeded hash of the
patient key (or, with a fixed test count, test until the organ has that many test images). Once
assigned, a split is never changed: the catalog is the memory, and this class is loaded from it at
the start of every run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flows.ingest.identity import assign_split


@dataclass
class KnownImage:
    image_id: str
    organ: str
    patient_key: str
    phash: str
    split: str
    dup_group: str | None


@dataclass
class SplitAssigner:
    """Remembers every ingested image's group and split; decides the same for new ones."""

    test_fraction: float
    test_only_organs: tuple[str, ...]
    near_duplicate_distance: int
    test_count_per_organ: int | None = None
    _hashes: np.ndarray = field(default_factory=lambda: np.zeros(1024, dtype=np.uint64))  # grows by doubling
    _organ_of: np.ndarray = field(default_factory=lambda: np.zeros(1024, dtype=np.int16))  # organ code per hash
    _organ_codes: dict[str, int] = field(default_factory=dict)
    _count: int = 0
    _groups: list[str] = field(default_factory=list)
    _group_split: dict[str, str] = field(default_factory=dict)
    _patient_split: dict[str, str] = field(default_factory=dict)
    _test_images: dict[str, int] = field(default_factory=dict)

    def remember(self, image: KnownImage) -> None:
        group = image.dup_group or image.image_id
        if self._count == len(self._hashes):
            self._hashes = np.concatenate([self._hashes, np.zeros_like(self._hashes)])
            self._organ_of = np.concatenate([self._organ_of, np.zeros_like(self._organ_of)])
        self._hashes[self._count] = np.uint64(int(image.phash, 16))
        self._organ_of[self._count] = self._organ_code(image.organ)
        self._count += 1
        self._groups.append(group)
        self._group_split.setdefault(group, image.split)
        self._patient_split.setdefault(image.patient_key, image.split)
        if image.split == "test":
            self._test_images[image.organ] = self._test_images.get(image.organ, 0) + 1

    def _organ_code(self, organ: str) -> int:
        return self._organ_codes.setdefault(organ, len(self._organ_codes) + 1)

    def near_duplicate_group(self, phash: str, organ: str) -> str | None:
        """The group of the closest ingested image of the same organ within the distance, or None."""
        if not self._count:
            return None
        # one vectorised XOR + popcount over every known hash: ~0.1 ms per 10k images
        distances = np.bitwise_count(self._hashes[: self._count] ^ np.uint64(int(phash, 16))).astype(np.int64)
        distances[self._organ_of[: self._count] != self._organ_code(organ)] = 64 + 1
        best = int(np.argmin(distances))
        return self._groups[best] if distances[best] <= self.near_duplicate_distance else None

    def assign(self, image_id: str, organ: str, patient_key: str, phash: str) -> tuple[str, str]:
        """(split, dup_group) for a new image, and remember it."""
        near = self.near_duplicate_group(phash, organ)
        patient_split = self._patient_split.get(patient_key)
        if organ in self.test_only_organs:  # cross-domain test organs never train, whatever else the patient has
            split = "test"
        elif near is not None and patient_split is not None and self._group_split[near] != patient_split:
            # the group and the patient were given different splits before: a patient never straddles splits,
            # so the image keeps its patient's split and starts its own group (splits, once given, never change)
            near, split = None, patient_split
        else:
            split = (self._group_split.get(near) if near else None) or patient_split or self._draw(organ, patient_key)
        group = near or image_id
        self.remember(KnownImage(image_id, organ, patient_key, phash, split, group))
        return split, group

    def _draw(self, organ: str, patient_key: str) -> str:
        if organ in self.test_only_organs:
            return "test"
        if self.test_count_per_organ is not None:
            return "test" if self._test_images.get(organ, 0) < self.test_count_per_organ else "train"
        return assign_split(patient_key, organ, test_fraction=self.test_fraction, test_only_organs=())
