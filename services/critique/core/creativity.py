"""TTCT's fluency, flexibility and originality, measured on a response's ideas with sentence
embeddings (unit-normalised vectors, so a dot product is a cosine similarity)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

_BULLET = re.compile(r"^\s*(?:[-*•]+|\(?\d+[.)]|\(?[a-zA-Z][.)])\s+")
_SENTENCE = re.compile(r"(?<=[.!?;])\s+")


def split_ideas(response: str, max_ideas: int = 64) -> list[str]:
    """A response's ideas: its non-empty lines without list markers, or its sentences when it is
    a single line; at most ``max_ideas``."""
    lines = [_BULLET.sub("", line).strip() for line in response.splitlines()]
    ideas = [line for line in lines if line]
    if len(ideas) == 1:
        ideas = [s.strip() for s in _SENTENCE.split(ideas[0]) if s.strip()]
    return ideas[:max_ideas]


@dataclass(frozen=True)
class CreativityConfig:
    #: Two ideas at least this similar are one idea (fluency counts it once).
    duplicate_similarity: float = 0.85
    #: Average-linkage clusters are cut where the mean similarity drops below this (flexibility).
    cluster_similarity: float = 0.5


@dataclass(frozen=True)
class CreativityMeasures:
    ideas: list[str]
    distinct: list[int]  # indexes of the distinct ideas, in order of appearance
    fluency: int
    flexibility: int
    originality: float
    cluster_of: list[int]  # cluster label per distinct idea


def distinct_ideas(vectors: np.ndarray, duplicate_similarity: float) -> list[int]:
    """Greedy, in order: an idea is kept unless it is a near duplicate of one already kept."""
    kept: list[int] = []
    for i in range(len(vectors)):
        if not kept or float(np.max(vectors[kept] @ vectors[i])) < duplicate_similarity:
            kept.append(i)
    return kept


def idea_clusters(vectors: np.ndarray, cluster_similarity: float) -> list[int]:
    """Average-linkage clusters over cosine distance, cut at 1 - ``cluster_similarity``."""
    if len(vectors) == 0:
        return []
    if len(vectors) == 1:
        return [1]
    distances = np.clip(pdist(vectors.astype(np.float64), metric="cosine"), 0.0, 2.0)
    tree = linkage(distances, method="average")
    return [int(c) for c in fcluster(tree, t=1.0 - cluster_similarity, criterion="distance")]


def originality(vectors: np.ndarray, common: np.ndarray) -> float:
    """Mean over ideas of the cosine distance to the nearest common answer (0: a common answer)."""
    if len(vectors) == 0 or len(common) == 0:
        return 0.0
    nearest = np.max(vectors @ common.T, axis=1)
    return float(np.mean(1.0 - nearest))


def measure(
    ideas: list[str], idea_vectors: np.ndarray, common_vectors: np.ndarray, config: CreativityConfig
) -> CreativityMeasures:
    distinct = distinct_ideas(idea_vectors, config.duplicate_similarity)
    kept = idea_vectors[distinct]
    clusters = idea_clusters(kept, config.cluster_similarity)
    return CreativityMeasures(
        ideas=ideas,
        distinct=distinct,
        fluency=len(distinct),
        flexibility=len(set(clusters)),
        originality=originality(kept, common_vectors),
        cluster_of=clusters,
    )
