"""The contract shared by the API and the worker: settings, jobs, queue, storage, media, webhooks. No torch."""

__version__ = "0.2.0"
"""Parla's one version string: the package's (pyproject reads it), the API's, and the image tag's."""
