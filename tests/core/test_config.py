from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vlfw.config import load_config, save_config
from vlfw.errors import ConfigError, RegistryError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_layers_merge_in_order(tmp_path):
    write(tmp_path / "base" / "common.yaml", "training:\n  max_updates: 7\n  batch_size: 4\n")
    project = write(tmp_path / "proj" / "run.yaml",
                    "includes: [../base/common.yaml]\ntraining:\n  batch_size: 8\n")
    config = load_config([f"config={project}", "optimizer.lr=0.5", "datasets=[]"])
    assert config.training.max_updates == 7  # from the include, relative to the including file
    assert config.training.batch_size == 8  # the file beats its include
    assert config.optimizer.lr == 0.5  # the CLI beats the file
    assert config.training.clip_grad_norm == 1.0  # package default
    assert config.model_config.late_fusion.hidden_size == 128  # component default


def test_cli_values_are_typed_and_lists_split():
    config = load_config(["training.max_updates=12", "training.compile=true", "optimizer.lr=3e-4"])
    assert config.training.max_updates == 12 and isinstance(config.training.max_updates, int)
    assert config.training.compile is True
    assert config.optimizer.lr == pytest.approx(3e-4)


@pytest.mark.parametrize("arg, expected", [
    ("training.max_update=5", "Did you mean: max_updates"),
    ("trainng.max_updates=5", "Did you mean: training"),
    ("model_config.late_fusion.hiden_size=3", "Did you mean: hidden_size"),
    ("training.max_updates=abc", "must be an integer"),
    ("training.compile=3", "must be a boolean"),
    ("optimizer.betas=0.9", "must be a list"),
    ("novalue", "key=value"),
])
def test_bad_keys_and_values_are_rejected(arg, expected):
    with pytest.raises(ConfigError, match=expected):
        load_config([arg])


def test_unknown_component_in_config_is_rejected():
    with pytest.raises(RegistryError, match="late_fusion"):
        load_config(["model=late_fusio"])


def test_open_mappings_take_any_key():
    config = load_config(["optimizer.lr_multipliers.heads=20"],
                         overrides={"checkpoint": {"pretrained_key_map": {"encoder.": "backbone."}}})
    assert config.optimizer.lr_multipliers.heads == 20
    assert config.checkpoint.pretrained_key_map["encoder."] == "backbone."


def test_environment_interpolation(tmp_path, monkeypatch):
    monkeypatch.setenv("VLFW_TEST_SAVE", str(tmp_path / "out"))
    project = write(tmp_path / "p.yaml", "save_dir: ${oc.env:VLFW_TEST_SAVE}\n")
    config = load_config([f"config={project}"])
    assert config.save_dir == str(tmp_path / "out")


def test_missing_and_malformed_files_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match="not found: .*missing.yaml"):
        load_config([f"config={tmp_path / 'missing.yaml'}"])
    bad = write(tmp_path / "bad.yaml", "training: [unclosed\n")
    with pytest.raises(ConfigError, match=r"malformed YAML in .*bad.yaml at line"):
        load_config([f"config={bad}"])
    missing_include = write(tmp_path / "inc.yaml", "includes: [nothere.yaml]\n")
    with pytest.raises(ConfigError, match=r"nothere.yaml \(included from .*inc.yaml\)"):
        load_config([f"config={missing_include}"])


def test_include_cycle_is_an_error(tmp_path):
    write(tmp_path / "a.yaml", "includes: [b.yaml]\n")
    write(tmp_path / "b.yaml", "includes: [a.yaml]\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config([f"config={tmp_path / 'a.yaml'}"])


def test_configs_are_data_never_code(tmp_path):
    project = write(tmp_path / "evil.yaml", "seed: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(ConfigError, match="evil.yaml"):
        load_config([f"config={project}"])


def test_saved_config_round_trips(tmp_path):
    config = load_config(["training.max_updates=3"])
    save_config(config, tmp_path / "config.yaml")
    again = OmegaConf.load(tmp_path / "config.yaml")
    assert again == config
