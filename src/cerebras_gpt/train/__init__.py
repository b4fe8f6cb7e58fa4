"""Pretraining: run settings, the paper recipe and plan, optimizer and schedule, loop, checkpoints, torchrun."""
