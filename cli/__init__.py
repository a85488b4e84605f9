"""The `aiwebimage` command."""
