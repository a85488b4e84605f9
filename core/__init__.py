"""Shared library of AIWebImageService: config, database, jobs, dispatch, providers, storage."""
