import hashlib
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.teacher.diversity import (
    DiversityPolicy,
    _Index,
    hamming,
    lcs_length,
    near_duplicates,
    rouge_l,
    simhash,
    tokens,
)

LONG = (
    "the lesion is oval with circumscribed margins and is hypoechoic relative to the surrounding fat while "
    "posterior acoustic enhancement is present and no calcifications or architectural distortion are seen "
    "which together favour a benign fibroadenoma on this single transverse image of the left breast"
)


def _dp_lcs(a, b):
    row = [0] * (len(b) + 1)
    for x in a:
        previous_diagonal = 0
        for j, y in enumerate(b, start=1):
            previous_diagonal, row[j] = row[j], previous_diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def _reference(texts, policy):
    # The definition, pair by pair: the first accepted item that matches (SimHash checked first) claims the item
    accepted, rejected = [], {}
    hashes = {key: simhash(text) for key, text in texts.items()}
    for key in sorted(texts):
        for kept in accepted:
            distance = hamming(hashes[key], hashes[kept])
            if distance <= policy.simhash_max_distance:
                rejected[key] = (kept, "simhash", float(distance))
                break
            score = rouge_l(texts[key], texts[kept])
            if score >= policy.rouge_l_threshold:
                rejected[key] = (kept, "rouge_l", score)
                break
        else:
            accepted.append(key)
    return rejected


def _random_texts(rng, count, words, max_length):
    vocabulary = [f"w{k}" for k in range(words)]
    texts = {}
    for k in range(count):
        if texts and rng.random() < 0.4:  # an edited copy of an earlier text: near-duplicates to find
            base = tokens(rng.choice(list(texts.values())))
            for _ in range(rng.randint(0, 6)):
                position = rng.randrange(len(base) + 1)
                if base and rng.random() < 0.5:
                    base[min(position, len(base) - 1)] = rng.choice(vocabulary)
                else:
                    base.insert(position, rng.choice(vocabulary))
        else:
            base = [rng.choice(vocabulary) for _ in range(rng.randint(0, max_length))]
        texts[f"id{rng.randrange(10**6):06d}-{k}"] = " ".join(base)
    return texts


def test_tokens_lowercase_words_with_inner_hyphens_and_apostrophes():
    assert tokens("Well-defined, HYPOECHOIC mass (12 mm); it's 'benign'.") == [
        "well-defined",
        "hypoechoic",
        "mass",
        "12",
        "mm",
        "it's",
        "benign",
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(0, 4), max_size=150),
    st.lists(st.integers(0, 4), max_size=150),
)
def test_lcs_length_equals_dynamic_programming(a, b):
    assert lcs_length(a, b) == _dp_lcs(a, b) == lcs_length(b, a)


def test_lcs_length_on_strings():
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    assert lcs_length(["a", "b"], []) == 0


@pytest.mark.parametrize("limit", [20, 64, 65, 200])
def test_vectorised_lcs_equals_dynamic_programming_across_limbs(limit):
    rng = random.Random(limit)
    lists = [[str(rng.randrange(3)) for _ in range(rng.randint(0, limit))] for _ in range(40)]
    index = _Index(lists)
    for i in range(0, 40, 7):
        docs = np.arange(40)
        expected = [_dp_lcs(lists[i], other) for other in lists]
        assert index.lcs(index.seqs[i], docs).tolist() == expected
        overlap = [sum(min(lists[i].count(t), other.count(t)) for t in set(lists[i])) for other in lists]
        assert index.overlap(index.seqs[i], docs).tolist() == overlap


def test_rouge_l_identical_disjoint_and_hand_computed():
    assert rouge_l(LONG, LONG.upper()) == 1.0
    assert rouge_l("oval hypoechoic mass", "irregular spiculated margins") == 0.0
    assert rouge_l("", "anything") == 0.0
    # LCS("the cat sat on the mat", "the cat lay on a mat") = "the cat on mat" = 4; F1 = 2 * 4 / (6 + 6)
    assert rouge_l("the cat sat on the mat", "the cat lay on a mat") == pytest.approx(2 / 3)


def test_simhash_is_stable_and_locality_sensitive():
    assert simhash(LONG) == simhash(LONG) == simhash(LONG.upper() + " !")
    assert 0 <= simhash(LONG) < 2**64
    assert simhash("the lesion is oval") == simhash("The lesion, is OVAL.")
    one_word = LONG.replace("hypoechoic", "isoechoic")
    unrelated = "thyroid nodule taller than wide with punctate echogenic foci and an irregular infiltrative border"
    assert hamming(simhash(LONG), simhash(one_word)) <= 8
    assert hamming(simhash(LONG), simhash(unrelated)) >= 20
    assert simhash("") == 0
    assert simhash("two words") != simhash("two other")  # unigram fallback below three tokens


def test_simhash_uses_blake2b_not_the_salted_hash():
    # One shingle: the SimHash is that shingle's blake2b digest, the same in every process and on every machine
    assert simhash("A b, C") == int.from_bytes(hashlib.blake2b(b"a b c", digest_size=8).digest(), "big")


def test_hamming():
    assert hamming(0b1011, 0b0001) == 2
    assert hamming(2**64 - 1, 0) == 64


def test_near_duplicates_ignore_insertion_order():
    texts = _random_texts(random.Random(1), 80, 12, 30)
    policy = DiversityPolicy(rouge_l_threshold=0.6)
    expected = near_duplicates(texts, policy)
    assert expected  # the fixture has duplicates, or the test proves nothing
    items = list(texts.items())
    for seed in range(3):
        random.Random(seed).shuffle(items)
        assert near_duplicates(dict(items), policy) == expected


@pytest.mark.parametrize(
    ("seed", "words", "max_length", "threshold", "distance"),
    [(2, 6, 20, 0.7, 3), (3, 10, 90, 0.6, 3), (4, 4, 150, 0.8, 0), (5, 30, 40, 0.5, 6), (6, 3, 8, 0.9, 0)],
)
def test_near_duplicates_match_the_pairwise_definition(seed, words, max_length, threshold, distance):
    texts = _random_texts(random.Random(seed), 120, words, max_length)
    policy = DiversityPolicy(rouge_l_threshold=threshold, simhash_max_distance=distance)
    result = near_duplicates(texts, policy)
    assert result == _reference(texts, policy)
    assert any(kind == "rouge_l" for _, kind, _ in result.values())


def test_rejected_items_do_not_reject_later_ones():
    a = "one two three four five six seven eight nine ten"
    b = "one two three four five six seven alpha beta gamma"  # F1 with a = 0.7
    c = "one two three four alpha beta gamma delta epsilon zeta"  # F1 with b = 0.7, with a = 0.4
    policy = DiversityPolicy(rouge_l_threshold=0.7, simhash_max_distance=0)
    assert rouge_l(a, c) < 0.7 <= min(rouge_l(a, b), rouge_l(b, c))
    assert near_duplicates({"C": c, "A": a, "B": b}, policy) == {"B": ("A", "rouge_l", 0.7)}


def test_thresholds_are_honoured():
    texts = {
        "a": "the mass is oval and circumscribed with posterior enhancement",
        "b": "the mass is oval and well circumscribed with posterior enhancement",
        "c": "the mass is oval and circumscribed with posterior enhancement",
    }
    assert near_duplicates(texts, DiversityPolicy()) == {
        "b": ("a", "rouge_l", rouge_l(texts["a"], texts["b"])),
        "c": ("a", "simhash", 0.0),
    }
    # a paraphrase survives a threshold of 1.0 and a SimHash distance of 0; the exact copy does not
    strict = DiversityPolicy(rouge_l_threshold=1.0, simhash_max_distance=0)
    assert near_duplicates(texts, strict) == {"c": ("a", "simhash", 0.0)}


def test_empty_and_single_inputs():
    assert near_duplicates({}, DiversityPolicy()) == {}
    assert near_duplicates({"x": "only one"}, DiversityPolicy()) == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rouge_l_threshold": 0.0}, "rouge_l_threshold"),
        ({"rouge_l_threshold": 1.5}, "rouge_l_threshold"),
        ({"rouge_l_threshold": float("nan")}, "rouge_l_threshold"),
        ({"simhash_max_distance": -1}, "simhash_max_distance"),
        ({"simhash_max_distance": 65}, "simhash_max_distance"),
        ({"max_regenerations": -1}, "max_regenerations"),
    ],
)
def test_policy_validation(options, message):
    with pytest.raises(ValueError, match=message):
        DiversityPolicy(**options)


def test_policy_defaults():
    assert DiversityPolicy() == DiversityPolicy(rouge_l_threshold=0.7, simhash_max_distance=3, max_regenerations=3)
