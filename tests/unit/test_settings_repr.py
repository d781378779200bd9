"""`Settings`' repr (in logs and tracebacks) shows no secret."""

from __future__ import annotations

from pathlib import Path

from mailbridge.config import Settings


def test_repr_hides_the_token_the_keys_and_the_database_password():
    key = "k" * 43 + "="
    settings = Settings(database_url="postgresql://bob:pg-s3cret@db:5432/mail?sslmode=require&password=q-s3cret",
                        home=Path("/srv/mb"), encryption_keys=(key, "j" * 43 + "="), api_token="tok-s3cret",
                        port=8080)
    text = repr(settings)
    assert "s3cret" not in text and key not in text and "jjjj" not in text
    assert "database_url='postgresql://bob:***@db:5432/mail?sslmode=require&password=***'" in text
    assert "api_token='***'" in text and "encryption_keys=<2 keys>" in text
    assert "port=8080" in text and "batch_size=2000" in text and str(settings) == text


def test_repr_of_settings_without_secrets():
    text = repr(Settings(database_url=None, home=Path("/h"), encryption_keys=(), api_token=None, port=None))
    assert "database_url=None" in text and "api_token=None" in text and "encryption_keys=<0 keys>" in text
