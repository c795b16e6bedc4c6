"""The clustering core: HDBSCAN-faithful labels, the scalable path, cannot-link, known persons."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dropflow.engine.cluster import clustering, mst
from dropflow.engine.cluster.clustering import Settings
from tests.onnx_standins import adjusted_rand, identity_dataset

SEED_CONFIG = Settings(
    min_cluster_size=2,
    min_samples=1,
    cluster_selection_epsilon=0.0,
    single_cluster=False,
    member_distance=None,
)


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal up to renumbering, noise included."""
    if not np.array_equal(a < 0, b < 0):
        return False
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True) if x >= 0}
    return len(pairs) == len({x for x, _ in pairs}) == len({y for _, y in pairs})


@pytest.mark.parametrize(
    ("settings", "reference"),
    [
        (SEED_CONFIG, {"min_cluster_size": 2, "min_samples": 1}),
        (
            Settings(cluster_selection_epsilon=1.0, single_cluster=False, member_distance=None),
            {"min_cluster_size": 2, "min_samples": 1, "cluster_selection_epsilon": 1.0},
        ),
        (
            Settings(
                min_cluster_size=4,
                min_samples=1,
                cluster_selection_epsilon=0.0,
                single_cluster=False,
                member_distance=None,
            ),
            {"min_cluster_size": 4, "min_samples": 1},
        ),
    ],
)
def test_exact_path_gives_hdbscans_labels(settings: Settings, reference: dict[str, float]) -> None:
    import hdbscan

    x, _ = identity_dataset(700, seed=11)
    ours = clustering.cluster(x, settings)
    theirs = hdbscan.HDBSCAN(**reference).fit_predict(x)
    assert theirs.max() > 20, "the data must have structure for this to mean anything"
    assert _same_partition(ours, theirs)


def test_scalable_path_agrees_with_exact_hdbscan(monkeypatch: pytest.MonkeyPatch) -> None:
    """The k-NN graph + Borůvka path, forced on 2500 faces, against the exact all-pairs tree."""
    x, truth = identity_dataset(2500, seed=5)
    exact = clustering.cluster(x, SEED_CONFIG)
    monkeypatch.setattr(mst, "EXACT_LIMIT", 100)
    monkeypatch.setattr(mst, "CELL", 64)
    fast = clustering.cluster(x, SEED_CONFIG)
    assert adjusted_rand(exact, fast) > 0.99
    assert adjusted_rand(truth, clustering.cluster(x)) > 0.97


def test_scalable_tree_spans_every_point_even_when_cells_are_isolated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mst, "EXACT_LIMIT", 10)
    monkeypatch.setattr(mst, "CELL", 16)
    monkeypatch.setattr(mst, "PROBES", 1)  # no cell sees another: only bridges can join them
    x, _ = identity_dataset(400, seed=2)
    edges = mst.spanning_tree(clustering.normalise(x))
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(400, 400))
    assert len(edges) == 399 and connected_components(g, directed=False)[0] == 1


def test_bursts_do_not_split_a_person_with_the_default_epsilon() -> None:
    x, truth = identity_dataset(1500, seed=8, bursts=0.15)
    seed_like = adjusted_rand(truth, clustering.cluster(x, SEED_CONFIG))
    ours = adjusted_rand(truth, clustering.cluster(x))
    assert ours > 0.97
    assert seed_like < ours - 0.1, "near-duplicates fragment persons without cluster_selection_epsilon"


def _person(rng: np.random.Generator, centre: np.ndarray, n: int, spread: float = 0.7) -> np.ndarray:
    x = centre + spread * rng.standard_normal((n, len(centre))) / np.sqrt(len(centre))
    return clustering.normalise(x)


def test_a_batch_of_one_person_is_one_person_and_two_are_two() -> None:
    rng = np.random.default_rng(0)
    a, b = clustering.normalise(rng.standard_normal((2, 512)))
    one = _person(rng, a, 6)
    assert set(clustering.cluster(one).tolist()) == {0}
    # classic HDBSCAN never selects the root: one person comes out in pieces, or as noise
    assert set(clustering.cluster(one, SEED_CONFIG).tolist()) != {0}
    two = clustering.cluster(np.vstack([one, _person(rng, b, 5)]))
    assert len(set(two[:6].tolist())) == 1 and len(set(two[6:].tolist())) == 1 and two[0] != two[6]
    assert clustering.cluster(one[:1]).tolist() == [-1]


def test_noise_stays_noise() -> None:
    rng = np.random.default_rng(1)
    # three people who look alike (a family: their centres share a direction), and strangers who
    # are farther from each of them than the people are from each other
    family = clustering.normalise(rng.standard_normal((1, 512)))[0]
    centres = clustering.normalise(1.5 * rng.standard_normal((3, 512)) / np.sqrt(512) + family)
    people = np.vstack([_person(rng, c, 8, spread=0.4) for c in centres])
    strangers = clustering.normalise(rng.standard_normal((4, 512)) - 0.5 * family)
    labels = clustering.cluster(np.vstack([people, strangers]))
    assert (labels[-4:] == -1).all()
    assert len(set(labels[:-4].tolist())) == 3 and (labels[:-4] >= 0).all()


def test_a_stranger_in_a_small_batch_is_noise_not_a_member() -> None:
    rng = np.random.default_rng(4)
    a, b = clustering.normalise(rng.standard_normal((2, 512)))
    x = np.vstack([_person(rng, a, 4, 0.3), _person(rng, b, 3, 0.3)])
    stranger = clustering.normalise(rng.standard_normal((1, 512)) / np.sqrt(512) * 4 + b)  # cosine ~0.25 to b
    x = np.vstack([x, stranger])
    assert 0.15 < float(stranger[0] @ b) < 0.3
    classic = clustering.cluster(x, Settings(member_distance=None))
    assert classic[-1] == classic[4] >= 0, "HDBSCAN files it under b: it joined b before b split from a"
    labels = clustering.cluster(x)
    assert labels[-1] == -1 and (labels[:4] == labels[0]).all() and (labels[4:7] == labels[4]).all()


def test_faces_of_one_photo_never_share_a_cluster() -> None:
    rng = np.random.default_rng(2)
    a, b = clustering.normalise(rng.standard_normal((2, 512)))
    x = np.vstack([_person(rng, a, 6), _person(rng, b, 6)])
    groups = np.arange(12)
    groups[1] = groups[0]  # photo 0 shows person A twice (a twin, a portrait on the wall)
    labels = clustering.cluster(x, groups=groups)
    assert labels[0] != labels[1] or labels[0] == -1
    for g in np.unique(groups):
        members = labels[(groups == g) & (labels >= 0)]
        assert len(members) == len(set(members.tolist()))
    assert (labels[2:6] == labels[2]).all() and labels[2] >= 0


def test_evicted_face_moves_to_its_next_closest_person() -> None:
    labels = np.array([0, 0, 0, 1, 1])
    x = clustering.normalise(np.array([[1, 0.05], [1, 0.0], [1, -0.05], [0.6, 1], [0.5, 1]]))
    groups = np.array([7, 7, 1, 2, 3])  # rows 0 and 1 are one photo
    out = clustering.enforce_cannot_link(x, labels, groups, threshold=0.5)
    assert out.tolist() == [0, 1, 0, 1, 1] or out.tolist() == [1, 0, 0, 1, 1]
    strict = clustering.enforce_cannot_link(x, labels, groups, threshold=0.99)
    assert sorted(strict[:2].tolist()) == [-1, 0]


def test_known_persons_take_close_faces_one_per_photo() -> None:
    known = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float32)
    x = clustering.normalise(np.array([[1, 0.1, 0], [0.9, 0.2, 0], [0.1, 1, 0], [0, 0, 1]], dtype=np.float32))
    groups = np.array([0, 0, 1, 2])  # rows 0, 1 in one photo: both look like person 0
    out = clustering.assign_to_known(x, groups, known, threshold=0.5)
    assert out.tolist() == [0, -1, 1, -1]


def test_select_handles_tiny_inputs() -> None:
    assert clustering.cluster(np.zeros((0, 8))).tolist() == []
    x = clustering.normalise(np.array([[1.0, 0.0], [0.99, 0.01]]))
    assert clustering.cluster(x).tolist() == [0, 0]
    assert clustering.cluster(x, SEED_CONFIG).tolist() == [-1, -1]


# --- after cannot-link: persons are checked again ------------------------------------------------------


def _axes(*rows: dict[int, float]) -> np.ndarray:
    """Unit vectors from {axis: weight} (exact cosines for hand-made cases)."""
    x = np.zeros((len(rows), 16))
    for i, row in enumerate(rows):
        for axis, w in row.items():
            x[i, axis] = w
    return clustering.normalise(x)


def test_faces_of_one_photo_alone_make_no_person() -> None:
    # two strangers on one group photo who look alike: HDBSCAN groups them, cannot-link parts them,
    # and one face is no person (below min_cluster_size); a real pair elsewhere stays a person
    x = _axes({0: 1, 5: 0.05}, {0: 1, 5: -0.05}, {1: 1, 6: 0.05}, {1: 1, 6: -0.05})
    groups = np.array([0, 0, 1, 2])
    selected = clustering.select(mst.exact_spanning_tree(x), 4)
    assert selected[0] == selected[1] >= 0 and selected[2] == selected[3] >= 0 and selected[0] != selected[2]
    assert clustering.cluster(x, groups=groups).tolist() == [-1, -1, 0, 0]


def test_a_face_that_kept_its_place_through_an_evicted_face_becomes_noise() -> None:
    # A joined person X through face a (cosine 0.6 to both); a is on the same photo as X's first
    # face and leaves. b's closest face left in X is then at cosine 0.2 < member_similarity 0.3.
    x = _axes(
        {0: 1, 10: 0.1}, {0: 1, 11: 0.1}, {0: 1, 12: 0.1}, {0: 0.6, 1: 0.8}, {0: 0.2, 1: 0.6, 2: 0.6**0.5}
    )
    groups = np.array([0, 1, 2, 0, 3])
    assert clustering.select(mst.exact_spanning_tree(x), 5).tolist() == [0] * 5
    assert clustering.cluster(x, groups=groups).tolist() == [0, 0, 0, -1, -1]


@pytest.mark.parametrize("loose_first", [True, False])
def test_a_person_whose_faces_all_failed_membership_leaves_no_empty_label(loose_first: bool) -> None:
    tight = _axes({0: 1, 5: 0.05}, {0: 1, 5: -0.05})
    loose = _axes({1: 1}, {1: 0.6, 2: 0.8})  # cosine 0.6: below member_similarity 0.8
    x = np.vstack([loose, tight] if loose_first else [tight, loose])
    settings = Settings(member_distance=clustering.cosine_to_distance(0.8))
    labels = clustering.cluster(x, settings)
    assert sorted(labels.tolist()) == [-1, -1, 0, 0], "one person, numbered 0"


def test_make_plan_creates_no_person_without_faces(tmp_path: Path) -> None:
    from dropflow.engine.cluster.collect import Source
    from dropflow.engine.cluster.faces import Face, PhotoResult
    from dropflow.engine.cluster.params import ClusterParams
    from dropflow.engine.cluster.plan import make_plan

    x = np.vstack([_axes({1: 1}, {1: 0.6, 2: 0.8}), _axes({0: 1, 5: 0.05}, {0: 1, 5: -0.05})])
    keys = [f"p{i}.jpg" for i in range(len(x))]
    source = Source(tmp_path, [(k, tmp_path / k) for k in keys], [], None)
    results = {
        k: PhotoResult(k, (64, 64), [Face((0.0, 0.0, 8.0, 8.0), 0.9, e.astype(np.float32), b"")])
        for k, e in zip(keys, x, strict=True)
    }
    params = ClusterParams(member_similarity=0.8)
    plan = make_plan(1, "b", tmp_path / "b", source, results, [], 1, params)
    assert [p.faces for p in plan.persons] == [2] and plan.summary["counts"]["new_persons"] == 1
    assert [ph.status for ph in plan.photos] == ["unsorted", "unsorted", "person", "person"]
