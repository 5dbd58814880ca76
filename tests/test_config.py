import pytest

from worker.cli import main
from worker.config import ConfigError, load_config


def test_defaults_work_offline():
    cfg = load_config()
    assert cfg.detect.backend == "dlib"
    assert cfg.restore.restorer == "guided"


def test_yaml_file_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("detect:\n  stride: 4\nrestore:\n  crop_size: 256\n")
    cfg = load_config(f, ["restore.crop_size=128", "restorer=none", "paste.feather=0.1"])
    assert (cfg.detect.stride, cfg.restore.crop_size, cfg.restore.restorer) == (4, 128, "none")
    assert cfg.paste.feather == 0.1


@pytest.mark.parametrize("override, words", [
    ("detect.nope=1", "unknown config key 'detect.nope'"),
    ("detect.stride=fast", "detect.stride: expected int"),
    ("progress=1", "progress: expected true/false"),
    ("novalue", "key=value"),
])
def test_bad_overrides_name_the_key(override, words):
    with pytest.raises(ConfigError, match=words):
        load_config(None, [override])


def test_config_is_frozen():
    cfg = load_config()
    with pytest.raises(AttributeError):
        cfg.restore.crop_size = 1  # type: ignore[misc]


def test_config_show_and_bad_file(tmp_path, capsys):
    assert main(["config", "show", "--set", "detect.stride=2"]) == 0
    assert "stride: 2" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    assert main(["config", "show", "--config", str(bad)]) == 2
    assert "top level must be a mapping" in capsys.readouterr().err


def test_a_misspelt_key_gets_a_suggestion(capsys):
    with pytest.raises(ConfigError, match="did you mean 'restore.fidelity'"):
        load_config(None, ["restore.fidelty=0.5"])
    assert main(["config", "show", "--set", "restor.crf=1"]) == 2
    assert "did you mean 'restore'" in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("refstar 0.")
