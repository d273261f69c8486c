class TestStrings:
    def test_upper(self):
        assert "rtest".upper() == "RTEST"

    def test_split(self):
        assert "a,b".split(",") == ["a", "b"]


def test_worker_id(worker_id):
    # pytest-xdist's fixture works under rtest too
    assert worker_id.startswith("gw")
