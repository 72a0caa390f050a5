"""Phantom scans as real exports look: identifying text burned in where scanners and viewers put it.

The de-identification tests and `bench/ingest.py` use these images. Each case starts from a phantom
scan and adds, by a seeded choice, one of the layouts seen in real exports:

- `header`: the scanner's header band above the image (site, name, id, date) plus a clock time in a corner;
- `corners`: no band; a clinic name and a date in the black corners beside the fan;
- `over_tissue`: a name and date of birth written over the tissue (a viewer's annotation);
- `colour`: coloured (yellow, cyan, green) labels over the tissue and in the margin, as RGB;
- `measurement`: caliper crosses and a measurement readout over the tissue, and an id in a corner.

Fonts are 10–20 px, white or coloured; `write_corpus` saves PNG, JPEG (quality 70–92) and DICOM without
an ultrasound region, and returns every identifying string it burned in (for the byte and OCR checks).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from flows.ingest.sources.phantom import PhantomConfig, generate_case
from flows.ingest.sources.phantom_scanner import HEADER_HEIGHT

LAYOUTS = ("header", "corners", "over_tissue", "colour", "measurement")
FAMILY_NAMES = ("SMITH", "NGUYEN", "GARCIA", "MUELLER", "KOWALSKI", "OKAFOR", "TANAKA", "DUBOIS", "ROSSI", "LARSEN")
GIVEN_NAMES = ("JOHN", "MARIA", "WEI", "FATIMA", "PIOTR", "AMARA", "KENJI", "CLAIRE", "LUCA", "INGRID")
CLINICS = ("ST MARY HOSPITAL", "RIVERSIDE CLINIC", "NORTHGATE MEDICAL CENTER", "UNIVERSITY HOSPITAL EAST")
COLOURS = ((255, 255, 0), (0, 255, 255), (80, 255, 80), (255, 160, 0))


@dataclass
class BurnedInCase:
    """One corpus image and the identifying strings burned into it."""

    index: int
    layout: str
    image: Image.Image
    identifying: list[str] = field(default_factory=list)


def _font(rng: np.random.Generator, low: int = 10, high: int = 20) -> ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=int(rng.integers(low, high + 1)))


def _fake_person(rng: np.random.Generator) -> tuple[str, str, str]:
    name = f"{rng.choice(FAMILY_NAMES)} {rng.choice(GIVEN_NAMES)}"
    birth = f"{rng.integers(1940, 2005)}-{rng.integers(1, 13):02d}-{rng.integers(1, 29):02d}"
    mrn = f"MRN{rng.integers(10**6, 10**7)}"
    return name, birth, mrn


def make_case(seed: int, index: int, config: PhantomConfig | None = None) -> BurnedInCase:
    """Corpus image `index`: a phantom scan with identifying text at a layout's places (deterministic)."""
    rng = np.random.default_rng([seed, index, 19])
    layout = LAYOUTS[index % len(LAYOUTS)]
    case = generate_case(seed, index, config or PhantomConfig())
    full = Image.fromarray(case.image)
    name, birth, mrn = _fake_person(rng)
    clinic = str(rng.choice(CLINICS))
    clock = f"{rng.integers(7, 19):02d}:{rng.integers(0, 60):02d}:{rng.integers(0, 60):02d}"
    fan_top, width, height = HEADER_HEIGHT + 40, full.width, full.height
    cx = width // 2
    if layout == "header":  # the phantom's own band (site, PATIENT^id, date) and a corner clock
        image = full.convert("L")
        draw = ImageDraw.Draw(image)
        draw.text((8, height - 28), clock, fill=230, font=_font(rng, 12, 18))
        identifying = [case.patient_id, clock]
    elif layout == "corners":
        image = full.crop((0, HEADER_HEIGHT, width, height)).convert("L")
        draw = ImageDraw.Draw(image)
        font = _font(rng)
        draw.text((width - 8 - draw.textlength(clinic, font=font), 6), clinic, fill=240, font=font)
        draw.text((6, image.height - 26), f"{birth}  {clock}", fill=220, font=_font(rng))
        identifying = [clinic, birth, clock]
    elif layout == "over_tissue":
        image = full.crop((0, HEADER_HEIGHT, width, height)).convert("L")
        draw = ImageDraw.Draw(image)
        y = int(rng.integers(fan_top, image.height - 80))
        draw.text((cx - 90, y), name, fill=255, font=_font(rng, 12, 20))
        draw.text((cx - 90, y + 26), f"DOB {birth}", fill=255, font=_font(rng, 12, 20))
        identifying = [name, birth]
    elif layout == "colour":
        image = full.crop((0, HEADER_HEIGHT, width, height)).convert("RGB")
        draw = ImageDraw.Draw(image)
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        draw.text((cx - 70, int(rng.integers(fan_top, image.height - 60))), name, fill=colour, font=_font(rng, 12, 20))
        draw.text((6, 6), mrn, fill=colour, font=_font(rng))
        identifying = [name, mrn]
    else:  # measurement: calipers and a readout over the tissue; an id in the corner
        image = full.crop((0, HEADER_HEIGHT, width, height)).convert("L")
        draw = ImageDraw.Draw(image)
        y = int(rng.integers(fan_top + 40, image.height - 80))
        for x in (cx - 60, cx + 40):
            draw.line((x - 5, y, x + 5, y), fill=255, width=1)
            draw.line((x, y - 5, x, y + 5), fill=255, width=1)
        draw.text((cx - 40, y + 20), f"D1 {rng.uniform(0.5, 3):.2f} cm", fill=255, font=_font(rng, 11, 16))
        draw.text((width - 130, image.height - 26), mrn, fill=230, font=_font(rng))
        identifying = [mrn]
    return BurnedInCase(index=index, layout=layout, image=image, identifying=identifying)


def write_corpus(
    folder: Path, *, seed: int, count: int, formats: tuple[str, ...] = ("png", "jpeg", "dicom")
) -> list[str]:
    """`count` corpus images, formats in turn; returns every identifying string burned in."""
    folder.mkdir(parents=True, exist_ok=True)
    identifying: list[str] = []
    for index in range(count):
        case = make_case(seed, index)
        fmt = formats[index % len(formats)]
        stem = folder / f"case{index:04d}"
        if fmt == "png":
            case.image.save(stem.with_suffix(".png"))
        elif fmt == "jpeg":
            quality = int(np.random.default_rng([seed, index, 23]).integers(70, 93))
            case.image.save(stem.with_suffix(".jpg"), quality=quality)
        else:
            write_dicom_without_region(case.image, stem.with_suffix(".dcm"))
        identifying += case.identifying
    return identifying


def write_dicom_without_region(image: Image.Image, path: Path) -> None:
    """An ultrasound DICOM holding `image`, with no SequenceOfUltrasoundRegions (as many exports have)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, UltrasoundImageStorage, generate_uid

    pixels = np.asarray(image)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UltrasoundImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "US"
    ds.BodyPartExamined = "BREAST"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 3 if pixels.ndim == 3 else 1
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
