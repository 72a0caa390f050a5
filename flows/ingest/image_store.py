"""Content-addressed image store on any fsspec URL (a local folder by default)."""

from __future__ import annotations

import io

import fsspec
from PIL import Image


class ImageStore:
    """PNG files keyed by image id: `ab/abcdef….png`. Writing the same image twice is a no-op."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.fs, self.root = fsspec.core.url_to_fs(url)
        self.fs.makedirs(self.root, exist_ok=True)

    @staticmethod
    def key_for(image_id: str) -> str:
        return f"{image_id[:2]}/{image_id}.png"

    def _path(self, key: str) -> str:
        return f"{self.root.rstrip('/')}/{key}"

    def exists(self, key: str) -> bool:
        return self.fs.exists(self._path(key))

    def put(self, image_id: str, image: Image.Image) -> str:
        """Store the image losslessly under its id; returns the key."""
        key = self.key_for(image_id)
        path = self._path(key)
        if not self.fs.exists(path):
            buffer = io.BytesIO()
            image.save(buffer, format="PNG", compress_level=3)
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            tmp = f"{path}.partial"  # a killed run never leaves a truncated PNG under the real key
            with self.fs.open(tmp, "wb") as fh:
                fh.write(buffer.getvalue())
            self.fs.mv(tmp, path)
        return key

    def open(self, key: str) -> Image.Image:
        with self.fs.open(self._path(key), "rb") as fh:
            image = Image.open(io.BytesIO(fh.read()))
            image.load()
        return image
