"""What the phantom's scanner adds to the tissue it images: speckle, the sector (fan) geometry of the display,
the burned-in header band (fake patient text, for the de-identification path) and the depth scale."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

HEADER_HEIGHT = 40  # burned-in text band above the ultrasound region
FAN_HALF_ANGLE_DEG = 36.0


def speckle(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Fully developed speckle: magnitude of a correlated complex Gaussian field (Rayleigh)."""
    re_, im_ = rng.normal(0, 1, (2, *shape)).astype(np.float32)
    sigma = (0.7, 1.6)  # speckle grains are wider laterally than axially
    amp = np.hypot(ndimage.gaussian_filter(re_, sigma), ndimage.gaussian_filter(im_, sigma))
    return amp / amp.mean()


@lru_cache(maxsize=8)
def display_geometry(shape: tuple[int, int], fan: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Depth attenuation (TGC compensates only part of it) and the fan mask; same for every image."""
    h, w = shape
    depth = np.arange(h, dtype=np.float32)[:, None] / h
    attenuation = np.exp(-1.6 * depth) * (1 + 1.2 * depth)
    yy, xx = np.mgrid[0:h, 0:w]
    radius, angle = np.hypot(xx - fan[0], yy - fan[1]), np.degrees(np.arctan2(xx - fan[0], yy - fan[1]))
    in_fan = (radius > fan[2]) & (radius < fan[3]) & (np.abs(angle) < FAN_HALF_ANGLE_DEG)
    return attenuation, in_fan


def burn_in_header(img: Image.Image, organ: str, patient_id: str, index: int) -> None:
    """The header band a scanner burns in: site, (fake) patient name and id, date, preset."""
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, 0, img.width, HEADER_HEIGHT - 1), fill=0)
    draw.text((8, 4), f"PHANTOM GENERAL HOSPITAL   PATIENT^{patient_id}   ID {patient_id}", fill=235)
    draw.text(
        (8, 20), f"2026-01-{1 + index % 28:02d} 10:{index % 60:02d}   {organ.upper()} PRESET   MI 0.9 TIS 0.4", fill=200
    )


def depth_scale(img: Image.Image, us_top: int) -> None:
    draw = ImageDraw.Draw(img)
    for i, y in enumerate(range(us_top + 10, img.height - 5, 40)):
        draw.line((img.width - 14, y, img.width - 6, y), fill=220)
        draw.text((img.width - 32, y - 5), str(i), fill=200)
