"""Settings from defaults, the TOML file and ECG2AGE__ environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecg2age_dicom.config import Settings, load_settings
from ecg2age_dicom.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "ecg2age.toml"


@pytest.fixture(autouse=True)
def _no_outside_overrides(monkeypatch):
    import os

    for name in list(os.environ):
        if name.startswith("ECG2AGE__"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ecg2age.toml"
    path.write_text(text)
    return path


def test_defaults_are_the_documented_ones():
    settings = Settings()
    assert settings.listener.ae_title == "ECG2AGE"
    assert (settings.listener.host, settings.listener.port) == ("127.0.0.1", 11112)
    assert settings.listener.allowed_calling_ae_titles == []
    assert settings.storage.database_url == "sqlite:///var/ecg2age.sqlite3"
    assert settings.storage.spool_dir == Path("var/spool")
    assert settings.model.card == Path("model_zoo/ECG2Age-PTBXL/model.toml")
    assert (settings.model.batch_size, settings.model.max_batch_wait_ms) == (32, 50)
    assert settings.sr.send_to == ["PACS"]
    assert (settings.delivery.max_attempts, settings.delivery.initial_backoff_s) == (10, 5)
    assert settings.delivery.max_backoff_s == 600


def test_the_example_file_parses_and_matches_the_defaults():
    assert load_settings(EXAMPLE) == Settings()


def test_an_empty_file_gives_the_defaults(tmp_path):
    assert load_settings(write(tmp_path, "")) == Settings()


def test_file_values_are_used(tmp_path):
    path = write(
        tmp_path,
        """
[listener]
ae_title = "AGE_SCP"
port = 4242
allowed_calling_ae_titles = ["MUSE", "CART1"]
[model]
batch_size = 8
[sr]
send_to = ["ARCHIVE", "@sender"]
[[destinations]]
name = "ARCHIVE"
ae_title = "ORTHANC"
host = "pacs.example.org"
port = 4242
""",
    )
    settings = load_settings(path)
    assert settings.listener.ae_title == "AGE_SCP" and settings.listener.port == 4242
    assert settings.listener.allowed_calling_ae_titles == ["MUSE", "CART1"]
    assert settings.model.batch_size == 8 and settings.model.max_batch_wait_ms == 50
    assert [d.name for d in settings.destinations] == ["ARCHIVE"]
    assert settings.sr.send_to == ["ARCHIVE", "@sender"]


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = write(tmp_path, "[listener]\nport = 4242\nae_title = 'FROMFILE'\n")
    monkeypatch.setenv("ECG2AGE__LISTENER__PORT", "5555")
    monkeypatch.setenv("ECG2AGE__STORAGE__DATABASE_URL", "postgresql+psycopg://db/ecg")
    settings = load_settings(path)
    assert settings.listener.port == 5555
    assert settings.listener.ae_title == "FROMFILE"  # untouched keys keep the file's value
    assert settings.storage.database_url == "postgresql+psycopg://db/ecg"


def test_the_default_file_is_used_when_present(tmp_path, monkeypatch):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "ecg2age.toml").write_text("[listener]\nport = 2000\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings().listener.port == 2000


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[listener]\nprot = 11112\n", "listener.prot: unknown key"),
        ("[listner]\nport = 11112\n", "listner: unknown key"),
        ("[listener]\nport = 70000\n", "listener.port"),
        ("[listener]\nport = 'eleven'\n", "listener.port"),
        ("[listener]\nae_title = 'A_TITLE_LONGER_THAN_16'\n", "listener.ae_title"),
        ("[model]\nbatch_size = 0\n", "model.batch_size"),
        ("[delivery]\ninitial_backoff_s = 60\nmax_backoff_s = 5\n", "max_backoff_s"),
        ("[sr]\nsend_to = ['NOWHERE']\n", "sr.send_to names NOWHERE"),
        ("[[destinations]]\nname = 'X'\nae_title = 'X'\nhost = 'h'\n", "destinations.0.port"),
        ("[report]\noutputs = []\n", "report.outputs: Value error, names no object"),
        ("[report]\noutputs = ['sr', 'pdf', 'sr']\n", "report.outputs: Value error, names"),
        ("[report]\noutputs = ['sr', 'png']\n", "report.outputs.1"),
    ],
)
def test_bad_files_fail_naming_the_key_and_file(tmp_path, text, named):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert named in caught.value.reason
    assert str(path) in caught.value.reason


def test_bad_environment_value_is_named(monkeypatch):
    monkeypatch.setenv("ECG2AGE__LISTENER__PORT", "not-a-port")
    with pytest.raises(ConfigError, match=r"listener\.port"):
        load_settings(EXAMPLE)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="cannot be read as TOML"):
        load_settings(write(tmp_path, "[listener\nport=1"))


def test_serve_with_a_bad_file_exits_non_zero_naming_the_key(tmp_path, capsys):
    from ecg2age_dicom.cli import main

    path = write(tmp_path, "[listener]\nport = 99999\n")
    assert main(["--config", str(path), "serve"]) == 2
    error = capsys.readouterr().err
    assert "listener.port" in error and str(path) in error
