"""The worker service: admin REST API and the task endpoint Cloud Tasks calls."""
