"""Generators of bad and awkward image files, shared by the decode and bad-input corpus tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def speckle(width: int = 96, height: int = 64, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(20, 235, (height, width), dtype=np.uint8)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny valid PNG whose IHDR claims another size (CRC fixed so only the size lies)."""
    data = bytearray(png_bytes(Image.fromarray(speckle(8, 8))))
    ihdr = 8  # after the signature: length(4) type(4) data(13) crc(4)
    data[ihdr + 8 : ihdr + 16] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr + 4 : ihdr + 21])) & 0xFFFFFFFF
    data[ihdr + 21 : ihdr + 25] = struct.pack(">I", crc)
    return bytes(data)


def write_corpus(folder: Path) -> dict[str, str | None]:
    """Write the bad and awkward image files; returns file name → expected reason (None = ingests)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = Image.fromarray(speckle())
    expected: dict[str, str | None] = {}

    def save(name: str, payload: bytes, reason: str | None) -> None:
        (folder / name).write_bytes(payload)
        expected[name] = reason

    intact = png_bytes(good)
    middle = len(intact) // 2  # inside the pixel data: the header parses, the CRC and inflate do not
    save("corrupt.png", intact[:middle] + b"\x00" * 64 + intact[middle + 64 :], "corrupt_image")
    jpeg = io.BytesIO()
    good.save(jpeg, format="JPEG", quality=90)
    save("truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2], "corrupt_image")
    save("zero.png", b"", "empty_file")
    save("text.png", b"this is not an image at all\n" * 10, "not_an_image")
    save("one_pixel.png", png_bytes(Image.new("L", (1, 1), 128)), "image_too_small")
    save("huge_header.png", png_claiming_size(30000, 30000), "decompression_bomb")
    save("blank.png", png_bytes(Image.new("L", (96, 64), 0)), "near_constant_image")
    deep = (speckle(seed=1).astype(np.uint16) * 200 + 1000).astype(np.uint16)
    save("deep16.png", png_bytes(Image.fromarray(deep)), None)
    cmyk = io.BytesIO()
    Image.fromarray(speckle(seed=2)).convert("CMYK").save(cmyk, format="JPEG")
    save("cmyk.jpg", cmyk.getvalue(), None)
    rgba = Image.fromarray(np.dstack([speckle(seed=3)] * 3 + [np.full((64, 96), 200, np.uint8)]), "RGBA")
    save("rgba.png", png_bytes(rgba), None)
    save("palette.png", png_bytes(Image.fromarray(speckle(seed=4)).convert("P")), None)
    rotated = Image.fromarray(speckle(96, 64, seed=5))
    exif = rotated.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    buffer = io.BytesIO()
    rotated.save(buffer, format="JPEG", exif=exif.tobytes())
    save("exif_rotated.jpg", buffer.getvalue(), None)
    return expected
