"""`mailbridge.imap.quirks`: each known server's entry, keyed by host, capabilities or
greeting; nothing special for an unknown server (pure: no I/O)."""

from __future__ import annotations

from mailbridge.imap.quirks import GENERIC, POLL_REISSUE_SECONDS, polled, quirks_for

DOVECOT = "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+] Dovecot (Debian) ready."


def test_an_unknown_server_has_no_quirks():
    assert quirks_for("mail.example.org", DOVECOT, {"IMAP4REV1", "IDLE"}) is GENERIC
    assert GENERIC.idle_reissue_seconds is None and not GENERIC.reports_only_on_poll


def test_gmail_by_host_or_x_gm_ext_1():
    for quirks in (quirks_for("imap.gmail.com"), quirks_for("IMAP.GMAIL.COM."),
                   quirks_for("mx.example.org", "", {"IMAP4rev1", "x-gm-ext-1"}),
                   quirks_for("10.0.0.1", "* OK Gimap ready for requests from 1.2.3.4 ab12")):
        assert quirks.name == "gmail" and quirks.max_connections == 15 and quirks.gmail_all_mail


def test_icloud_qresync_is_broken():
    quirks = quirks_for("imap.mail.me.com")
    assert quirks.name == "icloud" and quirks.qresync_broken
    assert not quirks_for("imap.mail.me.com.evil.test").qresync_broken


def test_yahoo_has_a_short_idle():
    quirks = quirks_for("imap.mail.yahoo.com")
    assert quirks.idle_reissue_seconds is not None and quirks.idle_reissue_seconds <= 600
    assert not quirks.reports_only_on_poll


def test_office365_throttles():
    quirks = quirks_for("outlook.office365.com")
    assert quirks.name == "office365" and quirks.throttle_hint and quirks.max_connections == 20


def test_courier_and_cyrus_report_only_on_poll():
    courier = quirks_for("127.0.0.1", "* OK [CAPABILITY IMAP4rev1 UIDPLUS CHILDREN NAMESPACE THREAD=ORDEREDSUBJECT "
                                      "THREAD=REFERENCES SORT QUOTA IDLE ACL ACL2=UNION] Courier-IMAP ready. "
                                      "Copyright 1998-2018 Double Precision, Inc.")
    cyrus = quirks_for("127.0.0.1", "* OK [CAPABILITY IMAP4rev1 LITERAL+ ID ENABLE] localhost Cyrus IMAP "
                                    "3.6.1-Debian-3.6.1-4+deb12u5 server ready")
    for quirks, name in ((courier, "courier"), (cyrus, "cyrus")):
        assert quirks.name == name and quirks.reports_only_on_poll
        assert quirks.idle_reissue_seconds == POLL_REISSUE_SECONDS <= 4


def test_the_host_wins_over_the_greeting():
    assert quirks_for("imap.mail.me.com", "* OK Cyrus IMAP 3.0 ready").name == "icloud"


def test_a_server_seen_to_report_only_on_poll():
    learnt = polled(GENERIC)
    assert learnt.reports_only_on_poll and learnt.idle_reissue_seconds == POLL_REISSUE_SECONDS
    icloud = polled(quirks_for("imap.mail.me.com"))
    assert icloud.qresync_broken and icloud.reports_only_on_poll
    cyrus = quirks_for("h", "* OK Cyrus IMAP 3.6 ready")
    assert polled(cyrus) is cyrus
