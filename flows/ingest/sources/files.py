"""Files of a source folder, shared by the adapters that walk one (folder, ddti): the walk, which files are
images, and an image's size from its header. File and folder names may hold patient data: never logged."""

from __future__ import annotations

import logging
import os
import struct
import warnings
from pathlib import Path

from PIL import ExifTags, Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp"})
ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


def _log_walk_error(err: OSError) -> None:
    log.warning("a folder could not be listed (%s); its files are skipped", type(err).__name__)  # no path: PHI


def walk_files(root: Path) -> list[Path]:
    """Every file under `root`, relative to it, in sorted order; hidden files and symlinked folders skipped."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=_log_walk_error):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        base = Path(dirpath).relative_to(root)
        # dot files are OS litter (._name AppleDouble, .DS_Store), ~$ files are office lock files
        found.extend(base / name for name in sorted(filenames) if not name.startswith((".", "~$")))
    return found


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) as the decoder will orient the image, from its header only; None if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError):
        return None
    return (height, width) if orientation in ROTATED_ORIENTATIONS else (width, height)
