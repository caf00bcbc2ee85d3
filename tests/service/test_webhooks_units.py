"""Webhooks without processes: the URL guard (addresses and hostnames that resolve to them), per-key
secrets and Standard Webhooks signing, the retry schedule and what is retried."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from jobs import webhooks
from jobs.settings import SettingsError, WebhookSettings

PRIVATE = [
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.10", "private"),
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("169.254.169.254", "link-local"),  # the cloud metadata service
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("fd00:ec2::254", "private"),  # AWS's IPv6 metadata address
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "public"),  # carrier-grade NAT: "not a public address"
]


@pytest.mark.parametrize(("address", "kind"), PRIVATE)
def test_private_loopback_link_local_and_reserved_addresses_are_refused(address: str, kind: str) -> None:
    # Given an address that is not on the public internet
    # When the guard judges it, as a literal URL host too
    problem = webhooks.address_problem(address)
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(webhooks.WebhookURLError) as refused:
        webhooks.check_url(f"http://{host}:8080/hook", allow_private=False, resolve=_no_dns)
    # Then it is refused, saying what kind of address it is
    assert problem is not None and kind in problem and kind in refused.value.message
    assert not refused.value.retryable


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass_and_the_request_is_pinned_to_the_checked_address(address: str) -> None:
    # Given a public address literal
    host = f"[{address}]" if ":" in address else address
    # When the guard checks a URL on it
    target = webhooks.check_url(f"https://{host}/hooks/tts?token=abc", allow_private=False, resolve=_no_dns)
    # Then it passes, and the URL the worker calls keeps the path and query on that address
    assert webhooks.address_problem(address) is None
    assert target.pinned_url() == f"https://{host}:443/hooks/tts?token=abc" and target.host_header == host


def _no_dns(host: str, port: int) -> list[str]:
    raise AssertionError(f"an IP literal must not be resolved ({host})")


def _dns(answers: dict[str, list[str]]) -> webhooks.Resolver:
    def resolve(host: str, port: int) -> list[str]:
        if host not in answers:
            raise OSError(f"no such host {host}")
        return answers[host]

    return resolve


def test_hostnames_are_judged_by_every_address_they_resolve_to() -> None:
    # Given names that resolve to the metadata address, to a mix of public and loopback, and to public only
    dns = _dns(
        {
            "metadata.example": ["169.254.169.254"],
            "mixed.example": ["93.184.215.14", "::1"],
            "rebind.example": ["10.0.0.5"],
            "hooks.example": ["93.184.215.14", "2606:4700:4700::1111"],
        }
    )
    # When each is checked with private addresses refused
    # Then a name with any non-public address is refused, naming the name and the address
    for host, address in (("metadata.example", "169.254.169.254"), ("mixed.example", "::1")):
        with pytest.raises(webhooks.WebhookURLError, match=f"host '{host}' resolves to {address}"):
            webhooks.check_url(f"http://{host}/h", allow_private=False, resolve=dns)
    # And the public one passes, the request going to its first address with the name as Host
    target = webhooks.check_url("http://hooks.example:8080/h", allow_private=False, resolve=dns)
    assert target.addresses == ("93.184.215.14", "2606:4700:4700::1111")
    assert target.pinned_url() == "http://93.184.215.14:8080/h" and target.host_header == "hooks.example:8080"
    # And with ECHO_WEBHOOK_ALLOW_PRIVATE private names pass; a name that does not resolve may work later
    assert webhooks.check_url("http://rebind.example/h", allow_private=True, resolve=dns).addresses == ("10.0.0.5",)
    with pytest.raises(webhooks.WebhookURLError) as unknown:
        webhooks.check_url("http://nowhere.example/h", allow_private=True, resolve=dns)
    assert unknown.value.retryable


def test_localhost_resolved_by_the_system_is_loopback() -> None:
    # Given the real resolver, When localhost is checked, Then it is refused as loopback
    with pytest.raises(webhooks.WebhookURLError, match="loopback"):
        webhooks.check_url("http://localhost:8000/hook", allow_private=False)


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("ftp://93.184.215.14/x", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http:///path", "no host"),
        ("http://user:pw@93.184.215.14/x", "credentials"),
        ("http://93.184.215.14:99999/x", "not a valid URL"),
        ("http://93.184.215.14/" + "a" * 2100, "MAX_URL_LENGTH"),
    ],
)
def test_urls_that_are_not_plain_http_are_refused_by_name(url: str, says: str) -> None:
    # Given a URL that is not a plain http(s) URL, When it is checked, Then the message says why
    with pytest.raises(webhooks.WebhookURLError, match=says):
        webhooks.check_url(url, allow_private=True, resolve=_no_dns)


def test_events_default_to_completed_and_unknown_ones_are_refused() -> None:
    # Given no events, some events twice and out of order, and an unknown one
    # Then the default is completed, the list is canonical, and the unknown one is named
    assert webhooks.checked_events(None) == ("completed",)
    assert webhooks.checked_events(["completed", "started", "completed"]) == ("started", "completed")
    with pytest.raises(webhooks.WebhookURLError, match="unknown event 'finished'"):
        webhooks.checked_events(["finished"])


def test_each_key_gets_its_own_secret_and_deliveries_verify_with_it_only() -> None:
    # Given one master secret and two key names
    master = "m" * 40
    alice, bob = webhooks.derive_secret(master, "alice"), webhooks.derive_secret(master, "bob")
    # When a body is signed with alice's secret
    body = webhooks.encode_body({"type": "job.completed", "timestamp": "2026-01-01T00:00:00.000Z", "data": {}})
    headers = webhooks.signed_headers(alice, "msg_1", body, datetime.now(UTC))
    # Then the secrets are stable Standard Webhooks secrets, different per key and per master
    assert alice == webhooks.derive_secret(master, "alice") and alice.startswith("whsec_") and alice != bob
    assert alice != webhooks.derive_secret("n" * 40, "alice")
    # And the standardwebhooks package verifies it with alice's secret, not bob's, and not a tampered body
    assert Webhook(alice).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(bob).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(alice).verify(body.replace("completed", "succeeded"), headers)


def test_retries_back_off_three_fold_and_only_transient_answers_are_retried() -> None:
    # Given the default settings (6 attempts, 5 s base)
    settings = WebhookSettings()
    delays = [webhooks.retry_delay(n, settings.retry_base_s) for n in range(1, settings.attempts)]
    # Then the five retries wait 5, 15, 45, 135 and 405 s: the last attempt about 10 minutes after the first
    assert delays == [5, 15, 45, 135, 405] and 600 <= sum(delays) <= 620
    # And 2xx is delivered; 408, 429 and 5xx are retried; redirects and other 4xx are not
    assert [webhooks.verdict(c) for c in (200, 204, 408, 429, 500, 503, 301, 400, 404, 410)] == [
        "delivered",
        "delivered",
        "retry",
        "retry",
        "retry",
        "retry",
        "failed",
        "failed",
        "failed",
        "failed",
    ]


def test_the_settings_name_themselves_when_malformed() -> None:
    # Given a short master secret and a bad number of attempts, Then each is refused by name
    with pytest.raises(SettingsError, match="ECHO_WEBHOOK_SECRET has 5 characters"):
        WebhookSettings.from_env({"ECHO_WEBHOOK_SECRET": "short"})
    with pytest.raises(SettingsError, match="ECHO_WEBHOOK_ATTEMPTS"):
        WebhookSettings.from_env({"ECHO_WEBHOOK_ATTEMPTS": "0"})
    # And without a secret webhooks are off, private addresses refused
    assert WebhookSettings.from_env({}) == WebhookSettings(secret=None, allow_private=False)
