"""The registry and plugin loading: duplicates, typos, broken and blocked plugins.

Extra plugins are real installed distributions: a ``*.dist-info`` folder with an ``entry_points.txt``
on ``sys.path``, which is all ``importlib.metadata`` looks at.
"""

import textwrap

import pytest

from pydantic import Field

from kdbench.contracts import Dataset, Distiller
from kdbench.errors import ConfigError, DuplicateName, KdbenchError, UnknownName
from kdbench.options import PluginOptions
from kdbench.plugins import load_plugins
from kdbench.registry import BY_SECTION, KINDS, Registry

DISTILLERS, DATASETS, STUDENTS = BY_SECTION["distiller"], BY_SECTION["dataset"], BY_SECTION["student"]


class Thing(Distiller):
    """A thing to register."""

    name = "thing"

    class Options(PluginOptions):
        weight: float = Field(1.0, ge=0)


class Table(Dataset):
    name = "thing"


def test_register_get_and_entries():
    reg = Registry(DISTILLERS)
    reg.register(Thing, plugin="p")
    entry = reg.get("thing")
    assert entry.cls is Thing and entry.plugin == "p" and entry.description == "A thing to register."
    assert [e.name for e in reg.entries()] == ["thing"] and "thing" in reg


def test_entries_validate_options_once_and_build():
    entry = Registry(DISTILLERS)
    entry.register(Thing, plugin="p")
    thing = entry.get("thing")
    options = thing.validate({"weight": 2})
    assert options == Thing.Options(weight=2.0)
    with pytest.raises(ConfigError, match=r"unknown key distiller.'wieght'.*did you mean distiller.weight\?"):
        thing.validate({"wieght": 2})
    with pytest.raises(ConfigError, match=r"distiller.weight = -1: Input should be greater than or equal to 0"):
        thing.validate({"weight": -1})
    built = thing.build(options, "ctx")
    assert isinstance(built, Thing) and built.options is options and built.ctx == "ctx"


def test_one_map_of_kinds():
    assert [k.name for k in KINDS] == ["datasets", "teachers", "students", "distillers"]
    assert [k.section for k in KINDS] == ["dataset", "teacher", "student", "distiller"]
    assert DISTILLERS.base is Distiller and DATASETS.base is Dataset


def test_a_class_of_another_kind_is_refused():
    with pytest.raises(KdbenchError, match=r"distiller .*Table.* is not a subclass of kdbench.contracts.Distiller"):
        Registry(DISTILLERS).register(Table, plugin="p")


def test_duplicates_are_refused_naming_both_plugins():
    reg = Registry(DISTILLERS)
    reg.register(Thing, plugin="first")
    with pytest.raises(DuplicateName, match="'thing' is registered by both plugin 'first' and plugin 'second'"):
        reg.register(Thing, plugin="second")


def test_unknown_name_lists_known_and_suggests():
    reg = Registry(DATASETS)
    reg.register(Table, plugin="p")
    with pytest.raises(UnknownName, match="unknown dataset 'thnig': did you mean 'thing'.*known: thing"):
        reg.get("thnig")


def test_registration_needs_a_name():
    with pytest.raises(KdbenchError, match="no `name`"):
        Registry(STUDENTS).register(object, plugin="p")


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
        from kdbench.contracts import Distiller
        from kdbench.hookspecs import hookimpl

        class Impostor(Distiller):
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


def test_a_plugin_adds_a_command_found_only_when_asked_for(tmp_path, monkeypatch, cli):
    import kdbench.cli as cli_module

    install_fake_dist(tmp_path, "hello-plugin", "hello", "hello_plugin", """
        import click

        from kdbench.hookspecs import hookimpl

        @click.command("hello")
        def hello():
            \"\"\"Say hello.\"\"\"
            click.echo("hello from a plugin")

        @hookimpl
        def register_commands(register):
            register(hello)
        """)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("KDBENCH_BLOCK_PLUGINS", raising=False)
    fresh = load_plugins()
    monkeypatch.setattr(cli_module, "plugins", lambda: fresh)
    assert cli("hello").out.strip() == "hello from a plugin"
    assert "commands added by plugins: hello" in cli("plugins").out
    helped = cli("--help")
    assert "Plugins may add commands" in helped.out and "hello" not in helped.out  # help loads no plugin
    assert cli("no-such-command").code == 2
