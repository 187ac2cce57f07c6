"""Hosting actors: the runner, its data path, the committer, the outbox, the worker."""
