"""Image identity: content ids, perceptual hashes, salted patient keys, patient-level splits."""

from __future__ import annotations

import hashlib
import hmac

import numpy as np
from PIL import Image
from scipy.fft import dctn

PHASH_SIZE = 32  # DCT input side; the 8×8 low-frequency block gives 64 bits


def image_id(image: Image.Image) -> str:
    """sha256 of the decoded pixels, mode and size: the same picture in PNG or JPEG-lossless has one id."""
    digest = hashlib.sha256()
    digest.update(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def phash(image: Image.Image) -> str:
    """64-bit DCT perceptual hash (Zauner 2010) as 16 hex digits; near-duplicates differ in few bits."""
    # reducing_gap: box-reduce first, then Lanczos on the small image (same hash in a fraction of the time)
    small = image.convert("L").resize((PHASH_SIZE, PHASH_SIZE), Image.Resampling.LANCZOS, reducing_gap=3.0)
    coefficients = dctn(np.asarray(small, dtype=np.float64), norm="ortho")[:8, :8]
    bits = (coefficients > np.median(coefficients.ravel()[1:])).ravel()  # DC term left out of the median
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


def patient_key(salt: bytes, patient_id: str | None, image_id_: str) -> str:
    """Salted HMAC of the patient id; an image without one is its own patient."""
    message = f"patient:{patient_id}" if patient_id else f"image:{image_id_}"
    return hmac.new(salt, message.encode(), hashlib.sha256).hexdigest()


def assign_split(patient_key_: str, organ: str, *, test_fraction: float, test_only_organs: tuple[str, ...]) -> str:
    """Patient-level split: every image of a patient lands on the same side, stable across runs."""
    if organ in test_only_organs:
        return "test"
    bucket = int(patient_key_[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"
