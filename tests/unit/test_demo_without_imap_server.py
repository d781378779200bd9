"""`mailbridge demo` on a machine with dovecot-core but without dovecot-imapd (the harness's
lookup of the IMAP binary answers None: nothing is started, so no server is needed)."""

from __future__ import annotations


def test_without_dovecots_imap_server_the_demo_says_what_to_install(monkeypatch, tmp_path, capsys):
    """dovecot-core installed, dovecot-imapd not: one line naming the package, no traceback."""
    import mailbridge.testing.dovecot as dovecot_harness
    from mailbridge.cli import main

    monkeypatch.setattr(dovecot_harness, "find_imap_server", lambda: None)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("MAILBRIDGE_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mailbridge: error: ") and "apt-get install dovecot-imapd" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
