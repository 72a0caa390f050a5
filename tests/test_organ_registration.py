"""Organs by registration: a fourth organ is one YAML file in the vocabulary folder and nothing else.

The test writes `kidney.yaml` beside copies of the shipped vocabularies, points LOOKCLOSER_VOCAB_DIR at
that folder, and takes kidney images through the real stages: phantom ingest from the command line
(`--organ kidney`), the Label Studio form, consensus over two simulated readers, teacher rationales
(template backend, with the vocabulary's own guidance) and the release gate's rows.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from datasets import load_dataset

from annotation.label_config import label_config, validate_label_config
from flows.catalog import Catalog, Outcome
from flows.ingest.image_store import ImageStore
from flows.release.publish import publish_release
from flows.release.repository import version_path
from flows.runtime.settings import load_settings
from schemas.vocabulary import DEFAULT_VOCAB_DIR, VocabularyError, load_vocabulary, registered_organs
from tests.reader_fixtures import simulated_readings
from tests.release_fixtures import FRAMES

KIDNEY = {
    "organ": "kidney",
    "standard": "Renal mass descriptors (a test organ: registered by this file alone)",
    "dicom_body_parts": ["KIDNEY"],
    # the phantom draws the kidney's cortex as a darker ellipse under a bright capsule line
    "phantom": {
        "gland": {"centre": [0.5, 0.6], "half_axes": [0.45, 0.3], "inside": 0.9, "outside": 0.6},
        "bands": {"wave": 0.02, "levels": [{"below": 0.04, "echo": 1.2}]},
    },
    "words": {"region": "renal cortex", "structure": "renal mass"},
    "attributes": {
        "echogenicity": {
            "answer_key": "echo",
            "questions": ["What is the echogenicity of the renal mass?"],
            "look_for": "the brightness of the mass interior compared with the renal cortex",
            "values": {
                "Hypoechoic": {"render": {"intensity": 0.45}, "evidence": ["the interior is darker than the cortex"]},
                "Hyperechoic": {"render": {"intensity": 1.7}, "evidence": ["the interior is brighter than the cortex"]},
            },
        },
        "margin": {
            "answer_key": "margin",
            "questions": ["How would you describe the margin of the renal mass?"],
            "look_for": "the interface between the mass and the surrounding cortex along its whole edge",
            "values": {
                "Smooth": {"render": {"roughness": 0.0}, "evidence": ["the edge is a sharp, even line"]},
                "Irregular": {"render": {"roughness": 0.3}, "evidence": ["the edge is ragged and uneven"]},
            },
        },
    },
}


@pytest.fixture
def kidney(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "vocab"
    shutil.copytree(DEFAULT_VOCAB_DIR, folder)
    (folder / "kidney.yaml").write_text(yaml.safe_dump(KIDNEY, sort_keys=False))
    monkeypatch.setenv("LOOKCLOSER_VOCAB_DIR", str(folder))
    return folder


def test_the_organ_list_is_the_vocabulary_folder(kidney, monkeypatch):
    assert registered_organs() == ("breast", "kidney", "liver", "thyroid")
    monkeypatch.delenv("LOOKCLOSER_VOCAB_DIR")
    assert registered_organs() == ("breast", "liver", "thyroid")
    with pytest.raises(VocabularyError, match="unknown organ 'kidney'"):
        load_vocabulary("kidney")


def test_a_fourth_organ_goes_from_phantom_ingest_to_published_rows(kidney, workspace, prefect_api):
    from flows.cli.main import main
    from flows.stages.consensus import ConsensusParams, consensus_flow
    from flows.stages.synthesize import SynthesizeParams, run_synthesis

    assert main(["ingest", "phantom", "--organ", "kidney", "--count", "8"]) == 0
    settings = load_settings()
    catalog = Catalog(settings.resolved_catalog_url)
    try:
        images = list(catalog.iter_images())
        assert images and {image.organ for image in images} == {"kidney"}

        xml = label_config("kidney")
        validate_label_config(xml, organ="kidney")
        assert 'value="Hyperechoic"' in xml and 'value="Irregular"' in xml

        readings = simulated_readings(catalog)
        catalog.save_pulled(readings, [(f"sim:{k}", Outcome.out, None, None) for k in range(len(readings))])
        decided = consensus_flow(ConsensusParams(organ="kidney"))
        records = catalog.consensus_records("kidney")
        assert decided[0].organ == "kidney" and records
        assert {r.attribute for r in records} == {"echogenicity", "margin"}

        produced = run_synthesis(SynthesizeParams(progress=False, organ="kidney"), settings).produced
        assert produced == len(records)

        folder = workspace / "releases" / "kidney-us"
        publish_release(catalog, ImageStore(settings.resolved_image_store_url), folder, "kidney-us", FRAMES)
        path = version_path(folder, "v1.0.0", workspace / "releases" / "kidney-us.versions")
        rows = load_dataset(str(path), "kidney", cache_dir=str(workspace / "hf-cache"))
        published = [row for split in rows.values() for row in split]
        assert published and {row["organ"] for row in published} == {"kidney"}
        assert {row["label"] for row in published} <= {"Hypoechoic", "Hyperechoic", "Smooth", "Irregular"}
    finally:
        catalog.close()


def test_an_unregistered_organ_is_a_one_line_error(workspace, capsys):
    from flows.cli.main import main

    assert main(["ingest", "phantom", "--organ", "kidney", "--count", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kidney" in err and "breast" in err
