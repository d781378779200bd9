"""What the OAuth2 test modules share: a local authorization server (authlib) issuing
5-second access tokens, and a Dovecot whose oauth2 passdb validates tokens at it by
RFC 7662 introspection.  Import the fixtures into a test module to use them."""

from __future__ import annotations

from typing import Iterator

import pytest

from mailbridge.testing.dovecot import DovecotServer
from mailbridge.testing.oauth2_server import OAuth2TestServer
from tests.support.dovecot import running_dovecot

ACCESS_LIFETIME = 5  # seconds: short, so refreshes happen during the tests


@pytest.fixture(scope="module")
def auth_server() -> Iterator[OAuth2TestServer]:
    with OAuth2TestServer(access_lifetime=ACCESS_LIFETIME) as server:
        yield server


@pytest.fixture(scope="module")
def oauth_dovecot(tmp_path_factory, auth_server: OAuth2TestServer) -> Iterator[DovecotServer]:
    yield from running_dovecot(tmp_path_factory.mktemp("dovecot-oauth2"),
                               oauth2_introspection_url=auth_server.introspection_url)
