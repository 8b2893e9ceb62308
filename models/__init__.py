"""Engines: face analysis, audio features, diffusion and warp renderers. Nothing about HTTP or Redis."""
