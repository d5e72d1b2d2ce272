"""Arch-Net-style conversion: rewrite a model into a target's operator set, then retrain it block by block."""
