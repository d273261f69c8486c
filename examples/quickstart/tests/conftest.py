import pytest


@pytest.fixture(scope="session")
def database():
    """A session-scoped resource: each worker builds its own."""
    return {"users": ["ada", "grace", "linus"]}
