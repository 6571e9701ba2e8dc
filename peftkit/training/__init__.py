"""Training: recipe → Trainer (build), the run (train, evaluate, save), the Trainer's extensions (checkpoints, guards,
optimizer groups, penalties), experiment tracking and multi-process launch."""
