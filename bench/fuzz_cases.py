"""The requests ``bench/fuzz.py`` sends: each protocol's everyday calls, and mutations of them.

A generator is seeded (``random.Random``) and makes one case per call of ``case(n)``: for
HTTP a :class:`Case`, raw bytes and how the connection is used after them (read the answer;
half-close first; or hold the connection open while the promised bytes never come); for
gRPC a :class:`GrpcCase`, a method, message bytes and metadata. Every HTTP request carries
``User-Agent: keyledger-fuzz/<protocol>/<n>`` as its first header, which no mutation
touches: keyledger records the User-Agent in each event, so an answer can be found in the
journal even when it carries no request id (Google's REST answers do not).

The mutations shared by the HTTP protocols (:class:`HttpCases`) are those of the issue:
duplicated and oversized headers, invalid UTF-8, deep or huge JSON, wrong content types,
path tricks (``..``, encoded slashes, NUL, overlong names), truncated bodies and a
Content-Length that lies, bit flips anywhere but the tag. Each protocol adds its own:
SigV4 broken in every part and replayed outside the clock skew, unknown X-Amz-Target
(:class:`AwsCases`); bearer tokens, Google's routes, query and fields
(:class:`GcpRestCases`); the challenge, Host names, Key Vault's names, versions and query
(:class:`AzureCases`); message bytes and metadata (:class:`GrpcCases`). A signed call
whose body or path a mutation changed is signed again, so that it reaches the parser
rather than stops at the signature.
"""

from __future__ import annotations

import hashlib
import json
import random
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

import yarl

from keyledger import sigv4

__all__ = [
    "AwsCases",
    "AzureCases",
    "Case",
    "Credentials",
    "GcpRestCases",
    "GrpcCase",
    "GrpcCases",
    "HttpCases",
    "write",
]

REGION = "us-east-1"
AWS_SECRETS = ("bench/db/password", "bench/api/token")  # bench/upstream.py's
GCP_PROJECT = "keyledger-fuzz"  # as callers name it; the stand-in's own is another
GCP_SECRET = "bench-db-password"  # the stand-ins' one secret (bench/cloud_bench.py)
AZURE_API = "api-version=7.5"
GRPC_SERVICE = "/google.cloud.secretmanager.v1.SecretManagerService/"
# Names written to: a few, so that the stand-ins hold a bounded number of secrets.
WRITE_NAMES = tuple(f"fuzz-{n}" for n in range(8))

Then = Literal["read", "shut", "hold"]


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the fuzz identity holds: a SigV4 key and a bearer token."""

    key_id: str
    secret: str
    token: str


@dataclass(frozen=True, slots=True)
class Case:
    """One HTTP request on the wire.

    ``then``: ``read`` the answer; ``shut`` half-close the connection first; ``hold`` keep
    it open and wait (for what was promised and never comes, the server's timeout answers).
    ``answers``: responses to read (two requests in one write). ``reuse``: the connection
    may carry the next request afterwards.
    """

    kind: str
    data: bytes
    tag: str
    then: Then = "read"
    answers: int = 1
    reuse: bool = True
    head: bool = False  # a HEAD request: its answer has headers only


@dataclass(slots=True)
class Http:
    """A request before it is written, for mutations to edit. ``length``: write a
    Content-Length of the body (False: a mutation wrote the framing itself)."""

    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    version: bytes = b"HTTP/1.1"
    length: bool = True

    def header(self, name: bytes) -> bytes | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    def without(self, name: bytes) -> list[tuple[bytes, bytes]]:
        return [(k, v) for k, v in self.headers if k.lower() != name]


def write(request: Http, tag: str) -> tuple[bytes, int]:
    """The request's bytes, and where its tag's line ends (mutations leave it whole)."""
    line = request.method + b" " + request.target + b" " + request.version + b"\r\n"
    tagged = line + b"User-Agent: " + tag.encode() + b"\r\n"
    headers = [*request.headers]
    if request.length:
        headers.append((b"Content-Length", str(len(request.body)).encode()))
    block = b"".join(k + b": " + v + b"\r\n" for k, v in headers)
    return tagged + block + b"\r\n" + request.body, len(tagged)


# -- junk ----------------------------------------------------------------------------------

INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\x80",
    b"\xf8\x88\x80\x80\x80",
)
CONTROL = (b"\x00", b"\x01", b"\x7f", b"\x1b[31m", b"\t", b"\x0b")
CONTENT_TYPES = (
    b"text/plain", b"application/xml", b"multipart/form-data; boundary=x",
    b"application/x-www-form-urlencoded", b"application/json", b"application/x-amz-json-1.0",
    b"application/x-amz-json-1.1; charset=latin-1", b"", b"*/*",
    b"application/json; charset=\xff", b"a" * 5000,
)  # fmt: skip
PATH_TRICKS = (
    "/..", "/../..", "/%2e%2e", "/%2E%2E/%2e%2e", "/.", "//", "/%2F", "/%2f", "%2F", "/%00",
    "/%5C", "\\", "/%", "/%zz", "/%FF%FE", "/%ED%A0%80", "/%C0%AF", "/;x=1", "/#frag",
    "/a/./b/../c", "/%252F", "/\u00e9", "/\u202e",
)  # fmt: skip
# JSON nesting: shallow, around orjson's limits (dumps: 255 levels, loads: 1024), and far
# beyond (the 10,000 levels, and 100,000).
DEPTHS = (100, 254, 255, 256, 300, 600, 1023, 1024, 1025, 10_000, 100_000)


class Junk:
    """Random data of the kinds that break parsers, from one seeded generator."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def text(self, size: int = 20) -> str:
        alphabet = string.ascii_letters + string.digits + "-_./:%?&=;,+ \"'\\{}[]<>@!*~"
        return "".join(self.rng.choice(alphabet) for _ in range(self.rng.randint(0, size)))

    def word(self, size: int = 12) -> str:
        return "".join(self.rng.choice(string.ascii_lowercase) for _ in range(size))

    def blob(self, size: int = 64) -> bytes:
        return self.rng.randbytes(self.rng.randint(0, size))

    def bad_text(self) -> bytes:
        """Text with a byte that is not UTF-8, or a control character, in it."""
        text = self.text(10).encode()
        at = self.rng.randint(0, len(text))
        return text[:at] + self.rng.choice(self.rng.choice((INVALID_UTF8, CONTROL))) + text[at:]

    def value(self, depth: int = 0) -> Any:
        """Any JSON value, with the occasional odd one."""
        roll = self.rng.random()
        if depth < 3 and roll < 0.25:
            return [self.value(depth + 1) for _ in range(self.rng.randint(0, 4))]
        if depth < 3 and roll < 0.45:
            return {self.text(6): self.value(depth + 1) for _ in range(self.rng.randint(0, 4))}
        return self.rng.choice(
            [None, True, False, 0, -1, 2**63, -(2**63) - 1, 10**30, 1.5, 1e308, "", self.text(),
             "a" * self.rng.choice((127, 128, 2048, 2049, 10_000)), "\u0000", "\ud7ff\ue000",
             "AWSCURRENT"]
        )  # fmt: skip

    def json_body(self, keys: Sequence[str]) -> bytes:
        """A body for a JSON parser: the protocol's keys with odd values, or not JSON."""
        roll, key = self.rng.random(), self.rng.choice(keys)
        if roll < 0.45:
            document = {self.rng.choice(keys): self.value() for _ in range(self.rng.randint(0, 4))}
            if self.rng.random() < 0.3:
                document[self.text(8)] = self.value()
            return json.dumps(document).encode()
        if roll < 0.55:
            return f'{{"{key}": "a", "{key}": {{"{key}": "b"}}, "{key}": 1}}'.encode()
        if roll < 0.65:
            return json.dumps(self.value()).encode()  # not an object
        if roll < 0.72:
            return json.dumps({key: "\ud800"}).encode()  # a lone surrogate, escaped
        if roll < 0.78:
            return b'{"' + key.encode() + b'": "' + self.bad_text() + b'"}'
        if roll < 0.84:
            body = json.dumps({k: self.value() for k in keys}).encode()
            return body[: self.rng.randint(0, len(body))]  # cut short
        if roll < 0.88:
            return self.rng.choice((b"NaN", b"Infinity", b"-0", b"1e99999", b"\xef\xbb\xbf{}"))
        if roll < 0.92:
            return b" \t\r\n" * self.rng.randint(0, 5)
        return self.blob(200)

    def deep(self, keys: Sequence[str]) -> bytes:
        """JSON nested :data:`DEPTHS` deep: arrays, or each object a member of the next."""
        depth = self.rng.choice(DEPTHS)
        if self.rng.random() < 0.3:
            return b"[" * depth + b"]" * depth
        opener = b'{"' + self.rng.choice(keys).encode() + b'":'
        return opener * depth + b"1" + b"}" * depth

    def huge(self, keys: Sequence[str], size: int) -> bytes:
        """A JSON object of about ``size`` bytes: one long string or many small members."""
        if self.rng.random() < 0.5:
            return json.dumps({self.rng.choice(keys): "a" * size}).encode()
        return json.dumps({f"k{n}": n for n in range(size // 12)}).encode()


# -- the shared HTTP mutations -------------------------------------------------------------

Make = Callable[[str], Case]


class HttpCases:
    """One HTTP protocol's cases: a weighted table of mutations of its :meth:`valid` calls;
    these are the ones every protocol gets, and each adds its own with :meth:`add`."""

    body_keys: Sequence[str] = ("x",)

    def __init__(self, protocol: str, rng: random.Random, *, host: str, max_body: int) -> None:
        self.protocol = protocol
        self.rng = rng
        self.host = host
        self.max_body = max_body
        self.junk = Junk(rng)
        self.table: list[tuple[str, float, Make]] = []
        for name, weight, make in (
            ("valid", 10, self.valid_case),
            ("json-body", 9, self.json_body),
            ("deep-json", 2, self.deep_json),
            ("huge-json", 0.3, self.huge_json),
            ("body-over-limit", 0.15, self.body_over_limit),
            ("length-over-limit", 1, self.length_over_limit),
            ("invalid-utf8", 4, self.invalid_utf8),
            ("content-type", 3, self.content_type),
            ("header-repeated", 5, self.header_repeated),
            ("header-oversized", 2, self.header_oversized),
            ("header-many", 0.5, self.header_many),
            ("header-junk", 3, self.header_junk),
            ("path-trick", 8, self.path_trick),
            ("path-overlong", 2, self.path_overlong),
            ("query", 3, self.query),
            ("method", 3, self.method),
            ("http-version", 1, self.http_version),
            ("body-never-comes", 0.4, self.body_never_comes),
            ("body-cut-short", 2, self.body_cut_short),
            ("length-too-small", 1, self.length_too_small),
            ("chunked", 3, self.chunked),
            ("pipelined", 1, self.pipelined),
            ("bit-flips", 8, self.bit_flips),
            ("bytes-cut", 2, self.bytes_cut),
            ("head-never-ends", 0.05, self.head_never_ends),
            ("garbage", 1, self.garbage),
            ("expect", 0.5, self.expect),
        ):
            self.add(name, weight, make)

    def add(self, name: str, weight: float, make: Make) -> None:
        self.table.append((name, weight, make))
        self._weights = [weight for _, weight, _ in self.table]

    def case(self, n: int) -> Case:
        ((_, _, make),) = self.rng.choices(self.table, weights=self._weights)
        return make(f"keyledger-fuzz/{self.protocol}/{n}")

    # What each protocol provides.

    def valid(self) -> Http:
        """One of the protocol's everyday calls, authenticated."""
        raise NotImplementedError

    def resign(self, request: Http) -> Http:
        """``request`` authenticated again after a change (SigV4 signs body and path)."""
        return request

    # Helpers.

    def done(self, kind: str, request: Http, tag: str, **how: Any) -> Case:
        data, _ = write(request, tag)
        return Case(kind, data, tag, head=request.method == b"HEAD", **how)

    def pick(self, options: Sequence[Any]) -> Any:
        return self.rng.choice(options)

    def with_body(self, body: bytes) -> Http:
        request = self.valid()
        request.body = body
        return self.resign(request)

    def lying_length(self, request: Http, length: int) -> Http:
        request.headers.append((b"Content-Length", str(length).encode()))
        request.length = False
        return request

    # The mutations.

    def valid_case(self, tag: str) -> Case:
        return self.done("valid", self.valid(), tag)

    def json_body(self, tag: str) -> Case:
        return self.done("json-body", self.with_body(self.junk.json_body(self.body_keys)), tag)

    def deep_json(self, tag: str) -> Case:
        """Deep JSON as the body, or as one more member of the valid call's body."""
        deep = self.junk.deep(self.body_keys)
        request = self.valid()
        if request.body.endswith(b"}") and self.rng.random() < 0.6:
            inside = request.body[:-1].rstrip()
            request.body = inside + (b", " if inside != b"{" else b"") + b'"Fuzz": ' + deep + b"}"
            return self.done("deep-json", self.resign(request), tag)
        return self.done("deep-json", self.with_body(deep), tag)

    def huge_json(self, tag: str) -> Case:
        size = self.rng.randint(self.max_body // 2, self.max_body - 100)
        body = self.junk.huge(self.body_keys, size)[: self.max_body]
        return self.done("huge-json", self.with_body(body), tag)

    def body_over_limit(self, tag: str) -> Case:
        """A body larger than the limit, all of it sent."""
        body = self.junk.huge(self.body_keys, self.max_body + 1000)
        return self.done("body-over-limit", self.with_body(body), tag, reuse=False)

    def length_over_limit(self, tag: str) -> Case:
        """A Content-Length above the limit, with only a little of that body behind it."""
        request = self.lying_length(self.valid(), self.max_body + self.rng.randint(1, 10**9))
        return self.done("length-over-limit", request, tag, reuse=False)

    def invalid_utf8(self, tag: str) -> Case:
        request, where = self.valid(), self.rng.random()
        if where < 0.5 and request.headers:
            at = self.rng.randrange(len(request.headers))
            name, value = request.headers[at]
            request.headers[at] = (name, value + self.junk.bad_text())
        elif where < 0.7:
            request.headers.append((b"X-Fuzz", self.junk.bad_text()))
        elif where < 0.85:
            request.target += b"/" + quote(self.junk.bad_text(), safe="").encode()
            request = self.resign(request)
        else:
            request.target += b"/" + self.junk.bad_text()  # raw, not percent-encoded
        return self.done("invalid-utf8", request, tag, reuse=False)

    def content_type(self, tag: str) -> Case:
        request = self.valid()
        request.headers = request.without(b"content-type")
        if self.rng.random() < 0.85:
            request.headers.append((b"Content-Type", self.pick(CONTENT_TYPES)))
        return self.done("content-type", self.resign(request), tag)

    def header_repeated(self, tag: str) -> Case:
        request = self.valid()
        names = [k for k, _ in request.headers] + [b"Content-Length", b"Host", b"Transfer-Encoding"]
        name = self.pick(names)
        value = request.header(name.lower()) or b"chunked"
        if self.rng.random() < 0.5:
            value = self.junk.text(30).encode()
        at = self.rng.randint(0, len(request.headers))
        request.headers.insert(at, (self.pick((name, name.lower(), name.upper())), value))
        return self.done("header-repeated", request, tag, reuse=False)

    def header_oversized(self, tag: str) -> Case:
        request = self.valid()
        size = self.pick((8000, 8190, 8191, 8200, 16_384, 65_536, 200_000))
        name = self.pick((b"X-Fuzz", b"Authorization", b"X-Amz-Target", b"Cookie", b"a" * size))
        request.headers.append((name, b"a" * size if len(name) < 100 else b"x"))
        return self.done("header-oversized", request, tag, reuse=False)

    def header_many(self, tag: str) -> Case:
        request = self.valid()
        count = self.pick((100, 200, 1000, 5000))
        request.headers += [(f"X-Fuzz-{n}".encode(), b"v") for n in range(count)]
        return self.done("header-many", request, tag, reuse=False)

    def header_junk(self, tag: str) -> Case:
        request = self.valid()
        line = self.pick(
            ((b"X-Fuzz", b"a\x00b"), (b"X-Fuzz", b"a\rb"), (b"X-Fuzz", b"a\nb"),
             (b"X-Fuzz ", b"space before the colon"), (b"", b"no name"), (b"X(Fuzz)", b"x"),
             (b"X-Fuzz", b"folded\r\n continued"), (b"\xff\xfe", b"name not UTF-8"),
             (b"X-Fuzz", b" " * 100), (b"Host", b""))
        )  # fmt: skip
        request.headers.insert(self.rng.randint(0, len(request.headers)), line)
        return self.done("header-junk", request, tag, reuse=False)

    def path_trick(self, tag: str) -> Case:
        request = self.valid()
        path, _, query = request.target.partition(b"?")
        trick = self.pick(PATH_TRICKS).encode()
        if self.rng.random() < 0.3:
            path += trick
        else:
            segments = path.split(b"/")
            segments.insert(self.rng.randint(1, max(1, len(segments))), trick.strip(b"/"))
            path = b"/".join(segments)
        request.target = path + (b"?" + query if query else b"")
        return self.done("path-trick", self.resign(request), tag, reuse=False)

    def path_overlong(self, tag: str) -> Case:
        request = self.valid()
        size = self.pick((127, 128, 256, 1024, 4096, 8000, 9000, 65_536))
        path, _, query = request.target.partition(b"?")
        request.target = path.rstrip(b"/") + b"/" + b"a" * size + (b"?" + query if query else b"")
        return self.done("path-overlong", self.resign(request), tag, reuse=False)

    def query(self, tag: str) -> Case:
        request = self.valid()
        pairs = [(self.junk.text(8), self.junk.text(12)) for _ in range(self.rng.randint(1, 4))]
        text = "&".join(f"{quote(k)}={quote(v)}" for k, v in pairs).encode()
        if self.rng.random() < 0.2:
            text += b"&" + self.pick((b"%FF=%FE", b"a=%", b"&&&", b"=", b"a=b=c", b"%00=%00"))
        request.target += (b"&" if b"?" in request.target else b"?") + text
        return self.done("query", self.resign(request), tag)

    def method(self, tag: str) -> Case:
        request = self.valid()
        request.method = self.pick(
            (b"GET", b"PUT", b"DELETE", b"PATCH", b"HEAD", b"OPTIONS", b"TRACE", b"post",
             b"FUZZ", b"G\xffT", b"CONNECT", b"PRI")
        )  # fmt: skip
        return self.done("method", self.resign(request), tag, reuse=False)

    def http_version(self, tag: str) -> Case:
        request = self.valid()
        request.version = self.pick((b"HTTP/1.0", b"HTTP/2.0", b"HTTP/9.9", b"HTTP/1.1x", b"FTP/1"))
        if self.rng.random() < 0.3:
            request.headers = request.without(b"host")
        return self.done("http-version", request, tag, reuse=False)

    def body_never_comes(self, tag: str) -> Case:
        """Content-Length promises more than is sent, and the connection stays open."""
        request = self.valid()
        request = self.lying_length(request, len(request.body) + self.rng.randint(1, 5000))
        return self.done("body-never-comes", request, tag, then="hold", reuse=False)

    def body_cut_short(self, tag: str) -> Case:
        """Content-Length promises more than is sent, and the connection is half-closed."""
        request = self.valid()
        request = self.lying_length(request, len(request.body) + self.rng.randint(1, 5000))
        return self.done("body-cut-short", request, tag, then="shut", reuse=False)

    def length_too_small(self, tag: str) -> Case:
        """Content-Length says less than is sent: the rest reads as a next request."""
        request = self.valid()
        request = self.lying_length(request, self.rng.randint(0, len(request.body)))
        return self.done("length-too-small", request, tag, reuse=False)

    def chunked(self, tag: str) -> Case:
        request = self.valid()
        body, half = request.body, len(request.body) // 2
        coding = self.pick((b"chunked", b"gzip, chunked", b"chunked, gzip", b"Chunked"))
        request.headers.append((b"Transfer-Encoding", coding))
        request.length = False
        chunks = f"{half:x}\r\n".encode() + body[:half] + b"\r\n"
        chunks += f"{len(body) - half:x}\r\n".encode() + body[half:] + b"\r\n"
        then: Then = "read"
        roll = self.rng.random()
        if roll < 0.4:
            chunks += b"0\r\n\r\n"  # well formed
        elif roll < 0.55:
            chunks = b"zz\r\n" + body + b"\r\n0\r\n\r\n"  # a size that is not hex
        elif roll < 0.65:
            chunks = f"{len(body):x};ext=\xff\r\n".encode("latin-1") + body + b"\r\n0\r\n\r\n"
        elif roll < 0.75:
            request.headers.append((b"Content-Length", str(len(body)).encode()))
            chunks += b"0\r\n\r\n"  # both framings
        elif roll < 0.85:
            chunks = f"{self.max_body * 4:x}\r\n".encode() + body  # a chunk over the limit
            then = "hold"
        else:
            then = "shut"  # no last chunk
        request.body = chunks
        return self.done("chunked", request, tag, then=then, reuse=False)

    def pipelined(self, tag: str) -> Case:
        first, _ = write(self.valid(), tag)
        second, _ = write(self.valid(), tag + "b")
        return Case("pipelined", first + second, tag, answers=2)

    def bit_flips(self, tag: str) -> Case:
        """Bits flipped anywhere but in the tag's line and the end of the head (a head that
        never ends is :meth:`head_never_ends`)."""
        data, protected = write(self.valid(), tag)
        head_end = data.index(b"\r\n\r\n")
        flipped = bytearray(data)
        for _ in range(self.rng.randint(1, 8)):
            at = self.rng.randrange(len(flipped))
            if protected - len(tag) - 16 <= at < protected or head_end <= at < head_end + 4:
                continue
            flipped[at] ^= 1 << self.rng.randrange(8)
        return Case("bit-flips", bytes(flipped), tag, reuse=False)

    def bytes_cut(self, tag: str) -> Case:
        """The request cut short and the connection half-closed; or cut inside the body
        and held open (the server's read timeout answers)."""
        data, protected = write(self.valid(), tag)
        cut = self.rng.randint(protected, len(data))
        in_body = data.index(b"\r\n\r\n") + 4 < cut < len(data)
        then: Then = "hold" if in_body and self.rng.random() < 0.3 else "shut"
        return Case("bytes-cut", data[:cut], tag, then=then, reuse=False)

    def head_never_ends(self, tag: str) -> Case:
        """A request head that stops before its end, the connection held open."""
        data, protected = write(self.valid(), tag)
        cut = self.rng.randint(protected, data.index(b"\r\n\r\n") + 2)
        return Case("head-never-ends", data[:cut], tag, then="hold", reuse=False)

    def garbage(self, tag: str) -> Case:
        data = self.pick(
            (self.junk.blob(300), b"\r\n" * 50, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
             b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")  # a TLS ClientHello's start
        )  # fmt: skip
        return Case("garbage", data, tag, then="shut", reuse=False)

    def expect(self, tag: str) -> Case:
        request = self.valid()
        request.headers.append((b"Expect", self.pick((b"100-continue", b"200-ok", b"\xff"))))
        return self.done("expect", request, tag, reuse=False)


# -- AWS Secrets Manager ----------------------------------------------------------------------

AWS_OPERATIONS = (
    ("GetSecretValue", "SecretId"), ("DescribeSecret", "SecretId"), ("ListSecrets", None),
    ("BatchGetSecretValue", "SecretIdList"), ("PutSecretValue", "SecretId"),
    ("CreateSecret", "Name"), ("DeleteSecret", "SecretId"),
)  # fmt: skip
AWS_TARGETS = (
    b"secretsmanager.FetchEverything", b"secretsmanager.", b"GetSecretValue",
    b"secretsmanager.getsecretvalue", b"SecretsManager.GetSecretValue",
    b"secretsmanager_20170817.GetSecretValue", b"secretsmanager." + b"A" * 10_000,
    b"secretsmanager.GetSecretValue\x00", b"",
)  # fmt: skip


class AwsCases(HttpCases):
    """Secrets Manager's JSON protocol, SigV4-signed with the fuzz identity's key."""

    body_keys = ("SecretId", "SecretIdList", "Filters", "Name", "VersionId", "VersionStage",
                 "SecretString", "MaxResults", "NextToken")  # fmt: skip

    def __init__(
        self, rng: random.Random, *, host: str, max_body: int, credentials: Credentials
    ) -> None:
        super().__init__("aws-json", rng, host=host, max_body=max_body)
        self.credentials = credentials
        self.keys = sigv4.SigningKeyCache()
        self.sent: list[bytes] = []  # valid calls, to send again (a replay within the skew)
        self.add("target", 5, self.target)
        self.add("sigv4-broken", 10, self.sigv4_broken)
        self.add("sigv4-replayed-late", 4, self.replayed_late)
        self.add("sigv4-replayed", 1, self.replayed)
        self.add("sigv4-not-utf8", 1, self.sigv4_not_utf8)

    def call(self, operation: str, params: dict[str, Any]) -> Http:
        headers = [
            (b"Host", self.host.encode()),
            (b"Content-Type", b"application/x-amz-json-1.1"),
            (b"X-Amz-Target", f"secretsmanager.{operation}".encode()),
        ]
        return Http(b"POST", b"/", headers, json.dumps(params).encode())

    def valid(self) -> Http:
        operation, field_name = self.pick(AWS_OPERATIONS)
        name = self.pick(
            (*AWS_SECRETS, "bench/db/missing", "other/x", f"fuzz/{self.pick(WRITE_NAMES)}")
        )
        params: dict[str, Any] = {}
        if field_name == "SecretIdList":
            params[field_name] = list(AWS_SECRETS)
        elif field_name is not None:
            params[field_name] = name
        if operation in ("PutSecretValue", "CreateSecret"):
            params["SecretString"] = "fuzz-value"
        return self.sign(self.call(operation, params))

    def resign(self, request: Http) -> Http:
        return self.sign(request)

    def sign(
        self,
        request: Http,
        *,
        at: datetime | None = None,
        key_id: str | None = None,
        service: str = "secretsmanager",
    ) -> Http:
        """``request`` with SigV4 headers for what keyledger will see of it (the path and
        query as aiohttp decodes them); as it is when that cannot be known."""
        timestamp = sigv4.amz_date(at or datetime.now(UTC))
        unsigned = (b"authorization", b"x-amz-date")
        headers = [(k, v) for k, v in request.headers if k.lower() not in unsigned]
        headers.append((b"X-Amz-Date", timestamp.encode()))
        try:
            url = yarl.URL(request.target.decode(), encoded=True)
            path, query = url.path, list(url.query.items())
            method = request.method.decode()
            text = {k.lower().decode(): v.decode() for k, v in headers}
        except (UnicodeDecodeError, ValueError):
            return replace(request, headers=headers)
        names = sorted(text)
        scope = f"{timestamp[:8]}/{REGION}/{service}/aws4_request"
        canonical = sigv4.canonical_request(
            method=method,
            path=path,
            query=query,
            headers=text,
            signed_headers=names,
            payload_sha256=hashlib.sha256(request.body).hexdigest(),
        )
        signature = sigv4.signature(
            self.keys.key(self.credentials.secret, timestamp[:8], REGION, service),
            sigv4.string_to_sign(timestamp=timestamp, scope=scope, canonical=canonical),
        )
        value = (
            f"{sigv4.ALGORITHM} Credential={key_id or self.credentials.key_id}/{scope}, "
            f"SignedHeaders={';'.join(names)}, Signature={signature}"
        )
        return replace(request, headers=[*headers, (b"Authorization", value.encode())])

    def target(self, tag: str) -> Case:
        request = self.valid()
        target = self.pick(AWS_TARGETS)
        request.headers = request.without(b"x-amz-target")
        if target or self.rng.random() < 0.5:
            request.headers.append((b"X-Amz-Target", target))
        return self.done("target", self.sign(request), tag)

    def sigv4_broken(self, tag: str) -> Case:
        """A signed call with one part of its signature, or of what it signs, spoiled."""
        request = self.valid()
        how = self.rng.randrange(14)
        if how == 3:  # a key keyledger never issued
            request = self.sign(request, key_id="AKKL" + self.junk.word(16).upper())
        elif how == 4:  # signed for another service
            request = self.sign(request, service=self.pick(("s3", "ssm", "sts")))
        auth = request.header(b"authorization") or b""
        headers = request.without(b"authorization")
        if how == 0:  # one hex digit of the signature changed
            at = len(auth) - 1 - self.rng.randrange(64)
            auth = auth[:at] + (b"0" if auth[at : at + 1] != b"0" else b"1") + auth[at + 1 :]
        elif how == 1:
            auth = auth.upper()
        elif how == 2:
            auth = auth.replace(b", Signature=", b", Sig=")
        elif how == 5:  # X-Amz-Target left out of SignedHeaders
            auth = auth.replace(b";x-amz-target", b"")
        elif how == 6:  # SignedHeaders names a header that is not there
            auth = auth.replace(b"SignedHeaders=", b"SignedHeaders=x-absent;")
        elif how == 7:
            auth = self.junk.text(80).encode()
        elif how == 8:
            auth = b"AWS4-HMAC-SHA256 " + b"," * self.rng.randint(1, 5000)
        elif how == 9:  # the date changed after signing
            date = self.pick((b"2024-01-01", b"99999999T999999Z", b"", b"20260230T000000Z"))
            headers = [(k, date if k.lower() == b"x-amz-date" else v) for k, v in headers]
        elif how == 10:  # an unsigned x-amz-* header added
            headers.append((b"X-Amz-Security-Token", self.junk.text(40).encode()))
        elif how == 11:  # the body changed after signing
            request.body += b" "
        elif how == 12:
            auth = b""
        elif how == 13:  # Authorization sent twice, the first one broken
            headers.append((b"Authorization", b"AWS4-HMAC-SHA256 Credential=x"))
        request.headers = [*headers, (b"Authorization", auth)] if auth else headers
        return self.done("sigv4-broken", request, tag)

    def replayed_late(self, tag: str) -> Case:
        """Signed outside the clock skew (300 s by default): as a request captured and sent
        again later would be, or one from a machine whose clock is off."""
        offset = timedelta(seconds=self.rng.randint(301, 86_400)) * self.pick((1, -1))
        request = self.sign(self.valid(), at=datetime.now(UTC) + offset)
        return self.done("sigv4-replayed-late", request, tag)

    def replayed(self, tag: str) -> Case:
        """A valid call's bytes sent again (within the skew, accepted again, as by AWS)."""
        if not self.sent or self.rng.random() < 0.2:
            data, _ = write(self.valid(), tag)
            self.sent = [*self.sent[-99:], data]
            return Case("sigv4-replayed", data, tag)
        return Case("sigv4-replayed", self.pick(self.sent), tag)

    def sigv4_not_utf8(self, tag: str) -> Case:
        """A signed header whose value ends in a byte that is not UTF-8."""
        request = self.valid()
        name = self.pick((b"x-amz-target", b"content-type", b"host"))
        request.headers = [(k, v + b"\xff" if k.lower() == name else v) for k, v in request.headers]
        return self.done("sigv4-not-utf8", request, tag)


# -- bearer tokens: Google's REST and Key Vault -------------------------------------------

TOKEN_SPOILERS: tuple[Callable[[str], bytes], ...] = (
    lambda t: b"",  # no Authorization at all
    lambda t: b"Bearer",
    lambda t: b"Bearer ",
    lambda t: b"Basic " + t.encode(),
    lambda t: b"bearer   " + t.encode() + b"   ",
    lambda t: b"Bearer " + t[:-1].encode() + b"x",
    lambda t: b"Bearer " + t[:20].encode(),
    lambda t: b"Bearer kltok_aaaaaaaaaaaa_" + b"a" * 43,
    lambda t: b"Bearer " + t.encode() + b"\xff",
    lambda t: b"Bearer " + t.encode() + b" " + t.encode(),
    lambda t: b"Bearer a.b.c",
    lambda t: b"Bearer " + b"x" * 8000,
)


class BearerCases(HttpCases):
    """A protocol whose callers send the fuzz identity's bearer token."""

    def __init__(
        self, protocol: str, rng: random.Random, *, host: str, max_body: int, token: str
    ) -> None:
        super().__init__(protocol, rng, host=host, max_body=max_body)
        self.token = token
        self.add("token", 8, self.spoiled_token)

    def authorized(self, method: str, target: str, body: bytes = b"") -> Http:
        headers = [
            (b"Host", self.host.encode()),
            (b"Authorization", b"Bearer " + self.token.encode()),
        ]
        if body:
            headers.append((b"Content-Type", b"application/json"))
        return Http(method.encode(), target.encode(), headers, body)

    def spoiled_token(self, tag: str) -> Case:
        request = self.valid()
        value = self.pick(TOKEN_SPOILERS)(self.token)
        request.headers = request.without(b"authorization")
        if value:
            request.headers.append((b"Authorization", value))
        if self.rng.random() < 0.1:  # and the right one after it
            request.headers.append((b"Authorization", b"Bearer " + self.token.encode()))
        return self.done("token", request, tag)


GCP_WORDS = ("projects", GCP_PROJECT, "locations", "global", "secrets", GCP_SECRET, "versions",
             "latest", "", "..", "%2F", "%00", "a" * 300, "\u00e9")  # fmt: skip
GCP_VERBS = ("", ":access", ":addVersion", ":disable", ":enable", ":destroy", ":getIamPolicy",
             ":setIamPolicy", ":testIamPermissions", ":fetch", ":", "::access",
             ":ACCESS")  # fmt: skip
GCP_PARAMETERS = ("$alt", "alt", "$.xgafv", "prettyPrint", "fields", "pageSize", "pageToken",
                  "filter", "secretId", "updateMask", "options.requestedPolicyVersion", "name",
                  "parent", "secret.name", "payload.data", "a.b.c.d.e.f", "key")  # fmt: skip
GCP_VALUES = ("json", "json;enum-encoding=int", "proto", "media", "-1", "0", "1e400",
              "99999999999999999999", "true", "", "x" * 5000, "%FF")  # fmt: skip


class GcpRestCases(BearerCases):
    """Secret Manager's v1 REST surface under /v1/, as the SDK's REST transport sends it."""

    body_keys = ("name", "parent", "secretId", "secret", "payload", "data", "dataCrc32c",
                 "labels", "replication", "automatic", "etag", "policy", "permissions",
                 "updateMask", "annotations", "versionAliases")  # fmt: skip

    def __init__(self, rng: random.Random, *, host: str, max_body: int, token: str) -> None:
        super().__init__("gcp-rest", rng, host=host, max_body=max_body, token=token)
        self.add("gcp-path", 8, self.gcp_path)
        self.add("gcp-query", 4, self.gcp_query)
        self.add("gcp-fields", 5, self.gcp_fields)

    def valid(self) -> Http:
        project = self.pick((GCP_PROJECT, GCP_PROJECT, "other-project"))
        secret = self.pick((GCP_SECRET, GCP_SECRET, "bench-missing", self.pick(WRITE_NAMES)))
        base = f"/v1/projects/{project}/secrets"
        payload = b'{"payload": {"data": "ZnV6eg=="}}'
        return self.authorized(
            *self.pick(
                (("GET", f"{base}/{secret}/versions/latest:access"),
                 ("GET", f"{base}/{secret}/versions/1:access"),
                 ("GET", f"{base}?pageSize=5"),
                 ("GET", f"{base}/{secret}"),
                 ("GET", f"{base}/{secret}/versions"),
                 ("POST", f"{base}/{secret}:addVersion", payload),
                 ("POST", f"{base}?secretId={self.pick(WRITE_NAMES)}",
                  b'{"replication": {"automatic": {}}}'),
                 ("DELETE", f"{base}/{secret}"),
                 ("GET", f"{base}/{secret}:getIamPolicy"))
            )
        )  # fmt: skip

    def gcp_path(self, tag: str) -> Case:
        request = self.valid()
        parts = [self.pick(GCP_WORDS) for _ in range(self.rng.randint(0, 8))]
        path = "/v1/" + "/".join(parts) + self.pick(GCP_VERBS)
        request.target = quote(path, safe="/:%").encode()
        return self.done("gcp-path", request, tag)

    def gcp_query(self, tag: str) -> Case:
        request = self.valid()
        pairs = [
            f"{quote(self.pick(GCP_PARAMETERS))}={quote(self.pick(GCP_VALUES), safe='%')}"
            for _ in range(self.rng.randint(1, 5))
        ]
        request.target += (("&" if b"?" in request.target else "?") + "&".join(pairs)).encode()
        return self.done("gcp-query", request, tag)

    def gcp_fields(self, tag: str) -> Case:
        """Known fields with values of the wrong type or shape."""
        base = f"/v1/projects/{self.pick((GCP_PROJECT, 'other-project'))}/secrets"
        method, target = self.pick(
            (("POST", f"{base}/{self.pick(WRITE_NAMES)}:addVersion"),
             ("POST", f"{base}?secretId={self.pick(WRITE_NAMES)}"),
             ("POST", f"{base}/{GCP_SECRET}:setIamPolicy"),
             ("PATCH", f"{base}/{GCP_SECRET}?updateMask=labels"))
        )  # fmt: skip
        fields: dict[str, tuple[Any, ...]] = {
            "payload": ({"data": 1}, {"data": "not base64!"}, {"dataCrc32c": "x"},
                        {"data": "ZnV6eg==", "dataCrc32c": "1"}, [], "x"),
            "replication": ({"automatic": 1}, {"userManaged": {"replicas": [{}]}}, {}),
            "labels": ({"a": 1}, {"": ""}, {"A" * 100: "b"}, []),
            "policy": ({"bindings": [{"role": 1}]}, {"version": "x"}, {}),
            "versionAliases": ({"a": "x"}, {"a": 1e400}, {"a": 2**70}),
            "etag": ("", "not base64", 1),
            "secret": ({}, {"name": 1}, "x"),
        }  # fmt: skip
        chosen = self.rng.sample(sorted(fields), self.rng.randint(1, 3))
        body = json.dumps({k: self.pick(fields[k]) for k in chosen}).encode()
        return self.done("gcp-fields", self.authorized(method, target, body), tag)


AZURE_NAMES = ("a" * 127, "a" * 128, "a_b", "a.b", "-", "%00", "%2F", "restore", "versions",
               "backup", "\u00e9", "..", "", "A" * 5000)  # fmt: skip
AZURE_VERSIONS = ("", "latest", "0" * 64, "0" * 65, "../x", "%2F", "versions")
AZURE_HOSTS = (b"", b"vault.example", b"[::1]:8443", b"[::1", b"a" * 300, b"h\xffst",
               b"host:99999", b"host:port", b"127.0.0.1:0", b"a..b", b"user@host")  # fmt: skip


class AzureCases(BearerCases):
    """Key Vault's secrets surface, on keyledger's default vault."""

    body_keys = ("value", "contentType", "attributes", "enabled", "tags", "exp", "nbf",
                 "recoveryLevel")  # fmt: skip

    def __init__(self, rng: random.Random, *, host: str, max_body: int, token: str) -> None:
        super().__init__("azure", rng, host=host, max_body=max_body, token=token)
        self.add("challenge", 3, self.challenge)
        self.add("azure-path", 8, self.azure_path)
        self.add("azure-query", 5, self.azure_query)
        self.add("host", 4, self.host_header)

    def valid(self) -> Http:
        name = self.pick(
            (GCP_SECRET, GCP_SECRET, "BENCH-DB-PASSWORD", "missing", self.pick(WRITE_NAMES))
        )
        version = "0123456789abcdef0123456789abcdef"
        return self.authorized(
            *self.pick(
                (("GET", f"/secrets/{name}/?{AZURE_API}"),
                 ("GET", f"/secrets/{name}?{AZURE_API}"),
                 ("GET", f"/secrets/{name}/{version}?{AZURE_API}"),
                 ("GET", f"/secrets?{AZURE_API}&maxresults=5"),
                 ("GET", f"/secrets/{name}/versions?{AZURE_API}"),
                 ("PUT", f"/secrets/{self.pick(WRITE_NAMES)}?{AZURE_API}", b'{"value": "fuzz"}'),
                 ("DELETE", f"/secrets/{name}?{AZURE_API}"),
                 ("GET", f"/deletedsecrets?{AZURE_API}"),
                 ("POST", f"/secrets/{name}/backup?{AZURE_API}"),
                 ("PATCH", f"/secrets/{name}/?{AZURE_API}", b'{"contentType": "text/plain"}'))
            )
        )  # fmt: skip

    def challenge(self, tag: str) -> Case:
        """No credentials: Key Vault's clients always begin so, to learn where to get a token."""
        request = self.valid()
        request.headers = request.without(b"authorization")
        return self.done("challenge", request, tag)

    def azure_path(self, tag: str) -> Case:
        request = self.valid()
        collection = self.pick(
            ("secrets", "deletedsecrets", "SECRETS", "DeletedSecrets", "x/secrets")
        )
        version = self.pick(AZURE_VERSIONS)
        tail = self.pick(("", "/", "/recover", "/backup", "/versions", "/x/y/z"))
        path = f"/{collection}/{self.pick(AZURE_NAMES)}" + (f"/{version}" if version else "") + tail
        request.target = (quote(path, safe="/%") + f"?{AZURE_API}").encode()
        return self.done("azure-path", request, tag)

    def azure_query(self, tag: str) -> Case:
        request = self.valid()
        pairs = self.pick(
            ([], [("api-version", "")], [("api-version", "1.0")],
             [("api-version", "7.5"), ("api-version", "7.0")],
             [("api-version", "7.5"), ("maxresults", self.pick(("0", "26", "-1", "abc", "05")))],
             [("api-version", "7.5"), ("$skiptoken", "x" * self.pick((10, 4096, 4097, 100_000)))],
             [("API-VERSION", "7.5")], [("api-version", "7.5\x00")])
        )  # fmt: skip
        query = "&".join(f"{quote(k, safe='$')}={quote(v)}" for k, v in pairs)
        request.target = request.target.partition(b"?")[0] + (
            f"?{query}".encode() if query else b""
        )
        return self.done("azure-query", request, tag)

    def host_header(self, tag: str) -> Case:
        request = self.valid()
        host = self.pick(AZURE_HOSTS)
        request.headers = request.without(b"host")
        if host or self.rng.random() < 0.5:
            request.headers.insert(0, (b"Host", host))
        return self.done("host", request, tag, reuse=False)


# -- Google Secret Manager, gRPC --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GrpcCase:
    """One gRPC call: the full method, the request message's bytes, the metadata."""

    kind: str
    method: str
    body: bytes
    metadata: tuple[tuple[str, str | bytes], ...]


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes([*out, value])


class GrpcCases:
    """SecretManagerService's unary calls, with their messages and metadata mutated."""

    protocol = "gcp-grpc"

    def __init__(self, rng: random.Random, *, token: str, max_body: int) -> None:
        from google.cloud.secretmanager_v1.types import service

        self.rng = rng
        self.junk = Junk(rng)
        self.token = token
        self.max_body = max_body
        name = f"projects/{GCP_PROJECT}/secrets/{GCP_SECRET}"
        write_to = f"projects/{GCP_PROJECT}/secrets/{rng.choice(WRITE_NAMES)}"
        other = f"projects/other-project/secrets/{GCP_SECRET}/versions/1"
        messages: list[tuple[str, Any]] = [
            ("AccessSecretVersion", service.AccessSecretVersionRequest(name=f"{name}/versions/1")),
            ("AccessSecretVersion", service.AccessSecretVersionRequest(name=other)),
            ("GetSecret", service.GetSecretRequest(name=name)),
            ("ListSecrets", service.ListSecretsRequest(parent=f"projects/{GCP_PROJECT}")),
            ("ListSecretVersions", service.ListSecretVersionsRequest(parent=name)),
            ("AddSecretVersion", service.AddSecretVersionRequest(
                parent=write_to, payload={"data": b"x"})),
            ("DeleteSecret", service.DeleteSecretRequest(name=name)),
        ]  # fmt: skip
        self.valid = [(rpc, bytes(type(m).serialize(m))) for rpc, m in messages]
        self.table: list[tuple[str, float, Callable[[], GrpcCase]]] = [
            ("valid", 15, self.valid_call),
            ("method", 8, self.method),
            ("token", 12, self.spoiled_token),
            ("message-bit-flips", 15, self.bit_flips),
            ("message-random", 8, self.random_bytes),
            ("message-cut", 8, self.cut),
            ("message-unknown-fields", 5, self.unknown_fields),
            ("message-deep-groups", 3, self.deep_groups),
            ("message-other-type", 5, self.other_type),
            ("message-too-large", 0.3, self.too_large),
            ("metadata", 5, self.metadata_junk),
        ]
        self._weights = [weight for _, weight, _ in self.table]

    def case(self, n: int) -> GrpcCase:
        ((_, _, make),) = self.rng.choices(self.table, weights=self._weights)
        return make()

    def _call(
        self, kind: str, body: bytes, *, rpc: str | None = None, **more: str | bytes
    ) -> GrpcCase:
        method = GRPC_SERVICE + (rpc or self.rng.choice(self.valid)[0])
        sent: dict[str, str | bytes] = {"authorization": f"Bearer {self.token}", **more}
        return GrpcCase(kind, method, body, tuple((k, v) for k, v in sent.items() if v != ""))

    def _valid(self) -> tuple[str, bytes]:
        rpc, body = self.rng.choice(self.valid)
        return rpc, body

    def valid_call(self) -> GrpcCase:
        rpc, body = self._valid()
        return self._call("valid", body, rpc=rpc)

    def method(self) -> GrpcCase:
        method = self.rng.choice(
            (GRPC_SERVICE + "FetchEverything", GRPC_SERVICE,
             "/google.cloud.secretmanager.v1beta1.SecretManagerService/AccessSecretVersion",
             "/grpc.health.v1.Health/Check", "/" + self.junk.text(30),
             GRPC_SERVICE + "accesssecretversion", GRPC_SERVICE + "AccessSecretVersion/extra")
        )  # fmt: skip
        return GrpcCase(
            "method", method, self._valid()[1], (("authorization", f"Bearer {self.token}"),)
        )

    def spoiled_token(self) -> GrpcCase:
        rpc, body = self._valid()
        value = self.rng.choice(TOKEN_SPOILERS)(self.token)
        text = value.decode("ascii", "replace").replace("\ufffd", "~")  # metadata is ASCII
        return self._call("token", body, rpc=rpc, authorization=text)

    def bit_flips(self) -> GrpcCase:
        rpc, body = self._valid()
        flipped = bytearray(body)
        for _ in range(self.rng.randint(1, 6)):
            flipped[self.rng.randrange(len(flipped))] ^= 1 << self.rng.randrange(8)
        return self._call("message-bit-flips", bytes(flipped), rpc=rpc)

    def random_bytes(self) -> GrpcCase:
        return self._call("message-random", self.junk.blob(300))

    def cut(self) -> GrpcCase:
        rpc, body = self._valid()
        return self._call("message-cut", body[: self.rng.randrange(len(body))], rpc=rpc)

    def unknown_fields(self) -> GrpcCase:
        rpc, body = self._valid()
        number = self.rng.choice((15, 16, 100, 536_870_911))
        extra = _varint(number << 3 | 2) + _varint(5) + b"fuzz!"
        if self.rng.random() < 0.5:
            extra += _varint(number << 3) + b"\xff" * 11  # a varint that never ends
        return self._call("message-unknown-fields", body + extra, rpc=rpc)

    def deep_groups(self) -> GrpcCase:
        rpc, body = self._valid()
        depth = self.rng.choice((50, 100, 101, 1000, 100_000))
        start, end = _varint(20 << 3 | 3), _varint(20 << 3 | 4)
        return self._call("message-deep-groups", body + start * depth + end * depth, rpc=rpc)

    def other_type(self) -> GrpcCase:
        return self._call("message-other-type", self._valid()[1])

    def too_large(self) -> GrpcCase:
        """Over keyledger's limit (refused, audited), or over gRPC's own ceiling."""
        rpc, body = self._valid()
        size = self.rng.choice((self.max_body + 10, 2 * self.max_body + (2 << 20)))
        padding = _varint(99 << 3 | 2) + _varint(size) + b"a" * size
        return self._call("message-too-large", body + padding, rpc=rpc)

    def metadata_junk(self) -> GrpcCase:
        rpc, body = self._valid()
        extra: list[tuple[str, str | bytes]] = [
            ("authorization-bin", b"\xff\x00"),
            ("x-fuzz", "a" * self.rng.choice((100, 8000, 16_000))),
            ("x-goog-request-params", "name=" + "a" * 300),
            ("x-fuzz-bin", self.junk.blob(50)),
            ("user-agent", self.junk.text(30)),
        ]
        key, value = self.rng.choice(extra)
        return self._call("metadata", body, rpc=rpc, **{key: value})
