"""Face clustering: InsightFace detection and embeddings, HDBSCAN, photos filed per person."""
