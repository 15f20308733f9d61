"""Twilio's request signature and the media token, checked against Twilio's own library (the
`twilio` package's RequestValidator) rather than against our reading of the algorithm."""

from __future__ import annotations

from twilio.request_validator import RequestValidator

from voxgate.transports.twilio_auth import (
    media_token_problem,
    mint_media_token,
    request_signature,
    signature_matches,
    url_variants,
)

TOKEN = "12345"
URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def test_the_signature_is_twilios() -> None:
    ours = request_signature(TOKEN, URL, list(PARAMS.items()))
    assert ours == RequestValidator(TOKEN).compute_signature(URL, PARAMS)
    # The example Twilio publishes for this URL, parameters and token.
    assert ours == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def test_parameters_count_in_name_order_whatever_order_they_came_in() -> None:
    shuffled = list(reversed(PARAMS.items()))
    assert signature_matches(TOKEN, "0/KCTR6DLpKmkAf8muzZqo1nDgQ=", URL, shuffled)


def test_anything_changed_breaks_the_signature() -> None:
    good = RequestValidator(TOKEN).compute_signature(URL, PARAMS)
    items = list(PARAMS.items())
    assert signature_matches(TOKEN, good, URL, items)
    assert not signature_matches("54321", good, URL, items)
    assert not signature_matches(TOKEN, good, URL.replace("foo=1", "foo=2"), items)
    assert not signature_matches(TOKEN, good, URL, [*items[:-1], ("To", "+18005551213")])
    assert not signature_matches(TOKEN, good, URL, [*items, ("Extra", "1")])
    assert not signature_matches(TOKEN, None, URL, items)
    assert not signature_matches(TOKEN, "", URL, items)
    assert not signature_matches("", good, URL, items)


def test_a_url_signed_with_or_without_its_default_port_is_the_same_url() -> None:
    with_port = "https://mycompany.com:443/myapp.php?foo=1&bar=2"
    signed_with_port = RequestValidator(TOKEN).compute_signature(with_port, PARAMS)
    assert signature_matches(TOKEN, signed_with_port, URL, list(PARAMS.items()))
    assert url_variants("http://h:8080/x") == ["http://h:8080/x"]
    assert url_variants("http://[::1]/x") == ["http://[::1]/x", "http://[::1]:80/x"]


def test_a_media_token_admits_its_call_until_it_expires() -> None:
    token = mint_media_token("secret", "CA1", 1000)
    assert media_token_problem("secret", token, "CA1", 999.0) is None
    assert "expired" in (media_token_problem("secret", token, "CA1", 1001.0) or "")
    assert "CA2" in (media_token_problem("secret", token, "CA2", 999.0) or "")
    assert media_token_problem("other", token, "CA1", 999.0) is not None
    assert "voxgate_token" in (media_token_problem("secret", None, "CA1", 999.0) or "")
    assert media_token_problem("secret", "garbage", "CA1", 999.0) is not None
    # A later expiry written over a valid token does not carry its signature along.
    forged = "2000." + token.partition(".")[2]
    assert media_token_problem("secret", forged, "CA1", 1500.0) is not None
