"""Video annotation: frames sampled from a video, described by a vision model, summarised."""
