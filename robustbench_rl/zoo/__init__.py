"""Bundled pretrained checkpoints (package data)."""
