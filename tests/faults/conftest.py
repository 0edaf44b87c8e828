from tests.integration.conftest import make_site, site, stack  # noqa: F401 - shared fixtures
