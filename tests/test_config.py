"""Config loading: plain YAML to typed dataclasses, with errors that name the key and the fix."""
import re
from pathlib import Path

import pytest
import yaml

from nst_core.config import ConfigError, ModelSpec, load_config

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


BASE = {"name": "t", "generations": 2, "models": ["test_efficientnet", {"arch": "test_efficientnet", "kwargs": {"channel_multiplier": 1.5}}]}


def test_models_accept_names_and_specs(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.models == [ModelSpec("test_efficientnet"), ModelSpec("test_efficientnet", {"channel_multiplier": 1.5})]
    assert cfg.train.unlabel_ratio == 3 and cfg.pseudo.min_threshold == 0.3


def test_unknown_key_names_it_and_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, {**BASE, "train": {"epochz": 3}}))
    msg = str(err.value)
    assert "'epochz'" in msg and "section 'train'" in msg and "epochs" in msg and "c.yaml" in msg


def test_unknown_top_level_key(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key\(s\) 'generation'.*valid keys: .*generations"):
        load_config(write(tmp_path, {**BASE, "generation": 3}))


def test_model_list_shorter_than_generations(tmp_path):
    with pytest.raises(ConfigError, match="models lists 2 model.*generations is 3"):
        load_config(write(tmp_path, {**BASE, "generations": 3}))


def test_wrong_types_are_named(tmp_path):
    with pytest.raises(ConfigError, match="train.epochs must be an integer"):
        load_config(write(tmp_path, {**BASE, "train": {"epochs": "ten"}}))
    with pytest.raises(ConfigError, match=r"pseudo.mode must be one of \['soft', 'hard'\]"):
        load_config(write(tmp_path, {**BASE, "pseudo": {"mode": "fuzzy"}}))


def test_overrides_and_missing_file(tmp_path):
    cfg = load_config(write(tmp_path, BASE), {"train.epochs": 7, "pseudo.mode": "hard"})
    assert cfg.train.epochs == 7 and cfg.pseudo.mode == "hard"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_parse_and_build(path):
    """Every shipped config parses, and each generation's model builds with the recipe's noise."""
    from nst_core.models import create_model

    cfg = load_config(path)
    classes = 1000 if cfg.data.dataset == "imagefolder" else 10
    for generation in range(cfg.generations):
        spec = cfg.model_for(generation)
        if spec.arch.startswith(("tf_efficientnet_l2", "efficientnet_l2")):
            continue  # builds, but too large to instantiate in a test
        model = create_model(spec, classes, cfg.data.input_size[0], cfg.noise.dropout, cfg.noise.drop_path)
        assert model.num_classes == classes


def test_yaml_exponent_numbers_are_floats(tmp_path):
    """PyYAML (YAML 1.1) reads `1e-3` as a string; configs read it as the number users mean."""
    from nst_core.config import yaml_load

    assert yaml_load("a: 1e-3\nb: -2E+5\nc: .5e1\nd: 3\ne: 1.0e-3") == {"a": 0.001, "b": -200000.0, "c": 5.0, "d": 3,
                                                                      "e": 0.001}
    assert yaml_load("a: v1e3\nb: 1e3x\nc: '1e-3'") == {"a": "v1e3", "b": "1e3x", "c": "1e-3"}  # text stays text
    cfg = load_config(_with_text(tmp_path, "train:\n  lr: 1e-4\n  weight_decay: 5e-2\n"))
    assert cfg.train.lr == 1e-4 and cfg.train.weight_decay == 0.05


def _with_text(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE) + extra)
    return path


@pytest.mark.parametrize("section, key, value, message", [
    ("train", "batch_size", 0, "train.batch_size must be >= 1"),
    ("train", "lr", float("inf"), "train.lr must be a finite number"),
    ("train", "epochs", 0, "train.epochs must be >= 1"),
    ("mpl", "finetune_epochs", -1, "mpl.finetune_epochs must be >= 0"),
    ("data", "crop_pct", 0.0, "data.crop_pct must be in (0, 1]"),
])
def test_ranges_are_checked_with_the_key_named(tmp_path, section, key, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, {**BASE, section: {key: value}}))


@pytest.mark.parametrize("name", ["../../escape", "/abs/run", "a/b", "..", ".", "", "a\\b"])
def test_run_names_that_leave_the_output_folder_are_refused(tmp_path, name):
    with pytest.raises(ConfigError, match="is not a plain folder name"):
        load_config(write(tmp_path, {**BASE, "name": name}))
