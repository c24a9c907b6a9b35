"""Config loading, layering, validation messages and the stable hash."""

import pytest

from kdbench.config import TEACHER_SECTIONS, RunConfig, config_hash, load_file, merge, parse_set, resolve
from kdbench.errors import ConfigError, UnknownName
from kdbench.plugins import plugins


def layers(*sets: str, base: dict | None = None) -> list[dict]:
    return [base or {"dataset": {"name": "synthetic"}, "distiller": {"name": "kd"}}, *map(parse_set, sets)]


def test_set_values_are_read_as_toml():
    assert parse_set("optimizer.lr=0.01") == {"optimizer": {"lr": 0.01}}
    assert parse_set("schedule.milestones=[3, 6]") == {"schedule": {"milestones": [3, 6]}}
    assert parse_set("amp=false") == {"amp": False}
    assert parse_set("optimizer.name=adam") == {"optimizer": {"name": "adam"}}


@pytest.mark.parametrize("bad", ["optimizer.lr", "=3", "a..b=1"])
def test_malformed_set_is_refused(bad):
    with pytest.raises(ConfigError, match="key=value"):
        parse_set(bad)


def test_merge_is_deep_and_does_not_mutate():
    base = {"a": {"b": 1, "c": 2}}
    out = merge(base, {"a": {"b": 3}})
    assert out == {"a": {"b": 3, "c": 2}} and base == {"a": {"b": 1, "c": 2}}


def test_precedence_defaults_dataset_file_set_flags():
    # RunConfig default batch_size 16; the synthetic dataset's run_defaults override it; then the layers
    cfg = resolve(layers(), plugins())
    from kdbench_plugins.datasets.synthetic import SyntheticSleep

    assert cfg.batch_size == SyntheticSleep.run_defaults["batch_size"]
    assert cfg.teacher.name == SyntheticSleep.default_teacher and cfg.student.name == SyntheticSleep.default_student
    base = {"dataset": {"name": "synthetic"}, "distiller": {"name": "kd"}, "batch_size": 8}
    cfg = resolve([base, parse_set("batch_size=4"), {"batch_size": 2}], plugins())
    assert cfg.batch_size == 2
    cfg = resolve([base, parse_set("batch_size=4")], plugins())
    assert cfg.batch_size == 4


def test_a_run_names_its_distiller_the_core_picks_none():
    with pytest.raises(ConfigError, match=r"no distiller chosen: pass --distiller NAME \(`kdbench list distillers`\)"):
        resolve([{"dataset": {"name": "synthetic"}}], plugins())
    # a teacher's own training needs no distiller
    assert resolve([{"dataset": {"name": "synthetic"}}], plugins(), TEACHER_SECTIONS).distiller.name is None


def test_resolved_config_holds_every_plugin_option():
    cfg = resolve(layers("distiller.temperature=2"), plugins())
    assert cfg.distiller.options == {"temperature": 2.0, "ce_weight": 0.1, "kd_weight": 0.9}
    assert "train_size" in cfg.dataset.options


def test_invalid_value_names_key_and_rule():
    with pytest.raises(ConfigError) as info:
        resolve(layers("optimizer.lr=-1"), plugins())
    message = str(info.value)
    assert "optimizer.lr = -1" in message and "greater than 0" in message and "\n" not in message


def test_invalid_choice_lists_allowed_values():
    with pytest.raises(ConfigError, match="'sgd', 'adam' or 'adamw'"):
        resolve(layers("optimizer.name=rmsprop"), plugins())
    with pytest.raises(ConfigError, match="auto, cpu, cuda, cuda:N, mps"):
        resolve(layers("device=gpu"), plugins())


def test_unknown_top_level_key_suggests_the_right_one():
    with pytest.raises(ConfigError) as info:
        resolve(layers(base={"dataset": {"name": "synthetic"}, "optimiser": {"lr": 0.1}}), plugins())
    assert "unknown key 'optimiser'" in str(info.value) and "did you mean optimizer" in str(info.value)


def test_unknown_nested_key_lists_allowed_keys():
    with pytest.raises(ConfigError, match="unknown key 'optimizer.learning_rate'.*allowed here: lr, momentum"):
        resolve(layers("optimizer.learning_rate=0.1"), plugins())


def test_unknown_plugin_option_is_refused_with_the_allowed_ones():
    with pytest.raises(ConfigError, match="unknown key distiller.'temprature'.*did you mean distiller.temperature"):
        resolve(layers("distiller.temprature=2"), plugins())


def test_invalid_plugin_option_value():
    with pytest.raises(ConfigError, match=r"distiller.temperature = 0: Input should be greater than 0"):
        resolve(layers("distiller.temperature=0"), plugins())


def test_unknown_plugin_name_suggests():
    with pytest.raises(UnknownName, match="unknown distiller 'kdd': did you mean 'kd'"):
        resolve(layers(base={"dataset": {"name": "synthetic"}, "distiller": {"name": "kdd"}}), plugins())


def test_dataset_is_required():
    with pytest.raises(ConfigError, match="--dataset"):
        resolve([{}], plugins())


def test_files_toml_yaml_and_json(tmp_path):
    (tmp_path / "a.toml").write_text('epochs = 3\n[optimizer]\nlr = 0.5\n')
    (tmp_path / "a.yaml").write_text('epochs: 3\noptimizer:\n  lr: 0.5\n')
    (tmp_path / "a.json").write_text('{"epochs": 3, "optimizer": {"lr": 0.5}}')  # a run's config.json reads back
    assert load_file(tmp_path / "a.toml") == load_file(tmp_path / "a.yaml") == load_file(tmp_path / "a.json") \
        == {"epochs": 3, "optimizer": {"lr": 0.5}}


@pytest.mark.parametrize("name,text,match", [
    ("missing.toml", None, "does not exist"),
    ("bad.toml", "epochs = = 3", "is not valid TOML"),
    ("bad.yaml", "a: [1, 2", "is not valid YAML"),
    ("list.yaml", "- 1\n- 2", "table of keys"),
    ("bad.json", "{epochs: 3}", "is not valid JSON"),
    ("conf.ini", "[a]", "use a .toml, .yaml, .yml or .json file"),
])
def test_bad_files_are_one_line(tmp_path, name, text, match):
    if text is not None:
        (tmp_path / name).write_text(text)
    with pytest.raises(ConfigError, match=match) as info:
        load_file(tmp_path / name)
    assert "\n" not in str(info.value)


def test_hash_is_stable_and_tracks_the_experiment_only():
    a = resolve(layers(), plugins())
    b = resolve(layers(), plugins())
    assert config_hash(a) == config_hash(b)
    assert len(config_hash(a)) == 16
    # where it runs and where it is tracked do not change the experiment
    assert config_hash(a) == config_hash(resolve(layers("device=cpu", "tracking.experiment=x",
                                                        "output_dir=elsewhere"), plugins()))
    for change in ["seed=1", "distiller.temperature=2", "optimizer.lr=0.5", "dataset.train_size=61"]:
        assert config_hash(resolve(layers(change), plugins())) != config_hash(a), change


def test_hash_ignores_key_order():
    a = RunConfig.model_validate({"epochs": 3, "seed": 1})
    b = RunConfig.model_validate({"seed": 1, "epochs": 3})
    assert config_hash(a) == config_hash(b)


def test_dry_run_prints_a_loadable_config(cli, tmp_path):
    result = cli("run", "--dataset", "synthetic", "--distiller", "kd", "--set", "distiller.temperature=2",
                 "--dry-run")
    assert result.code == 0
    digest = result.out.splitlines()[0].removeprefix("# config hash ")
    (tmp_path / "resolved.yaml").write_text(result.out)
    again = resolve([load_file(tmp_path / "resolved.yaml")], plugins())
    assert config_hash(again) == digest and again.distiller.options["temperature"] == 2.0


def test_the_hash_ignores_how_the_data_root_is_spelt(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ds" / "s3ve").mkdir(parents=True)
    monkeypatch.setenv("KDBENCH_DATA", str(tmp_path / "ds"))
    spellings = ["ds/s3ve", str(tmp_path / "ds" / "s3ve"), str(tmp_path / "ds" / "s3ve") + "/", None]
    configs = [resolve([{"dataset": {"name": "s3ve", **({"root": r} if r else {})}, "distiller": {"name": "kd"}}],
                       plugins()) for r in spellings]
    assert len({config_hash(c) for c in configs}) == 1
    # the stored config says where the data was, in one spelling
    assert {c.dataset.options["root"] for c in configs[:3]} == {str(tmp_path / "ds" / "s3ve")}
    # what the experiment is still counts: another option, another hash
    other = resolve([{"dataset": {"name": "s3ve", "root": "ds/s3ve", "rate": 50}, "distiller": {"name": "kd"}}],
                    plugins())
    assert config_hash(other) != config_hash(configs[0])


def test_weight_files_enter_the_hash_by_name_only():
    def with_weights(path):
        return resolve([{"dataset": {"name": "synthetic"}, "distiller": {"name": "kd"},
                         "student": {"name": "r3d18", "pretrained": path}, "teacher": {"checkpoint": path}}], plugins())
    same = {config_hash(with_weights(p)) for p in ("w/r3d_18.pth", "/elsewhere/r3d_18.pth", "./w/r3d_18.pth")}
    assert len(same) == 1 and config_hash(with_weights("w/other.pth")) not in same
