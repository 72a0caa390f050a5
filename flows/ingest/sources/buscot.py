"""BUS-CoT source (Yu et al., Sci Data 2026): breast lesion crops with structured ultrasound reports.

Layout (`root` is the `BUSCoT/` folder, or its parent):

    BUS-Lesion/{trainval,test}/NNNNNN@k.png     lesion crops; NNNNNN = source image, k = lesion index
    DatasetFiles/lesion_dataset.json            "trainval_NNNNNN@k.png" → {"us_report": {...}, "image_path": ...}
    DatasetFiles/BUS-Expert_dataset.json        optional; carries patient_id per source image

Why an adapter of its own: the report's enums need explicit, documented mappings onto the BI-RADS
vocabulary (some are lossy), and the report's graded `LesionBoundary` gives the paper's
metadata-derived confidence: a clear boundary → c = 1, an unclear one → c = 0.

Each image is a crop around one lesion, so the lesion fills the image: annotations carry
`box=None` and the core / consensus treat the whole image as the lesion.
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from flows.ingest.sources.base import SourceAdapter, SourceItem
from schemas.vocabulary import VocabularyError, load_vocabulary, normalize_value

log = logging.getLogger(__name__)

KIND = "buscot"  # the `source` of its items
ORGAN = "breast"
ORIGIN = "metadata"
LESION_DIR = "BUS-Lesion"
SPLITS: tuple[str, ...] = ("trainval", "test")
LESION_JSON = Path("DatasetFiles") / "lesion_dataset.json"
EXPERT_JSON = Path("DatasetFiles") / "BUS-Expert_dataset.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")

METADATA_UNREADABLE = "metadata_unreadable"
IMAGE_MISSING = "image_missing"

# Report field → vocabulary attribute. EchoCharacteristics values are vocabulary synonyms
# (LowEcho, SlightlyLowEcho, HighEcho, NoEcho, HeterogeneousEcho, CysticSolidMixedEcho; Isoechoic
# is canonical), so they go through `normalize_value`; the other two need the maps below.
FIELD_TO_ATTRIBUTE: dict[str, str] = {
    "EchoCharacteristics": "echo_pattern",
    "LesionEdge": "margin",
    "LesionCalcificationFeatures": "calcifications",
}

# LesionEdge → BI-RADS margin. Lossy: BI-RADS calls any margin that is not wholly circumscribed
# "not circumscribed" and then names its kind (indistinct, angular, microlobulated, spiculated);
# the report does not say which, so both non-regular grades go to Indistinct, the least specific.
EDGE_TO_MARGIN: dict[str, str] = {
    "Regular": "Circumscribed",
    "PartiallyRegular": "Indistinct",
    "Irregular": "Indistinct",
}

# LesionCalcificationFeatures → BI-RADS calcifications. The report describes the lesion of the
# crop, so calcifications it names are taken as lying in the mass. SuspectedCalcification
# (equivocal) and any value not listed are left out rather than guessed.
CALCIFICATION_MAP: dict[str, str] = {
    "NoCalcification": "None",
    "Microcalcification": "In a mass",
    "MultipleCalcifications": "In a mass",
    "MultipleClusteredMicrocalcifications": "In a mass",
    "CoarseCalcification": "In a mass",
}

VALUE_MAPS: dict[str, dict[str, str]] = {"margin": EDGE_TO_MARGIN, "calcifications": CALCIFICATION_MAP}

# LesionBoundary → the paper's metadata-derived confidence c.
BOUNDARY_FIELD = "LesionBoundary"
BOUNDARY_CONFIDENCE: dict[str, int] = {
    "BoundaryClear": 1,
    "BoundaryFairlyClear": 1,
    "BoundarySomewhatUnclear": 0,
    "BoundaryUnclear": 0,
}

REPORT_FIELDS = (*FIELD_TO_ATTRIBUTE, BOUNDARY_FIELD, "BIRADS")
EXPERT_IMAGE_KEYS = ("image_file", "image", "image_name", "image_path", "name", "file", "file_name")


def _match_key(text: Any) -> str:
    """Case- and punctuation-insensitive key, as the vocabulary matches: 'Partially regular' = 'PartiallyRegular'."""
    return re.sub(r"[^a-z0-9]+", "", str(text).lower())


def source_image_id(name: str) -> str:
    """The source image of a crop name: "trainval_000123@1.png", "000123@1.png", "000123/x.png" → "000123"."""
    stem = Path(str(name).replace("\\", "/")).name
    for split in SPLITS:
        stem = stem.removeprefix(f"{split}_")
    return stem.split("@", 1)[0].rsplit(".", 1)[0]


def _lesion_index(name: str) -> int:
    match = re.search(r"@(\d+)\.\w+$", name)
    return int(match.group(1)) if match else 0


def _split_and_name(key: str) -> tuple[str, str] | None:
    """("trainval", "000123@0.png") from a lesion_dataset.json key or a BUS-Lesion/... image path."""
    parts = str(key).replace("\\", "/").split("/")
    if len(parts) >= 2 and parts[-2] in SPLITS:
        return parts[-2], parts[-1]
    for split in SPLITS:
        if parts[-1].startswith(f"{split}_"):
            return split, parts[-1].removeprefix(f"{split}_")
    return None


# --------------------------------------------------------------------------- metadata files
def _read_json(path: Path) -> Any:
    """The parsed file; ValueError if it is missing, unreadable or not JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(type(err).__name__) from None


def index_lesion_records(data: Any) -> dict[str, Any]:
    """ "split_name" → record, from the dict (or list of records with `image_path`) of lesion_dataset.json."""
    if isinstance(data, Mapping):
        entries: list[tuple[str | None, Any]] = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, list):
        entries = [(None, record) for record in data]
    else:
        raise ValueError("lesion_dataset.json is neither an object nor a list")
    index: dict[str, Any] = {}
    for key, record in entries:
        image_path = record.get("image_path") if isinstance(record, Mapping) else None
        located = (_split_and_name(key) if key else None) or (
            _split_and_name(image_path) if isinstance(image_path, str) else None
        )
        if located is not None:
            index["_".join(located)] = record
        elif key is not None:
            index[key] = record  # unplaceable: reported as image_missing, never silently dropped
    return index


def _expert_names(record: Mapping[str, Any]) -> list[str]:
    names = []
    for key in EXPERT_IMAGE_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            names.append(value)
        elif isinstance(value, Mapping):  # {"raw_image": "000123/....png", "cropped_image": ...}
            names.extend(v for v in value.values() if isinstance(v, str))
    return names


def index_patients(data: Any) -> dict[str, str]:
    """Source image id → patient id, from BUS-Expert_dataset.json in any of the shapes seen or plausible.

    Accepted: an object keyed by image (or case) whose values carry `patient_id` (and maybe
    `image_file: {raw_image: "NNNNNN/..."}`), an object image → patient id, or a list of records
    with an image/name key and `patient_id`.
    """
    entries: list[tuple[str | None, Any]]
    if isinstance(data, Mapping):
        entries = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, list):
        entries = [(None, v) for v in data]
    else:
        return {}
    patients: dict[str, str] = {}
    conflicts = 0
    for key, value in entries:
        if isinstance(value, Mapping):
            patient = value.get("patient_id")
            names = _expert_names(value) + ([key] if key else [])
        else:
            patient, names = value, [key] if key else []
        if patient is None or isinstance(patient, Mapping | list):
            continue
        for source_id in {source_image_id(name) for name in names if name}:
            if patients.setdefault(source_id, str(patient)) != str(patient):
                conflicts += 1
    if conflicts:
        log.warning("BUS-Expert: %d source images with more than one patient id; the first is kept", conflicts)
    return patients


def _load_patients(root: Path) -> dict[str, str]:
    path = root / EXPERT_JSON
    if not path.is_file():
        return {}
    try:
        return index_patients(_read_json(path))
    except ValueError:
        log.warning("BUS-Expert_dataset.json is unreadable; crops are grouped by source image instead")
        return {}


# --------------------------------------------------------------------------- one record
def report_fields(record: Mapping[str, Any], lesion_index: int) -> Mapping[str, Any]:
    """The report's fields: at the top level, under `us_report`, or under `us_report[str(k)]` (BUS-Expert style)."""
    if any(field in record for field in REPORT_FIELDS):
        return record
    report = record.get("us_report")
    if not isinstance(report, Mapping):
        return {}
    if any(field in report for field in REPORT_FIELDS):
        return report
    nested = report.get(str(lesion_index))
    if isinstance(nested, Mapping):
        return nested
    dicts = [v for v in report.values() if isinstance(v, Mapping)]
    return dicts[0] if len(dicts) == 1 else {}


def map_attribute(attribute: str, raw: Any) -> str | None:
    """The canonical breast value of one report value, or None when there is no explicit mapping."""
    if raw is None or not str(raw).strip():
        return None
    value_map = VALUE_MAPS.get(attribute)
    if value_map is not None:
        by_key = {_match_key(k): v for k, v in value_map.items()}
        mapped = by_key.get(_match_key(raw))
        if mapped is None:
            return None
        raw = mapped
    try:
        return normalize_value(ORGAN, attribute, str(raw))
    except VocabularyError:
        return None


def record_annotation(
    fields: Mapping[str, Any], confidence_map: Mapping[str, int], confidence_attributes: tuple[str, ...] | None
) -> tuple[dict[str, Any] | None, Counter[tuple[str, str]]]:
    """The whole-crop annotation of one report (None without any mapped attribute) and the values left out."""
    attributes: dict[str, str] = {}
    left_out: Counter[tuple[str, str]] = Counter()
    for field, attribute in FIELD_TO_ATTRIBUTE.items():
        raw = fields.get(field)
        value = map_attribute(attribute, raw)
        if value is not None:
            attributes[attribute] = value
        elif raw is not None and str(raw).strip():
            left_out[(field, str(raw))] += 1
    if not attributes:
        return None, left_out
    c = confidence_map.get(_match_key(fields.get(BOUNDARY_FIELD, "")))
    named = confidence_attributes if confidence_attributes is not None else tuple(attributes)
    confidence = {} if c is None else {name: c for name in named if name in attributes}
    # box None: the crop is the lesion (module docstring)
    return {"box": None, "attributes": attributes, "confidence": confidence, "origin": ORIGIN}, left_out


# --------------------------------------------------------------------------- iteration
def _resolve_root(root: Path) -> Path:
    if not (root / LESION_DIR).is_dir() and (root / "BUSCoT" / LESION_DIR).is_dir():
        return root / "BUSCoT"
    return root


def _images(root: Path) -> Iterator[tuple[str, Path]]:
    for split in SPLITS:
        folder = root / LESION_DIR / split
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    yield split, path


def _patient(patients: dict[str, str], source_id: str) -> str:
    # without a BUS-Expert patient id, crops of one source image still share a key, so they share a split
    return patients.get(source_id, f"buscot-image:{source_id}")


def _confidence_settings(
    confidence_map: dict[str, int] | None, confidence_attributes: tuple[str, ...] | None
) -> tuple[dict[str, int], tuple[str, ...] | None]:
    """The boundary → c map (defaults overridden by `confidence_map`), checked before any item is made."""
    merged = {_match_key(k): v for k, v in BOUNDARY_CONFIDENCE.items()}
    for boundary, c in (confidence_map or {}).items():
        if c not in (0, 1) or isinstance(c, bool):
            raise ValueError(f"confidence_map[{boundary!r}] must be 0 or 1, got {c!r}")
        merged[_match_key(boundary)] = int(c)
    if confidence_attributes is not None:
        known = load_vocabulary(ORGAN).attributes
        unknown = [name for name in confidence_attributes if name not in known]
        if unknown:
            raise ValueError(f"confidence_attributes {unknown} are not breast attributes; known: {', '.join(known)}")
        confidence_attributes = tuple(confidence_attributes)
    return merged, confidence_attributes


def iter_buscot_items(
    root: Path,
    *,
    confidence_map: dict[str, int] | None = None,
    confidence_attributes: tuple[str, ...] | None = None,
) -> Iterator[SourceItem]:
    """One item per BUS-CoT lesion crop (path set, decoded by the core), then one per record whose crop is missing.

    `confidence_map` overrides entries of BOUNDARY_CONFIDENCE (LesionBoundary value → c);
    `confidence_attributes` limits which attributes get that c (default: every mapped one).
    Raises ValueError at once for a bad `confidence_map` or `confidence_attributes`.
    """
    settings = _confidence_settings(confidence_map, confidence_attributes)
    return _iter_items(_resolve_root(Path(root)), *settings)


def _iter_items(
    root: Path, confidence_map: dict[str, int], confidence_attributes: tuple[str, ...] | None
) -> Iterator[SourceItem]:
    try:
        records: dict[str, Any] | None = index_lesion_records(_read_json(root / LESION_JSON))
    except ValueError:
        log.warning("BUS-CoT lesion_dataset.json is missing or malformed: every crop is quarantined")
        records = None
    patients = _load_patients(root)
    counts: Counter[str] = Counter()
    left_out: Counter[tuple[str, str]] = Counter()
    seen: set[str] = set()
    for split, path in _images(root):
        key = f"{split}_{path.name}"
        seen.add(key)
        source_id = source_image_id(path.name)
        item = SourceItem(
            source=KIND,
            source_ref=f"{split}/{path.name}",
            organ=ORGAN,
            path=path,
            patient_id=_patient(patients, source_id),
            metadata={"split_hint": split},
        )
        record = None if records is None else records.get(key)
        if records is None or (record is not None and not isinstance(record, Mapping)):
            item.error = METADATA_UNREADABLE
        elif record is None:
            item.metadata["metadata_missing"] = True  # still worth reading: the readers will label it
        else:
            fields = report_fields(record, _lesion_index(path.name))
            annotation, skipped = record_annotation(fields, confidence_map, confidence_attributes)
            left_out.update(skipped)
            item.annotations = [annotation] if annotation else []
            if fields.get("BIRADS") not in (None, ""):
                item.metadata["birads"] = str(fields["BIRADS"]).strip()
        counts[item.error or ("metadata_missing" if item.metadata.get("metadata_missing") else "ok")] += 1
        yield item
    for key in sorted(set(records or {}) - seen):
        located = _split_and_name(key)
        split, name = located if located else ("", key)
        counts[IMAGE_MISSING] += 1
        yield SourceItem(
            source=KIND,
            source_ref=f"{split}/{name}" if split else name,
            organ=ORGAN,
            path=root / LESION_DIR / split / name if split else None,
            patient_id=_patient(patients, source_image_id(name)),
            metadata={"split_hint": split} if split else {},
            error=IMAGE_MISSING,
        )
    log.info("BUS-CoT: %s", dict(counts))
    if left_out:
        log.info("BUS-CoT values without a mapping (left out): %s", dict(left_out))


SOURCE = SourceAdapter(KIND, iter_buscot_items, takes_organ=False)
