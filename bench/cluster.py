"""Face clustering at scale: our HDBSCAN against the seed's configuration, side by side.

Data: labelled synthetic 512-d identity embeddings (`tests.onnx_standins.identity_dataset`):
power-law identity sizes with many people seen once (noise), same-person cosine ~0.45-0.8,
strangers ~0-0.2, 10% burst shots. Ours: `dropflow.engine.cluster.clustering.cluster` with the engine's
defaults (min_cluster_size 2, min_samples 1, cluster_selection_epsilon 1.0) at N = 10k, 50k, 100k
(`--quick`: 10k and 50k). The seed: `hdbscan.HDBSCAN(min_cluster_size=2, min_samples=1)` on the
same L2-normalised vectors, at 10k only (it builds its tree from all n^2 distances; 20k takes
minutes). With `--quick` the seed runs at 5k and its 10k time is scaled by (10k/5k)^2 = 4: that
all-pairs Prim's is exactly quadratic, and a measured 10k run alone would not fit in a minute.
ARI counts each noise point as its own cluster. numba's warm-up is paid once before timing, as
the daemon pays it once per process.

    python bench/cluster.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dropflow.engine.cluster import clustering
from tests.onnx_standins import adjusted_rand, identity_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10k and 50k; the seed at 5k, scaled")
    ap.add_argument("--bursts", type=float, default=0.1, help="share of burst-shot faces (default 0.1)")
    args = ap.parse_args()
    sizes = [10_000, 50_000] if args.quick else [10_000, 50_000, 100_000]
    cores = len(os.sched_getaffinity(0))
    print(f"cores: {cores}; sizes: {sizes}; bursts: {args.bursts:.0%}")
    t = time.perf_counter()
    clustering.warm_up()
    print(f"numba kernels loaded in {time.perf_counter() - t:.2f}s (once per process, not timed below)")

    ours: dict[int, tuple[float, float]] = {}
    for n in sizes:
        x, truth = identity_dataset(n, seed=n, bursts=args.bursts)
        t = time.perf_counter()
        labels = clustering.cluster(x)
        secs = time.perf_counter() - t
        ours[n] = (secs, adjusted_rand(truth, labels))
        people = int(labels.max()) + 1
        print(
            f"ours   n={n:>7,}  {secs:6.2f}s  ARI {ours[n][1]:.4f}  persons {people:,} "
            f"(truth {len(set(truth[truth >= 0].tolist())):,})  noise {float((labels < 0).mean()):.1%} "
            f"(truth {float((truth < 0).mean()):.1%})"
        )

    import hdbscan

    seed_n = 5_000 if args.quick else 10_000
    x, truth = identity_dataset(seed_n, seed=10_000, bursts=args.bursts)
    x = clustering.normalise(x)
    t = time.perf_counter()
    seed_labels = hdbscan.HDBSCAN(min_cluster_size=2, min_samples=1).fit_predict(x)
    seed_secs = time.perf_counter() - t
    seed_10k = seed_secs * (10_000 / seed_n) ** 2
    mine = clustering.cluster(x)
    print(
        f"seed   n={seed_n:>7,}  {seed_secs:6.2f}s  ARI {adjusted_rand(truth, seed_labels):.4f}"
        + (f"  -> {seed_10k:.1f}s at 10k (x4: all-pairs Prim's is quadratic)" if seed_n != 10_000 else "")
    )
    print(f"ours on the same {seed_n:,}: ARI {adjusted_rand(truth, mine):.4f}")
    largest = sizes[-1]
    print(f"speed-up at 10k: {seed_10k / ours[10_000][0]:.0f}x")
    result = {
        "n": largest,
        "seconds": round(ours[largest][0], 3),
        "ari": round(ours[largest][1], 4),
        "seed_seconds_10k": round(seed_10k, 2),
        "ours_seconds_10k": round(ours[10_000][0], 3),
    }
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
