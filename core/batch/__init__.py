"""Batch mode: OpenAI Batch API files, batches and the poller (see runner.py)."""
