"""Twilio request signatures (``X-Twilio-Signature``): HMAC-SHA1 with the account's auth token over the URL
Twilio called plus its sorted POST parameters. The ``twilio`` package's ``RequestValidator`` computes them."""

from __future__ import annotations


class SignatureCheck:
    """Checks signatures with ``auth_token``; with none, every request passes (``enabled`` is False)."""

    def __init__(self, auth_token: str | None):
        self.enabled = bool(auth_token)
        if self.enabled:
            from twilio.request_validator import RequestValidator

            self._validator = RequestValidator(auth_token)

    def valid(self, url: str, params: dict[str, str], signature: str | None) -> bool:
        """Whether ``signature`` is Twilio's for a request to ``url`` with POST ``params`` (empty for the
        WebSocket upgrade, signed over its ``wss://`` URL)."""
        if not self.enabled:
            return True
        if not signature:
            return False
        return bool(self._validator.validate(url, params, signature))


def sign(auth_token: str, url: str, params: dict[str, str] | None = None) -> str:
    """The signature Twilio would send for ``url`` and ``params``: for the simulated caller and tests."""
    from twilio.request_validator import RequestValidator

    return RequestValidator(auth_token).compute_signature(url, params or {})
