import numpy as np

from flows.ingest.identity import patient_key
from flows.ingest.splits import KnownImage, SplitAssigner


def _assigner(**overrides):
    options = dict(test_fraction=0.5, test_only_organs=("thyroid",), near_duplicate_distance=6)
    return SplitAssigner(**{**options, **overrides})


def test_near_duplicates_join_the_group_and_its_split():
    assigner = _assigner()
    assigner.remember(KnownImage("a" * 64, "breast", "a1" * 32, "ffffffff00000000", "test", "a" * 64))
    split, group = assigner.assign("b" * 64, "breast", "b2" * 32, "ffffffff0000000f")  # 4 bits apart
    assert (split, group) == ("test", "a" * 64)
    split, group = assigner.assign("c" * 64, "breast", "c3" * 32, "00000000ffffffff")  # far away
    assert group == "c" * 64


def test_near_duplicates_of_another_organ_do_not_join_its_group():
    """Sector scans of different organs share a pHash neighbourhood: the geometry, not the image."""
    assigner = _assigner()
    assigner.remember(KnownImage("a" * 64, "liver", "a1" * 32, "ffffffff00000000", "train", "a" * 64))
    split, group = assigner.assign("b" * 64, "thyroid", "b2" * 32, "ffffffff0000000f")  # 4 bits apart
    assert (split, group) == ("test", "b" * 64)
    split, group = assigner.assign("c" * 64, "liver", "c3" * 32, "ffffffff00000003")
    assert group == "a" * 64


def test_a_patient_never_straddles_splits_even_through_a_near_duplicate():
    assigner = _assigner()
    assigner.remember(KnownImage("a" * 64, "liver", "p1" * 32, "ffffffff00000000", "train", "a" * 64))
    assigner.remember(KnownImage("b" * 64, "liver", "p2" * 32, "0000ffff0000ffff", "test", "b" * 64))
    split, group = assigner.assign("c" * 64, "liver", "p2" * 32, "ffffffff00000001")  # near a, patient of b
    assert (split, group) == ("test", "c" * 64)


def test_a_patients_images_share_a_split():
    assigner = _assigner()
    first, _ = assigner.assign("a" * 64, "liver", "d9" * 32, "0123456789abcdef")
    second, _ = assigner.assign("b" * 64, "liver", "d9" * 32, "fedcba9876543210")
    assert first == second


def test_test_only_organs_and_fixed_test_count():
    assigner = _assigner(test_count_per_organ=3)
    hashes = [f"{h:016x}" for h in np.random.default_rng(0).integers(0, 2**63, 10)]  # far apart
    splits = [assigner.assign(f"{i:064x}", "breast", patient_key(b"s", f"P{i}", ""), hashes[i])[0] for i in range(10)]
    assert splits.count("test") == 3 and splits[:3] == ["test"] * 3
    assert assigner.assign("f" * 64, "thyroid", "e5" * 32, "1111222233334444")[0] == "test"


def test_remembered_splits_are_never_redrawn():
    assigner = _assigner(test_fraction=0.0)  # a fresh draw would always say train
    assigner.remember(KnownImage("a" * 64, "liver", "a1" * 32, "0000000000000000", "test", None))
    assert assigner.assign("b" * 64, "liver", "a1" * 32, "ffffffffffffffff")[0] == "test"


def test_a_test_only_organ_stays_test_even_for_a_patient_seen_in_train():
    assigner = _assigner(test_fraction=0.0)
    assert assigner.assign("a" * 64, "breast", "ab" * 32, "0000000000000000")[0] == "train"
    assert assigner.assign("b" * 64, "thyroid", "ab" * 32, "ffffffffffffffff")[0] == "test"
