"""DICOM source adapter: ultrasound DICOM files (still images and cine loops) → `SourceItem`s.

Scanners and PACS exports deliver ultrasound as DICOM, so this is where patient data is densest:
every tag can name the patient, the site or the staff, and the pixels often carry a burned-in
header. De-identification here follows the DICOM basic confidentiality profile by *not carrying*
tags: pixels are decoded in the adapter and only an allow-list of technical values reaches
`SourceItem.metadata`. PatientID is handed over once, in `patient_id`, for ingest to salt and hash.
The ultrasound region (`SequenceOfUltrasoundRegions`) becomes `us_region`, so ingest cuts burned-in
text away; a file that declares burned-in text but no region is quarantined rather than guessed at.

Which files are read: under a folder, every file named `*.dcm` / `*.dicom` (any case) and every file
with the DICOM Part 10 preamble ("DICM" at byte 128), whatever its name; such a file that does not
parse is quarantined as `not_dicom`. Other files (READMEs, thumbnails, `.DS_Store`) are skipped
silently and only counted, because export folders are full of them and quarantining each would drown
the real failures. A DICOMDIR (an index, no pixels) is skipped too. A file given directly as `root`
is always read. Symbolic links to folders are not followed, so a link loop cannot hang the walk.

Limits, checked from the header before pydicom decodes a pixel (every one quarantines the whole file, one
ledger row, so a crafted header cannot flood the ledger):
- a frame above `MAX_IMAGE_PIXELS` (Rows × Columns), or native pixel data above `MAX_DICOM_TOTAL_PIXELS`
  (Rows × Columns × frames, held whole in memory), is `decompression_bomb`, the reason other formats give;
  so is a deflated dataset that inflates past `MAX_FILE_BYTES` (pydicom inflates it whole while reading).
- the frames are counted in the pixel data itself (`dicom_pixels.frames_in_pixel_data`); when that count
  and NumberOfFrames disagree the file is quarantined as `frame_count_mismatch` rather than decoded at the
  smaller count: a header that lies about its frames may lie about their size too, and a frame decoded
  with the wrong geometry is a picture of nothing that would pass every later check.
- one file contributes at most `MAX_FRAMES_PER_FILE` frames: `frames="all"` or `"stride"` asking for more
  is cut to that many, spread evenly over the frames asked for (the first and the last kept), not
  quarantined: a long cine loop is legitimate, and its frames keep their `#frame=k` refs, so every item
  is still one ledger row and a rerun selects the same frames.

Allow-listed header values are kept only when they are defined terms of their tag (Modality, the
BodyPartExamined code strings of PS3.16 Annex L, PhotometricInterpretation, a known transfer syntax);
any other value, free text typed into a coded tag above all, is stored as None, never copied.

File names, tag values and pydicom's own messages (which quote tag values) never reach a log: only
counts and exception type names are logged, and pydicom's loggers and warnings are silenced while a
file is read or decoded.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.pixels import get_decoder
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MediaStorageDirectoryStorage,
)

from flows.ingest.decode import MAX_FILE_BYTES, check_degenerate
from flows.ingest.sources.base import SourceAdapter, SourceItem
from flows.ingest.sources.dicom_pixels import (
    MAX_DICOM_TOTAL_PIXELS,
    RejectedError,
    decode_frame,
    frames_in_pixel_data,
    pixel_budget,
)
from schemas.vocabulary import dicom_body_part_organs, registered_organs

log = logging.getLogger(__name__)

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
PREAMBLE_LENGTH = 128  # the Part 10 preamble; "DICM" follows it
FRAME_MODES = ("middle", "first", "all", "stride")
REGION_SPATIAL_FORMAT_2D = 1  # (0018,6012): 1 = 2D (B-mode); M-mode, Doppler spectra and graphics are other codes
PHYSICAL_UNITS_CM = 3  # (0018,6024/6026): 3 = cm
MM_PER_CM = 10.0
DEFER_BYTES = "1 MB"  # pixel data is read only once a file has passed its header checks
# A cine loop is many near-identical frames: past a few dozen, more frames of one file add ledger rows and
# reader work, not information; a header claiming thousands must not turn into thousands of items.
MAX_FRAMES_PER_FILE = 64
INFLATE_STEP = 1 << 20  # bytes read, and at most inflated, per step when sizing a deflated dataset
MAX_INFLATED_BYTES = MAX_FILE_BYTES  # a deflated dataset may inflate to no more than any source's largest file

__all__ = [
    "MAX_DICOM_TOTAL_PIXELS",
    "MAX_FRAMES_PER_FILE",
    "MAX_INFLATED_BYTES",
    "REASONS",
    "SOURCE",
    "iter_dicom_items",
]

# (implicit VR, little endian) as found by a forced read → the transfer syntax it implies
_ENCODING_SYNTAXES: dict[tuple[bool | None, bool | None], str] = {
    (True, True): ImplicitVRLittleEndian,
    (False, True): ExplicitVRLittleEndian,
    (False, False): ExplicitVRBigEndian,
}

# Every reason this adapter puts in `SourceItem.error`.
REASONS: tuple[str, ...] = (
    "file_unreadable",
    "not_dicom",
    "dicom_without_pixel_data",
    "organ_unknown",
    "burned_in_text_without_region",
    "unsupported_transfer_syntax",
    "dicom_decode_failed",
    "unsupported_photometric_interpretation",
    "decompression_bomb",  # a frame, the native pixel data or the inflated dataset is too large
    "frame_count_mismatch",  # NumberOfFrames and the frames in the pixel data disagree
    "image_too_small",  # from flows.ingest.decode.check_degenerate
    "near_constant_image",  # idem: blank cine frames are common
)

# Allow-listed values are checked against their DICOM value representation and then against the tag's
# defined terms, so free text that a site typed into a coded tag (a name in BodyPartExamined, markup in
# Modality) is dropped instead of carried: a value shaped like a code string may still be a name.
_CODE_STRING = re.compile(r"[A-Z0-9 _]{1,16}")  # CS: upper case, digits, space, underscore; 16 at most
_UID = re.compile(r"[0-9.]{1,64}")  # UI


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Modality (0008,0060): the defined terms of PS3.3 C.7.3.1.1.1, current and retired (old files carry both).
MODALITY_TERMS = _words(
    """ANN AR ASMT AU BDUS BI BMD CFM CT CTPROTOCOL DG DMS DOC DX ECG EEG EMG EOG EPS ES FID GM HC HD IO IOL
    IVOCT IVUS KER KO LEN LS M3D MG MR NM OAM OCT OP OPM OPT OPTBSV OPTENF OPV OSS OT PA PLAN POS PR PT PX
    REG RESP RF RG RTDOSE RTIMAGE RTINTENT RTPLAN RTRAD RTRECORD RTSEGANN RTSTRUCT RWV SEG SM SMR SR SRF
    STAIN TEXTUREMAP TG US VA XA XAPROTOCOL XC
    AS CD CF CP CS DD DF DM DS EC FA FS LP MA MS OPR ST VF"""
)
# BodyPartExamined (0018,0015): code strings of PS3.16 Annex L (CID 4031 and the other anatomic region
# contexts); the vocabularies' own codes (`dicom_body_parts`) are added where the set is used.
BODY_PART_TERMS = _words(
    """ABDOMEN ABDOMENPELVIS ACJOINT ADRENAL AMNIOTICFLUID ANKLE ANTECUBITALV AORTA AORTICARCH APPENDIX ARM
    ARTERY AXILLA AXILLARYA AXILLARYV BACK BASILARA BILEDUCT BLADDER BONE BRACHIALA BRACHIALV BRAIN BREAST
    BRONCHUS BUTTOCK CALCANEUS CALF CAROTID CCA CEREBELLUM CEREBRALA CERVIX CHEEK CHEST CHESTABDOMEN
    CHESTABDPELVIS CIRCLEOFWILLIS CLAVICLE COCCYX COLON COMMONBILEDUCT CORNEA CORONARYARTERY CSPINE
    CTSPINE DUODENUM EAR ECA ELBOW ESOPHAGUS EXTREMITY EYE EYELID FACE FEMORALA FEMORALV FEMUR FINGER FOOT
    FOREARM GALLBLADDER HAND HEAD HEADNECK HEART HIP HUMERUS IAC ICA ILEUM ILIUM INGUINALREGION JAW
    JEJUNUM JUGULARV KIDNEY KNEE LARYNX LEG LIVER LOWERLIMB LSPINE LSSPINE LUNG LYMPHNODE MAXILLA
    MEDIASTINUM MOUTH MUSCLE NECK NECKCHEST NECKCHESTABDOMEN NECKCHESTABDPELV NIPPLE NOSE ORBIT OVARY
    PANCREAS PAROTID PATELLA PELVIS PENIS PERINEUM PHARYNX PLACENTA PLEURA POPLITEALFOSSA PORTALV PROSTATE
    RADIUS RECTUM RENALA RENALV RIB SACRUM SALIVARYGLAND SCALP SCAPULA SCROTUM SELLA SHOULDER SKULL
    SOFTTISSUE SPINE SPLEEN SSPINE STERNUM STOMACH SUBCLAVIANA SUBCLAVIANV SUBMANDIBULAR TESTIS THIGH
    THORAX THUMB THYMUS THYROID TIBIA TLSPINE TMJ TOE TONGUE TRACHEA TSPINE ULNA UPPERLIMB URETER URETHRA
    UTERUS VAGINA VEIN VERTEBRALA VULVA WHOLEBODY WRIST ZYGOMA"""
)
# PhotometricInterpretation (0028,0004): the enumerated values of PS3.3 C.7.6.3.1.2, retired ones included.
PHOTOMETRIC_TERMS = frozenset(
    {
        "MONOCHROME1",
        "MONOCHROME2",
        "PALETTE COLOR",
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_PARTIAL_422",
        "YBR_PARTIAL_420",
        "YBR_ICT",
        "YBR_RCT",
        "XYB",
        "HSV",
        "ARGB",
        "CMYK",
    }
)

# pydicom logs and warns with tag values ("Invalid value for VR PN: 'SMITH^JOHN'"): drop them while we read.
_SILENCED: ContextVar[bool] = ContextVar("lookcloser_dicom_silenced", default=False)
_THIRD_PARTY_LOGGERS = ("pydicom", "pydicom.pixels.decoders.base", "pydicom.pixels.utils", "pylibjpeg")


class _DropWhileSilenced(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _SILENCED.get()


for _name in _THIRD_PARTY_LOGGERS:
    _logger = logging.getLogger(_name)
    if not any(isinstance(f, _DropWhileSilenced) for f in _logger.filters):
        _logger.addFilter(_DropWhileSilenced())


@contextmanager
def _silenced() -> Iterator[None]:
    """Keep pydicom's messages (which may quote tag values) out of logs and stderr."""
    token = _SILENCED.set(True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _SILENCED.reset(token)


@dataclass(frozen=True)
class _Options:
    organ: str | None
    frames: str
    frame_stride: int
    require_us_region_when_burned_in: bool


@dataclass(frozen=True)
class _Header:
    """What the header decides before any pixel is decoded."""

    organ: str
    patient_id: str | None
    us_region: list[int] | None
    frame_indices: list[int]
    number_of_frames: int
    metadata: dict[str, Any]


def iter_dicom_items(
    root: Path,
    *,
    organ: str | None = None,
    frames: str = "middle",
    frame_stride: int = 10,
    require_us_region_when_burned_in: bool = True,
) -> Iterator[SourceItem]:
    """One item per selected frame of every DICOM file under `root` (a folder or one file)."""
    if organ is not None and organ not in registered_organs():
        raise ValueError(f"organ must be one of {', '.join(registered_organs())}, not {organ!r}")
    if frames not in FRAME_MODES:
        raise ValueError(f"frames must be one of {', '.join(FRAME_MODES)}, not {frames!r}")
    if frame_stride < 1:
        raise ValueError("frame_stride must be at least 1")
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError("the DICOM source path does not exist")  # the path itself may hold PHI
    options = _Options(organ, frames, frame_stride, require_us_region_when_burned_in)
    return _walk(root, options)  # arguments are checked now, not at the first next()


def _walk(root: Path, options: _Options) -> Iterator[SourceItem]:
    read, skipped = 0, 0
    for path, rel, named_dicom in _files(root):
        items = _file_items(path, rel, named_dicom, options)
        first = next(items, None)
        if first is None:
            skipped += 1
            continue
        read += 1
        yield first
        yield from items
    log.info("dicom source: %d files read, %d skipped (not DICOM, or a DICOMDIR)", read, skipped)


def _files(root: Path) -> Iterator[tuple[Path, str, bool]]:
    """(path, path relative to root, named like DICOM) in a deterministic order."""
    if root.is_file():
        yield root, root.name, True
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()  # in place: os.walk then descends in sorted order
        for name in sorted(filenames):
            path = Path(dirpath) / name
            yield path, path.relative_to(root).as_posix(), path.suffix.lower() in DICOM_SUFFIXES


def _file_items(path: Path, rel: str, named_dicom: bool, options: _Options) -> Iterator[SourceItem]:
    """The items of one file; nothing for a skipped file; never raises for a bad file."""
    try:
        with _silenced():
            dataset = _read_dataset(path, named_dicom)
            if dataset is None:
                return
            header = _read_header(dataset, options)
    except RejectedError as rejected:
        yield _rejected_item(rel, rejected.reason, options.organ)
        return
    except Exception as err:  # a malformed header quarantines its file; it must not stop the walk
        log.debug("dicom header unreadable: %s", type(err).__name__)
        yield _rejected_item(rel, "dicom_decode_failed", options.organ)
        return
    for index in header.frame_indices:
        # A multi-frame file always names the frame, so the same frame keeps its key whatever `frames` was.
        ref = f"{rel}#frame={index}" if header.number_of_frames > 1 else rel
        try:
            with _silenced():
                image = decode_frame(dataset, index)
        except RejectedError as rejected:
            yield _rejected_item(ref, rejected.reason, header.organ)
            continue
        if reason := check_degenerate(image):
            yield _rejected_item(ref, reason, header.organ)
            continue
        yield SourceItem(
            source="dicom",
            source_ref=ref,
            organ=header.organ,
            image=image,
            patient_id=header.patient_id,
            us_region=header.us_region,
            metadata={**header.metadata, "frame_index": index},
        )


def _rejected_item(ref: str, reason: str, organ: str | None) -> SourceItem:
    return SourceItem(source="dicom", source_ref=ref, organ=organ or "", error=reason)


# --------------------------------------------------------------------------- reading
def _read_dataset(path: Path, named_dicom: bool) -> Dataset | None:
    """The parsed dataset, None for a file to skip silently, or RejectedError."""
    try:
        with path.open("rb") as fh:
            head = fh.read(PREAMBLE_LENGTH + 4)
    except OSError:
        if named_dicom:
            raise RejectedError("file_unreadable") from None
        return None
    has_preamble = head[PREAMBLE_LENGTH:] == b"DICM"
    if not (has_preamble or named_dicom):
        return None
    try:
        # Without the preamble only a file named like DICOM is forced: old exports omit it, but a forced
        # read "parses" any bytes, so the result must look like a dataset (checked below); so must a file
        # whose preamble is followed by garbage.
        _check_inflated_size(path, force=not has_preamble)
        dataset = dcmread(path, force=not has_preamble, defer_size=DEFER_BYTES)
    except RejectedError:
        raise
    except Exception as err:
        log.debug("dicom unparseable: %s", type(err).__name__)
        raise RejectedError("not_dicom") from None
    if "SOPClassUID" not in dataset and "PixelData" not in dataset:
        raise RejectedError("not_dicom")  # parsed, but into nothing an image or a DICOM object has
    if dataset.file_meta.get("MediaStorageSOPClassUID") == MediaStorageDirectoryStorage:
        return None  # DICOMDIR: an index of the other files
    return dataset


def _check_inflated_size(path: Path, *, force: bool) -> None:
    """RejectedError("decompression_bomb") for a deflated dataset that inflates past MAX_INFLATED_BYTES.

    pydicom inflates a deflated dataset whole while reading it, before any header value can be checked,
    so its size is measured first, a step at a time, without keeping what is inflated. A file this cannot
    read is left to dcmread (which quarantines it as not_dicom)."""
    try:
        with path.open("rb") as fh:
            read_preamble(fh, force)
            if _read_file_meta_info(fh).get("TransferSyntaxUID") != DeflatedExplicitVRLittleEndian:
                return
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            inflated = 0
            while not inflater.eof and (pending := fh.read(INFLATE_STEP)):
                while pending and not inflater.eof:
                    inflated += len(inflater.decompress(pending, INFLATE_STEP))
                    if inflated > MAX_INFLATED_BYTES:
                        raise RejectedError("decompression_bomb")
                    pending = inflater.unconsumed_tail
    except RejectedError:
        raise
    except Exception as err:
        log.debug("dicom file meta unreadable: %s", type(err).__name__)


def _read_header(dataset: Dataset, options: _Options) -> _Header:
    """Organ, region, frames and allow-listed metadata; RejectedError for a file-level reason."""
    if "PixelData" not in dataset:
        raise RejectedError("dicom_without_pixel_data")
    # BodyPartExamined (CS, upper case) → organ, from the vocabularies; the organ argument, when given, wins.
    organ = options.organ or dicom_body_part_organs().get(_code_string(dataset.get("BodyPartExamined")) or "")
    if organ is None:
        raise RejectedError("organ_unknown")
    width, height = int(dataset.Columns), int(dataset.Rows)
    us_region, region = _ultrasound_region(dataset, width, height)
    burned_in = _code_string(dataset.get("BurnedInAnnotation")) == "YES"
    if us_region is None and burned_in and options.require_us_region_when_burned_in:
        raise RejectedError("burned_in_text_without_region")
    transfer_syntax = _transfer_syntax(dataset)
    try:
        available = get_decoder(transfer_syntax).is_available
    except NotImplementedError:  # pydicom has no decoder for this UID at all
        available = False
    if not available:
        raise RejectedError("unsupported_transfer_syntax")
    number_of_frames = int(dataset.get("NumberOfFrames") or 1)
    if number_of_frames < 1:
        raise RejectedError("dicom_decode_failed")
    pixel_budget(dataset, transfer_syntax, number_of_frames)  # from the header: nothing decoded yet
    if frames_in_pixel_data(dataset, transfer_syntax, number_of_frames) != number_of_frames:
        raise RejectedError("frame_count_mismatch")
    patient_id = str(dataset.get("PatientID") or "").strip() or None
    metadata = {
        "modality": _defined_term(dataset.get("Modality"), MODALITY_TERMS),
        "body_part_examined": _defined_term(
            dataset.get("BodyPartExamined"), BODY_PART_TERMS | dicom_body_part_organs().keys()
        ),
        "number_of_frames": number_of_frames,
        "photometric_interpretation": _defined_term(dataset.get("PhotometricInterpretation"), PHOTOMETRIC_TERMS),
        "transfer_syntax_uid": transfer_syntax if _known_transfer_syntax(transfer_syntax) else None,
        "pixel_spacing_mm": _pixel_spacing_mm(dataset, region),
    }
    return _Header(
        organ=organ,
        patient_id=patient_id,
        us_region=us_region,
        frame_indices=_frame_indices(number_of_frames, options.frames, options.frame_stride),
        number_of_frames=number_of_frames,
        metadata=metadata,
    )


def _code_string(value: Any) -> str | None:
    """A CS value, upper-cased, or None when absent or not shaped like one."""
    if value is None:
        return None
    text = str(value).strip().upper()
    return text if _CODE_STRING.fullmatch(text) else None


def _defined_term(value: Any, terms: frozenset[str] | set[str]) -> str | None:
    """A CS value that is one of its tag's defined terms, or None: anything else is dropped, never copied."""
    code = _code_string(value)
    return code if code in terms else None


def _known_transfer_syntax(uid: str) -> bool:
    return bool(_UID.fullmatch(uid)) and UID(uid).is_transfer_syntax


def _transfer_syntax(dataset: Dataset) -> str:
    """The file's transfer syntax; a file without file meta is read in the encoding it was found in."""
    uid = dataset.file_meta.get("TransferSyntaxUID")
    if uid:
        return str(uid)
    uid = _ENCODING_SYNTAXES.get(dataset.original_encoding)
    if uid is None:
        raise RejectedError("unsupported_transfer_syntax")
    dataset.file_meta.TransferSyntaxUID = uid  # the decoder reads it from here
    return str(uid)


def _frame_indices(number_of_frames: int, frames: str, stride: int) -> list[int]:
    if frames == "all":
        return _spread(list(range(number_of_frames)))
    if frames == "stride":
        return _spread(list(range(0, number_of_frames, stride)))
    if frames == "first":
        return [0]
    return [number_of_frames // 2]


def _spread(indices: list[int], cap: int = MAX_FRAMES_PER_FILE) -> list[int]:
    """At most `cap` of `indices`, evenly spread, first and last kept (distinct: the step is above 1)."""
    if len(indices) <= cap:
        return indices
    if cap == 1:
        return [indices[len(indices) // 2]]
    last = len(indices) - 1
    return [indices[k * last // (cap - 1)] for k in range(cap)]


def _ultrasound_region(dataset: Dataset, width: int, height: int) -> tuple[list[int] | None, Dataset | None]:
    """[x1, y1, x2, y2] (exclusive ends, clipped) of the largest 2D region, and that region."""
    best: tuple[int, list[int], Dataset] | None = None
    for region in dataset.get("SequenceOfUltrasoundRegions") or []:
        try:
            if int(region.RegionSpatialFormat) != REGION_SPATIAL_FORMAT_2D:
                continue
            x1, y1 = max(0, int(region.RegionLocationMinX0)), max(0, int(region.RegionLocationMinY0))
            # The Max values are inclusive pixel indices.
            x2, y2 = min(width, int(region.RegionLocationMaxX1) + 1), min(height, int(region.RegionLocationMaxY1) + 1)
        except (AttributeError, TypeError, ValueError):
            continue  # an incomplete region cannot be cut to
        area = (x2 - x1) * (y2 - y1)
        if x2 > x1 and y2 > y1 and (best is None or area > best[0]):
            best = (area, [x1, y1, x2, y2], region)
    return (best[1], best[2]) if best else (None, None)


def _pixel_spacing_mm(dataset: Dataset, region: Dataset | None) -> dict[str, float] | None:
    """Physical size of a pixel: from the ultrasound region when it is in cm, else PixelSpacing."""
    try:
        if (
            region is not None
            and region.get("PhysicalUnitsXDirection") == PHYSICAL_UNITS_CM
            and region.get("PhysicalUnitsYDirection") == PHYSICAL_UNITS_CM
        ):
            x, y = float(region.PhysicalDeltaX) * MM_PER_CM, float(region.PhysicalDeltaY) * MM_PER_CM
            if x > 0 and y > 0:
                return {"x": round(x, 6), "y": round(y, 6)}
        spacing = dataset.get("PixelSpacing")
        if spacing is not None and len(spacing) == 2:
            y, x = float(spacing[0]), float(spacing[1])  # DICOM order: row spacing, then column spacing
            if x > 0 and y > 0:
                return {"x": round(x, 6), "y": round(y, 6)}
    except (AttributeError, TypeError, ValueError):
        pass  # a malformed spacing is only missing metadata, not a reason to lose the image
    return None


SOURCE = SourceAdapter("dicom", iter_dicom_items)
