"""The records every stage reads and writes (DESIGN §3): one pydantic model per stage output.

Names are the contract: fields may be added, never renamed. Boxes are original pixels unless the
field says otherwise (`bbox` of a `Sample` is the model frame).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue

from schemas.frames import model_size, to_model_box, validate_box
from schemas.vocabulary import VocabularyError, load_vocabulary, registered_organs


def _registered_organ(organ: str) -> str:
    if organ not in registered_organs():
        raise VocabularyError(f"unknown organ {organ!r}; registered: {', '.join(registered_organs())}")
    return organ


class _RegisteredOrgansSchema:
    """In the exported JSON Schema an organ is one of the organs registered when it is exported."""

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: Any, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        return {**handler(core_schema), "enum": list(registered_organs())}


# An organ is a registered one: a YAML file in the vocabulary folder (schemas/vocab/), not a fixed list.
Organ = Annotated[str, AfterValidator(_registered_organ), _RegisteredOrgansSchema]
Split = Literal["train", "test"]


class RecordStatus(StrEnum):
    ok = "ok"
    quarantined = "quarantined"


class ConfidenceSource(StrEnum):
    dual_reader = "dual_reader"
    metadata = "metadata"
    adjudicated = "adjudicated"


def _now() -> datetime:
    return datetime.now(UTC)


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_attributes(organ: str, attributes: dict[str, str]) -> dict[str, str]:
    vocabulary = load_vocabulary(organ)
    return {name: vocabulary.normalize(name, value) for name, value in attributes.items()}


class Deidentification(Record):
    """What ingest did to an image's pixels to remove what could identify a patient (DESIGN §8)."""

    scan_area: Literal["source_region", "detected"] = Field(
        description="cut to the source's ultrasound region, or to the scan area found from the pixels"
    )
    text_policy: Literal["mask", "quarantine", "crop_only"] = Field(description="the site's burned-in text policy")
    text_lines_masked: int = Field(default=0, ge=0, description="burned-in text lines found and inpainted")
    text_kinds: list[str] = Field(
        default_factory=list, description="what the masked lines were: date, time, id, name, institution, ..."
    )
    measurement_marks: bool = Field(
        default=False, description="calipers or a measurement readout were seen (a known shortcut for models)"
    )
    caliper_marks: int = Field(default=0, ge=0, description="'+' caliper marks left in the image (not identifying)")
    ocr_engine: str | None = Field(default=None, description="the text detector used (None: no OCR, crop only)")


class ImageRecord(Record):
    """One ingested image: content-addressed, de-identified, assigned to a split."""

    image_id: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of decoded pixels + mode + size")
    organ: Organ
    source: str = Field(min_length=1, description="adapter name, e.g. phantom, folder, dicom")
    source_ref: str = Field(description="opaque reference inside the source; never a patient identifier")
    patient_key: str = Field(min_length=1, description="salted hash of the patient id, or the image's own key")
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    phash: str = Field(pattern=r"^[0-9a-f]{16}$", description="64-bit perceptual hash, hex")
    split: Split
    status: RecordStatus = RecordStatus.ok
    quarantine_reason: str | None = None
    storage_key: str = Field(default="", description="key of the PNG in the image store")
    dup_group: str | None = Field(default=None, description="image id that founded its near-duplicate group")
    source_metadata: dict[str, Any] = Field(
        default_factory=dict, description="allow-listed, non-identifying source facts (pixel spacing, class, ...)"
    )
    deidentification: Deidentification | None = Field(
        default=None, description="what de-identification did to the pixels (None: ingested before it was recorded)"
    )
    created_at: datetime = Field(default_factory=_now)

    @model_validator(mode="after")
    def _reason_iff_quarantined(self) -> ImageRecord:
        if (self.status == RecordStatus.quarantined) != (self.quarantine_reason is not None):
            raise ValueError("quarantine_reason is set exactly when status is quarantined")
        return self


class LesionAnnotation(Record):
    """What a source or a reader says about one lesion of one image: a box and/or attributes."""

    image_id: str
    organ: Organ
    lesion_index: int = Field(default=0, ge=0)
    box: list[float] | None = Field(default=None, description="original pixels")
    attributes: dict[str, str] = Field(default_factory=dict, description="attribute → canonical value")
    image_width: int = Field(gt=0)
    image_height: int = Field(gt=0)

    @model_validator(mode="after")
    def _check_box_and_attributes(self) -> LesionAnnotation:
        if self.box is not None:
            self.box = validate_box(self.box, self.image_width, self.image_height)
        self.attributes = _check_attributes(self.organ, self.attributes)
        return self


class SourceAnnotation(LesionAnnotation):
    """A box and/or attributes that came with the source (mask, metadata, curated labels)."""

    confidence: dict[str, Literal[0, 1]] = Field(default_factory=dict, description="metadata-derived c per attribute")
    origin: str = Field(description="mask | metadata | manifest | phantom ...")


class ReaderAnnotation(LesionAnnotation):
    """One sonographer's reading of one image (pseudonymous)."""

    reader: str = Field(min_length=1, description="pseudonym, never a name or e-mail")
    adjudication: bool = Field(default=False, description="the adjudicator's answer on a disputed image")
    lead_time: float | None = Field(default=None, ge=0, description="seconds spent, from Label Studio")
    ls_project_id: int | None = None
    ls_task_id: int | None = None
    ls_annotation_id: int | None = None


class ConsensusRecord(Record):
    """Per image × attribute: the label, its confidence `c` and how it was reached."""

    image_id: str
    organ: Organ
    attribute: str
    label: str
    confidence: Literal[0, 1] = Field(description="c of the paper: 1 readers agree, 0 they disagree")
    agreement: float = Field(ge=0.0, le=1.0, description="share of readers agreeing with the label")
    reader_labels: dict[str, str] = Field(default_factory=dict, description="pseudonym → value")
    box: list[float] = Field(description="fused lesion box, original pixels")
    box_iou: float | None = Field(default=None, ge=0.0, le=1.0)
    confidence_source: ConfidenceSource
    needs_review: bool = False
    image_width: int = Field(gt=0)
    image_height: int = Field(gt=0)

    @model_validator(mode="after")
    def _check(self) -> ConsensusRecord:
        self.box = validate_box(self.box, self.image_width, self.image_height)
        self.label = load_vocabulary(self.organ).normalize(self.attribute, self.label)
        return self

    @property
    def record_id(self) -> str:
        return f"{self.image_id}:{self.attribute}"

    def model_frame(self, min_pixels: int, max_pixels: int) -> tuple[tuple[int, int], list[int]]:
        """The image size after `smart_resize` and the fused box in that frame (what the trajectory shows)."""
        size = model_size(self.image_width, self.image_height, min_pixels, max_pixels)
        return size, to_model_box(self.box, (self.image_width, self.image_height), size)


class Rationale(Record):
    """The teacher's prose for one consensus record; box and answer are never taken from it."""

    image_id: str
    attribute: str
    organ: Organ
    question: str
    label: str
    confidence: Literal[0, 1]
    bbox_2d: list[int] = Field(min_length=4, max_length=4, description="model frame the teacher saw")
    box: list[float] = Field(min_length=4, max_length=4, description="the record's box, original pixels")
    search: str
    diagnosis: str
    generator: str = Field(description="backend/model/prompt-version, e.g. template/none/teacher-v1")
    backend: str = Field(description="template | openai")
    model: str = Field(description="served model name; 'none' for the template backend")
    prompt_version: str
    seed: int = Field(ge=0)
    regenerations: int = Field(default=0, ge=0, description="times regenerated for diversity")
    base_key: str = Field(description="hash of what the rationale depends on (record, prompt, model, sampling)")
    cache_key: str = Field(description="key of the teacher reply it came from")
    valid: bool = True
    validation_errors: list[str] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=_now)

    @property
    def record_id(self) -> str:
        return f"{self.image_id}:{self.attribute}"


class Sample(Record):
    """One published row (DESIGN §6); `images` are `[full model-frame image, crop]`."""

    id: str
    organ: Organ
    attribute: str
    question: str
    label: str
    confidence: Literal[0, 1]
    agreement: float = Field(ge=0.0, le=1.0)
    reader_labels: dict[str, str]
    images: list[Any] = Field(min_length=2, max_length=2)
    messages: list[dict[str, Any]]
    bbox: list[int] = Field(description="model frame")
    bbox_orig: list[float] = Field(description="original frame")
    orig_size: list[int] = Field(min_length=2, max_length=2, description="[W, H]")
    model_size: list[int] = Field(min_length=2, max_length=2, description="[W', H']")
    split: Split
    source: str
    generator: str

    @field_validator("bbox")
    @classmethod
    def _four(cls, bbox: list[int]) -> list[int]:
        if len(bbox) != 4:
            raise ValueError(f"bbox {bbox} must have 4 numbers")
        return bbox


RECORD_TYPES: dict[str, type[Record]] = {
    cls.__name__: cls for cls in (ImageRecord, SourceAnnotation, ReaderAnnotation, ConsensusRecord, Rationale, Sample)
}
