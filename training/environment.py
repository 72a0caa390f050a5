"""The zoom tool the policy calls during GRPO: one environment per rollout (TRL's `environment_factory`).

`reset` receives the rollout's dataset row and keeps its full image, which is already in the model frame
(the release stores it so); `zoom_in` crops it with the shared crop function of `schemas/`, the same one
that made the dataset's crops, and returns the crop as the next user turn (TRL masks it from the loss).
TRL builds the tool's JSON schema from the method's type hints and docstring (`Args:` section).
"""

from __future__ import annotations

from typing import Any

from schemas.crop import crop
from schemas.trajectory import ZOOM_PROMPT


class ZoomEnvironment:
    """One rollout's image and the box its policy zoomed into."""

    padding: float = 0.0  # the dataset version's crop padding (set by `environment_factory`)

    def __init__(self) -> None:
        self._image: Any = None
        self.bbox_2d: list[float] | None = None

    def reset(self, **row: Any) -> None:
        self._image = row["images"][0]
        self.bbox_2d = None

    def zoom_in(self, bbox_2d: list[int]) -> list:
        """Zoom into a region of the image to look closer.

        Args:
            bbox_2d: The region [x1, y1, x2, y2] in pixels of the image as you see it.

        Returns:
            The zoomed-in view of the region.
        """
        self.bbox_2d = [float(v) for v in bbox_2d]
        zoomed, _ = crop(self._image, self.bbox_2d, padding=self.padding)
        return [{"type": "image", "image": zoomed}, {"type": "text", "text": ZOOM_PROMPT}]


def environment_factory(padding: float) -> type[ZoomEnvironment]:
    """A ZoomEnvironment class with the dataset's crop padding (TRL instantiates it once per rollout)."""
    return type("ZoomEnvironment", (ZoomEnvironment,), {"padding": padding})
