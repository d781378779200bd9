"""Write-back's pure parts: which flag names a request may carry (actors/writeback.py),
COPYUID read back in the server's order, and the CLI's arguments and its error when no
`serve` answers (mailbridge/writeback_cli.py)."""

from __future__ import annotations

import socket

import pytest

from actors.writeback import MAX_FLAGS, _copyuid, _expand, check_flags
from mailbridge.aio.imap import ImapResponse
from mailbridge.cli import build_parser, main
from mailbridge.writeback_cli import ServeUnreachable, call


def test_system_flags_take_their_canonical_case_and_keywords_stay_as_given():
    flags, problems = check_flags("add", ["\\seen", "\\FLAGGED", "$Work", "Junk", "\\Seen", "$Work"])
    assert problems == {}
    assert flags == ("\\Seen", "\\Flagged", "$Work", "Junk")


@pytest.mark.parametrize("flag, why", [
    ("\\Recent", "server alone"),
    ("\\recent", "server alone"),
    ("\\Bogus", "not a system flag"),
    ("two words", "not a valid keyword"),
    ("", "not a valid keyword"),
    ("a(b", "not a valid keyword"),
    ("quote\"d", "not a valid keyword"),
    ("br]acket", "not a valid keyword"),
    ("star*", "not a valid keyword"),
    ("pct%", "not a valid keyword"),
    ("ctl\x01", "not a valid keyword"),
    ("ümlaut", "not a valid keyword"),
    ("k" * 201, "not a valid keyword"),
])
def test_a_bad_flag_is_named_by_its_place(flag, why):
    flags, problems = check_flags("remove", ["\\Seen", flag])
    assert list(problems) == ["remove[1]"] and why in problems["remove[1]"]
    assert "\\Seen" in flags


@pytest.mark.parametrize("value", ["\\Seen", [1], {"a": 1}, [None]])
def test_flags_must_be_a_list_of_names(value):
    assert check_flags("add", value)[1] == {"add": "must be a list of flag names"}


def test_at_most_max_flags_and_none_is_nothing():
    assert "at most" in check_flags("add", [f"k{i}" for i in range(MAX_FLAGS + 1)])[1]["add"]
    assert check_flags("add", None) == ((), {})


def test_copyuid_pairs_sources_with_destinations_in_the_servers_order():
    assert _expand("3:5,9") == [3, 4, 5, 9]
    assert _expand("7:5") == [7, 6, 5]
    tagged = ImapResponse("OK", [], "[COPYUID 42 1:2,5 10:12] Moved")
    assert _copyuid(tagged, 42) == {1: 10, 2: 11, 5: 12}
    untagged = ImapResponse("OK", [b"OK [COPYUID 42 4,2 20:21] Moved UIDs.", b"2 EXPUNGE"], "Move completed")
    assert _copyuid(untagged, None) == {4: 20, 2: 21}
    assert _copyuid(tagged, 43) == {}  # another UIDVALIDITY than the mirror's: the UIDs are not ours
    assert _copyuid(ImapResponse("OK", [], "[COPYUID 42 1:3 10:11] odd"), 42) == {}
    assert _copyuid(ImapResponse("OK", [], "done"), 42) == {}


def test_cli_parses_the_write_commands():
    args = build_parser().parse_args(["messages", "flag", "3", "4", "--add", "\\Seen", "--remove", "$Junk"])
    assert args.ids == [3, 4] and args.add == ["\\Seen"] and args.remove == ["$Junk"] and not args.needs_db
    args = build_parser().parse_args(["messages", "move", "3", "--folder", "Archive"])
    assert args.folder == "Archive"
    args = build_parser().parse_args(["messages", "delete", "3", "--permanent"])
    assert args.permanent


def test_cli_flag_without_flags_is_a_usage_error(capsys):
    assert main(["messages", "flag", "3"]) == 2
    assert "--add" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_without_a_running_serve_the_cli_says_so(capsys, monkeypatch):
    port = _free_port()
    with pytest.raises(ServeUnreachable, match="no mailbridge serve answered"):
        call(f"http://127.0.0.1:{port}", "/messages/flags", {"ids": [1]}, None, timeout=5)
    monkeypatch.setenv("PORT", str(port))
    assert main(["messages", "delete", "1"]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "mailbridge serve" in err


async def test_between_cycles_every_queued_request_is_taken_and_those_left_unanswered_are_told():
    import trio
    import trio.testing

    from actors import status as st
    from actors.mailbox import RequestMailbox
    from actors.messages import StoreFlags, Target
    from actors.registry import ActorUnavailable, Registry
    from mailbridge.imap.throttle import Throttle

    registry = Registry()
    registry.publish(st.ActorStatus(account_id=1, email="a@example.test", state=st.IDLE, health="healthy"))
    mailbox = RequestMailbox(1, registry, Throttle(200))
    mailbox.attach()
    mailbox.admit_all()
    write = StoreFlags(1, (Target(1, "INBOX", 7, (3,)),), add=("\\Seen",))
    errors: list[BaseException] = []

    async def caller() -> None:
        try:
            await registry.request(1, write, timeout=5)
        except ActorUnavailable as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(caller)
        await trio.testing.wait_all_tasks_blocked()
        taken = mailbox.waiting()
        assert len(taken) == 3 and mailbox.waiting() == [] and mailbox.depth == 0
        mailbox.fail(taken)
    assert len(errors) == 3 and all("stopped" in str(e) for e in errors)
