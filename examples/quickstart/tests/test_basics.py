import time

import pytest


def test_addition():
    assert 1 + 1 == 2


@pytest.mark.parametrize("n", range(10))
def test_squares(n):
    assert n * n == n**2


def test_users(database):
    assert "ada" in database["users"]


@pytest.mark.slow
@pytest.mark.parametrize("delay", [0.1, 0.2, 0.3])
def test_slow(delay):
    time.sleep(delay)


@pytest.mark.skip(reason="shows how skips are reported")
def test_skipped():
    pass


@pytest.mark.xfail(reason="known bug")
def test_known_bug():
    assert 0.1 + 0.2 == 0.3
