"""Files of a source folder, shared by the adapters that walk one (folder, ddti): the walk, which files are
images, and an image's size from its header. File and folder names may hold patient data: never logged."""

from __future__ import annotations

import logging
import os
import stat
import struct
import warnings
from pathlib import Path

from PIL import ExifTags, Image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".tif", ".tiff", ".gif", ".webp"})
DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
OUTSIDE_SOURCE = "outside_source"  # resolves (after symlinks) outside the source root and the allowed roots
NOT_A_REGULAR_FILE = "not_a_regular_file"  # a FIFO, socket, device, a folder link or an unlistable folder
UNSUPPORTED_FORMAT = "unsupported_format"  # a file this adapter does not read (text, archives, ...)
DICOM_IN_IMAGE_FOLDER = "dicom_in_image_folder"  # ingest it with the dicom source, which reads its tags and regions
ROTATED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height


def _log_walk_error(err: OSError) -> None:
    log.warning("a folder could not be listed (%s); its files are skipped", type(err).__name__)  # no path: PHI


def walk_files(root: Path) -> list[Path]:
    """Every entry under `root` that is not a folder to descend, relative to it, in sorted order.

    Symlinked folders are not followed (a link loop cannot hang the walk, a link cannot lead out of the
    source): they are listed as entries, so the adapter accounts for them. A folder that cannot be
    listed is listed as an entry too. Hidden files and folders are skipped: dot files are OS litter
    (._name AppleDouble, .DS_Store), ~$ files are office lock files.
    """
    found: list[Path] = []
    unreadable: list[Path] = []

    def on_error(err: OSError) -> None:
        _log_walk_error(err)
        if err.filename and Path(err.filename) != root:
            unreadable.append(Path(err.filename).relative_to(root))

    for dirpath, dirnames, filenames in os.walk(root, followlinks=False, onerror=on_error):
        base = Path(dirpath).relative_to(root)
        linked = sorted(d for d in dirnames if not d.startswith(".") and (Path(dirpath) / d).is_symlink())
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in linked)
        found.extend(base / name for name in linked)
        found.extend(base / name for name in sorted(filenames) if not name.startswith((".", "~$")))
    return found + sorted(unreadable)


def is_inside(path: Path, roots: list[Path]) -> bool:
    """Whether `path`, after every symlink, lies inside one of `roots` (themselves resolved)."""
    try:
        resolved = path.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop
        return False
    return any(resolved.is_relative_to(root.resolve()) for root in roots)


def entry_reason(root: Path, rel: Path) -> str | None:
    """Why a listed entry cannot be an image file of the source (None: a regular file inside the root)."""
    path = root / rel
    if not is_inside(path, [root]):
        return OUTSIDE_SOURCE
    try:
        regular = stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return NOT_A_REGULAR_FILE  # a dangling link or an entry that cannot be read
    return None if regular else NOT_A_REGULAR_FILE


def unlisted_reason(root: Path, rel: Path) -> str:
    """The quarantine reason of an entry no pairing took: never skipped, always accounted for."""
    if reason := entry_reason(root, rel):
        return reason
    if rel.suffix.lower() in DICOM_SUFFIXES or _has_dicom_preamble(root / rel):
        return DICOM_IN_IMAGE_FOLDER
    return UNSUPPORTED_FORMAT


def _has_dicom_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(132)[128:132] == b"DICM"
    except OSError:
        return False


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
