"""Pseudo-GT quality: metrics, synthetic benchmarks from held-out mocap, 3D-GT readers."""
