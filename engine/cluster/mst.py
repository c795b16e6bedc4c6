"""HDBSCAN's first half: the minimum spanning tree of the mutual-reachability graph.

Rows are L2-normalised. Up to `EXACT_LIMIT` rows: Prim over all pairs, as hdbscan does it; above:
an approximate kNN graph (an inverted file of k-means cells) joined up by Borůvka rounds. Why that
is good enough for face embeddings, and what is done with the tree, is in `clustering`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

EXACT_LIMIT = 4000  # up to this many faces: exact all-pairs MST (a 128 MB distance matrix)
BRIDGE = 2.0  # the largest distance between two unit vectors: joins what nothing else joins
KNN = 10  # neighbours per face in the approximate graph
PCA_DIMS = 64
CELL = 128  # mean points per k-means cell
PROBES = 4  # cells searched per cell (its own and the nearest others)
LINK_QUERIES = 16  # points per component searching for its way out


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
