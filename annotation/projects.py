"""Which Label Studio projects exist and what goes into their tasks (DESIGN §1, blinded dual reading).

The Community edition cannot hide one annotator's work from another inside a project, so each organ
gets one project per reader (same tasks) and one adjudication project that receives only disputed
tasks. Task data carries the image id and organ only: no patient data, no source file names.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from annotation.label_config import prediction_result

Role = Literal["reader A", "reader B", "adjudication"]
READER_ROLES: tuple[Role, Role] = ("reader A", "reader B")
PREANNOTATION_MODEL_VERSION = "source-mask-v1"


class ReaderAccount(BaseModel):
    """A sonographer's Label Studio account and the pseudonym that stands for it everywhere else."""

    email: str = Field(description="the login; never written to the catalog or the dataset")
    pseudonym: str = Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")


class ReaderAssignment(BaseModel):
    """Who reads which organ: two accounts per organ, in role order (reader A, reader B)."""

    readers: list[ReaderAccount]
    organs: dict[str, tuple[str, str]] = Field(description="organ → (email of reader A, email of reader B)")
    adjudicators: dict[str, str] = Field(default_factory=dict, description="organ → e-mail of its adjudicator")

    @model_validator(mode="after")
    def _adjudicator_is_a_third_person(self) -> ReaderAssignment:
        for organ, email in self.adjudicators.items():
            if email.lower() in {reader.lower() for reader in self.organs.get(organ, ())}:
                raise ValueError(f"the {organ} adjudicator must not be one of its two readers")
        return self

    def pseudonym(self, email: str) -> str | None:
        return next((r.pseudonym for r in self.readers if r.email.lower() == email.lower()), None)

    def reader_for(self, organ: str, role: Role) -> ReaderAccount:
        email = self.organs[organ][READER_ROLES.index(role)]
        return next(r for r in self.readers if r.email.lower() == email.lower())


def project_title(organ: str, role: Role) -> str:
    return f"lookcloser {organ} - {role}"


def local_files_url(storage_key: str) -> str:
    """How Label Studio serves a file of the image store (the store folder is its document root)."""
    return f"/data/local-files/?d={storage_key}"


def image_task(
    *, image_id: str, organ: str, storage_key: str, size: tuple[int, int], boxes: list[list[float]] | None = None
) -> dict[str, Any]:
    """One task; source-mask boxes become a pre-annotation (boxes only: attribute choices never, they bias)."""
    task: dict[str, Any] = {"data": {"image": local_files_url(storage_key), "image_id": image_id, "organ": organ}}
    if boxes:
        task["predictions"] = [
            {
                "model_version": PREANNOTATION_MODEL_VERSION,
                "score": 1.0,
                "result": prediction_result(organ, boxes, size),
            }
        ]
    return task
