import pytest

from schemas.vocabulary import VocabularyError, load_vocabulary, normalize_value, registered_organs


@pytest.mark.parametrize("organ", registered_organs())
def test_vocabulary_is_complete(organ):
    vocabulary = load_vocabulary(organ)
    keys = [a.answer_key for a in vocabulary.attributes.values()]
    assert len(keys) == len(set(keys)), "answer keys must be unique within an organ"
    for attribute in vocabulary.attributes.values():
        assert len(attribute.values) >= 2
        assert len(attribute.questions) >= 2, f"{organ}.{attribute.name} needs several phrasings"
        for value in attribute.canonical_values:  # canonical values normalise to themselves
            assert attribute.normalize(value) == value


def test_lexicons_cover_the_standards():
    assert set(load_vocabulary("breast").attributes) == {
        "shape",
        "orientation",
        "margin",
        "echo_pattern",
        "posterior_features",
        "calcifications",
    }
    assert set(load_vocabulary("thyroid").attributes) == {
        "composition",
        "echogenicity",
        "shape",
        "margin",
        "echogenic_foci",
    }
    assert set(load_vocabulary("liver").attributes) == {"echogenicity", "shape", "boundary"}


def test_no_synonym_points_at_two_values():
    for organ in registered_organs():
        for attribute in load_vocabulary(organ).attributes.values():
            for value, spec in attribute.values.items():
                for synonym in spec.synonyms:
                    assert attribute.normalize(synonym) == value, (organ, attribute.name, synonym)


@pytest.mark.parametrize(
    ("organ", "attribute", "raw", "canonical"),
    [
        ("breast", "echo_pattern", "LowEcho", "Hypoechoic"),  # BUS-CoT
        ("breast", "echo_pattern", "hypo-echoic", "Hypoechoic"),
        ("breast", "echo_pattern", "CysticSolidMixedEcho", "Complex cystic and solid"),
        ("thyroid", "composition", "almost completely solid", "Solid"),
        ("liver", "boundary", "BoundarySomewhatUnclear", "Unclear"),
    ],
)
def test_synonyms_map_to_canonical_values(organ, attribute, raw, canonical):
    assert normalize_value(organ, attribute, raw) == canonical


def test_unknown_value_lists_allowed_values_and_synonyms():
    with pytest.raises(VocabularyError) as err:
        normalize_value("liver", "boundary", "purple")
    message = str(err.value)
    assert "'purple'" in message and "Clear" in message and "Unclear" in message and "BoundaryClear" in message


def test_unknown_attribute_and_organ():
    with pytest.raises(VocabularyError, match="known: echogenicity, shape, boundary"):
        normalize_value("liver", "orientation", "Parallel")
    with pytest.raises(VocabularyError, match="unknown organ 'kidney'"):
        load_vocabulary("kidney")
