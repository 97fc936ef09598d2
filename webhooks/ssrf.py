"""Where a webhook may be sent: no server-side request forgery into the hospital's network.

A receiver's URL is checked when the subscription is made (:func:`check_url`) and its host
resolved again at every delivery, every address checked, and the connection made to a
checked address only (webhooks.delivery's network backend): a name that resolved to a
public address at creation and to 10.0.0.5 later (DNS rebinding) is refused at delivery.

Refused unless ``CALLGATE_WEBHOOKS_ALLOW_PRIVATE`` is set: ``http://``, and any address
that is not globally routable (private, loopback, link-local, shared, reserved,
unspecified, multicast; IPv4 inside IPv6 checked as IPv4). The cloud metadata addresses
are refused even then.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata services (AWS, GCP, Azure, Oracle, Alibaba; AWS's IPv6 one): never.
METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "169.254.169.123", "100.100.100.200",
    "fd00:ec2::254",
))


class UrlRefused(Exception):
    """The URL or an address of its host may not receive webhooks (the message says why,
    without the address)."""


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int


def address_refused(ip: IPAddress, allow_private: bool) -> str | None:
    """Why ``ip`` may not be a receiver, or None."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_multicast or ip.is_unspecified:
        return "a multicast or unspecified address"
    if allow_private or ip.is_global:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    return "a private or reserved address"


def check_url(url: str, allow_private: bool) -> Target:
    """The URL's scheme, host and port, if it may receive webhooks (its form only; the
    host's addresses: :func:`resolve`)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused("url is not a valid URL") from None
    scheme = parts.scheme.lower()
    allowed = ("https", "http") if allow_private else ("https",)
    if scheme not in allowed:
        raise UrlRefused("url must be https://" if not allow_private
                         else "url must be http:// or https://")
    if not parts.hostname:
        raise UrlRefused("url has no host")
    if parts.username or parts.password:
        raise UrlRefused("url must not carry credentials")
    if parts.fragment:
        raise UrlRefused("url must not have a fragment")
    return Target(scheme, parts.hostname, port or (443 if scheme == "https" else 80))


def resolve(host: str, port: int, allow_private: bool) -> list[str]:
    """Every address of ``host``, each checked; refused if any may not be a receiver (a
    name with one private address among public ones is refused: which one a connection
    gets is not ours to choose)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:
        found = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise UrlRefused("url's host does not resolve") from None
        found = [ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos]
        if not found:
            raise UrlRefused("url's host does not resolve")
    for ip in found:
        why = address_refused(ip, allow_private)
        if why is not None:
            raise UrlRefused(f"url's host resolves to {why}")
    return list(dict.fromkeys(str(ip) for ip in found))


def check_receiver(url: str, allow_private: bool) -> Target:
    """:func:`check_url`, then every address of its host (:func:`resolve`)."""
    target = check_url(url, allow_private)
    resolve(target.host, target.port, allow_private)
    return target
