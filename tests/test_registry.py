"""The registry and plugin loading: duplicates, typos, broken and blocked plugins.

Extra plugins are real installed distributions: a ``*.dist-info`` folder with an ``entry_points.txt``
on ``sys.path``, which is all ``importlib.metadata`` looks at.
"""

import textwrap

import pytest

from kdbench.errors import DuplicateName, UnknownName
from kdbench.plugins import load_plugins
from kdbench.registry import Registry


class Thing:
    """A thing to register."""

    name = "thing"


def test_register_get_and_entries():
    reg = Registry("distillers")
    reg.register(Thing, plugin="p")
    entry = reg.get("thing")
    assert entry.cls is Thing and entry.plugin == "p" and entry.description == "A thing to register."
    assert [e.name for e in reg.entries()] == ["thing"] and "thing" in reg


def test_duplicates_are_refused_naming_both_plugins():
    reg = Registry("distillers")
    reg.register(Thing, plugin="first")
    with pytest.raises(DuplicateName, match="'thing' is registered by both plugin 'first' and plugin 'second'"):
        reg.register(Thing, plugin="second")


def test_unknown_name_lists_known_and_suggests():
    reg = Registry("datasets")
    reg.register(Thing, plugin="p")
    with pytest.raises(UnknownName, match="unknown dataset 'thnig': did you mean 'thing'.*known: thing"):
        reg.get("thnig")


def test_registration_needs_a_name():
    with pytest.raises(TypeError, match="no `name`"):
        Registry("students").register(object, plugin="p")


def install_fake_dist(root, dist: str, entry: str, module: str, source: str) -> None:
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[kdbench]\n{entry} = {module}\n")
    (root / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture
def extra_plugins(tmp_path, monkeypatch):
    install_fake_dist(tmp_path, "broken-plugin", "broken", "broken_plugin", "raise ImportError('needs libfoo')\n")
    install_fake_dist(tmp_path, "clashing-plugin", "clashing", "clashing_plugin", """
        from kdbench.hookspecs import hookimpl

        class Impostor:
            name = "kd"

        @hookimpl
        def register_distillers(register):
            register(Impostor)
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("KDBENCH_BLOCK_PLUGINS", raising=False)


def test_broken_plugins_are_reported_and_do_not_stop_others(extra_plugins):
    loaded = load_plugins()
    report = {p.name: p for p in loaded.report}
    assert report["broken"].error == "ImportError: needs libfoo"
    assert report["broken"].distribution == "broken-plugin"
    assert "DuplicateName" in report["clashing"].error and "'kd'" in report["clashing"].error
    # the built-ins still work, and the first registration of 'kd' wins
    assert loaded["distillers"].get("kd").plugin == "distillers.kd"
    assert "synthetic" in loaded["datasets"]
    assert {p.name for p in loaded.broken} == {"broken", "clashing"}


def test_block_env_skips_chosen_plugins(extra_plugins, monkeypatch):
    monkeypatch.setenv("KDBENCH_BLOCK_PLUGINS", "broken, clashing")
    loaded = load_plugins()
    report = {p.name: p for p in loaded.report}
    assert report["broken"].blocked and report["broken"].error is None
    assert report["clashing"].blocked
    assert loaded.broken == []


def test_builtins_come_through_entry_points():
    loaded = load_plugins()
    by_name = {p.name: p for p in loaded.report}
    for name in ("datasets.synthetic", "distillers.baseline", "distillers.kd"):
        assert by_name[name].distribution == "kdbench" and by_name[name].error is None
    assert loaded["distillers"].get("kd").plugin == "distillers.kd"


def test_plugins_command_shows_errors(extra_plugins, cli, monkeypatch):
    import kdbench.cli as cli_module

    fresh = load_plugins()
    monkeypatch.setattr(cli_module, "plugins", lambda: fresh)
    result = cli("plugins")
    line = next(l for l in result.out.splitlines() if l.startswith("broken"))
    assert "broken-plugin 0.1" in line and "error: ImportError: needs libfoo" in line
    listed = cli("list", "distillers")
    assert "kd" in listed.out and "warning: plugin 'broken' failed to load" in listed.err
