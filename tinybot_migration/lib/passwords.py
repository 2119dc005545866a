"""Keeping database passwords out of logs, metadata and errors.

A URL's password is everything between the user's `:` and the last `@` before the host, whatever
it holds; a key=value conninfo string's (or a URL query's) is the `password=` value. Masking takes
the widest reading, so a password with an unencoded `@` or `/` is hidden whole even where libpq
would read part of it as the host or the database. Such a URL is refused before any connection
(`unencoded_password_problem`): libpq would connect somewhere else and echo the fragments.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from psycopg.conninfo import conninfo_to_dict

MASK = "***"
_KEYWORD_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]+)", re.IGNORECASE)
_RESERVED_IN_USERINFO = set("@/?#")


def _split_url(url: str) -> tuple[str, str, str] | None:
    """(scheme, userinfo, everything after the userinfo's `@`) of a URL with a userinfo, else None."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return None
    at = rest.rfind("@")
    if at < 0:
        return None
    return scheme, rest[:at], rest[at + 1 :]


def redact_url(url: str) -> str:
    """A database URL or conninfo string safe for logs, metadata and errors."""
    masked = _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", url)
    parts = _split_url(masked)
    if parts is None:
        return masked
    scheme, userinfo, after = parts
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}://{user}{':' + MASK if colon else ''}@{after}"


def password_forms(url: str) -> list[str]:
    """Every form in which this URL's password may show up in a driver's message, longest first."""
    forms: set[str] = set()
    parts = _split_url(url)
    if parts is not None:
        _, userinfo, _ = parts
        _, colon, password = userinfo.partition(":")
        if colon:
            forms |= {password, unquote(password)}
    for match in _KEYWORD_PASSWORD.finditer(url):
        value = match.group(2)
        forms |= {value, value.strip("'"), unquote(value)}
    try:
        parsed = conninfo_to_dict(url).get("password")
    except Exception:  # an unparsable string: the forms above are all there is
        parsed = None
    if parsed:
        forms.add(parsed)
    return sorted((f for f in forms if f), key=len, reverse=True)


def scrub(message: str, url: str) -> str:
    """Remove the URL's password from a message, in every form, wherever it is."""
    for form in password_forms(url):
        message = message.replace(form, MASK)
    return message


def unencoded_password_problem(url: str) -> str | None:
    """Why libpq would misread this URL's password (an unencoded `@`, `/`, `?` or `#`), or None."""
    parts = _split_url(url)
    if parts is None:
        return None
    _, userinfo, _ = parts
    _, colon, password = userinfo.partition(":")
    found = sorted(_RESERVED_IN_USERINFO & set(password if colon else userinfo))
    if not found:
        return None
    codes = ", ".join(f"{c} as %{ord(c):02X}" for c in found)
    return f"its password holds {' '.join(found)} unencoded: percent-encode them ({codes})"
