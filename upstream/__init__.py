"""Models and pretraining for asit-hear: audio frontend, encoders (ViT, conformer) and their registry, encoder runtime,
objectives (ASiT, conformer wav2vec 2.0), checkpoints."""

__version__ = "0.1.0"
