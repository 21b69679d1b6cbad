"""Fixtures that tests in several directories share, registered once for the whole session by
`pytest_plugins` in tests/conftest.py (a conftest's fixtures reach only the tests below its
own folder). Helpers that are not fixtures live in tests/_shared.py."""
