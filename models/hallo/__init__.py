"""The ``hallo`` engine: Hallo's hierarchical audio-driven portrait diffusion on the shared SD skeleton."""
