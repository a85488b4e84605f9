"""Set-up that several test files share: fixtures (registered as plugins by
tests/conftest.py) and the helpers they are built from."""
