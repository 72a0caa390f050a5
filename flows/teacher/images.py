"""The two pictures the teacher sees: the model-frame image and the zoom crop, as PNG data URIs.

They are made exactly as the dataset will make them (the shared resize and crop from `schemas/`), so
the teacher looks at what the student will. Decoding and encoding run in worker threads (PIL releases
the GIL) and each image is prepared once for all its attributes.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections import OrderedDict

from PIL import Image

from flows.image_store import ImageStore
from flows.teacher.prompting import TeacherRequest
from schemas.crop import crop, model_frame_image

PNG_COMPRESS_LEVEL = 1  # lossless either way; level 1 is several times faster than the default 6


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


class TeacherImages:
    """`await images(request)` → (model-frame image URI, crop URI); recent images are kept in memory."""

    def __init__(self, store: ImageStore, *, min_pixels: int, max_pixels: int, padding: float, keep: int = 64) -> None:
        self.store, self.min_pixels, self.max_pixels, self.padding, self.keep = (
            store,
            min_pixels,
            max_pixels,
            padding,
            keep,
        )
        self._frames: OrderedDict[str, asyncio.Task[tuple[Image.Image, str]]] = OrderedDict()

    def _load(self, image_id: str) -> tuple[Image.Image, str]:
        frame = model_frame_image(
            self.store.open(self.store.key_for(image_id)), min_pixels=self.min_pixels, max_pixels=self.max_pixels
        )
        return frame, png_data_uri(frame)

    def _crop(self, frame: Image.Image, request: TeacherRequest) -> str:
        if frame.size != tuple(request.model_size):
            raise ValueError(
                f"image {request.image_id[:12]} is {frame.size}, expected model frame {request.model_size}"
            )
        zoomed, _box = crop(frame, request.bbox_2d, padding=self.padding)
        return png_data_uri(zoomed)

    async def __call__(self, request: TeacherRequest) -> tuple[str, str]:
        task = self._frames.get(request.image_id)
        if task is None:
            task = asyncio.ensure_future(asyncio.to_thread(self._load, request.image_id))
            self._frames[request.image_id] = task
            while len(self._frames) > self.keep:
                self._frames.popitem(last=False)
        else:
            self._frames.move_to_end(request.image_id)
        frame, frame_uri = await task
        return frame_uri, await asyncio.to_thread(self._crop, frame, request)
