"""Models and pretraining for asit-hear: audio frontend, ViT encoder, encoder runtime, objectives, checkpoints."""

__version__ = "0.1.0"
