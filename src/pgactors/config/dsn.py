"""Connection strings: parsing libpq DSNs (URLs and ``key=value``) and hiding their passwords.

Parsing follows libpq's rules closely enough to know which parameters a DSN sets and
where its secrets are; the driver still does the real parsing when it connects.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote

URL_PREFIXES = ("postgresql://", "postgres://")
"""The URL schemes libpq accepts."""

MASK = "***"
"""What every hidden password is replaced with."""

_SECRET_KEYS = frozenset({"password", "sslpassword"})
_KEYWORD_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPACE = " \t\n\r\f\v"


class DsnInfo(NamedTuple):
    """What :func:`analyze_dsn` found: parameters, their raw spans, and the secrets."""

    params: dict[str, str]
    spans: dict[str, tuple[int, int]]  # raw span of each parameter's value in the DSN
    secret_spans: list[tuple[int, int]]
    secrets: list[str]


def parse_keyvalue(text: str) -> list[tuple[str, str, int, int]] | None:
    """Parse a libpq ``key=value`` string into (key, value, raw start, raw end) items.

    Returns None when malformed (or empty), following libpq's quoting rules.
    """
    items: list[tuple[str, str, int, int]] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _SPACE:
            i += 1
        if i >= n:
            return items or None
        start = i
        while i < n and text[i] not in _SPACE and text[i] != "=":
            i += 1
        key = text[start:i]
        while i < n and text[i] in _SPACE:
            i += 1
        if i >= n or text[i] != "=" or not _KEYWORD_RE.fullmatch(key):
            return None
        i += 1
        while i < n and text[i] in _SPACE:
            i += 1
        value_start = i
        chars: list[str] = []
        if i < n and text[i] == "'":
            i += 1
            while True:
                if i >= n:
                    return None
                if text[i] == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                elif text[i] == "'":
                    i += 1
                    break
                else:
                    chars.append(text[i])
                    i += 1
        else:
            while i < n and text[i] not in _SPACE:
                if text[i] == "\\" and i + 1 < n:
                    chars.append(text[i + 1])
                    i += 2
                else:
                    chars.append(text[i])
                    i += 1
        items.append((key, "".join(chars), value_start, i))


def _is_conninfo(value: str) -> bool:
    return value.startswith(URL_PREFIXES) or "=" in value


def analyze_dsn(dsn: str) -> DsnInfo:
    """The parameters a DSN sets and where its passwords are; empty when unparseable."""
    info = _analyze_url(dsn) if dsn.startswith(URL_PREFIXES) else _analyze_keyvalue(dsn)
    # libpq may expand a dbname that is itself a connection string; never show its secrets.
    dbname = info.params.get("dbname")
    if dbname is not None and dbname != dsn and _is_conninfo(dbname):
        nested = analyze_dsn(dbname)
        if nested.secrets:
            info.params["dbname"] = redact_dsn(dbname)
            info.secrets.extend((*nested.secrets, dbname))
            if "dbname" in info.spans:
                info.secret_spans.append(info.spans["dbname"])
    return info


def _analyze_keyvalue(dsn: str) -> DsnInfo:
    info = DsnInfo({}, {}, [], [])
    for key, value, start, end in parse_keyvalue(dsn) or []:
        info.params[key] = value
        info.spans[key] = (start, end)
        if key in _SECRET_KEYS and start < end:
            info.secret_spans.append((start, end))
            info.secrets.extend((value, dsn[start:end]))
    return info


def _url_query_spans(dsn: str) -> list[tuple[str, tuple[int, int]]]:
    """(decoded key, raw value span) for each ``key=value`` in a URL's query."""
    query = dsn.find("?", _url_host_start(dsn))
    if query < 0:
        return []
    found: list[tuple[str, tuple[int, int]]] = []
    pos = query + 1
    for part in dsn[query + 1 :].split("&"):
        key, sep, _ = part.partition("=")
        if sep:
            value_start = pos + len(key) + 1
            found.append((unquote(key), (value_start, pos + len(part))))
        pos += len(part) + 1
    return found


def _url_start(dsn: str) -> int:
    return len(next(p for p in URL_PREFIXES if dsn.startswith(p)))


def _url_userinfo_end(dsn: str) -> int:
    """Index of the ``@`` ending the URL's userinfo, or -1.

    libpq takes the first ``@`` before any ``/``; the last ``@`` before ``?`` is also
    considered so a password holding a raw ``/`` or ``@`` is never mistaken for a host.
    """
    start = _url_start(dsn)
    stop = re.compile(r"[@/]").search(dsn, start)
    libpq_at = stop.start() if stop is not None and stop.group() == "@" else -1
    query = dsn.find("?", start)
    last_at = dsn.rfind("@", start, query if query >= 0 else len(dsn))
    return max(libpq_at, last_at)


def _url_host_start(dsn: str) -> int:
    at = _url_userinfo_end(dsn)
    if at >= 0:
        return at + 1
    return _url_start(dsn)


def _analyze_url(dsn: str) -> DsnInfo:
    info = DsnInfo({}, {}, [], [])
    start = _url_start(dsn)
    at = _url_userinfo_end(dsn)
    if at >= 0:
        user, colon, _ = dsn[start:at].partition(":")
        if user:
            info.params["user"] = unquote(user)
        password_start = start + len(user) + 1
        if colon and password_start < at:
            info.params["password"] = unquote(dsn[password_start:at])
            info.secret_spans.append((password_start, at))
            info.secrets.extend((dsn[password_start:at], info.params["password"]))
    host_start = _url_host_start(dsn)
    end = re.compile(r"[/?]").search(dsn, host_start)
    host_end = end.start() if end is not None else len(dsn)
    hosts: list[str] = []
    ports: list[str] = []
    for entry in dsn[host_start:host_end].split(","):
        if entry.startswith("["):
            host, _, rest = entry[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else ""
        else:
            host, _, port = entry.partition(":")
        hosts.append(unquote(host))
        ports.append(unquote(port))
    if any(hosts):
        info.params["host"] = ",".join(hosts)
    if any(ports):
        info.params["port"] = ",".join(ports)
    if host_end < len(dsn) and dsn[host_end] == "/":
        query = dsn.find("?", host_end)
        dbname_end = query if query >= 0 else len(dsn)
        if dbname_end > host_end + 1:
            info.params["dbname"] = unquote(dsn[host_end + 1 : dbname_end])
            info.spans["dbname"] = (host_end + 1, dbname_end)
    for key, (value_start, value_end) in _url_query_spans(dsn):
        raw_value = dsn[value_start:value_end]
        info.params[key] = unquote(raw_value)
        info.spans[key] = (value_start, value_end)
        if key in _SECRET_KEYS and raw_value:
            info.secret_spans.append((value_start, value_end))
            info.secrets.extend((raw_value, info.params[key]))
    return info


def redact_dsn(dsn: str) -> str:
    """``dsn`` with every password replaced by :data:`MASK`."""
    info = analyze_dsn(dsn)
    if not info.params:
        return redact_patterns(dsn)
    result: list[str] = []
    pos = 0
    for start, end in sorted(set(info.secret_spans)):
        result.append(dsn[pos:start])
        result.append(MASK)
        pos = end
    result.append(dsn[pos:])
    return "".join(result)


_URL_PASSWORD_RE = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@]*:)(?P<secret>\S*?)(?=@[^\s@]*(?:\s|$))"
)
_KEYWORD_PASSWORD_RE = re.compile(
    r"(?P<head>password\s*=\s*)(?P<secret>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE
)


def redact_patterns(text: str) -> str:
    """Mask anything in ``text`` shaped like ``scheme://user:secret@`` or ``password=secret``."""
    text = _URL_PASSWORD_RE.sub(lambda m: m.group("head") + MASK, text)
    return _KEYWORD_PASSWORD_RE.sub(lambda m: m.group("head") + MASK, text)


__all__ = [
    "MASK",
    "URL_PREFIXES",
    "DsnInfo",
    "analyze_dsn",
    "parse_keyvalue",
    "redact_dsn",
    "redact_patterns",
]
