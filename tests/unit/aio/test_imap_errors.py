"""The seam's IMAP error map: which of our errors a library exception becomes, and its words."""

from __future__ import annotations

import socket
import ssl

import pytest
import trio
from aioimaplib import aioimaplib as _aio

from mailbridge.aio import imap
from mailbridge.aio.imap import During, ImapEndpoint, map_exceptions
from mailbridge.errors import (
    ImapCommandError,
    ImapConnectError,
    ImapConnectionLost,
    ImapProtocolError,
    ImapTimeout,
    ImapTlsError,
)

ENDPOINT = ImapEndpoint("mail.example.org", 993, "tls", "ann")


def translated(table: imap.ErrorTable, exc: BaseException, during: During) -> BaseException:
    with pytest.raises(BaseException) as caught:
        with map_exceptions(table, during):
            raise exc
    return caught.value


@pytest.mark.parametrize(("exc", "error_type", "words"), [
    (socket.gaierror(-2, "Name or service not known"), ImapConnectError,
     "unknown host 'mail.example.org': check the host name"),
    (ConnectionRefusedError(111, "Connection refused"), ImapConnectError,
     "connection to mail.example.org:993 (tls) refused: check the host and port"),
    (trio.TooSlowError(), ImapConnectError,
     "no answer from mail.example.org:993 (tls): check the host, port and firewall"),
    (TimeoutError(), ImapConnectError,
     "no answer from mail.example.org:993 (tls): check the host, port and firewall"),
    (OSError(101, "Network is unreachable"), ImapConnectError,
     "cannot connect to mail.example.org:993 (tls): Network is unreachable"),
    (ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"), ImapTlsError,
     "TLS handshake with mail.example.org:993 (tls) failed ("),
    (_aio.Abort("unexpected greeting"), ImapProtocolError,
     "mail.example.org:993 (tls) did not greet as an IMAP server: unexpected greeting"),
])
def test_connect_failures_say_what_to_check(exc, error_type, words):
    error = translated(imap._CONNECT_ERRORS, exc, During(ENDPOINT, limit=20))
    assert type(error) is error_type
    assert str(error).startswith(words)
    assert error.__cause__ is None and error.__suppress_context__


def test_a_command_that_times_out_or_loses_its_connection():
    during = During(ENDPOINT, "UID FETCH", 60)
    timeout = translated(imap._COMMAND_ERRORS, trio.TooSlowError(), during)
    assert type(timeout) is ImapTimeout
    assert str(timeout) == "UID FETCH got no answer from mail.example.org:993 (tls) in 60 s"
    lost = translated(imap._COMMAND_ERRORS, _aio.CommandTimeout("late"), during)
    assert type(lost) is ImapConnectionLost
    assert str(lost) == "connection to mail.example.org:993 (tls) lost during UID FETCH: CommandTimeout"
    odd = translated(imap._COMMAND_ERRORS, _aio.Abort("command FETCH illegal in state AUTH"), during)
    assert type(odd) is ImapProtocolError and str(odd).startswith("UID FETCH failed at mail.example.org:993")


def test_the_first_matching_entry_wins():
    during = During(ENDPOINT, "IDLE", 60)
    lost = translated(imap._IDLE_START_ERRORS, ConnectionResetError(), during)
    assert type(lost) is ImapConnectionLost  # although a ConnectionResetError is an OSError too
    refused = translated(imap._IDLE_START_ERRORS, _aio.Abort("server refused IDLE"), during)
    assert type(refused) is ImapCommandError
    assert (str(refused), refused.command, refused.status) == ("IDLE failed: server refused IDLE", "IDLE", "NO")


def test_on_error_runs_for_mapped_exceptions_only_and_the_rest_passes_untouched():
    dropped: list[str] = []
    with pytest.raises(ImapConnectionLost):
        with map_exceptions(imap._COMMAND_ERRORS, During(ENDPOINT, "NOOP"), on_error=lambda: dropped.append("x")):
            raise BrokenPipeError()
    assert dropped == ["x"]
    for exc in (ValueError("a bug"), KeyboardInterrupt()):
        with pytest.raises(type(exc)) as caught:
            with map_exceptions(imap._COMMAND_ERRORS, During(ENDPOINT, "NOOP"), on_error=lambda: dropped.append("y")):
                raise exc
        assert caught.value is exc
    assert dropped == ["x"]
