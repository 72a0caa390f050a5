"""The two pictures the teacher sees: the model-frame image and the zoom crop, as PNG data URIs.

They are made exactly as the dataset will make them (the shared resize and crop from `schemas/`), so
the teacher looks at what the student will. Preparing them is CPU work (decode, resize, encode) that
would compete with the event loop for the GIL, so it runs in worker processes and ahead of need:
given the order of the coming requests, images are prepared up to `lookahead` images in advance, and
each frame and each crop is made once for all the attributes that share it.
"""

from __future__ import annotations

import asyncio
import base64
import io
import multiprocessing
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

from PIL import Image

from flows.ingest.image_store import ImageStore
from flows.teacher.prompting import TeacherRequest
from schemas.crop import crop, model_frame_image

PNG_COMPRESS_LEVEL = 0  # stored, not deflated: speckle hardly compresses, and zlib was most of the preparation time


def png_data_uri(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


Box = tuple[int, int, int, int]


class ImagePreparationError(Exception):
    """The stored image could not be read or does not have the size its record says."""

    reason = "image_unavailable"


def prepare_image(
    store_url: str,
    image_id: str,
    boxes: list[Box],
    *,
    expected_size: tuple[int, int],
    min_pixels: int,
    max_pixels: int,
    padding: float,
) -> tuple[str, dict[Box, str]]:
    """One image's model-frame URI and the crop URI of each box (runs in a worker process)."""
    store = ImageStore(store_url)
    frame = model_frame_image(store.open(store.key_for(image_id)), min_pixels=min_pixels, max_pixels=max_pixels)
    if frame.size != tuple(expected_size):  # boxes are in the record's model frame: another size misplaces them
        raise ValueError(f"model frame {frame.size}, the record says {tuple(expected_size)}")
    return png_data_uri(frame), {box: png_data_uri(crop(frame, box, padding=padding)[0]) for box in boxes}


class TeacherImages:
    """`await images(request)` → (model-frame image URI, crop URI), prepared ahead of the requests."""

    def __init__(
        self,
        store: ImageStore,
        *,
        min_pixels: int,
        max_pixels: int,
        padding: float,
        lookahead: int = 16,
        keep: int = 128,
        workers: int | None = None,
    ) -> None:
        self.store, self.min_pixels, self.max_pixels, self.padding = store, min_pixels, max_pixels, padding
        self.lookahead, self.keep = lookahead, max(keep, lookahead * 2)
        self.workers = workers or max(1, (os.cpu_count() or 2) // 2)
        self._pool: Executor | None = None
        self._prepared: OrderedDict[str, asyncio.Future[tuple[str, dict[Box, str]]]] = OrderedDict()
        self._boxes: dict[str, list[Box]] = {}
        self._sizes: dict[str, tuple[int, int]] = {}
        self._order: list[str] = []
        self._position: dict[str, int] = {}
        self._reached = -1  # furthest planned image a request has asked for
        self._moved: asyncio.Event | None = None

    def start(self) -> float:
        """Start the worker processes now (seconds taken): each one imports the main program first."""
        started = time.perf_counter()
        self._ensure_pool().submit(int).result()
        return time.perf_counter() - started

    def _ensure_pool(self) -> Executor:
        if self._pool is None and multiprocessing.current_process().daemon:
            # a Dask worker is a daemon process, and daemons may not start processes: use threads there
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="teacher-images")
        if self._pool is None:
            # forkserver, not fork: the parent runs threads (catalog writer, Prefect) that fork would copy
            # mid-flight; each worker still imports the main program once (multiprocessing's rule)
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["flows.teacher.images"])
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self._pool

    def _prepare(self, image_id: str, boxes: list[Box]) -> asyncio.Future[tuple[str, dict[Box, str]]]:
        future = self._prepared.get(image_id)
        if future is not None and future.done() and not future.exception():
            if set(boxes) <= set(future.result()[1]):
                self._prepared.move_to_end(image_id)
                return future
        elif future is not None and not future.done():
            return future
        future = asyncio.get_running_loop().run_in_executor(
            self._ensure_pool(),
            _prepare_kw,
            (self.store.url, image_id, boxes, self._sizes[image_id], self.min_pixels, self.max_pixels, self.padding),
        )
        self._prepared[image_id] = future
        while len(self._prepared) > self.keep:
            self._prepared.popitem(last=False)
        return future

    # ------------------------------------------------------------------ read-ahead
    def plan(self, requests: Sequence[TeacherRequest]) -> None:
        """The order requests will come in and the boxes of each image; `prefetch` prepares them in that order."""
        self._boxes = {}
        for request in requests:
            self._sizes[request.image_id] = tuple(request.model_size)
            boxes = self._boxes.setdefault(request.image_id, [])
            if tuple(request.bbox_2d) not in boxes:
                boxes.append(tuple(request.bbox_2d))
        self._order = list(self._boxes)
        self._position = {image_id: k for k, image_id in enumerate(self._order)}

    async def prefetch(self) -> None:
        """Prepare planned images in order, at most `lookahead` beyond the furthest one asked for."""
        self._moved = asyncio.Event()
        loading: set[asyncio.Future] = set()
        for k, image_id in enumerate(self._order):
            while k > self._reached + self.lookahead:
                self._moved.clear()
                await self._moved.wait()
            loading.add(self._prepare(image_id, self._boxes[image_id]))
            if len(loading) >= self.workers:
                _done, loading = await asyncio.wait(loading, return_when=asyncio.FIRST_COMPLETED)

    # ------------------------------------------------------------------ use
    async def __call__(self, request: TeacherRequest) -> tuple[str, str]:
        position = self._position.get(request.image_id, -1)
        if position > self._reached:
            self._reached = position
            if self._moved is not None:
                self._moved.set()
        box = tuple(request.bbox_2d)
        boxes = self._boxes.get(request.image_id, [])
        self._sizes.setdefault(request.image_id, tuple(request.model_size))
        try:
            frame_uri, crops = await self._prepare(request.image_id, boxes if box in boxes else [*boxes, box])
        except Exception as err:  # a missing or broken file quarantines its items, it does not stop the run
            raise ImagePreparationError(f"image {request.image_id[:12]}: {type(err).__name__}: {err}") from None
        return frame_uri, crops[box]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


def _prepare_kw(args: tuple) -> tuple[str, dict[Box, str]]:
    store_url, image_id, boxes, size, min_pixels, max_pixels, padding = args
    return prepare_image(
        store_url, image_id, boxes, expected_size=size, min_pixels=min_pixels, max_pixels=max_pixels, padding=padding
    )
