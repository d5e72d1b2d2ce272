"""Example recipes, installed with edgeship as package data (``edgeship demo`` runs digits.yaml)."""
