"""Security tests against real worker processes: authentication, input limits, secrets,
a schema-driven fuzz of the API, and object paths."""

from __future__ import annotations

API_KEY = "admin-key-Zq8vN2pL6tR4wX0y"
TASK_SECRET = "task-secret-Hc3mK9sD1fG7jB5n"
