"""IDIS_DNS and IDIS_DNS_ZONE: off by default, checked at startup with a clear message."""

from __future__ import annotations

import pytest

from nodes.settings import SettingsError, load_settings


def test_dns_is_off_unless_an_address_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDIS_DNS", raising=False)
    monkeypatch.delenv("IDIS_DNS_ZONE", raising=False)
    assert load_settings().dns is None
    monkeypatch.setenv("IDIS_DNS", "[::1]:5353")
    monkeypatch.setenv("IDIS_DNS_ZONE", "ID.Example.COM.")
    settings = load_settings()
    assert (settings.dns, settings.dns_zone) == ("[::1]:5353", "id.example.com")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("IDIS_DNS", "localhost", "IDIS_DNS \\(environment\\): "),
        ("IDIS_DNS", "127.0.0.1:70000", "IDIS_DNS \\(environment\\): "),
        ("IDIS_DNS_ZONE", "bad..zone", "IDIS_DNS_ZONE \\(environment\\): "),
        ("IDIS_DNS_ZONE", "zone-" + "x" * 70, "IDIS_DNS_ZONE \\(environment\\): "),
    ],
)
def test_bad_dns_settings_stop_startup(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        load_settings()
