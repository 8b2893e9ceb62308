"""The contract shared by the API and the worker: settings, jobs, queue, storage, media, webhooks. No torch."""
