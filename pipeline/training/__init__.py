"""Training: the shared Trainer (trainer.py), its typed config (config.py), supervised CE training (supervised.py)."""
