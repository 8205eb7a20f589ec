import dataclasses
from typing import ClassVar

import pytest

from cellgen.cli.options import add_common_arguments, request_from_args
from cellgen.config import (CONFIG_DIR, CommonConfig, ConfigError, RunRequest, config_from_dict, config_from_request,
                            load_config, read_toml, to_toml)


@dataclasses.dataclass
class ToyConfig(CommonConfig):
    kind: ClassVar[str] = "toy"
    learning_rate: float = 1e-3
    use_attention: bool = True
    arms: list[str] = dataclasses.field(default_factory=lambda: ["baseline"])
    limits: dict[str, float] = dataclasses.field(default_factory=dict)


def test_overrides_are_coerced_to_field_types():
    config = load_config(ToyConfig, None, ["learning_rate=3e-4", "epochs=2", "use_attention=false",
                                           "arms=baseline,synthetic", "limits=basophil=0.1,ig=20"])
    assert config.learning_rate == pytest.approx(3e-4)
    assert config.epochs == 2 and config.use_attention is False
    assert config.arms == ["baseline", "synthetic"]
    assert config.limits == {"basophil": 0.1, "ig": 20}


def test_unknown_key_lists_valid_keys():
    with pytest.raises(ConfigError) as info:
        load_config(ToyConfig, None, ["learnig_rate=1"])
    message = str(info.value)
    assert "learnig_rate" in message and "learning_rate" in message and "batch_size" in message


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match="epochs"):
        load_config(ToyConfig, None, ["epochs=two"])
    with pytest.raises(ConfigError, match="batch_size"):
        load_config(ToyConfig, None, ["batch_size=0"])
    with pytest.raises(ConfigError, match="precision"):
        load_config(ToyConfig, None, ["precision=fp8"])


def test_preset_file_then_flags(tmp_path):
    preset = tmp_path / "toy.toml"
    preset.write_text('kind = "toy"\nlearning_rate = 2e-5\nepochs = 75\nimage_size = 256\n')
    import argparse

    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    args = parser.parse_args(["--config", str(preset), "--epochs", "3", "--size", "32",
                              "--set", "learning_rate=1e-4"])
    request = request_from_args(args)
    config = config_from_request(ToyConfig, request)
    assert (config.epochs, config.image_size, config.learning_rate) == (3, 32, pytest.approx(1e-4))
    # The equivalent command line resolves to the same config.
    again = request_from_args(parser.parse_args(request.to_argv()))
    assert config_from_request(ToyConfig, again) == config


def test_flags_win_over_set_and_numbers_are_checked():
    request = RunRequest(overrides={"epochs": "5"})
    assert config_from_request(ToyConfig, request).epochs == 5
    for bad in ({"epochs": "1e999"}, {"learning_rate": "inf"}, {"seed": -1}, {"learning_rate": "nan"}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            config_from_request(ToyConfig, RunRequest(overrides=bad))


def test_preset_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("epochs = = 3\n")
    with pytest.raises(ConfigError, match="bad.toml"):
        load_config(ToyConfig, bad)
    other = tmp_path / "other.toml"
    other.write_text('kind = "ddim"\n')
    with pytest.raises(ConfigError, match="ddim"):
        load_config(ToyConfig, other)
    with pytest.raises(ConfigError, match="not found"):
        load_config(ToyConfig, tmp_path / "missing.toml")


def test_toml_round_trip():
    config = load_config(ToyConfig, None, ["limits=basophil=0.1", "arms=a,b", "description=say \"hi\""])
    text = to_toml(config.to_dict())
    import tomllib

    restored = config_from_dict(ToyConfig, tomllib.loads(text))
    assert restored == config


def test_every_shipped_preset_is_valid_toml():
    presets = sorted(CONFIG_DIR.glob("*.toml"))
    for preset in presets:
        values = read_toml(preset)
        assert "kind" in values, f"{preset.name} must say which stage it configures (kind = ...)"
