"""Quantization decided once, in PyTorch (PT2E): config, per-layer bit resolution, LSQ, calibration, QAT."""
