"""IDIS_REDIRECT_SCHEMES: schemes the web proxy may redirect to besides http and https."""

from __future__ import annotations

import pytest

from nodes.http.proxy import append_to, choose_location, safe_location
from nodes.settings import SettingsError, load_settings
from resolver.errors import ProtocolError
from resolver.values import Data, HandleValue


def test_default_adds_mailto_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDIS_REDIRECT_SCHEMES", raising=False)
    assert load_settings().redirect_schemes == ("mailto",)
    monkeypatch.setenv("IDIS_REDIRECT_SCHEMES", '["FTP", "tel"]')
    assert load_settings().redirect_schemes == ("ftp", "tel")


@pytest.mark.parametrize(
    "scheme", ["javascript", "JavaScript", "data", "vbscript", "file", "a b", ""]
)
def test_unsafe_or_malformed_schemes_are_refused(
    monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    monkeypatch.setenv("IDIS_REDIRECT_SCHEMES", f'["{scheme}"]')
    with pytest.raises(SettingsError, match="IDIS_REDIRECT_SCHEMES"):
        load_settings()


def url(text: str, index: int = 1) -> HandleValue:
    return HandleValue(index, "URL", Data("string", text))


def test_locations_are_absolute_urls_of_allowed_schemes() -> None:
    assert choose_location([url("javascript:alert(1)"), url("https://e.com/", 2)], ()) == (
        "https://e.com/"
    )
    assert choose_location([url("mailto:a@e.com")], ()) is None
    assert choose_location([url("mailto:a@e.com")], ("mailto",)) == "mailto:a@e.com"
    assert not safe_location("https://[::1/x", ())
    assert not safe_location("http://", ())


def test_urlappend_keeps_scheme_and_host() -> None:
    assert append_to("https://e.com", "@evil.example", ()) == "https://e.com/@evil.example"
    assert append_to("https://e.com", "#top", ()) == "https://e.com#top"
    assert append_to("https://e.com/a", "", ()) == "https://e.com/a"
    with pytest.raises(ProtocolError):
        append_to("https://e.com/a", "\r\nLocation: x", ())
