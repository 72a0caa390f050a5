"""The OCR reader: RapidOCR's PP-OCRv4 text detector and recogniser (ONNX models shipped in the wheel, CPU).

Chosen over Tesseract because it needs no system package (it installs from PyPI with the rest) and its
detector finds text on textured backgrounds (text over speckle), where Tesseract's page segmentation
is made for documents. Settings named here, not left to the library's defaults:

- detection runs at the image's own resolution (`limit_type=max`, side up to 2000 px): the library's
  default (`min` 736) upscales every small frame, which triples the cost and finds nothing more
  in burned-in text of 8 px and up;
- no angle classifier (`use_cls=False`): burned-in text is upright, and the classifier flipped a correct
  reading in our tests;
- recognition only for the boxes the detector found, and only when a decision needs the words.

One reader per process, built on first use (a Dask / Ray worker builds its own).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import version

import numpy as np
from PIL import Image

DETECTION_MAX_SIDE = 2000
DETECTION_BOX_THRESHOLD = 0.5  # the library's default: mean text probability inside a box
OCR_ENGINE = f"rapidocr-onnxruntime {version('rapidocr-onnxruntime')} (PP-OCRv4 det + rec)"


@dataclass(frozen=True)
class TextBox:
    """A detected text line: its axis-aligned box in image pixels, and what it says (when read)."""

    box: tuple[int, int, int, int]  # x1, y1, x2, y2 (x2, y2 exclusive)
    text: str | None = None
    score: float = 0.0


class TextReader:
    """Detects (and optionally reads) text lines in an "L" or "RGB" image."""

    def __init__(self) -> None:
        from rapidocr_onnxruntime import RapidOCR  # imported here: the model sessions cost ~0.2 s to build

        self._engine = RapidOCR(
            det_limit_type="max",
            det_limit_side_len=DETECTION_MAX_SIDE,
            det_box_thresh=DETECTION_BOX_THRESHOLD,
            use_cls=False,
            print_verbose=False,
        )
        self._lock = threading.Lock()  # one ONNX session pair per process; calls are serialised
        self.seconds = 0.0  # time spent in the OCR, for bench/ingest.py's OCR share
        self.calls = 0

    def find(self, image: Image.Image, *, read: bool) -> list[TextBox]:
        """Text lines in the image; with `read`, also what each says."""
        rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
        with self._lock:
            start = time.perf_counter()
            result, _ = self._engine(rgb, use_det=True, use_cls=False, use_rec=read)
            self.seconds += time.perf_counter() - start
            self.calls += 1
        if not result:
            return []
        boxes = []
        for entry in result:
            points = np.asarray(entry[0] if read else entry, dtype=np.float64)
            x1, y1 = (int(v) for v in np.floor(points.min(axis=0)))
            x2, y2 = (int(v) for v in np.ceil(points.max(axis=0)))
            box = (max(0, x1), max(0, y1), min(image.width, x2 + 1), min(image.height, y2 + 1))
            boxes.append(TextBox(box, str(entry[1]) if read else None, float(entry[2]) if read else 0.0))
        return boxes


@lru_cache(maxsize=1)
def text_reader() -> TextReader:
    """This process's reader."""
    return TextReader()
