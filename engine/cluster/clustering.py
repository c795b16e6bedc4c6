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
move to their next closest cluster above the join threshold, or to noise.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

EXACT_LIMIT = 4000  # up to this many faces: exact all-pairs MST (a 128 MB distance matrix)
ROOT_DISTANCE = math.sqrt(2.0)  # an unrelated face: orthogonal embedding, cosine 0
BRIDGE = 2.0  # the largest distance between two unit vectors: joins what nothing else joins
KNN = 10  # neighbours per face in the approximate graph
PCA_DIMS = 64
CELL = 128  # mean points per k-means cell
PROBES = 4  # cells searched per cell (its own and the nearest others)
LINK_QUERIES = 16  # points per component searching for its way out


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
        labels = enforce_cannot_link(x, labels, np.asarray(groups), relink_threshold)
    return labels


# --- the spanning tree ------------------------------------------------------------------------------


def spanning_tree(x: np.ndarray, min_samples: int = 1, *, seed: int = 0) -> np.ndarray:
    """Minimum spanning tree of the mutual-reachability graph: (n-1, 3) rows of (a, b, distance)."""
    if len(x) <= EXACT_LIMIT:
        return exact_spanning_tree(x, min_samples)
    return _approximate_spanning_tree(x, min_samples, seed)


def _distances(sims: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(2.0 - 2.0 * sims.astype(np.float64), 0.0))


def exact_spanning_tree(x: np.ndarray, min_samples: int = 1) -> np.ndarray:
    """Prim's algorithm over all pairs, as hdbscan does it (O(n²) time, one n x n matrix)."""
    n = len(x)
    d = _distances(x @ x.T)
    np.fill_diagonal(d, np.inf)
    k = min(max(1, min_samples), n - 1)
    core = np.partition(d, k - 1, axis=1)[:, k - 1]
    in_tree = np.zeros(n, dtype=bool)
    best = np.full(n, np.inf)
    link = np.zeros(n, dtype=np.int64)
    edges = np.empty((n - 1, 3))
    current = 0
    in_tree[0] = True
    for i in range(n - 1):
        row = np.maximum(np.maximum(d[current], core), core[current])
        closer = row < best
        best[closer] = row[closer]
        link[closer] = current
        best[in_tree] = np.inf
        nxt = int(np.argmin(best))
        edges[i] = (link[nxt], nxt, best[nxt])
        in_tree[nxt] = True
        current = nxt
    return edges


class _Workers:
    """Every core, each worker with single-threaded BLAS.

    The products here are many and small (a cell of a few hundred rows): one worker per core
    each doing its own product and top-k keeps both cores busy, and OpenBLAS's own threads, on a
    shared machine, spin: a 512x512 eigendecomposition takes 2 s with two of them, 0.05 s with one.
    """

    def __init__(self) -> None:
        self.count = max(1, min(4, len(os.sched_getaffinity(0))))
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> _Workers:
        from threadpoolctl import threadpool_limits

        self._stack.enter_context(threadpool_limits(1))
        self.pool = self._stack.enter_context(
            ThreadPoolExecutor(self.count, thread_name_prefix="dropflow-hdbscan")
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def run(self, work: Callable[[int], None], items: Sequence[int], cost: np.ndarray | None = None) -> None:
        """`work(item)` for every item, the costliest first, spread over the workers."""
        ordered = sorted(items, key=lambda i: -cost[i]) if cost is not None else list(items)
        parts = [ordered[i :: self.count] for i in range(self.count)]

        def loop(part: list[int]) -> None:
            for item in part:
                work(item)

        list(self.pool.map(loop, parts))


class _Cells:
    """An inverted file: points grouped by their k-means cell (in a PCA projection)."""

    def __init__(self, x: np.ndarray, rng: np.random.Generator, workers: _Workers) -> None:
        n, dim = x.shape
        sample = x[rng.choice(n, min(n, 20_000), replace=False)]
        mean = sample.mean(axis=0)
        centred = sample - mean
        _, vectors = np.linalg.eigh(centred.T @ centred)
        basis = np.ascontiguousarray(vectors[:, ::-1][:, : min(PCA_DIMS, dim)], dtype=np.float32)
        p = x @ basis
        p -= mean @ basis
        count = max(2, n // CELL)
        centres = _kmeans(p[rng.choice(n, min(n, 32 * count), replace=False)], count, rng, workers)
        cell = _nearest_centre(p, centres, workers)
        self.order = np.argsort(cell, kind="stable")
        self.starts = np.searchsorted(cell[self.order], np.arange(count + 1))
        self.x = x[self.order]  # points of one cell are contiguous
        half = 0.5 * (centres * centres).sum(axis=1)
        closeness = centres @ centres.T - half[:, None] - half[None, :]
        np.fill_diagonal(closeness, np.inf)  # a cell's own points come first among its candidates
        probes = min(PROBES, count)
        near = np.argpartition(-closeness, probes - 1, axis=1)[:, :probes]
        self.near = [np.concatenate([[c], near[c][near[c] != c]]) for c in range(count)]
        self.count = count

    def members(self, c: int) -> tuple[int, int]:
        return int(self.starts[c]), int(self.starts[c + 1])

    def candidates(self, c: int) -> np.ndarray:
        """Positions (in cell order) of the points searched for queries of cell `c`, own cell first."""
        return np.concatenate([np.arange(self.starts[j], self.starts[j + 1]) for j in self.near[c]])

    def cost(self) -> np.ndarray:
        sizes = np.diff(self.starts)
        return sizes * np.array([sizes[nb].sum() for nb in self.near])


def _kmeans(
    p: np.ndarray, count: int, rng: np.random.Generator, workers: _Workers, iterations: int = 5
) -> np.ndarray:
    centres = p[rng.choice(len(p), count, replace=False)].copy()
    for _ in range(iterations):
        cell = _nearest_centre(p, centres, workers)
        order = np.argsort(cell, kind="stable")
        sizes = np.bincount(cell, minlength=count)
        used = np.flatnonzero(sizes)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        centres[used] = np.add.reduceat(p[order], starts[used], axis=0) / sizes[used, None]
        empty = sizes == 0
        if empty.any():  # reseed empty cells on random points
            centres[empty] = p[rng.choice(len(p), int(empty.sum()), replace=False)]
    return centres


def _nearest_centre(p: np.ndarray, centres: np.ndarray, workers: _Workers, chunk: int = 8192) -> np.ndarray:
    half = 0.5 * (centres * centres).sum(axis=1)
    out = np.empty(len(p), dtype=np.int64)

    def one(s: int) -> None:
        out[s : s + chunk] = np.argmax(p[s : s + chunk] @ centres.T - half, axis=1)

    workers.run(one, range(0, len(p), chunk))
    return out


def knn_graph(
    x: np.ndarray, k: int, workers: _Workers, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, _Cells]:
    """Approximate k nearest neighbours: (indices, cosine similarities), both (n, k), -1 / -inf unset."""
    rng = np.random.default_rng(seed)
    cells = _Cells(x, rng, workers)
    n = len(x)
    nbr = np.full((n, k), -1, dtype=np.int64)
    sim = np.full((n, k), -np.inf, dtype=np.float32)

    def search(c: int) -> None:
        a, b = cells.members(c)
        if a == b:
            return
        cand = cells.candidates(c)
        s = cells.x[a:b] @ cells.x[cand].T
        m = b - a
        s[np.arange(m), np.arange(m)] = -np.inf  # itself
        kk = min(k, s.shape[1] - 1)
        if kk <= 0:
            return
        top = np.argpartition(s, s.shape[1] - kk, axis=1)[:, -kk:]
        nbr[a:b, :kk] = cand[top]
        sim[a:b, :kk] = np.take_along_axis(s, top, axis=1)

    workers.run(search, range(cells.count), cells.cost())
    # back from cell order to the caller's order
    out_nbr = np.full_like(nbr, -1)
    out_sim = np.empty_like(sim)
    out_nbr[cells.order] = np.where(nbr >= 0, cells.order[np.maximum(nbr, 0)], -1)
    out_sim[cells.order] = sim
    return out_nbr, out_sim, cells


def _approximate_spanning_tree(x: np.ndarray, min_samples: int, seed: int) -> np.ndarray:
    with _Workers() as workers:
        return _approximate_tree(x, min_samples, seed, workers)


def _approximate_tree(x: np.ndarray, min_samples: int, seed: int, workers: _Workers) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

    n = len(x)
    k = max(KNN, min_samples)
    nbr, sim, cells = knn_graph(x, k, workers, seed=seed)
    rng = np.random.default_rng(seed + 1)
    dist = _distances(sim)
    core = np.sort(dist, axis=1)[:, min(max(1, min_samples), k) - 1]
    rows = np.repeat(np.arange(n), k)
    cols = nbr.ravel()
    ok = cols >= 0
    rows, cols, d = rows[ok], cols[ok], dist.ravel()[ok]
    weight = np.maximum(np.maximum(core[rows], core[cols]), d)
    edges = np.stack([rows, cols, weight], axis=1)
    for _ in range(4):
        # scipy drops explicit zeros (duplicate photos): lift every weight by a hair for the MST
        graph = coo_matrix((edges[:, 2] + 1e-9, (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
        tree = minimum_spanning_tree(graph).tocoo()
        edges = np.stack([tree.row, tree.col, tree.data - 1e-9], axis=1)
        parts, comp = connected_components(tree, directed=False)
        if parts == 1:
            return edges
        links = _boruvka_links(cells, comp, core, rng, workers)
        if len(links) == 0:
            break
        edges = np.vstack([edges, links])
    # what the cells could not link joins at the largest possible distance
    reps = np.unique(comp, return_index=True)[1]
    bridges = np.stack([reps[:-1], reps[1:], np.full(len(reps) - 1, BRIDGE)], axis=1)
    return np.vstack([edges, bridges])


def _boruvka_links(
    cells: _Cells, comp: np.ndarray, core: np.ndarray, rng: np.random.Generator, workers: _Workers
) -> np.ndarray:
    """One Borůvka round: for each component but the largest, its shortest edge to another one.

    Searched from up to `LINK_QUERIES` of its points, in the cells near them: these edges only set
    the distance at which whole components merge (far above any within-person distance), so an
    upper bound close to the true one is enough, and it keeps the round cheap.
    """
    sizes = np.bincount(comp)
    giant = int(np.argmax(sizes))
    comp_c = comp[cells.order]  # component of each point, in cell order
    core_c = core[cells.order]
    pos = np.flatnonzero(comp_c != giant)
    pos = pos[rng.permutation(len(pos))]
    # the first LINK_QUERIES (random) points of each component
    order = np.argsort(comp_c[pos], kind="stable")
    pos = pos[order]
    runs = np.concatenate([[0], np.flatnonzero(np.diff(comp_c[pos])) + 1])
    rank = np.arange(len(pos)) - np.repeat(runs, np.diff(np.concatenate([runs, [len(pos)]])))
    query = np.zeros(len(comp_c), dtype=bool)
    query[pos[rank < LINK_QUERIES]] = True
    cell_of = np.repeat(np.arange(cells.count), np.diff(cells.starts))
    todo = np.unique(cell_of[query]).tolist()
    found: list[np.ndarray] = []

    def search(c: int) -> None:
        a, b = cells.members(c)
        rows = a + np.flatnonzero(query[a:b])
        cand = cells.candidates(c)
        s = cells.x[rows] @ cells.x[cand].T
        s[comp_c[rows][:, None] == comp_c[cand][None, :]] = -np.inf
        best = np.argmax(s, axis=1)
        top = s[np.arange(len(rows)), best]
        ok = np.isfinite(top)
        rows, other = rows[ok], cand[best[ok]]
        weight = np.maximum(_distances(top[ok]), np.maximum(core_c[rows], core_c[other]))
        found.append(np.stack([rows, other, weight], axis=1))  # list.append: safe across threads

    workers.run(search, todo, cells.cost())
    arr = np.vstack(found) if found else np.empty((0, 3))
    if len(arr) == 0:
        return arr
    # keep each component's lightest way out
    owner = comp_c[arr[:, 0].astype(np.int64)]
    order = np.lexsort((arr[:, 2], owner))
    first = np.concatenate([[True], owner[order][1:] != owner[order][:-1]])
    best = arr[order][first]
    best[:, 0] = cells.order[best[:, 0].astype(np.int64)]
    best[:, 1] = cells.order[best[:, 1].astype(np.int64)]
    return best


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


def warm_up() -> None:
    """Load the numba kernels (from numba's disk cache; compiled there on first use ever).

    Raises:
        ModelMissingError: fast_hdbscan (or threadpoolctl) is not installed.
    """
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
