"""Sources by registration (flows/ingest/sources/registry.py): a source is its module in `sources/`, which
declares itself as `SOURCE`, and its entry in `provenance.yaml`; the ingest parameters, the CLI and the
pre-annotations all come from, or are checked against, that one list."""

from __future__ import annotations

import inspect
import pkgutil
import typing
from importlib import import_module

import pytest

import flows.ingest.sources as sources_package
from flows.ingest.sources.base import SourceAdapter
from flows.ingest.sources.registry import (
    KINDS,
    PROVENANCE_FILE,
    adapter_arguments,
    preannotation_origins,
    source_adapter,
)
from flows.release.card import PROVENANCE_FILE as CARD_PROVENANCE_FILE


def test_every_registered_kind_is_a_module_that_declares_itself():
    for kind in KINDS:
        adapter = source_adapter(kind)
        assert adapter.kind == kind and adapter.iter_items.__module__ == f"flows.ingest.sources.{kind}"


def test_every_adapter_takes_organ_exactly_when_it_says_so():
    for kind in KINDS:
        adapter = source_adapter(kind)
        assert ("organ" in inspect.signature(adapter.iter_items).parameters) == adapter.takes_organ, kind
        assert ("organ" in adapter_arguments(adapter, "breast", {})) == adapter.takes_organ


def test_every_adapter_module_has_a_provenance_entry():
    declared = set()
    for module in pkgutil.iter_modules(sources_package.__path__):
        if isinstance(getattr(import_module(f"flows.ingest.sources.{module.name}"), "SOURCE", None), SourceAdapter):
            declared.add(module.name)
    assert declared == set(KINDS)  # a module without its entry would be a source nobody can choose
    assert PROVENANCE_FILE == CARD_PROVENANCE_FILE  # the card's licences come from the same entries


def test_a_helper_module_is_no_source():
    with pytest.raises(KeyError, match="unknown source kind 'files'"):
        source_adapter("files")


def test_the_ingest_parameters_and_the_cli_offer_the_registered_kinds():
    from flows.cli.ingest import ingest
    from flows.stages.ingest import IngestParams

    assert set(IngestParams.model_fields["kind"].annotation.__args__) == set(KINDS)
    help_text = typing.get_type_hints(ingest, include_extras=True)["kind"].__metadata__[0].help
    assert all(kind in help_text for kind in KINDS)


def test_pre_annotation_origins_are_the_adapters_declarations():
    assert set(preannotation_origins()) == {"mask", "outline", "manifest", "phantom"}
    assert source_adapter("hf").preannotation_origins == ()  # the Hub's boxes are not pre-filled (as before)
