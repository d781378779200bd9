"""The API's header checks (web.guard) as pure functions."""

from __future__ import annotations

import pytest

from web.metrics import method_label
from web.guard import check_content_type, check_cross_site, check_host, split_host

PORT = 8025


@pytest.mark.parametrize("host", ["127.0.0.1:8025", "localhost:8025", "LocalHost:8025", "localhost.:8025",
                                  "[::1]:8025", "127.3.4.5:8025", None])
def test_loopback_hosts_with_our_port_are_allowed(host):
    assert check_host(host, PORT) is None


@pytest.mark.parametrize("host", ["evil.example:8025", "evil.example", "127.0.0.1:8026", "127.0.0.1",
                                  "localhost.evil.example:8025", "127.0.0.1.nip.io:8025", "[::2]:8025",
                                  "0.0.0.0:8025", "192.168.1.2:8025", "", " ", "127.0.0.1:80:8025",
                                  "a@127.0.0.1:8025", "127.0.0.1:8025/x", "[::1", "127.0.0.1:abc",
                                  "local\x00host:8025", "127.0.0.1:99999"])
def test_other_hosts_are_refused_with_421(host):
    refusal = check_host(host, PORT)
    assert refusal is not None and refusal.status == 421 and "MAILBRIDGE_API_TOKEN" in refusal.message


def test_port_80_may_be_left_out():
    assert check_host("localhost", 80) is None
    assert check_host("localhost", 8025) is not None


def test_split_host():
    assert split_host("[::1]:8025") == ("::1", 8025)
    assert split_host("LOCALHOST") == ("localhost", None)
    assert split_host("a b") is None


HOST = "127.0.0.1:8025"


@pytest.mark.parametrize("origin, site", [(None, None), ("http://127.0.0.1:8025", None),
                                          ("http://127.0.0.1:8025", "same-origin"), (None, "none")])
def test_same_origin_requests_pass(origin, site):
    for method in ("GET", "POST", "DELETE"):
        assert check_cross_site(method, "/accounts", HOST, origin, site, "cors", "empty") is None


@pytest.mark.parametrize("origin, site", [("http://evil.example", None), ("null", None),
                                          ("http://127.0.0.1:8026", None), ("https://127.0.0.1:8025", None),
                                          ("http://localhost:8025", None), ("http://127.0.0.1:8025/x", None),
                                          ("http://u@127.0.0.1:8025", None), (None, "cross-site"),
                                          (None, "same-site"), ("http://127.0.0.1:8025", "cross-site")])
def test_cross_site_requests_are_refused_with_403(origin, site):
    refusal = check_cross_site("POST", "/accounts", HOST, origin, site, "cors", "empty")
    assert refusal is not None and refusal.status == 403


def test_a_link_from_elsewhere_still_opens_the_dashboard():
    assert check_cross_site("GET", "/", HOST, None, "cross-site", "navigate", "document") is None
    assert check_cross_site("GET", "/", HOST, None, "cross-site", "navigate", "iframe") is not None
    assert check_cross_site("GET", "/accounts", HOST, None, "cross-site", "navigate", "document") is not None
    assert check_cross_site("POST", "/", HOST, "http://evil.example", "cross-site", "navigate", "document") is not None


@pytest.mark.parametrize("kind", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_writes_pass(kind):
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        assert check_content_type(method, kind, 10, False) is None


@pytest.mark.parametrize("kind", [None, "", "text/plain", "application/x-www-form-urlencoded",
                                  "multipart/form-data; boundary=x", "application/jsonx", "text/json"])
def test_other_bodies_of_writes_are_refused_with_415(kind):
    for method in ("POST", "PUT", "PATCH"):
        refusal = check_content_type(method, kind, 2, False)
        assert refusal is not None and refusal.status == 415 and "application/json" in refusal.message
    assert check_content_type("DELETE", kind, 2, False) is not None
    assert check_content_type("DELETE", kind, None, True) is not None
    assert check_content_type("DELETE", kind, None, False) is None  # no body: nothing to declare
    assert check_content_type("DELETE", kind, 0, False) is None
    assert check_content_type("GET", kind, 2, False) is None


def test_metrics_method_labels_are_a_fixed_set():
    assert [method_label(m) for m in ("GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS")] == [
        "GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"]
    assert {method_label(m) for m in ("FROB", "X" * 1000, "get", "TRACE", "CONNECT")} == {"other"}
