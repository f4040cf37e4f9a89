"""Keyword (BM25-style) sparse vectors, computed here so any Qdrant can store them.

A document's vector holds, per term, BM25's saturated term frequency
`tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avg_length))`; the collection's sparse
vectors use Qdrant's IDF modifier, which multiplies in each term's inverse document
frequency at query time. A query's vector is 1 per distinct term, so the dot product is the
BM25 score. Term ids are a stable 31-bit hash of the term (`hash()` is salted per process).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass

_K1 = 1.2
_B = 0.75
_AVG_LENGTH = 90.0  # terms per chunk at the default 800 characters, stop words removed
_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers him his how i if in into is it its itself
    just me more most my no nor not now of off on once only or other our ours out over own
    same she should so some such than that the their theirs them then there these they this
    those through to too under until up very was we were what when where which while who whom
    why will with would you your yours""".split()  # noqa: SIM905 - a list literal is 140 lines
)


@dataclass(frozen=True, slots=True)
class SparseVector:
    indices: list[int]
    values: list[float]


def terms(text: str) -> list[str]:
    """Lower-cased word tokens without stop words, with a light plural fold."""
    found = []
    for token in _TOKEN.findall(text.lower()):
        if token in _STOPWORDS:
            continue
        if len(token) > 3 and token.endswith("s") and not token.endswith("ss"):
            token = token[:-1]
        found.append(token)
    return found


def term_id(term: str) -> int:
    return int.from_bytes(hashlib.blake2b(term.encode(), digest_size=4).digest(), "big") >> 1


def document_vector(text: str) -> SparseVector:
    counts = Counter(term_id(term) for term in terms(text))
    length = sum(counts.values())
    norm = _K1 * (1 - _B + _B * length / _AVG_LENGTH)
    indices = sorted(counts)
    return SparseVector(
        indices=indices,
        values=[counts[i] * (_K1 + 1) / (counts[i] + norm) for i in indices],
    )


def query_vector(text: str) -> SparseVector:
    indices = sorted({term_id(term) for term in terms(text)})
    return SparseVector(indices=indices, values=[1.0] * len(indices))
