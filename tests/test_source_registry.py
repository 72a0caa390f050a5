"""Sources by registration (flows/ingest/sources/registry.py): the ingest parameters, the CLI, the
pre-annotations and the card's provenance all come from, or are checked against, the one list."""

from __future__ import annotations

import inspect
import typing

import yaml

from flows.ingest.sources.registry import KINDS, PREANNOTATION_ORIGINS, SOURCES, adapter_arguments, source_adapter
from flows.release.card import PROVENANCE_FILE


def test_every_adapter_loads_and_takes_organ_exactly_when_it_says_so():
    for adapter in SOURCES:
        function = adapter.load()
        if adapter.path == "none":  # the phantom: the ingest stage gives it its organs in its config
            continue
        assert ("organ" in inspect.signature(function).parameters) == adapter.takes_organ, adapter.kind
        assert ("organ" in adapter_arguments(adapter, "breast", {})) == adapter.takes_organ


def test_the_ingest_parameters_and_the_cli_offer_the_registered_kinds():
    from flows.cli.ingest import ingest
    from flows.stages.ingest import IngestParams

    assert set(IngestParams.model_fields["kind"].annotation.__args__) == set(KINDS)
    help_text = typing.get_type_hints(ingest, include_extras=True)["kind"].__metadata__[0].help
    assert all(kind in help_text for kind in KINDS)


def test_every_source_has_a_provenance_entry():
    declared = yaml.safe_load(PROVENANCE_FILE.read_text())["sources"]
    assert set(declared) == set(KINDS)


def test_pre_annotation_origins_are_the_adapters_declarations():
    assert set(PREANNOTATION_ORIGINS) == {"mask", "outline", "manifest", "phantom"}
    assert source_adapter("hf").preannotation_origins == ()  # the Hub's boxes are not pre-filled (as before)
