"""Trio-facing IMAP session over aioimaplib (with `_imapproto`'s linear parsing).

A session is opened with `ImapSession.open(...)` as an async context manager: connect
(implicit TLS, STARTTLS or plain), greeting, LOGIN, CAPABILITY.  Leaving the block sends
LOGOUT (shielded, bounded) and closes the socket.  Commands are serialized (never
pipelined); each first waits on the optional throttle, then runs under the command
timeout.  Responses come back as raw lines (see `mailbridge.imap.fetch` and
`mailbridge.imap.responses` for the pure parsers).  The session knows which mailbox is
selected (`selected`).  Errors are `mailbridge.errors` types, translated from the
library's by one table per kind of call (`map_exceptions`); passwords never appear in them
(`redact`).  What the server says beyond OK/NO/BAD is read here (`mailbridge.imap.codes`):
a throttled command is `ImapThrottled`, ``[UNAVAILABLE]`` or "too many connections" is
`ImapUnavailable`, other RFC 5530 codes ride along as `code` on ImapCommandError and
ImapAuthError.  A mailbox name that cannot be sent (CR, LF, NUL) is UnusableMailboxName,
raised before anything is sent.
"""

from __future__ import annotations

import asyncio
import builtins
import re
import socket
import ssl
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Iterator, Mapping, Protocol, Sequence

import trio
from aioimaplib import aioimaplib as _aio

from mailbridge.aio._imapproto import HEADER_LITERAL_MAX, LinearIMAP4
from mailbridge.aio.loop import call
from mailbridge.aio.redact import holding, redact
from mailbridge.errors import (
    ImapAuthError,
    ImapCommandError,
    ImapConnectError,
    ImapConnectionLost,
    ImapError,
    ImapProtocolError,
    ImapThrottled,
    ImapTimeout,
    ImapTlsError,
    ImapUnavailable,
    UnusableMailboxName,
)
from mailbridge.credentials import Bearer, Credential, Password, choose_mechanism, oauthbearer_response, xoauth2_response
from mailbridge.imap.codes import LOGIN_TRANSIENT_CODES, response_code, throttle_hint, too_many_connections
from mailbridge.imap.quirks import ServerQuirks, quirks_for

CLEANUP_TIMEOUT = 5.0
TLS_MODES = ("tls", "starttls", "none")
BODY_LITERAL_MAX = 26_214_400  # a whole message's default bound (MAILBRIDGE_BODY_MAX_BYTES' default)
_CONTROL = re.compile(r"[\x00\r\n]")
# FETCH items that return a whole message (or its whole text), not just header fields
# untagged news about the selected mailbox (RFC 3501 7.3.1, 7.4; RFC 7162 VANISHED)
_SELECTED_NEWS = re.compile(rb"^(?:\d+ (?:EXISTS|EXPUNGE|FETCH)\b|VANISHED\b)", re.IGNORECASE)
# commands whose replies say nothing the caller reads about the selected mailbox's messages:
# news about it that comes with them would otherwise be lost (the server told once)
_NEWS_CARRIERS = frozenset({"LIST", "LSUB", "STATUS", "NOTIFY", "ENABLE", "CAPABILITY", "ID", "NAMESPACE"})
# commands whose callers read only their own answer: news among it (`_stray_news`) is kept too
# (STORE and COPY: the API's write-back, whose own FETCH replies name their UID)
_STRAY_NEWS_CARRIERS = frozenset({"FETCH", "SEARCH", "STORE", "COPY"})
_UID_ITEM = re.compile(rb"[( ]UID ", re.IGNORECASE)
_BODY_ITEMS = re.compile(r"\b(?:BODY(?:\.PEEK)?\[(?:TEXT)?\]|BINARY(?:\.PEEK)?\[|RFC822(?:\.TEXT)?(?![.\w]))",
                         re.IGNORECASE)


def _stray_news(lines: Sequence[Any], *, exists: bool = True) -> bool:
    """Whether `lines` (a FETCH's, SEARCH's or SELECT's reply) hold news about the selected
    mailbox besides the command's own answer: an EXPUNGE, a VANISHED but (EARLIER), an
    EXISTS (unless `exists`: a SELECT's own), a FETCH without UID and without a literal
    (a UID FETCH's own lines name their UID, RFC 3501 6.4.8; a flag change has no literal)."""
    match = _SELECTED_NEWS.match
    for line in lines:
        if type(line) is str or not match(line, 0, 40):  # (no copy of the line: most are not news)
            continue
        head = bytes(line[:40])
        word = head.split(b" ", 2)[1 if head[:1].isdigit() else 0].upper()
        if word == b"EXPUNGE" or (word == b"EXISTS" and exists):
            return True
        if word == b"VANISHED" and not head.upper().startswith(b"VANISHED (EARLIER)"):
            return True
        # (a literal's line ends in "}"; rstrip copies the line, so only where it does not)
        literal = line.endswith(b"}") or line.rstrip().endswith(b"}")
        if word == b"FETCH" and not literal and not _UID_ITEM.search(line):
            return True
    return False


class CommandGate(Protocol):
    """What a session needs of a throttle."""

    async def acquire(self, cost: int = 1) -> float: ...


@dataclass(frozen=True, slots=True)
class ImapEndpoint:
    """Where and as whom to log in (no password: that is passed to `open` only)."""

    host: str
    port: int
    tls: str = "tls"
    username: str = ""
    verify_certificate: bool = True
    ca_file: str | None = None

    def describe(self) -> str:
        return f"{self.host}:{self.port} ({self.tls})"


@dataclass(frozen=True, slots=True)
class ImapResponse:
    """A completed command: its status (OK/NO/BAD), its untagged response lines (literals
    as bytearray elements), and the tagged completion text, kept apart so that a text
    like "List completed" is never mistaken for a LIST response."""

    status: str
    lines: list[bytes | bytearray]
    text: str = ""
    cut_literals: int = 0  # literals over the command's bound, cut to it (see `uid_fetch`)

    @property
    def lines_and_text(self) -> list[bytes | bytearray]:
        """`lines` with the completion text last, for parsers that read its response
        codes (``[READ-ONLY]`` after SELECT, ``[CAPABILITY ...]`` after LOGIN)."""
        return [*self.lines, self.text.encode("utf-8", "replace")]

    @classmethod
    def from_aio(cls, result: str, lines: list, cut_literals: int = 0) -> "ImapResponse":
        lines = list(lines)
        last = lines.pop() if lines else b""
        return cls(result, lines, bytes(last).decode("utf-8", "replace"), cut_literals)


def quote(value: str) -> str:
    """An IMAP quoted string for an ASCII argument (mailbox names are modified UTF-7)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def check_mailbox_name(raw_name: str, command: str = "") -> str:
    """`raw_name` if it can be put in a command; UnusableMailboxName if it holds CR, LF
    or NUL (no quoting can carry those)."""
    if _CONTROL.search(raw_name):
        raise UnusableMailboxName(
            f"the mailbox name {raw_name[:80]!r} holds a line break or NUL, which no IMAP command can "
            "carry: mailbridge skips it (rename it on the server to mirror it)", raw_name, command)
    return raw_name


def _ssl_context(endpoint: ImapEndpoint) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=endpoint.ca_file)
    if not endpoint.verify_certificate:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


# --- library errors as ours ------------------------------------------------------------

# Library exception type(s) -> the error we raise; the first matching entry wins.
ErrorTable = Mapping[type[BaseException] | tuple[type[BaseException], ...], type[ImapError]]

_CONNECT_ERRORS: ErrorTable = {  # connecting and the greeting
    trio.TooSlowError: ImapConnectError,
    ssl.SSLError: ImapTlsError,
    (OSError, asyncio.TimeoutError): ImapConnectError,
    _aio.AioImapException: ImapProtocolError,
}
_STARTTLS_ERRORS: ErrorTable = {  # the TLS handshake after STARTTLS
    trio.TooSlowError: ImapTlsError,
    ssl.SSLError: ImapTlsError,
    OSError: ImapConnectError,
}
_LOGIN_ERRORS: ErrorTable = {
    trio.TooSlowError: ImapTimeout,
    (OSError, _aio.AioImapException, asyncio.TimeoutError): ImapConnectionLost,
}
_COMMAND_ERRORS: ErrorTable = {
    trio.TooSlowError: ImapTimeout,
    (OSError, asyncio.TimeoutError, _aio.CommandTimeout): ImapConnectionLost,
    _aio.AioImapException: ImapProtocolError,
}
_IDLE_START_ERRORS: ErrorTable = {
    trio.TooSlowError: ImapTimeout,
    ConnectionResetError: ImapConnectionLost,
    (_aio.AioImapException, OSError): ImapCommandError,
}
_IDLE_ERRORS: ErrorTable = {
    ConnectionResetError: ImapConnectionLost,
}


@dataclass(frozen=True, slots=True)
class During:
    """What a failed library call was doing, for the error's message."""

    endpoint: ImapEndpoint
    command: str | None = None  # None while connecting (greeting, TLS handshake)
    limit: float = 0.0  # its time bound in seconds, named when it ran out


@contextmanager
def map_exceptions(table: ErrorTable, during: During, *,
                   on_error: Callable[[], None] | None = None) -> Iterator[None]:
    """Raise a library exception leaving the block as the error `table` names for it
    (first match), worded by `imap_error`; `on_error` runs first (e.g. to drop the
    connection).  Anything the table does not name, cancellation included, passes as it is.
    """
    try:
        yield
    except Exception as exc:
        for library_types, error_type in table.items():
            if isinstance(exc, library_types):
                if on_error is not None:
                    on_error()
                raise imap_error(error_type, exc, during) from None
        raise


def imap_error(error_type: type[ImapError], exc: BaseException, during: During) -> ImapError:
    """An `error_type` saying what went wrong (`exc`) and how to fix it, for a person."""
    where = during.endpoint.describe()
    command = during.command
    if error_type is ImapTlsError:
        if isinstance(exc, ssl.SSLCertVerificationError):
            return ImapTlsError(
                f"TLS certificate of {where} is not trusted ({exc.verify_message}); "
                "fix the server's certificate, or use --tls none only on a trusted network"
            )
        if isinstance(exc, trio.TooSlowError):
            return ImapTlsError(f"TLS handshake with {where} timed out")
        return ImapTlsError(
            f"TLS handshake with {where} failed ({getattr(exc, 'reason', None) or exc}); check --tls "
            "(tls for port 993, starttls for 143) and --port"
        )
    if error_type is ImapConnectError:
        if isinstance(exc, socket.gaierror):
            return ImapConnectError(f"unknown host {during.endpoint.host!r}: check the host name")
        if isinstance(exc, ConnectionRefusedError):
            return ImapConnectError(f"connection to {where} refused: check the host and port")
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError, trio.TooSlowError)):
            return ImapConnectError(f"no answer from {where}: check the host, port and firewall")
        return ImapConnectError(f"cannot connect to {where}: {getattr(exc, 'strerror', None) or exc}")
    if error_type is ImapProtocolError:
        if command is None:
            return ImapProtocolError(f"{where} did not greet as an IMAP server: {exc}")
        return ImapProtocolError(f"{command} failed at {where}: {exc}")
    if error_type is ImapTimeout:
        return ImapTimeout(f"{command} got no answer from {where} in {during.limit:g} s")
    if error_type is ImapConnectionLost:
        return ImapConnectionLost(f"connection to {where} lost during {command}: {type(exc).__name__}")
    if error_type is ImapCommandError:
        return ImapCommandError(f"{command} failed: {exc}", command or "", "NO")
    return error_type(f"{command or 'connecting'} failed at {where}: {exc}")


class ImapSession:
    """One logged-in IMAP connection, used by one task at a time."""

    def __init__(
        self,
        client: LinearIMAP4,
        endpoint: ImapEndpoint,
        *,
        timeout: float,
        gate: CommandGate | None,
        on_command: Callable[[str], None] | None,
    ) -> None:
        self._client = client
        self._proto = client.protocol
        self.endpoint = endpoint
        self.timeout = timeout
        self._gate = gate
        self._on_command = on_command
        self._lock = trio.Lock()
        self.capabilities: frozenset[str] = frozenset()
        self.enabled: frozenset[str] = frozenset()
        self.closed = False
        self.notifying = False  # NOTIFY SET accepted: STATUS and LIST pushes may come with any response
        self._selected: str | None = None  # raw name of the selected mailbox
        self._selected_readonly = False
        self._pushes: list[bytes] = []  # those lines, kept for `take_pushes`
        self._selected_news = False  # news about the selected mailbox came with another reply
        self._left_with_news: set[str] = set()  # mailboxes left (SELECT) with such news untaken
        self._lost: list[BaseException | None] = []
        self._lost_event = trio.Event()
        self._not_before = 0.0  # trio time before which no command is sent (a throttle hint)

    # --- opening -----------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        endpoint: ImapEndpoint,
        password: "str | Credential",
        *,
        timeout: float = 60.0,
        connect_timeout: float = 20.0,
        gate: CommandGate | None = None,
        on_command: Callable[[str], None] | None = None,
    ) -> AsyncIterator["ImapSession"]:
        """A logged-in session for the block; LOGOUT and close on exit (even on cancel).

        Raises ImapConnectError/ImapTlsError (cannot connect), ImapUnavailable (a BYE
        greeting, [UNAVAILABLE], too many connections), ImapAuthError (LOGIN refused),
        ImapThrottled, ImapProtocolError (not an IMAP server: foreign banner, wrong tag,
        no IMAP4rev1).  The password is redacted from every error and log line of the
        seam while the session is open.
        """
        if endpoint.tls not in TLS_MODES:
            raise ImapConnectError(f"unknown TLS mode {endpoint.tls!r}: use tls, starttls or none")
        if gate is not None:
            # aioimaplib sends CAPABILITY by itself after the greeting: count it too
            await gate.acquire()
        if on_command is not None:
            on_command("CAPABILITY")
        credential = Password(password) if isinstance(password, str) else password
        with holding(credential.secret):
            session = await cls._connect(endpoint, timeout, connect_timeout, gate, on_command)
            try:
                if isinstance(credential, Bearer):
                    await session._authenticate(credential)
                else:
                    await session._login(credential.secret)
                yield session
            finally:
                await session.close()

    @classmethod
    async def _connect(cls, endpoint: ImapEndpoint, timeout: float, connect_timeout: float,
                       gate: CommandGate | None, on_command: Callable[[str], None] | None) -> "ImapSession":
        context = _ssl_context(endpoint) if endpoint.tls == "tls" else None
        lost: list[BaseException | None] = []
        lost_event = trio.Event()

        def on_lost(exc: BaseException | None) -> None:
            lost.append(exc)
            lost_event.set()

        async def connect() -> LinearIMAP4:
            client = LinearIMAP4(endpoint.host, endpoint.port, timeout=timeout, ssl_context=context,
                                 conn_lost_cb=on_lost, where=endpoint.describe())

            async def greeted() -> None:
                await client._client_task  # refused, DNS or TLS failures are raised here
                await client.protocol.greeted  # the greeting and CAPABILITY, judged by the protocol

            try:
                await asyncio.wait_for(greeted(), connect_timeout)
            except BaseException:
                if client.protocol.transport is not None:
                    client.protocol.transport.abort()
                raise
            return client

        with map_exceptions(_CONNECT_ERRORS, During(endpoint, limit=connect_timeout)):
            with trio.fail_after(connect_timeout + 1):
                client = await call(connect)
        session = cls(client, endpoint, timeout=timeout, gate=gate, on_command=on_command)
        session._lost = lost
        session._lost_event = lost_event
        session.capabilities = frozenset(c.upper() for c in client.protocol.capabilities)
        if endpoint.tls == "starttls":
            try:
                await session._starttls(connect_timeout)
            except BaseException:
                session._abort()
                raise
        return session

    async def _starttls(self, connect_timeout: float) -> None:
        if "STARTTLS" not in self.capabilities:
            raise ImapTlsError(
                f"{self.endpoint.describe()} does not offer STARTTLS; use --tls tls (port 993)"
            )
        response = await self._run("STARTTLS")
        if response.status != "OK":
            raise ImapTlsError(f"{self.endpoint.describe()} refused STARTTLS: {response.text}")
        context = _ssl_context(self.endpoint)
        proto = self._proto

        async def upgrade() -> None:
            loop = asyncio.get_running_loop()
            transport = await loop.start_tls(proto.transport, proto, context,
                                             server_hostname=self.endpoint.host)
            proto.transport = transport

        with map_exceptions(_STARTTLS_ERRORS, During(self.endpoint, limit=connect_timeout)):
            with trio.fail_after(connect_timeout):
                await call(upgrade)
        await self.refresh_capabilities()

    async def _authenticate(self, bearer: Bearer) -> None:
        """AUTHENTICATE OAUTHBEARER (preferred) or XOAUTH2 with the access token, with
        SASL-IR when offered; ImapAuthError when neither is offered or the token is
        refused (the server's error challenge is answered, so this never hangs)."""
        mechanism = choose_mechanism(self.capabilities)
        if mechanism is None:
            raise ImapAuthError(
                f"{self.endpoint.describe()} offers neither AUTH=OAUTHBEARER nor AUTH=XOAUTH2: "
                "it cannot sign in with OAuth2; use a password")
        if _CONTROL.search(bearer.user) or _CONTROL.search(bearer.token):
            raise ImapAuthError(f"the OAuth2 user or token for {self.endpoint.describe()} holds a line break or NUL")
        initial = (oauthbearer_response(bearer.user, bearer.token, self.endpoint.host, self.endpoint.port)
                   if mechanism == "OAUTHBEARER" else xoauth2_response(bearer.user, bearer.token))
        await self._before("AUTHENTICATE")
        with holding(initial), map_exceptions(_LOGIN_ERRORS, During(self.endpoint, "AUTHENTICATE", self.timeout)):
            with trio.fail_after(self.timeout):
                response = await self._unless_lost(self._proto.authenticate, mechanism, initial,
                                                   sasl_ir="SASL-IR" in self.capabilities)
        if response.result != "OK":
            tagged = [bytes(x) for x in response.lines if not bytes(x).startswith(b"+")]
            detail = redact(tagged[-1].decode("utf-8", "replace"), bearer.token, initial) if tagged else ""
            refusal = self._refusal("AUTHENTICATE", detail, login=True)
            if refusal is not None:
                raise refusal
            raise ImapAuthError(
                f"OAuth2 sign-in ({mechanism}) failed for {bearer.user!r} at {self.endpoint.describe()}: {detail}",
                response_code(detail),
            )
        await self.refresh_capabilities()

    async def _login(self, password: str) -> None:
        if "LOGINDISABLED" in self.capabilities:
            raise ImapAuthError(
                f"{self.endpoint.describe()} refuses LOGIN on this connection (LOGINDISABLED); "
                "use --tls tls or --tls starttls"
            )
        if _CONTROL.search(self.endpoint.username) or _CONTROL.search(password):
            raise ImapAuthError(
                f"the username or password for {self.endpoint.describe()} holds a line break or NUL, "
                "which LOGIN cannot carry: store the right credentials (accounts update)")
        await self._before("LOGIN")
        with map_exceptions(_LOGIN_ERRORS, During(self.endpoint, "LOGIN", self.timeout)):
            with trio.fail_after(self.timeout):
                response = await self._unless_lost(self._proto.login, self.endpoint.username, password)
        if response.result != "OK":
            detail = redact(bytes(response.lines[-1]).decode("utf-8", "replace"), password) if response.lines else ""
            refusal = self._refusal("LOGIN", detail, login=True)
            if refusal is not None:
                raise refusal
            raise ImapAuthError(
                f"authentication failed for {self.endpoint.username!r} at {self.endpoint.describe()}: {detail}",
                response_code(detail),
            )
        # capabilities may grow after LOGIN (ENABLE, CONDSTORE, ...): ask again, exactly
        await self.refresh_capabilities()

    # --- commands ----------------------------------------------------------------------

    async def _before(self, name: str) -> None:
        if self._not_before > trio.current_time():  # the server asked us to back off
            await trio.sleep_until(self._not_before)
        if self._gate is not None:
            await self._gate.acquire()
        if self._on_command is not None:
            self._on_command(name)

    def _check_alive(self) -> None:
        if self.closed or self._lost or self._proto.transport is None or self._proto.transport.is_closing():
            raise ImapConnectionLost(f"connection to {self.endpoint.describe()} is closed")

    async def _run(self, name: str, *args: str, prefix: str = "", timeout: float | None = None,
                   untagged: str | None = None, literal_limit: int | None = None,
                   literal_what: str = "a literal", cut_at: int | None = None) -> ImapResponse:
        async with self._lock:
            self._check_alive()
            command = f"{prefix} {name}".strip()
            await self._before(command)
            limit = self.timeout if timeout is None else timeout
            proto = self._proto
            proto.cut_literals, proto._discarded = 0, 0
            if literal_limit is not None:  # a literal over it ends the connection
                proto.literal_limit, proto.literal_cut, proto.literal_what = literal_limit, False, literal_what
            elif cut_at is not None:  # a literal over it is cut
                proto.literal_limit = cut_at
            try:
                with map_exceptions(_COMMAND_ERRORS, During(self.endpoint, command, limit), on_error=self._abort):
                    with trio.fail_after(limit):
                        response = await self._unless_lost(proto.run, name, *args, prefix=prefix,
                                                           untagged_resp_name=untagged)
            finally:
                proto.literal_limit, proto.literal_cut = HEADER_LITERAL_MAX, True
                proto.literal_what = "a literal"
            if self.notifying:
                self._keep_pushes(response.lines, reply_to=(name, args[0] if args else ""))
            if name in _NEWS_CARRIERS:
                self._note_selected_news(response.lines)
            elif name in _STRAY_NEWS_CARRIERS and self._selected is not None and _stray_news(response.lines):
                self._selected_news = True
            result = ImapResponse.from_aio(response.result, response.lines, proto.cut_literals)
            if result.status != "OK":
                refusal = self._refusal(command, result.text)
                if refusal is not None:
                    if isinstance(refusal, ImapUnavailable):
                        self._abort()
                    elif isinstance(refusal, ImapThrottled):
                        self._not_before = trio.current_time() + refusal.retry_after
                    raise refusal
            return result

    def _refusal(self, command: str, text: str, *, login: bool = False) -> ImapError | None:
        """The error a NO/BAD `text` is whatever the command (throttled, unavailable), or
        None when it is the command's own failure."""
        where = self.endpoint.describe()
        wait = throttle_hint(text)
        if wait is not None:
            return ImapThrottled(f"{where} throttles us ({text[:200]}): mailbridge waits {wait:g} s before "
                                 "its next command", wait, command)
        code = response_code(text)
        crowded = too_many_connections(text)
        if code == "UNAVAILABLE" or crowded or (login and code in LOGIN_TRANSIENT_CODES):
            reason = code or "TOOMANYCONNECTIONS"
            hint = ("close other IMAP clients of this account or lower their number; mailbridge retries later"
                    if crowded or reason in ("LIMIT", "INUSE") else "mailbridge retries later")
            return ImapUnavailable(f"{where} refused {command} ({text[:200]}): {hint}", reason_code=reason)
        return None

    def _keep_pushes(self, lines: Sequence[Any], reply_to: tuple[str, str] = ("", "")) -> None:
        """Keep the untagged STATUS and LIST lines (NOTIFY pushes about other mailboxes)
        among `lines`, but the command's own reply (`reply_to`: its name and first
        argument): a LIST's LIST lines, a STATUS's line about its own mailbox.  A push
        that came inside a LIST or STATUS reply is kept, never dropped."""
        command, argument = reply_to
        own: tuple[bytes, ...] = ()
        if command == "STATUS":  # the server may write the name quoted or as an atom
            bare = re.sub(r'\\(.)', r'\1', argument[1:-1]) if argument[:1] == '"' else argument
            own = tuple(b"STATUS " + form.encode("utf-8", "replace").upper() + b" " for form in (argument, bare))
        for line in lines:
            if type(line) is str:
                continue
            head = line[:7].upper()
            if head == b"STATUS ":
                if any(bytes(line[:len(form)]).upper() == form for form in own):
                    continue
                self._pushes.append(bytes(line))
            elif head[:5] == b"LIST " and command != "LIST":
                self._pushes.append(bytes(line))

    def _note_selected_news(self, lines: Sequence[Any]) -> None:
        if self._selected is not None and any(
                type(line) is not str and _SELECTED_NEWS.match(bytes(line[:40])) for line in lines):
            self._selected_news = True

    def take_selected_news(self) -> bool:
        """Whether news about the selected mailbox (EXISTS, EXPUNGE, FETCH, VANISHED) came
        since the last call with a reply that does not carry it to its caller (LIST,
        STATUS, ..., IDLE's DONE, or a FETCH's or SEARCH's beside its own answer:
        `_stray_news`): the server told once, so a NOOP would not tell
        again; the caller visits the mailbox instead.  Cleared by SELECT/EXAMINE."""
        news, self._selected_news = self._selected_news, False
        return news

    def take_left_news(self, raw_name: str) -> bool:
        """Whether `raw_name` was left for another mailbox while news about it (from
        `take_selected_news`'s sources, or an EXPUNGE or FETCH sent before the SELECT's
        own reply) was untaken: without CONDSTORE a new SELECT does
        not show a flag change, so the caller scans it.  Told once."""
        if raw_name in self._left_with_news:
            self._left_with_news.discard(raw_name)
            return True
        return False

    @property
    def left_news(self) -> frozenset[str]:
        """The mailboxes `take_left_news` would say True for now (without clearing)."""
        return frozenset(self._left_with_news)

    def take_pushes(self) -> list[bytes]:
        """The NOTIFY STATUS and LIST lines that came with command responses (or between
        commands) since the last call; empty unless `notifying`."""
        self._keep_pushes(self.take_unsolicited())
        pushes, self._pushes = self._pushes, []
        return pushes

    async def _unless_lost(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Await `fn` (an asyncio coroutine function), giving up with ConnectionResetError
        the moment the connection is lost: aioimaplib leaves a pending command waiting
        for an answer that can no longer come."""
        outcome: list[Any] = []
        failure: list[BaseException] = []
        async with trio.open_nursery() as nursery:
            async def watch() -> None:
                await self._lost_event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch)
            try:
                outcome.append(await call(fn, *args, **kwargs))
            except Exception as exc:  # re-raised below, outside the nursery's exception group
                failure.append(exc)
            nursery.cancel_scope.cancel()
        if failure:
            raise failure[0]
        if not outcome:
            if self._proto.failure is not None:
                raise self._proto.failure  # why the protocol dropped the connection
            raise ConnectionResetError("the connection was lost")
        return outcome[0]

    async def command(self, name: str, *args: str, prefix: str = "", timeout: float | None = None,
                      untagged: str | None = None, check: bool = True, literal_limit: int | None = None,
                      literal_what: str = "a literal") -> ImapResponse:
        """Run a command; with `check`, NO/BAD raises ImapCommandError (with the RFC 5530
        `code`).  Whatever `check`, a throttled command raises ImapThrottled and
        ``[UNAVAILABLE]`` / too many connections raises ImapUnavailable (the connection is
        dropped).  `literal_limit`: a literal over it drops the connection
        (ImapResponseTooLarge); without it, literals are cut at HEADER_LITERAL_MAX."""
        response = await self._run(name, *args, prefix=prefix, timeout=timeout, untagged=untagged,
                                   literal_limit=literal_limit, literal_what=literal_what)
        if check and response.status != "OK":
            self._raise_for(name, response)
        return response

    def _raise_for(self, name: str, response: ImapResponse) -> None:
        raise ImapCommandError(f"{name} failed: {response.status} {response.text}", name, response.status,
                               response_code(response.text))

    async def refresh_capabilities(self) -> frozenset[str]:
        """Ask CAPABILITY again (after STARTTLS or LOGIN)."""
        response = await self.command("CAPABILITY")
        caps: set[str] = set()
        for line in response.lines:
            line = bytes(line)
            if line.upper().startswith(b"CAPABILITY"):
                caps.update(line.decode("ascii", "replace").split()[1:])
        if not caps:
            raise ImapProtocolError(f"{self.endpoint.describe()} sent no CAPABILITY")
        self.capabilities = frozenset(c.upper() for c in caps)
        self._proto.capabilities = set(caps)
        return self.capabilities

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    @property
    def greeting(self) -> str:
        """The server's greeting line (as text, at most 300 bytes of it)."""
        return bytes(getattr(self._proto, "greeting", b"")).decode("utf-8", "replace").strip()

    @property
    def quirks(self) -> ServerQuirks:
        """What is known about this server (`mailbridge.imap.quirks`), by host, greeting
        and the current capabilities."""
        return quirks_for(self.endpoint.host, self.greeting, self.capabilities)

    @property
    def has_selected_news(self) -> bool:
        """Whether `take_selected_news` would say True now (without clearing it)."""
        return self._selected_news

    @property
    def condstore(self) -> bool:
        """Whether mod-sequences are on (CONDSTORE, or QRESYNC which implies it)."""
        return bool(self.enabled & {"CONDSTORE", "QRESYNC"})

    async def enable(self, *capabilities: str) -> frozenset[str]:
        """ENABLE what the server offers of `capabilities`; returns what got enabled."""
        wanted = [c for c in capabilities if self.has(c)
                  and not (c.upper() == "QRESYNC" and self.quirks.qresync_broken)]
        if not wanted or not self.has("ENABLE"):
            return self.enabled
        response = await self.command("ENABLE", *wanted, check=False)
        got: set[str] = set(self.enabled)
        for line in response.lines:
            line = bytes(line)
            if line.upper().startswith(b"ENABLED"):
                got.update(c.upper() for c in line.decode("ascii", "replace").split()[1:])
        self.enabled = frozenset(got)
        return self.enabled

    async def list(self, reference: str = "", pattern: str = "*") -> ImapResponse:
        """LIST (with RETURN (SPECIAL-USE) when offered)."""
        args = [quote(reference), quote(pattern)]
        if self.has("SPECIAL-USE") and self.has("LIST-EXTENDED"):
            args.append("RETURN (SPECIAL-USE)")
        return await self.command("LIST", *args)

    @property
    def selected(self) -> str | None:
        """The raw (wire) name of the selected mailbox: the one the last successful SELECT
        or EXAMINE selected; None before any, after UNSELECT or CLOSE, after a SELECT or
        EXAMINE the server refused (RFC 3501: that leaves no mailbox selected) or that
        failed, and once the session is closed."""
        return self._selected

    @property
    def selected_readonly(self) -> bool:
        """Whether `selected` is read-only: EXAMINEd, or a SELECT answered [READ-ONLY]."""
        return self._selected is not None and self._selected_readonly

    async def select(self, raw_name: str, *, readonly: bool = False,
                     qresync: tuple[int, int] | None = None, condstore: bool = False) -> ImapResponse:
        """SELECT (or EXAMINE) a mailbox by its raw (modified UTF-7) name; `selected`
        names it once the server agreed.  A refusal raises ImapCommandError.

        `qresync=(uidvalidity, modseq)` asks for VANISHED (EARLIER) since that modseq.
        """
        name = "EXAMINE" if readonly else "SELECT"
        args = [quote(check_mailbox_name(raw_name, name))]
        if qresync is not None and "QRESYNC" in self.enabled:
            args.append(f"(QRESYNC ({qresync[0]} {qresync[1]}))")
        elif condstore and self.has("CONDSTORE"):
            args.append("(CONDSTORE)")
        left = self._selected
        if self._selected_news and left is not None:
            self._left_with_news.add(left)  # a FETCH FLAGS a re-SELECT would not repeat
        self._selected = None  # whatever the outcome, the previous mailbox is left
        self._selected_news = False
        response = await self.command(name, *args, check=False)
        if left is not None and qresync is None and _stray_news(response.lines, exists=False):
            self._left_with_news.add(left)  # sent before the reply: about the mailbox left
        if response.status != "OK":
            self._raise_for(name, response)
        self._proto.state = _aio.SELECTED
        self._selected = raw_name
        self._selected_readonly = readonly or "[READ-ONLY]" in response.text.upper()
        return response

    async def unselect(self) -> None:
        """Leave the selected mailbox without expunging: UNSELECT where offered, else CLOSE
        when it is read-only (which expunges nothing then); otherwise it stays selected.
        Nothing to do when no mailbox is selected."""
        if self._selected is None:
            return
        if self.has("UNSELECT"):
            name = "UNSELECT"
        elif self._selected_readonly:
            name = "CLOSE"
        else:
            return
        response = await self.command(name, check=False)
        if response.status == "OK":
            self._proto.state = _aio.AUTH
            self._selected = None

    async def notify(self, events: str) -> bool:
        """NOTIFY SET `events` (RFC 5465); whether the server accepted it (False where it
        lacks NOTIFY).  Once set (`notifying`), the STATUS and LIST pushes that come with
        any other command's response are kept for `take_pushes`."""
        if not self.has("NOTIFY"):
            return False
        response = await self.command("NOTIFY", f"SET {events}", check=False)
        self.notifying = self.notifying or response.status == "OK"
        return response.status == "OK"

    async def status(self, raw_name: str, items: Sequence[str]) -> ImapResponse:
        return await self.command("STATUS", quote(check_mailbox_name(raw_name, "STATUS")), "(" + " ".join(items) + ")")

    async def uid_fetch(self, uid_set: str, items: str, *, modifiers: str = "",
                        timeout: float | None = None, max_literal: int | None = None) -> ImapResponse:
        """UID FETCH `uid_set` `items` [modifiers], e.g. ``(CHANGEDSINCE 5 VANISHED)``.

        Literals are bounded while they arrive.  Items that return a whole message
        (``BODY.PEEK[]``, ``RFC822``, ...) allow `max_literal` bytes (default
        BODY_LITERAL_MAX): a larger one drops the connection before it is read
        (ImapResponseTooLarge).  Other items (header fields) keep HEADER_LITERAL_MAX
        bytes of each literal (or `max_literal`) and drop the rest: the response counts
        them in `cut_literals`, and one message cannot stop a folder.
        """
        parts = f"{items} {modifiers}".strip()
        whole = _BODY_ITEMS.search(items) is not None
        if whole:
            limit = BODY_LITERAL_MAX if max_literal is None else max_literal
            return await self.command("FETCH", uid_set, parts, prefix="UID", timeout=timeout, literal_limit=limit,
                                      literal_what="a message body (MAILBRIDGE_BODY_MAX_BYTES)")
        response = await self._run("FETCH", uid_set, parts, prefix="UID", timeout=timeout, cut_at=max_literal)
        if response.status != "OK":
            self._raise_for("FETCH", response)
        return response

    async def uid_search(self, criteria: str, *, timeout: float | None = None) -> ImapResponse:
        """UID SEARCH `criteria`; as ``RETURN (ALL)`` (RFC 4731) where the server offers
        ESEARCH, which answers with a compact UID set instead of every UID written out
        (`parse_search` reads both)."""
        if "ESEARCH" in self.capabilities:
            criteria = f"RETURN (ALL) {criteria}"
        return await self.command("SEARCH", criteria, prefix="UID", timeout=timeout)

    # --- writes (the API's write-back: actors/writeback.py) --------------------------------

    async def uid_store(self, uid_set: str, item: str, flags: Sequence[str]) -> ImapResponse:
        """UID STORE `uid_set` `item` (``+FLAGS.SILENT``, ``-FLAGS.SILENT``, ...) of `flags`
        (already checked: system flags and keyword atoms).  NO/BAD raises ImapCommandError."""
        return await self.command("STORE", uid_set, item, "(" + " ".join(flags) + ")", prefix="UID")

    async def uid_copy(self, uid_set: str, raw_name: str) -> ImapResponse:
        """UID COPY to a mailbox (raw name); the tagged OK carries ``[COPYUID ...]`` with UIDPLUS."""
        return await self.command("COPY", uid_set, quote(check_mailbox_name(raw_name, "COPY")), prefix="UID")

    async def uid_move(self, uid_set: str, raw_name: str) -> ImapResponse:
        """UID MOVE (RFC 6851) to a mailbox (raw name); ``[COPYUID ...]`` comes in an
        untagged OK (or the tagged one) with UIDPLUS."""
        return await self.command("MOVE", uid_set, quote(check_mailbox_name(raw_name, "MOVE")), prefix="UID")

    async def uid_expunge(self, uid_set: str) -> ImapResponse:
        """UID EXPUNGE (UIDPLUS): expunges only those of `uid_set` marked \\Deleted."""
        if not self.has("UIDPLUS"):
            raise ImapCommandError(f"{self.endpoint.describe()} does not support UID EXPUNGE (UIDPLUS)",
                                   "EXPUNGE", "NO")
        return await self.command("EXPUNGE", uid_set, prefix="UID")

    async def expunge(self) -> ImapResponse:
        """EXPUNGE: every message of the selected mailbox marked \\Deleted (callers check
        first that no other is)."""
        return await self.command("EXPUNGE")

    async def noop(self) -> ImapResponse:
        return await self.command("NOOP")

    def take_unsolicited(self) -> builtins.list[bytes]:  # `list` here is ImapSession.list
        """Untagged responses received outside any command since the last call."""
        lines = list(self._proto.unsolicited)
        self._proto.unsolicited.clear()
        return lines

    # --- IDLE --------------------------------------------------------------------------

    @asynccontextmanager
    async def idle(self) -> AsyncIterator["IdleStream"]:
        """IDLE for the block; `IdleStream.next_push()` waits for server pushes.

        Leaving the block sends DONE and waits (bounded, shielded) for the completion.
        """
        if not self.has("IDLE"):
            raise ImapCommandError(f"{self.endpoint.describe()} does not support IDLE", "IDLE", "NO")
        async with self._lock:
            self._check_alive()
            await self._before("IDLE")
            proto = self._proto
            holder: dict[str, asyncio.Future] = {}

            async def start() -> None:
                proto._idle_event.clear()
                task = asyncio.ensure_future(proto.idle())
                holder["task"] = task
                ack = asyncio.ensure_future(proto.wait_for_idle_response())
                await asyncio.wait({task, ack}, return_when=asyncio.FIRST_COMPLETED)
                if not proto.has_pending_idle_command():
                    ack.cancel()
                    raise _aio.Abort("server refused IDLE")

            try:
                with map_exceptions(_IDLE_START_ERRORS, During(self.endpoint, "IDLE", self.timeout),
                                    on_error=self._abort):
                    with trio.fail_after(self.timeout):
                        await self._unless_lost(start)
            except ImapError:
                raise  # the IDLE never started, and the connection is dropped
            except BaseException:
                # cancelled while the server may already be idling: end that IDLE too, or
                # it stays pending and LOGOUT waits for it until the cleanup bound
                with trio.CancelScope(shield=True):
                    await self._finish_idle(holder.get("task"))
                raise
            # news that came between commands (no command to carry it) is the first push
            early = self.take_unsolicited()
            if self.notifying:
                self._pushes, kept = [], self._pushes  # and NOTIFY's, whatever carried them
                early = kept + early
            stream = IdleStream(self, early)
            try:
                yield stream
            finally:
                with trio.CancelScope(shield=True):
                    await self._finish_idle(holder.get("task"))

    async def _finish_idle(self, task: asyncio.Future | None) -> None:
        proto = self._proto

        late: list[bytes] = []

        async def done() -> None:
            command = proto.pending_sync_command
            if proto.has_pending_idle_command():
                await proto.wait_for_idle_response()  # DONE only once the server idles
                command = proto.pending_sync_command
                proto.idle_done()
            if task is not None:
                await task
            # what came after DONE, before the tagged OK (Cyrus and Courier report news
            # only here): aioimaplib leaves it in the command's buffer, never queued
            buffer = getattr(command, "buffer", None)
            if isinstance(buffer, builtins.list):
                late.extend(bytes(line) for line in buffer)
                buffer.clear()

        try:
            if self._lost:
                raise ConnectionResetError("the connection was lost")
            with trio.fail_after(CLEANUP_TIMEOUT):
                await self._unless_lost(done)
        except (trio.TooSlowError, Exception):
            self._abort()
        # pushes that arrived between the last read and DONE: a visit follows anyway for
        # the selected mailbox; NOTIFY's STATUS lines about others are kept
        while not proto.idle_queue.empty():
            lines = [line for line in proto.idle_queue.get_nowait() if line != b"stop_wait_server_push"]
            if self.notifying:
                self._keep_pushes(lines)
            self._note_selected_news(lines)
        if late:
            if self.notifying:
                self._keep_pushes(late)
            self._note_selected_news(late)

    # --- closing -----------------------------------------------------------------------

    def _abort(self) -> None:
        self.closed = True
        self._selected = None
        transport = self._proto.transport
        if transport is not None:
            transport.abort()

    async def close(self) -> None:
        """LOGOUT (bounded, shielded) and close the socket; safe to call twice."""
        if self.closed:
            return
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLEANUP_TIMEOUT):
                try:
                    if not self._lost and self._proto.state != _aio.LOGOUT:
                        await call(self._proto.logout)
                except Exception:
                    pass
            self._abort()


class IdleStream:
    """Server pushes during one IDLE."""

    def __init__(self, session: ImapSession, early: list[bytes] | None = None) -> None:
        self._session = session
        self._early = [bytes(line) for line in early or ()]

    async def next_push(self) -> list[bytes]:
        """The next batch of untagged lines (EXISTS, EXPUNGE, FETCH, VANISHED; STATUS
        under NOTIFY); the first is what arrived outside any command before the IDLE.

        Cancellable; raises ImapConnectionLost if the connection drops.
        """
        if self._early:
            early, self._early = self._early, []
            return early
        proto = self._session._proto

        async def get() -> list[bytes]:
            return await proto.idle_queue.get()

        with map_exceptions(_IDLE_ERRORS, During(self._session.endpoint, "IDLE")):
            if self._session._lost:
                raise ConnectionResetError("the connection was lost")
            lines = await self._session._unless_lost(get)
        return [bytes(line) for line in lines if line != b"stop_wait_server_push"]
