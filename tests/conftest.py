import pytest

from tests.server_proc import ServerProc


@pytest.fixture
def server(tmp_path):
    """A running server (sync durability) in a temp dir; stopped after the test."""
    s = ServerProc(tmp_path / "srv").start()
    yield s
    s.stop()


@pytest.fixture
def server_factory(tmp_path):
    made = []

    def make(**kw):
        s = ServerProc(tmp_path / f"srv{len(made)}", **kw)
        made.append(s)
        return s
    yield make
    for s in made:
        s.stop()
