"""The release gate: row facts, a Great Expectations suite from `schemas/expectations/`, a named report.

Each `check_*` function states one fact about one published row; the suite (kept as data in
`schemas/`) expects every fact to hold, plus column-level rules (unique ids, known organs, c in
{0, 1}). Validation runs in an ephemeral GX context on the metadata table, never on image bytes;
Data Docs HTML is written next to the release.
"""

from __future__ import annotations

import io
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from PIL import Image

import schemas
from flows.teacher.prompting import load_prompt_bundle
from schemas.records import ImageRecord, Sample
from schemas.trajectory import TrajectoryError, parse_trajectory
from schemas.vocabulary import cross_domain_organs, load_vocabulary, registered_organs
from schemas.wording import tone_problem

SUITE_DIR = Path(schemas.__file__).parent / "expectations"
DEFAULT_SUITE = "release-v1"
DEFAULT_PROMPT = "teacher-v1"  # for a generator string that does not name its prompt version


@dataclass(frozen=True)
class DistributionBounds:
    """Configured bounds on a release's label mix (Settings `release_*`): a collapsed teacher or a broken
    consensus shows up as an organ with almost no (or only) c = 0, or one label taking a whole attribute.
    Groups smaller than `min_rows` are not judged: a handful of rows has no meaningful share."""

    c0_share_min: float = 0.02
    c0_share_max: float = 0.8
    label_share_max: float = 0.95
    min_rows: int = 20


@dataclass
class ValidationReport:
    success: bool
    failures: list[dict[str, Any]] = field(default_factory=list)  # expectation, column, rows (ids)
    docs_index: Path | None = None
    suite: str = DEFAULT_SUITE
    expectations: int = 0
    rows: int = 0

    def summary(self) -> str:
        if self.success:
            return "validation passed"
        parts = [f"{f['expectation']}({f['column']}): {', '.join(f['rows'][:5])}" for f in self.failures]
        return "validation failed: " + "; ".join(parts)


# ------------------------------------------------------------------------------------------ row facts
def check_label_in_vocabulary(sample: Sample) -> bool:
    try:
        return sample.label in load_vocabulary(sample.organ).attribute(sample.attribute).values
    except (KeyError, ValueError):
        return False


def check_bbox_in_model_frame(sample: Sample) -> bool:
    x1, y1, x2, y2 = sample.bbox
    width, height = sample.model_size
    return 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


def crop_min_side(sample: Sample) -> int:
    with Image.open(io.BytesIO(sample.images[1]["bytes"])) as crop:
        return min(crop.size)


def check_trajectory_matches_columns(sample: Sample) -> bool:
    try:
        parsed = parse_trajectory(sample.messages)
    except TrajectoryError:
        return False
    key = load_vocabulary(sample.organ).attribute(sample.attribute).answer_key
    return parsed.bbox_2d == sample.bbox and parsed.answer == {key: sample.label} and parsed.question == sample.question


def check_tone_matches_c(sample: Sample, prompt_version: str) -> bool:
    """The diagnosis carries the tone of c: cautious wording exactly when the readers disagreed."""
    try:
        diagnosis = parse_trajectory(sample.messages).diagnosis
    except TrajectoryError:
        return False
    return tone_problem(diagnosis, sample.confidence, load_prompt_bundle(prompt_version).tone) is None


def check_one_image_per_placeholder(sample: Sample) -> bool:
    placeholders = sum(
        part.get("type") == "image" for message in sample.messages for part in message.get("content", [])
    )
    return placeholders == len(sample.images)


def prompt_version_of(generator: str) -> str:
    return generator.rsplit("/", 1)[-1] if re.fullmatch(r"[^/]+/[^/]+/[^/]+", generator) else DEFAULT_PROMPT


def row_facts(sample: Sample, image: ImageRecord | None) -> dict[str, Any]:
    """The metadata row GX validates: the sample's plain columns and its facts."""
    return {
        "id": sample.id,
        "organ": sample.organ,
        "attribute": sample.attribute,
        "label": sample.label,
        "confidence": sample.confidence,
        "split": sample.split,
        "patient_key": image.patient_key if image else None,
        "dup_group": (image.dup_group or image.image_id) if image else None,
        "check_label_in_vocabulary": check_label_in_vocabulary(sample),
        "check_bbox_in_model_frame": check_bbox_in_model_frame(sample),
        "crop_min_side": crop_min_side(sample),
        "check_trajectory_matches_columns": check_trajectory_matches_columns(sample),
        "check_tone_matches_c": check_tone_matches_c(sample, prompt_version_of(sample.generator)),
        "check_one_image_per_placeholder": check_one_image_per_placeholder(sample),
    }


def add_split_facts(rows: list[dict[str, Any]]) -> None:
    """Facts across rows: no patient or near-duplicate group in two splits; test-only organs only in test.

    Test-only organs are the cross-domain test set: the splitter puts them in test whatever else their
    patient has, by design, so they are left out of the patient and group checks (and get their own).
    """
    splits: dict[tuple[str, Any], set[str]] = defaultdict(set)
    in_domain = [row for row in rows if row["organ"] not in cross_domain_organs()]
    for row in in_domain:
        splits[("patient", row["patient_key"])].add(row["split"])
        splits[("group", row["dup_group"])].add(row["split"])
    for row in rows:
        cross_domain = row["organ"] in cross_domain_organs()
        row["check_patient_in_one_split"] = cross_domain or len(splits[("patient", row["patient_key"])]) == 1
        row["check_duplicate_group_in_one_split"] = cross_domain or len(splits[("group", row["dup_group"])]) == 1
        row["check_split_allowed_for_organ"] = not cross_domain or row["split"] == "test"


def _share(part: int, whole: int, min_rows: int) -> float | None:
    return round(part / whole, 4) if whole >= min_rows else None


def add_distribution_facts(rows: list[dict[str, Any]], bounds: DistributionBounds) -> None:
    """Facts across rows: the share of c = 0 in the row's organ, the share of its label in its organ × attribute.

    None (not judged) where the organ or the organ × attribute has fewer than `bounds.min_rows` rows.
    """
    by_organ: dict[str, list[int]] = defaultdict(list)
    by_attribute: dict[tuple[str, str], list[str]] = defaultdict(list)
    for row in rows:
        by_organ[row["organ"]].append(row["confidence"])
        by_attribute[(row["organ"], row["attribute"])].append(row["label"])
    for row in rows:
        confidences = by_organ[row["organ"]]
        labels = by_attribute[(row["organ"], row["attribute"])]
        row["organ_c0_share"] = (
            round(confidences.count(0) / len(confidences), 4) if len(confidences) >= bounds.min_rows else None
        )
        row["label_share"] = (
            round(labels.count(row["label"]) / len(labels), 4) if len(labels) >= bounds.min_rows else None
        )


def distribution_expectations(bounds: DistributionBounds) -> list[dict[str, Any]]:
    """The suite's configured part: the bounds come from settings, not from the suite file."""
    return [
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "organ_c0_share", "min_value": bounds.c0_share_min, "max_value": bounds.c0_share_max},
        },
        {
            "type": "expect_column_values_to_be_between",
            "kwargs": {"column": "label_share", "min_value": 0.0, "max_value": bounds.label_share_max},
        },
    ]


# ------------------------------------------------------------------------------------------ the suite
def _expectation_class(type_name: str) -> type:
    import great_expectations.expectations as gxe  # 2-3 s to import: only when validating

    return getattr(gxe, "".join(part.capitalize() for part in type_name.split("_")))


def validate_rows(
    rows: list[dict[str, Any]],
    *,
    docs_dir: Path | None = None,
    suite: str = DEFAULT_SUITE,
    bounds: DistributionBounds | None = None,
) -> ValidationReport:
    """Run the suite on the metadata rows; failures name the rows by id; Data Docs into `docs_dir`.

    With `bounds`, the rows need their distribution facts (`add_distribution_facts`) and the suite gets the
    two distribution expectations.
    """
    import great_expectations as gx
    import pandas as pd
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig

    spec = yaml.safe_load((SUITE_DIR / f"{suite}.yaml").read_text())
    frame = pd.DataFrame(rows)
    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("release")
        .add_dataframe_asset("rows")
        .add_batch_definition_whole_dataframe("whole")
    )
    expectations = context.suites.add(gx.ExpectationSuite(name=spec["version"]))
    items = spec["expectations"] + (distribution_expectations(bounds) if bounds else [])
    for item in items:
        kwargs = dict(item["kwargs"])
        if kwargs.get("value_set") == "registered_organs":
            kwargs["value_set"] = list(registered_organs())
        expectations.add_expectation(_expectation_class(item["type"])(**kwargs))
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{spec['version']}-rows", data=batch, suite=expectations)
    )
    actions = []
    if docs_dir is not None:
        context.add_data_docs_site(
            "release_docs",
            {
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        actions.append(UpdateDataDocsAction(name="docs", site_names=["release_docs"]))
    checkpoint = context.checkpoints.add(
        gx.Checkpoint(
            name="release-gate",
            validation_definitions=[definition],
            actions=actions,
            result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["id"]},
        )
    )
    result = checkpoint.run(batch_parameters={"dataframe": frame})
    failures = []
    for run in result.run_results.values():
        for outcome in run.results:
            if outcome.success:
                continue
            unexpected = outcome.result.get("unexpected_index_list") or []
            failures.append(
                {
                    "expectation": outcome.expectation_config.type,
                    "column": outcome.expectation_config.kwargs.get("column"),
                    "rows": sorted({str(u.get("id")) for u in unexpected if isinstance(u, dict)}),
                }
            )
    index = docs_dir / "index.html" if docs_dir is not None and (docs_dir / "index.html").exists() else None
    return ValidationReport(
        success=result.success,
        failures=failures,
        docs_index=index,
        suite=spec["version"],
        expectations=len(items),
        rows=len(rows),
    )
