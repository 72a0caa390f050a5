"""Two simulated readers' readings of every catalogued phantom image, as the pull would store them."""

from __future__ import annotations

from annotation.readers import ReaderNoise, simulate_reading
from flows.catalog import Catalog
from schemas.records import ReaderAnnotation


def simulated_readings(catalog: Catalog) -> list[ReaderAnnotation]:
    readings = []
    for image in catalog.iter_images():
        difficulty = image.source_metadata["lesion_difficulty"]
        truth = [(a.box, a.attributes, difficulty[k]) for k, a in enumerate(catalog.source_annotations(image.image_id))]
        for seed, reader in enumerate(("R1", "R2")):
            lesions = simulate_reading(
                truth,
                image.organ,
                (image.width, image.height),
                reader_seed=seed,
                image_key=image.image_id,
                config=ReaderNoise(),
            )
            readings += [
                ReaderAnnotation(
                    image_id=image.image_id,
                    organ=image.organ,
                    reader=reader,
                    lesion_index=k,
                    box=box,
                    attributes=attributes,
                    image_width=image.width,
                    image_height=image.height,
                )
                for k, (box, attributes) in enumerate(sorted(lesions, key=lambda lesion: lesion[0]))
            ]
    return readings
