"""The Stable-Diffusion video skeleton shared by the reference-conditioned talking-head engines.

SD1.5 ReferenceNet, a 3D denoiser (SD1.5 layout, per-frame convs and norms, AnimateDiff motion
modules) with pluggable conditions, swappable attention processors, strict checkpoint loading,
DDIM setup and the chunked sampler. An engine (``models/vexpress/``) adds only its own condition
modules, its published weights layout and its defaults. See docs/vexpress.md ("The shared skeleton").
"""
