"""Settings: defaults, validation messages, key handling."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from mailbridge.config import TUNABLES, load_settings
from mailbridge.errors import ConfigError
from mailbridge.secrets import Cipher, generate_key

KEY = generate_key()


def settings(**env):
    return load_settings({"DATABASE_URL": "postgresql://u@localhost/db", **env}, dotenv=None)


def test_defaults_are_the_seeds():
    s = settings()
    assert (s.poll_seconds, s.folders_per_tick, s.commands_per_minute, s.max_accounts) == (60.0, 5, 200, 20)
    assert (s.flag_scan_hours, s.flag_scans_per_tick, s.reconcile_hours, s.reconcile_jitter_minutes) == (6.0, 2, 6.0, 15.0)
    assert s.retention_days is None and s.encryption_keys == ()


@pytest.mark.parametrize("var, value, words", [
    ("MAILBRIDGE_MAX_ACCOUNTS", "many", "not a whole number"),
    ("MAILBRIDGE_POLL_SECONDS", "-1", "too small"),
    ("MAILBRIDGE_LOG_LEVEL", "loud", "not a level"),
    ("DATABASE_URL", "mysql://x/y", "postgresql://"),
    ("PORT", "http", "not a TCP port"),
    ("MAILBRIDGE_ENCRYPTION_KEY", "too-short", "not a Fernet key"),
    ("IMAP_ENCRYPTION_KEY", "x" * 44, "not a Fernet key"),
])
def test_bad_values_name_the_variable(var, value, words):
    with pytest.raises(ConfigError) as info:
        settings(**{var: value})
    assert var in str(info.value) and words in str(info.value)
    assert "\n" not in str(info.value)


def test_key_rotation_list_and_seed_name():
    old, new = generate_key(), generate_key()
    s = settings(MAILBRIDGE_ENCRYPTION_KEY=f"{new}, {old}")
    assert s.encryption_keys == (new, old)
    token = Cipher([old]).encrypt("pw")
    assert Cipher(s.encryption_keys).decrypt(token) == "pw"
    assert settings(IMAP_ENCRYPTION_KEY=KEY).encryption_keys == (KEY,)


def test_missing_key_is_reported_when_needed():
    with pytest.raises(ConfigError, match="MAILBRIDGE_ENCRYPTION_KEY is not set"):
        settings().require_keys()


def test_embedded_mode_generates_a_private_key_file(tmp_path):
    s = load_settings({"MAILBRIDGE_HOME": str(tmp_path)}, dotenv=None)
    path = tmp_path / "encryption.key"
    assert s.embedded and s.key_source == "file"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again = load_settings({"MAILBRIDGE_HOME": str(tmp_path)}, dotenv=None)
    assert again.encryption_keys == s.encryption_keys


def test_dotenv_is_read_but_environment_wins(tmp_path):
    dotenv = tmp_path / ".env"
    dotenv.write_text("MAILBRIDGE_POLL_SECONDS=5\nMAILBRIDGE_MAX_ACCOUNTS=3\n")
    s = load_settings({"DATABASE_URL": "postgresql://u@h/d", "MAILBRIDGE_MAX_ACCOUNTS": "7"}, dotenv=dotenv)
    assert s.poll_seconds == 5 and s.max_accounts == 7


def test_env_example_lists_every_tunable():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    for tunable in TUNABLES:
        assert tunable.env in text
    for var in ("DATABASE_URL", "MAILBRIDGE_HOME", "MAILBRIDGE_ENCRYPTION_KEY", "MAILBRIDGE_API_TOKEN", "PORT"):
        assert var in text


ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
# the variables outside TUNABLES, with their default as .env.example writes it (None: unset)
OTHER_VARIABLES: dict[str, str | None] = {
    "DATABASE_URL": None,
    "MAILBRIDGE_HOME": "~/.local/share/mailbridge",
    "MAILBRIDGE_ENCRYPTION_KEY": None,
    "IMAP_ENCRYPTION_KEY": None,
    "MAILBRIDGE_API_TOKEN": None,
    "PORT": None,
    "DATABASE_URL_TEST": None,
}
_ASSIGNMENT = re.compile(r"(?P<unset># )?(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)")


def env_example_entries() -> dict[str, tuple[str | None, str]]:
    """Each variable of .env.example → (its value, None when commented out; the comment
    line above it)."""
    entries: dict[str, tuple[str | None, str]] = {}
    previous = ""
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = _ASSIGNMENT.fullmatch(line)
        if match is not None:
            assert match["name"] not in entries, f"{match['name']} twice in .env.example"
            value = None if match["unset"] else match["value"]
            assert match["value"] == "" or value is not None, f"commented {match['name']} carries a value"
            entries[match["name"]] = (value, previous)
        previous = line
    return entries


def test_env_example_agrees_with_the_defaults():
    entries = env_example_entries()
    expected = {t.env: None if t.default is None else str(t.default) for t in TUNABLES}
    expected.update(OTHER_VARIABLES)
    assert {name: value for name, (value, _) in entries.items()} == expected
    for tunable in TUNABLES:
        assert entries[tunable.env][1] == f"# {tunable.help}", tunable.env


def test_copying_env_example_changes_no_setting():
    env = {"DATABASE_URL": "postgresql://u@localhost/db"}
    copied = load_settings(env, dotenv=ENV_EXAMPLE)
    assert copied == load_settings(env, dotenv=None)


def test_readme_configuration_table_agrees_with_tunables():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    rows = {m["name"]: (m["default"], m["meaning"]) for m in re.finditer(
        r"^\| `(?P<name>[A-Z][A-Z0-9_]*)` \| (?P<default>[^|]+?) \| (?P<meaning>.+?) \|$", readme, re.MULTILINE)}
    for tunable in TUNABLES:
        default = "unset" if tunable.default is None else f"`{tunable.default}`"
        assert rows.get(tunable.env) == (default, tunable.help), tunable.env
    assert set(OTHER_VARIABLES) - {"IMAP_ENCRYPTION_KEY"} <= set(rows)
