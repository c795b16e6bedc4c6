"""HDBSCAN over L2-normalised face embeddings at 100k-face scale, with cannot-link and known persons.

HDBSCAN with `min_samples=1` is single linkage over mutual-reachability distances
(``max(core_a, core_b, d(a, b))``, core = distance to the `min_samples`-th neighbour), condensed
with `min_cluster_size` and cut by excess of mass (EOM). The classic `hdbscan` package builds the
minimum spanning tree (MST) from all n² distances: ~80 s for 10k faces in 512-d, ~340 s for 20k.

What makes it fast here: identity embeddings are well separated (same person cosine ~0.5-0.8,
strangers ~0-0.2), so every MST edge that shapes a cluster joins near neighbours. The MST is built
on a k-nearest-neighbour graph: an inverted-file search (k-means cells in a 64-d PCA projection,
exact 512-d cosine against the points of the nearest cells, both CPU cores) gives the neighbours,
scipy's Kruskal gives the spanning forest, and Borůvka rounds over the same cells add each
remaining component's shortest way out. Condensing and EOM are HDBSCAN's own (fast_hdbscan's numba
kernels, compiled once into numba's on-disk cache and loaded once per process, see `warm_up`).
Inputs up to `EXACT_LIMIT` faces use the exact all-pairs MST and match `hdbscan.HDBSCAN` label for
label. Noise stays noise: nothing is forced into a cluster.

Three options matter for photos (the first is HDBSCAN's own):
- `cluster_selection_epsilon` (distance between unit vectors; 1.0 = cosine 0.5): burst shots and
  duplicates form tiny, extremely dense clusters that EOM would otherwise pick over the person
  they belong to; clusters that split off closer than epsilon are merged back into their parent.
- a single cluster: a batch with one person must give one person, but HDBSCAN never selects its
  root. Here the root may be selected, born at the distance of an unrelated face (cosine 0,
  distance sqrt(2)), as if strangers surrounded the batch; with two or more people it does not win.
- membership: HDBSCAN counts every point below a selected cluster as a member, including one that
  joined it at stranger distance just before the cluster split from the others (in a small batch
  a stranger lands in someone's folder). A point whose link to its cluster is longer than
  `member_distance` (cosine 0.3) is noise instead. Nothing HDBSCAN calls noise becomes a member.

Cannot-link (two faces of one photo are two people) is enforced after selection: in a cluster
holding several faces of one photo the face closest to the cluster's centre stays and the others
move to their next closest cluster above the join threshold, or to noise. Every cluster that lost
or gained a face is then checked again: a face whose closest other member is less similar than
`member_distance` allows is noise, and a cluster left smaller than `min_cluster_size` is
dissolved (strangers on one group photo, grouped by HDBSCAN, are no person once they are apart).
Labels are 0..k-1 with no empty label: a person always has faces.

The spanning tree is built in `mst`; condensing, selection and the rest are here.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from dropflow.engine.cluster.mst import exact_spanning_tree, spanning_tree

ROOT_DISTANCE = math.sqrt(2.0)  # an unrelated face: orthogonal embedding, cosine 0


@dataclass(frozen=True)
class Settings:
    """HDBSCAN parameters (the seed's defaults, plus the options above).

    `member_distance`: a point that joined its cluster farther than this is noise (None: every
    point under a selected cluster is a member, as in hdbscan).
    """

    min_cluster_size: int = 2
    min_samples: int = 1
    cluster_selection_epsilon: float = 1.0
    single_cluster: bool = True
    member_distance: float | None = math.sqrt(2.0 - 2.0 * 0.3)  # cosine 0.3


def cosine_to_distance(similarity: float) -> float:
    """Euclidean distance between unit vectors with this cosine similarity."""
    return math.sqrt(max(0.0, 2.0 - 2.0 * similarity))


def normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def cluster(
    x: np.ndarray,
    settings: Settings = Settings(),
    *,
    groups: np.ndarray | None = None,
    relink_threshold: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """Cluster labels (0..k-1, -1 = noise) for the rows of `x` (L2-normalised here).

    `groups`: one id per row (the photo); rows sharing an id never share a cluster. Evicted rows
    go to their closest other cluster whose centre has cosine >= `relink_threshold`, else noise.
    """
    x = normalise(x)
    n = len(x)
    if n < max(2, settings.min_cluster_size):
        return np.full(n, -1, dtype=np.int64)
    edges = spanning_tree(x, settings.min_samples, seed=seed)
    labels = select(edges, n, settings)
    if groups is not None:
        before = labels
        labels = enforce_cannot_link(x, labels, np.asarray(groups), relink_threshold)
        changed = np.unique(np.concatenate([before[labels != before], labels[labels != before]]))
        labels = recheck(x, labels, changed[changed >= 0], settings)
    return compact(labels)


def recheck(x: np.ndarray, labels: np.ndarray, clusters: np.ndarray, settings: Settings) -> np.ndarray:
    """Check `clusters` again after faces left or joined them (rows of `x` L2-normalised): members
    whose closest other member is farther than `member_distance` become noise, and a cluster
    smaller than `min_cluster_size` is dissolved; repeated until nothing changes."""
    labels = labels.copy()
    floor = None if settings.member_distance is None else 1.0 - settings.member_distance**2 / 2.0
    todo = {int(c) for c in clusters}
    while todo:
        c = todo.pop()
        rows = np.flatnonzero(labels == c)
        if len(rows) < max(2, settings.min_cluster_size):
            labels[rows] = -1
            continue
        if floor is None:
            continue
        best = np.empty(len(rows), dtype=np.float32)
        for s in range(0, len(rows), 2048):  # a person of 10k faces: 2048 x 10k similarities at a time
            sims = x[rows[s : s + 2048]] @ x[rows].T
            sims[np.arange(len(sims)), s + np.arange(len(sims))] = -np.inf  # not itself
            best[s : s + 2048] = sims.max(axis=1)
        far = best < floor
        if far.any():
            labels[rows[far]] = -1
            todo.add(c)  # its other members may have lost their closest one
    return labels


def compact(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..k-1 in order, without empty ones; noise stays -1."""
    used = np.unique(labels[labels >= 0])
    if len(used) == 0 or used[-1] == len(used) - 1:
        return labels
    remap = np.full(int(used[-1]) + 1, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return np.where(labels >= 0, remap[np.maximum(labels, 0)], -1)


# --- condensing and selection ---------------------------------------------------------------------


def select(edges: np.ndarray, n: int, settings: Settings = Settings()) -> np.ndarray:
    """HDBSCAN's condensed tree and excess-of-mass selection over a spanning tree; labels per point."""
    from fast_hdbscan.cluster_trees import condense_tree, mst_to_linkage_tree

    if n < 2:
        return np.full(n, -1, dtype=np.int64)
    edges = np.asarray(edges, dtype=np.float64)
    ordered = edges[np.lexsort((edges[:, 1], edges[:, 0], edges[:, 2]))]
    tree = condense_tree(mst_to_linkage_tree(ordered), min_cluster_size=settings.min_cluster_size)
    return _excess_of_mass(
        np.asarray(tree.parent, dtype=np.int64),
        np.asarray(tree.child, dtype=np.int64),
        np.asarray(tree.lambda_val, dtype=np.float64),
        np.asarray(tree.child_size, dtype=np.float64),
        n,
        settings,
    )


def _excess_of_mass(
    parent: np.ndarray, child: np.ndarray, lam: np.ndarray, size: np.ndarray, n: int, settings: Settings
) -> np.ndarray:
    """EOM over a condensed tree (clusters are numbered n.. in topological order, n = the root).

    The same rules as hdbscan's `get_clusters`: a cluster is kept when its stability is at least
    the summed stability of the best selection below it; epsilon then lifts clusters born closer
    than `cluster_selection_epsilon` to their first ancestor born farther away.
    """
    labels = np.full(n, -1, dtype=np.int64)
    if len(parent) == 0:
        return labels
    m = int(parent.max()) + 1 - n  # clusters, root included
    is_cluster = child >= n
    birth = np.zeros(m)
    birth[child[is_cluster] - n] = lam[is_cluster]
    birth[0] = 1.0 / ROOT_DISTANCE if settings.single_cluster else 0.0
    up = np.full(m, -1, dtype=np.int64)
    up[child[is_cluster] - n] = parent[is_cluster] - n
    # what leaves the root before it is born (farther than an unrelated face) adds nothing
    stability = np.bincount(parent - n, weights=np.maximum(lam - birth[parent - n], 0.0) * size, minlength=m)
    chosen = np.zeros(m, dtype=bool)
    below = np.zeros(m)  # best summed stability of the selection under each cluster
    for c in range(m - 1, -1, -1):  # children have larger numbers than their parents
        if c == 0 and not settings.single_cluster:
            break
        if below[c] > stability[c]:
            stability[c] = below[c]
        else:
            chosen[c] = True
        if c:
            below[up[c]] += stability[c]
    final = _outermost(chosen, up)
    eps = settings.cluster_selection_epsilon
    if eps > 0:
        lifted = np.zeros(m, dtype=bool)
        for c in np.flatnonzero(final).tolist():
            target = c
            # hdbscan's epsilon_search: a cluster born closer than epsilon climbs to the first
            # ancestor born farther than epsilon (strictly), or to the node below the root
            if c != 0 and 1.0 / birth[c] < eps:
                while target != 0:
                    nxt = up[target]
                    if nxt == 0 and not settings.single_cluster:
                        break
                    target = nxt
                    if target == 0 or 1.0 / birth[target] > eps:
                        break
            lifted[target] = True
        final = _outermost(lifted, up)
    # each point belongs to the selected cluster above the cluster it fell out of, if any
    owner = np.full(m, -1, dtype=np.int64)
    owner[0] = 0 if final[0] else -1
    for c in range(1, m):
        owner[c] = c if final[c] else owner[up[c]]
    points = ~is_cluster
    member = owner[parent[points] - n]
    if final[0]:
        # a selected root: points that left it before it was born are noise
        early = (parent[points] == n) & (lam[points] < birth[0])
        member = np.where(early, -1, member)
    if settings.member_distance is not None:
        member = np.where(lam[points] < 1.0 / settings.member_distance, -1, member)
    ids = np.flatnonzero(final)
    remap = np.full(m, -1, dtype=np.int64)
    remap[ids] = np.arange(len(ids))
    labels[child[points]] = np.where(member >= 0, remap[np.maximum(member, 0)], -1)
    return labels


def _outermost(chosen: np.ndarray, up: np.ndarray) -> np.ndarray:
    """Chosen clusters with no chosen ancestor (an ancestor's selection covers its subtree)."""
    covered = np.zeros(len(chosen), dtype=bool)
    final = np.zeros(len(chosen), dtype=bool)
    final[0] = covered[0] = bool(chosen[0])
    for c in range(1, len(chosen)):
        if covered[up[c]]:
            covered[c] = True
        elif chosen[c]:
            final[c] = covered[c] = True
    return final


_warm_lock = threading.Lock()
_warmed = False


def warm_up() -> None:
    """Load the numba kernels (from numba's disk cache; compiled there on first use ever).

    Once per process: the daemon starts it at start-up and the cluster engine again at its first
    job; that second call waits for the first (up to a minute of compiling on a fresh install)
    instead of compiling beside it, and later calls return at once.

    Raises:
        ModelMissingError: fast_hdbscan (or threadpoolctl) is not installed.
    """
    global _warmed
    with _warm_lock:
        if not _warmed:
            _warm_up()
            _warmed = True


def _warm_up() -> None:
    from dropflow.engine.errors import ModelMissingError

    try:
        import fast_hdbscan.cluster_trees  # noqa: F401
        import threadpoolctl  # noqa: F401
    except ImportError as exc:
        raise ModelMissingError(
            f"the clustering needs {exc.name or 'fast_hdbscan'}, which is not installed",
            hint="pip install fast_hdbscan threadpoolctl (see pyproject.toml)",
        ) from exc
    x = normalise(np.random.default_rng(0).standard_normal((8, 4)))
    select(exact_spanning_tree(x), len(x))


# --- cannot-link, centres, known persons ------------------------------------------------------------


def centres(x: np.ndarray, labels: np.ndarray, count: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean embedding and size of each cluster 0..count-1 (means are not normalised)."""
    count = int(labels.max()) + 1 if count is None else count
    keep = labels >= 0
    sums = np.zeros((count, x.shape[1]), dtype=np.float64)
    np.add.at(sums, labels[keep], x[keep])
    sizes = np.bincount(labels[keep], minlength=count)
    return (sums / np.maximum(sizes, 1)[:, None]).astype(np.float32), sizes


def enforce_cannot_link(
    x: np.ndarray, labels: np.ndarray, groups: np.ndarray, threshold: float
) -> np.ndarray:
    """At most one row per group in each cluster (see the module docstring)."""
    labels = labels.copy()
    if labels.max(initial=-1) < 0:
        return labels
    mean, _ = centres(x, labels)
    unit = normalise(mean)
    clustered = np.flatnonzero(labels >= 0)
    own = np.einsum("ij,ij->i", x[clustered], unit[labels[clustered]])
    # sort by (cluster, group, closeness descending): the first of each run stays
    order = np.lexsort((-own, groups[clustered], labels[clustered]))
    rows = clustered[order]
    same = (labels[rows][1:] == labels[rows][:-1]) & (groups[rows][1:] == groups[rows][:-1])
    evicted = rows[1:][same]
    if len(evicted) == 0:
        return labels
    taken = {(int(labels[r]), groups[r]) for r in rows}
    for r in evicted:
        labels[r] = -1
    sims = x[evicted] @ unit.T
    for r, s in zip(evicted, sims, strict=True):
        for c in np.argsort(-s):
            if s[c] < threshold:
                break
            if (int(c), groups[r]) not in taken:
                labels[r] = c
                taken.add((int(c), groups[r]))
                break
    return labels


def assign_to_known(
    x: np.ndarray, groups: np.ndarray, known: np.ndarray, threshold: float, chunk: int = 8192
) -> np.ndarray:
    """Index of the known centre each row joins (cosine >= threshold), or -1.

    Rows of one group go to different centres: the closer pair is served first.
    """
    n = len(x)
    out = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(known) == 0:
        return out
    unit = normalise(known)
    top = min(4, len(unit))
    cand = np.empty((n, top), dtype=np.int64)
    score = np.empty((n, top), dtype=np.float32)
    for s in range(0, n, chunk):
        sims = x[s : s + chunk] @ unit.T
        idx = np.argsort(-sims, axis=1)[:, :top]
        cand[s : s + chunk] = idx
        score[s : s + chunk] = np.take_along_axis(sims, idx, axis=1)
    # greedy by closeness, one centre per group
    flat = np.argsort(-score, axis=None)
    taken: set[tuple[object, int]] = set()
    for f in flat:
        r, j = divmod(int(f), top)
        if score[r, j] < threshold:
            break
        if out[r] >= 0:
            continue
        key = (groups[r], int(cand[r, j]))
        if key in taken:
            continue
        out[r] = cand[r, j]
        taken.add(key)
    return out
