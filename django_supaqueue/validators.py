"""Checks of what an HTTP queue may call, shared by the models, their forms and the HTTP handler.

They sit below the models so that ``Queue.save()`` and ``Queue.clean()`` can refuse a bad URL or
header without importing the HTTP client: a base URL is checked when its queue is saved, a path
when its job is enqueued, and both again when the call is made (the row may have changed since).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from . import conf, secrets
from .exceptions import InvalidOption
from .secrets import Secret

_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def check_base_url(url: str) -> str:
    """An absolute http(s) URL with a host, no credentials, query or fragment."""
    url = (url or "").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"HTTP URL {url!r} must be an absolute http:// or https:// URL with a host.")
    if parts.username or parts.password:
        raise ValueError("HTTP URL must not contain credentials: use a secret alias.")
    if parts.query or parts.fragment:
        raise ValueError("HTTP URL must not contain a query or fragment.")
    if "\\" in url or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"HTTP URL {url!r} contains a backslash, space or control character.")
    return url


def check_queue_url(url: str, alias: str) -> str:
    """A queue's base URL, checked where the queue is saved or validated: its syntax, a local host
    the settings refuse, and the hosts its secret alias is bound to (an alias not configured yet is
    left to the call and check E008)."""
    url = check_base_url(url)
    check_local_host(url)
    if alias:
        try:
            secret = secrets.get(alias)
        except (LookupError, ImproperlyConfigured):
            return url
        check_secret_host(url, secret)
    return url


def check_secret_host(url: str, secret: Secret | None) -> None:
    """Refuse to send a bound secret to a host it is not bound to."""
    host = urlsplit(url).hostname or ""
    if secret is not None and not secret.allows(host):
        raise ValueError(
            f"secret alias {secret.alias!r} may only be sent to {', '.join(sorted(secret.hosts))}, "
            f"not {host!r}: point the queue at one of those hosts, or add this one to the alias's "
            "hosts in SUPAQUEUE['HTTP_SECRETS']."
        )


def is_local_address(address: str) -> bool:
    """Loopback, link-local or unspecified (0.0.0.0 and :: reach this machine), IPv4 or IPv6."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # fe80::1%eth0: the zone is not the address
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_link_local or ip.is_unspecified


def is_local_host(host: str) -> bool:
    """A host that names this machine or its link: localhost, or such an address in any spelling
    the resolver takes (127.1 and 2130706433 are 127.0.0.1 to it)."""
    host = secrets.normal_host(host)
    if host == "localhost" or host.endswith(".localhost") or is_local_address(host):
        return True
    try:
        return is_local_address(socket.inet_ntoa(socket.inet_aton(host)))
    except OSError:
        return False


def check_local_host(url: str) -> None:
    """Refuse a URL that names a local host when SUPAQUEUE['HTTP_REFUSE_LOCAL_HOSTS'] says so.

    A name that only resolves to such an address passes here; the call refuses the address it
    connected to (``handlers.http._Gate``).
    """
    host = urlsplit(url).hostname or ""
    if conf.get("HTTP_REFUSE_LOCAL_HOSTS") and is_local_host(host):
        raise ValueError(
            f"HTTP URL host {host!r} is a loopback or link-local address, which "
            "SUPAQUEUE['HTTP_REFUSE_LOCAL_HOSTS'] refuses."
        )


def check_header_name(name: str) -> str:
    """A header name as HTTP spells one (a token): anything else could split or smuggle a header."""
    if not isinstance(name, str) or not _HEADER_NAME.match(name):
        raise ValueError(f"{name!r} is not a valid HTTP header name.")
    return name


def check_path(path: str | None) -> str:
    """A relative path to append to the base URL: no scheme, host, '..', '//' or backslash."""
    if path is None or path == "":
        return ""
    if not isinstance(path, str) or len(path) > 1000:
        raise InvalidOption(f"path must be a string of at most 1000 characters, not {path!r}.")
    bad = (
        "\\" in path
        or "//" in path
        or any(c.isspace() or ord(c) < 32 for c in path)
        or ":" in path.split("/", 1)[0]  # a scheme ("http:x") or a drive
        or urlsplit(path).scheme
        or urlsplit(path).netloc
        or "?" in path
        or "#" in path
        or any(seg in ("..", ".") for seg in path.split("/"))
        or "%2e" in path.lower()
        or "%2f" in path.lower()
        or "%5c" in path.lower()
    )
    if bad:
        raise InvalidOption(
            f"path {path!r} is not a plain relative path: it may not hold a scheme, a host, '..', "
            "'//', a backslash, a query or a fragment. It is only ever appended to the queue's URL."
        )
    return path.lstrip("/")
