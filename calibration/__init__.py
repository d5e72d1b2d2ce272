"""Data for calibration and validation: sources, preprocessing to the model input, seeded splits."""
