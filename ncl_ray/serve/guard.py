"""What every request to the search service must pass before it reaches a handler. No Ray.

    problem = check_request("POST", "/reload", headers, allowed_hosts={"127.0.0.1"}, token="")
    # None, or (status, field, message) for a JSON error

- Host allow-list (DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends `Host: evil.example`).
- POST bodies must be JSON (`Content-Type: application/json`), which a cross-site form or a no-preflight
  `fetch` (text/plain) cannot send: that is the CSRF defence, together with the absence of CORS headers. The one
  exception, `POST /search/image`, takes `image/jpeg` or `image/png`, which needs a preflight just the same.
- A declared body size at most MAX_BODY_BYTES (a POST without Content-Length is refused).
- With a token (required when the service listens beyond loopback): `Authorization: Bearer <token>` on every
  request except the page itself, which carries no data and reads the token from its URL fragment.
"""

import hmac
import re
from typing import Dict, Iterable, Optional, Set, Tuple

class RequestError(Exception):
    """A request the service refuses: its HTTP status, the field at fault and the message. Raised anywhere in
    the service (a deployment too); the ingress turns it into the JSON error, in one place (app.py)."""

    def __init__(self, status: int, field: str, message: str):
        super().__init__(message)
        self.status, self.field, self.message = status, field, message

    def __reduce__(self):  # crosses process boundaries whole
        return RequestError, (self.status, self.field, self.message)


MAX_BODY_BYTES = 64 * 1024  # 64 queries of 500 characters fit several times over
IMAGE_PATH = "/search/image"  # the one POST whose body is not JSON: the image itself
IMAGE_TYPES = ("image/jpeg", "image/png")  # not a "simple" type: a cross-site page cannot send it unasked
MAX_IMAGE_BODY = 8 * 1024 * 1024  # image_query.MAX_IMAGE_BYTES
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
LOOPBACK_BINDS = frozenset({"127.0.0.1", "localhost", "::1"})
SINGLE_HEADERS = ("host", "authorization", "content-type", "content-length")  # twice = ambiguous: refused
OPEN_PATHS = frozenset({"/"})  # served without the token: the page's HTML holds no data
VIDEO_ID = re.compile(r"[\w][\w .,()+\-]{0,127}")  # letters, digits, and a few separators; no quotes or tags


def host_of(header: str) -> str:
    """The host part of a Host header, lower case: `[::1]:8000` -> `[::1]`, `Example.org:80` -> `example.org`."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[: h.find("]") + 1] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def allowed_hosts(bind_host: str, extra: Iterable[str] = ()) -> Set[str]:
    """Loopback names, the bound address when it is a specific one, and the names passed with --allow-host."""
    out = set(LOOPBACK_HOSTS)
    if bind_host not in ("0.0.0.0", "::", ""):
        out.add(host_of(bind_host if ":" not in bind_host else f"[{bind_host}]"))
    out.update(host_of(h) for h in extra)
    return out


def valid_video_id(video_id: str) -> bool:
    return bool(VIDEO_ID.fullmatch(video_id))


def check_request(method: str, path: str, headers: Dict[str, str], hosts: Set[str],
                  token: str = "") -> Optional[Tuple[int, str, str]]:
    """None when the request may proceed, else (status, field, message). `headers` have lower-case names."""
    host = host_of(headers.get("host", ""))
    if host not in hosts:
        return 421, "host", f"this server does not answer for host {host[:100]!r} (start it with --allow-host)"
    if token and path not in OPEN_PATHS:
        given = headers.get("authorization", "")
        expected = f"Bearer {token}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return 401, "authorization", "a valid 'Authorization: Bearer <token>' header is required"
    if method == "POST":
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        image = path == IMAGE_PATH
        if image and ctype not in IMAGE_TYPES:
            return 415, "content-type", f"{IMAGE_PATH} takes the image itself: Content-Type image/jpeg or image/png"
        if not image and ctype != "application/json":
            return 415, "content-type", "POST bodies must be JSON (Content-Type: application/json)"
        length = headers.get("content-length")
        if length is None or not length.isdigit():
            return 411, "content-length", "POST requests must declare their Content-Length"
        limit = MAX_IMAGE_BODY if image else MAX_BODY_BYTES
        if int(length) > limit:
            return 413, "body", f"the body is larger than {limit} bytes"
    return None


def needs_token(bind_host: str) -> bool:
    """A service listening beyond loopback must be started with a token."""
    return bind_host not in LOOPBACK_BINDS


def repeated_header(names) -> Optional[str]:
    """The first of SINGLE_HEADERS that `names` (a request's header names, repeats kept) holds more than once."""
    low = [n.lower() for n in names]
    return next((h for h in SINGLE_HEADERS if low.count(h) > 1), None)
