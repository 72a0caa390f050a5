"""The background tissue of a phantom image, drawn from the organ's vocabulary hints (`phantom:` in
`schemas/vocab/<organ>.yaml`): a softly varying parenchyma, then a gland, vessels and depth bands as declared.
A new organ describes its tissue there; nothing here names an organ.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from schemas.vocabulary import PhantomHints, TissueBands, TissueGland, TissueVessels


def smooth_field(rng: np.random.Generator, shape: tuple[int, int], cells: int, amplitude: float) -> np.ndarray:
    """Low-frequency multiplicative variation around 1 (bicubic upsampling of a coarse grid)."""
    coarse = rng.normal(0.0, 1.0, (cells, cells)).astype(np.float32)
    img = Image.fromarray(coarse, mode="F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
    return np.maximum(1.0 + amplitude * np.asarray(img, dtype=np.float32), 0.05)  # echo is never negative


def background_tissue(hints: PhantomHints, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Mean echo level of an organ's background tissue, as its vocabulary's `phantom:` hints describe it."""
    echo = np.full(shape, 0.5, dtype=np.float32) * smooth_field(rng, shape, 6, 0.08)
    if hints.gland:
        echo = _gland(echo, hints.gland)
    if hints.vessels:
        echo = _vessels(echo, hints.vessels, rng)
    if hints.bands:
        echo = _bands(echo, hints.bands, rng)
    return echo


def _gland(echo: np.ndarray, gland: TissueGland) -> np.ndarray:
    h, w = echo.shape
    yy, xx = np.mgrid[0:h, 0:w]
    (cx, cy), (ax, ay) = gland.centre, gland.half_axes
    inside = ((xx - cx * w) / (ax * w)) ** 2 + ((yy - cy * h) / (ay * h)) ** 2 < 1
    return np.where(inside, echo * gland.inside, echo * gland.outside)


def _vessels(echo: np.ndarray, vessels: TissueVessels, rng: np.random.Generator) -> np.ndarray:
    h, w = echo.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(vessels.count[0], vessels.count[1] + 1))):
        cx, cy = rng.uniform(0, w), rng.uniform(vessels.depth[0] * h, vessels.depth[1] * h)
        r = rng.uniform(*vessels.radius)
        echo = np.where((xx - cx) ** 2 + ((yy - cy) * vessels.squash) ** 2 < r**2, vessels.echo, echo)
    return echo


def _bands(echo: np.ndarray, bands: TissueBands, rng: np.random.Generator) -> np.ndarray:
    h, w = echo.shape
    y = np.arange(h, dtype=np.float32)[:, None] / h
    wave: np.ndarray | float = 0.0
    if bands.wave:  # one undulation for every layer: they stay parallel
        x = np.arange(w, dtype=np.float32)[None, :] / w
        wave = bands.wave * np.sin(2 * np.pi * (x * rng.uniform(0.8, 1.6) + rng.uniform(0, 1)))
    for band in bands.levels:
        inside = np.ones_like(echo, dtype=bool)
        if band.above is not None:
            inside = inside & (y > band.above + wave)
        if band.below is not None:
            inside = inside & (y < band.below + wave)
        echo = np.where(inside, band.echo, echo)
    return echo
