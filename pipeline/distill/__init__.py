"""Distillation: loss terms, feature taps, the training objective and the label-preservation tuner."""
