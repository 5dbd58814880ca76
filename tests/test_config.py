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


@pytest.mark.parametrize("override, words", [
    ("restorer=gfpgan", "restore.restorer: 'gfpgan' is not one of none, guided, refstar"),
    ("restore.restorer=refstr", "did you mean 'refstar'"),
    ("backend=mtcnn", "detect.backend: 'mtcnn' is not one of dlib, insightface"),
    ("restore.device=gpu", "restore.device: 'gpu' is not one of auto, cpu, cuda, cuda:N"),
    ("restore.adapt_preset=huge", "restore.adapt_preset"),
])
def test_string_keys_take_only_their_values_even_in_config_show(override, words, capsys):
    with pytest.raises(ConfigError, match=words):
        load_config(None, [override])
    assert main(["config", "show", "--set", override]) == 2
    assert words in capsys.readouterr().err
    assert load_config(None, ["restore.device=cuda:1"]).restore.device == "cuda:1"  # an index is a value


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="a machine with a GPU has cuda")
def test_a_device_that_is_not_here_stops_restore_before_any_work(tmp_path, capsys):
    photo = tmp_path / "p.png"
    photo.write_bytes(b"not read: the device is checked first")
    assert main(["restore", str(photo), "-o", str(tmp_path / "out"), "-q", "--set", "restore.device=cuda"]) == 2
    assert "device 'cuda' is not on this machine" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
