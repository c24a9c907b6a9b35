"""The cache folder follows KDBENCH_CACHE_DIR, then the XDG base-directory rule."""

from pathlib import Path

from kdbench.paths import cache_dir


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("KDBENCH_CACHE_DIR", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("KDBENCH_CACHE_DIR")
    assert cache_dir() == tmp_path / "xdg" / "kdbench"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec says to ignore a relative value
    assert cache_dir() == Path.home() / ".cache" / "kdbench"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "kdbench"
