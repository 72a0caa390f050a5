"""Near-duplicate detection of teacher rationales within one (organ, attribute) group.

After EchoVLM: two rationales are near-duplicates when their ROUGE-L F1 (on lower-case word tokens) is at least
``rouge_l_threshold`` or the Hamming distance of their 64-bit SimHashes (word 3-gram shingles) is at most
``simhash_max_distance``. A rejected rationale may be regenerated up to ``max_regenerations`` times.

`near_duplicates` is a greedy filter with a fixed order: keys are visited sorted, and an item is rejected when it
is a near-duplicate of an earlier *accepted* item. The result depends only on the mapping's contents, never on its
insertion order, which is what a resumed run needs.

A group holds up to a few thousand rationales, i.e. millions of pairs, so each new item is compared with all
accepted items at once in numpy: SimHash distances by popcount, two necessary bounds on ROUGE-L (length ratio and
multiset token overlap, the latter from a token-by-text count matrix), and the exact LCS of the survivors by the
bit-parallel algorithm with one row of uint64 limbs per candidate.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

TOKEN_RE = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")

_LIMB_BITS = 64
_LIMB_MASK = (1 << _LIMB_BITS) - 1
_BIT_SHIFTS = np.arange(_LIMB_BITS, dtype=np.uint64)
_SCALAR_LANES = 8  # up to this many LCS candidates, the Python big-int LCS beats the vectorised one


def tokens(text: str) -> list[str]:
    """Lower-case word tokens of ``text``: letters and digits, with inner hyphens and apostrophes kept."""
    return TOKEN_RE.findall(text.lower())


def lcs_length(a: Sequence[int | str], b: Sequence[int | str]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (bit-parallel, Allison–Dix / Hyyrö)."""
    if len(a) < len(b):
        a, b = b, a  # Python loops over b, while a lives in one big int: keep the loop the short side
    if not b:
        return 0
    match: dict[int | str, int] = {}
    for position, item in enumerate(a):
        match[item] = match.get(item, 0) | (1 << position)
    full = (1 << len(a)) - 1
    v = full  # a set bit is a position of a that the LCS of the prefix read so far has not used
    for item in b:
        u = v & match.get(item, 0)
        if u:  # with no match the update (v + 0) | (v - 0) leaves v unchanged
            v = ((v + u) | (v - u)) & full  # the mask drops the carry out of the top position
    return len(a) - v.bit_count()


def _f1(lcs: int, m: int, n: int) -> float:
    # With beta = 1, 2PR / (P + R) where P = lcs / n and R = lcs / m reduces to 2 lcs / (m + n); one formula
    # for the scalar and the vectorised paths keeps their floats identical.
    return 2 * lcs / (m + n)


def rouge_l(a: str, b: str) -> float:
    """ROUGE-L F1 (beta = 1) of two texts on `tokens`; 0.0 when either has no tokens."""
    tokens_a, tokens_b = tokens(a), tokens(b)
    if not tokens_a or not tokens_b:
        return 0.0
    return _f1(lcs_length(tokens_a, tokens_b), len(tokens_a), len(tokens_b))


def _shingles(words: Sequence[str], shingle: int) -> list[str]:
    if len(words) < shingle:
        return list(words)  # too short for one shingle: unigrams still tell short texts apart
    return [" ".join(words[i : i + shingle]) for i in range(len(words) - shingle + 1)]


def _simhashes(token_lists: Sequence[Sequence[str]], shingle: int) -> np.ndarray:
    # All texts in one pass: per-text numpy calls would cost more than the hashing itself
    grams = [_shingles(words, shingle) for words in token_lists]
    sizes = np.array([len(g) for g in grams], dtype=np.int64)
    result = np.zeros(len(grams), dtype=np.uint64)  # a text without tokens hashes to 0
    if not sizes.sum():
        return result
    # blake2b rather than hash(): str hashes are salted per process, and SimHashes must survive a resumed run
    digests = b"".join(hashlib.blake2b(g.encode("utf-8"), digest_size=8).digest() for gs in grams for g in gs)
    hashes = np.frombuffer(digests, dtype=">u8").astype(np.uint64)
    bits = ((hashes[:, None] >> _BIT_SHIFTS) & np.uint64(1)).astype(np.int64)
    nonempty = np.flatnonzero(sizes)
    starts = (np.cumsum(sizes) - sizes)[nonempty]
    ones = np.add.reduceat(bits, starts, axis=0)
    majority = 2 * ones > sizes[nonempty, None]  # +1 per set bit, -1 per clear bit; a tie gives 0
    packed = np.packbits(majority, axis=1, bitorder="little")  # bit k of the hash -> bit k of 8 little-endian bytes
    result[nonempty] = packed.view("<u8")[:, 0]
    return result


def simhash(text: str, *, shingle: int = 3) -> int:
    """64-bit SimHash of ``text`` over word ``shingle``-grams (unigrams when the text is shorter), via blake2b."""
    if shingle < 1:
        raise ValueError(f"shingle must be at least 1, got {shingle}")
    return int(_simhashes([tokens(text)], shingle)[0])


def hamming(a: int, b: int) -> int:
    """Number of differing bits of two non-negative integers."""
    return (a ^ b).bit_count()


@dataclass(frozen=True)
class DiversityPolicy:
    """When two rationales of one group count as near-duplicates, and how often a rejected one is regenerated."""

    rouge_l_threshold: float = 0.7
    simhash_max_distance: int = 3
    max_regenerations: int = 3

    def __post_init__(self) -> None:
        # `not (0 < x <= 1)` rather than `x <= 0 or x > 1` so that NaN is refused too
        if not 0.0 < self.rouge_l_threshold <= 1.0:
            raise ValueError(f"rouge_l_threshold must be in (0, 1], got {self.rouge_l_threshold}")
        if not 0 <= self.simhash_max_distance <= _LIMB_BITS:
            raise ValueError(f"simhash_max_distance must be in 0..64 bits, got {self.simhash_max_distance}")
        if self.max_regenerations < 0:
            raise ValueError(f"max_regenerations must be >= 0, got {self.max_regenerations}")


def _limbs(value: int, count: int) -> list[int]:
    return [(value >> (_LIMB_BITS * k)) & _LIMB_MASK for k in range(count)]


def _add_limbs(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # Row-wise x + y of multi-limb numbers (limb 0 lowest); uint64 arrays wrap silently, so carries are the
    # limbs whose sum came out below an addend, plus limbs pushed over by an incoming carry.
    total = x + y
    carry = total < x
    for k in range(1, total.shape[1]):
        incoming = carry[:, k - 1]
        total[:, k] += incoming
        carry[:, k] |= incoming & (total[:, k] == 0)
    return total


class _Index:
    """Token ids, lengths, SimHashes, token counts and per-text position bit masks of one group's texts."""

    def __init__(self, token_lists: Sequence[Sequence[str]], shingle: int = 3) -> None:
        vocab: dict[str, int] = {}
        self.seqs = [[vocab.setdefault(t, len(vocab)) for t in words] for words in token_lists]
        self.lengths = np.array([len(words) for words in token_lists], dtype=np.int64)
        self.sims = _simhashes(token_lists, shingle)
        longest = int(self.lengths.max()) if len(token_lists) else 0
        self.limbs = max(1, -(-longest // _LIMB_BITS))
        token_ids: list[int] = []
        counts: list[int] = []
        masks: list[list[int]] = []
        self.full = np.zeros((len(token_lists), self.limbs), dtype=np.uint64)
        for doc, seq in enumerate(self.seqs):
            positions: dict[int, int] = {}
            for position, token_id in enumerate(seq):
                positions[token_id] = positions.get(token_id, 0) | (1 << position)
            token_ids.extend(positions)
            counts.extend(mask.bit_count() for mask in positions.values())
            masks.extend(_limbs(mask, self.limbs) for mask in positions.values())
            self.full[doc] = _limbs((1 << len(seq)) - 1, self.limbs)
        # One row per (text, distinct token), texts in order: the rows of text j are offsets[j]:offsets[j + 1]
        distinct = np.array([len(set(seq)) for seq in self.seqs], dtype=np.int64)
        self.offsets = np.zeros(len(self.seqs) + 1, dtype=np.int64)
        np.cumsum(distinct, out=self.offsets[1:])
        self.entry_token = np.array(token_ids, dtype=np.int64)
        self.entry_count = np.array(counts, dtype=np.int64)
        self.entry_mask = np.array(masks, dtype=np.uint64).reshape(-1, self.limbs)
        self.vocabulary_size = len(vocab)
        # Dense token-by-text counts for the overlap bound, which every accepted item goes through: a gather of
        # (query tokens x candidates) beats walking the candidates' entries. The narrowest dtype keeps it small
        # (3,000 texts x 5,000 distinct words is 15 MB of uint8).
        dtype = np.min_scalar_type(int(self.entry_count.max()) if len(counts) else 0)
        self.counts = np.zeros((len(vocab), len(self.seqs)), dtype=dtype)
        self.counts[self.entry_token, np.repeat(np.arange(len(self.seqs)), distinct)] = self.entry_count

    def _entries(self, unique: np.ndarray, docs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # The docs' entries whose token the query has, as (entry index, lane = position in docs, query token row)
        starts = self.offsets[docs]
        sizes = self.offsets[docs + 1] - starts
        lanes = np.repeat(np.arange(len(docs)), sizes)
        entries = np.arange(int(sizes.sum()), dtype=np.int64) + np.repeat(starts - np.cumsum(sizes) + sizes, sizes)
        row_of_token = np.full(self.vocabulary_size, -1, dtype=np.int64)
        row_of_token[unique] = np.arange(len(unique))
        rows = row_of_token[self.entry_token[entries]]
        keep = rows >= 0
        return entries[keep], lanes[keep], rows[keep]

    def overlap(self, query: Sequence[int], docs: np.ndarray) -> np.ndarray:
        """Multiset token overlap (sum of per-token minimum counts) of the query with each of ``docs``."""
        if not len(docs) or not len(query):
            return np.zeros(len(docs), dtype=np.int64)
        unique, query_counts = np.unique(np.asarray(query, dtype=np.int64), return_counts=True)
        shared = np.minimum(self.counts[np.ix_(unique, docs)], query_counts[:, None])
        return shared.sum(axis=0, dtype=np.int64)

    def lcs(self, query: Sequence[int], docs: np.ndarray) -> np.ndarray:
        """LCS length of the query (token ids) with each of ``docs``, all lanes advanced together."""
        if not len(docs) or not len(query):
            return np.zeros(len(docs), dtype=np.int64)
        unique, query_rows = np.unique(np.asarray(query, dtype=np.int64), return_inverse=True)
        entries, lanes, rows = self._entries(unique, docs)
        limbs = max(1, -(-int(self.lengths[docs].max()) // _LIMB_BITS))  # only as many limbs as these docs need
        match = np.zeros((len(unique), len(docs), limbs), dtype=np.uint64)
        match[rows, lanes] = self.entry_mask[entries, :limbs]
        full = self.full[docs, :limbs]
        v = full.copy()
        present = np.zeros(len(unique), dtype=bool)
        present[rows] = True
        for row in query_rows[present[query_rows]].tolist():  # a token absent from every doc leaves v unchanged
            u = v & match[row]
            total = v + u if limbs == 1 else _add_limbs(v, u)
            v = (total | (v - u)) & full  # u is a subset of v limb by limb, so v - u never borrows
        return self.lengths[docs] - np.bitwise_count(v).sum(axis=1, dtype=np.int64)


def _first_rouge_match(index: _Index, i: int, candidates: np.ndarray, threshold: float) -> tuple[int, float] | None:
    # The earliest candidate whose ROUGE-L F1 with text i reaches the threshold, with that F1
    query, m = index.seqs[i], int(index.lengths[i])
    if candidates.size <= _SCALAR_LANES:
        # A few numpy calls per token cost more than a whole scalar LCS: stay in Python, stop at the first hit
        for j in candidates.tolist():
            score = _f1(lcs_length(query, index.seqs[j]), m, int(index.lengths[j]))
            if score >= threshold:
                return j, score
        return None
    lcs = index.lcs(query, candidates)
    hits = np.flatnonzero(2 * lcs / (index.lengths[candidates] + m) >= threshold)
    if not hits.size:
        return None
    j = int(candidates[hits[0]])
    return j, _f1(int(lcs[hits[0]]), m, int(index.lengths[j]))


def near_duplicates(texts: Mapping[str, str], policy: DiversityPolicy) -> dict[str, tuple[str, str, float]]:
    """Rejected ids mapped to (kept id, "simhash" or "rouge_l", distance or F1), greedily over sorted ids."""
    keys = sorted(texts)
    index = _Index([tokens(texts[key]) for key in keys])
    threshold = policy.rouge_l_threshold
    accepted = np.empty(len(keys), dtype=np.int64)  # indices into keys, ascending
    n_accepted = 0
    result: dict[str, tuple[str, str, float]] = {}
    for i, key in enumerate(keys):
        kept = accepted[:n_accepted]
        distances = np.bitwise_count(index.sims[kept] ^ index.sims[i])
        simhash_hits = np.flatnonzero(distances <= policy.simhash_max_distance)
        # The first accepted item that matches either way claims the duplicate, SimHash checked first per pair:
        # only accepted items before the first SimHash match can still win, so only they need an LCS.
        stop = int(simhash_hits[0]) if simhash_hits.size else n_accepted
        m = int(index.lengths[i])
        candidates = kept[:stop]
        if m and candidates.size:
            lengths = index.lengths[candidates]
            # Necessary bounds, as F1 = 2 lcs / (m + n): lcs <= min(m, n) and lcs <= the multiset token overlap
            candidates = candidates[2 * np.minimum(lengths, m) / (lengths + m) >= threshold]
            if candidates.size > _SCALAR_LANES:
                overlap = index.overlap(index.seqs[i], candidates)
                candidates = candidates[2 * overlap / (index.lengths[candidates] + m) >= threshold]
            match = _first_rouge_match(index, i, candidates, threshold)
            if match is not None:
                j, score = match
                result[key] = (keys[j], "rouge_l", score)
                continue
        if simhash_hits.size:
            result[key] = (keys[int(kept[stop])], "simhash", float(distances[stop]))
            continue
        accepted[n_accepted] = i
        n_accepted += 1
    return result


if __name__ == "__main__":  # micro-benchmark: python -m flows.teacher.diversity [count]
    import random
    import sys
    import time

    rng = random.Random(0)
    clauses = [  # each part of a rationale has a few phrasings, so texts share structure but not wording
        ["the {o} lesion is {s} in shape on this image", "an {s} {o} mass is seen in the scanned field"],
        ["with {m} margins along most of its border", "and its margins appear {m} at the edges", "margin {m}"],
        ["it is {e} compared with the surrounding tissue", "the echo pattern is {e} throughout the lesion"],
        ["posterior features show {p}", "behind it there is {p} in the deeper tissue", "with {p} deep to it"],
        ["measuring about {n} mm in its longest axis", "roughly {n} mm across on this view", "size {n} mm"],
        ["so overall this favours {v}", "which points to {v} for this case", "consistent with {v}"],
    ]
    fill = {
        "o": ["breast", "thyroid", "liver", "kidney", "axillary"],
        "s": ["oval", "round", "irregular", "lobulated", "ovoid", "taller-than-wide"],
        "m": ["circumscribed", "indistinct", "angular", "microlobulated", "spiculated", "ill-defined"],
        "e": ["hypoechoic", "isoechoic", "hyperechoic", "anechoic", "heterogeneous", "complex cystic"],
        "p": ["enhancement", "shadowing", "no change", "combined features", "a mixed pattern"],
        "n": [str(k) for k in range(4, 60)],
        "v": ["a benign lesion", "a probably benign lesion", "a suspicious lesion", "malignancy", "a simple cyst"],
    }
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    texts = {}
    for k in range(count):
        parts = [rng.choice(options) for options in rng.sample(clauses, len(clauses))]
        texts[f"item-{k:05d}"] = ", ".join(parts).format(**{key: rng.choice(v) for key, v in fill.items()}) + "."
    start = time.perf_counter()
    rejected = near_duplicates(texts, DiversityPolicy())
    elapsed = time.perf_counter() - start
    pairs, words = count * (count - 1) // 2, sum(len(tokens(t)) for t in texts.values()) / count
    print(f"{count} texts (~{words:.0f} words), {len(rejected)} rejected, {elapsed:.3f} s")
    print(f"{pairs / elapsed:,.0f} pairs/s ({pairs:,} pairs nominal)")
