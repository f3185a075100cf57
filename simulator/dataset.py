"""Deterministic fake data for the MentionsAPI and MentionLab simulators.

Everything here is a pure function of ``(seed, vendor, id)`` computed with sha256, so two
processes with the same seed (and anchor) serve byte-identical payloads, and any id string,
not only generated ones, gets a stable fate and body. No I/O, no global state.

Poison (see ``simulator.app`` for the whole mode): ids listed under a body kind of
``POISON_KINDS`` (nul, wide_int, deep, ts_min, ts_max, key_echo) get a hostile final body,
and every poisoned id is forced to succeed, so there is always an answer to archive.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, TypeVar

import orjson

MENTIONSAPI = "mentionsapi"
MENTIONLAB = "mentionlab"
VENDORS: tuple[str, str] = (MENTIONSAPI, MENTIONLAB)

# Cumulative fate thresholds, as fractions of the id space.
_FATES: dict[str, tuple[tuple[str, float], ...]] = {
    MENTIONSAPI: (
        ("succeeded", 0.80),
        ("failed", 0.88),
        ("expired", 0.93),
        ("unknown", 0.98),
        ("rejected", 1.0),
    ),
    MENTIONLAB: (
        ("success", 0.72),
        ("retried", 0.80),
        ("failed", 0.88),
        ("unknown", 0.98),
        ("rejected", 1.0),
    ),
}
# Fates that go through non-final polls; the others answer their error at once.
_POLLED_FATES = frozenset({"succeeded", "failed", "success", "retried"})

# Hostile inputs served for chosen ids (``poison``); see simulator.app for what each serves.
POISON_KINDS: tuple[str, ...] = (
    "nul",
    "wide_int",
    "deep",
    "ts_min",
    "ts_max",
    "retry_after",
    "gzip2",
    "key_echo",
    "drip",
    "forbidden_project",
)
# Kinds that change the final body itself (the rest are about how it is sent).
BODY_POISONS = frozenset({"nul", "wide_int", "deep", "ts_min", "ts_max", "key_echo"})
# Stands for the caller's API key in key_echo bodies; the app puts the real key there.
KEY_PLACEHOLDER = "__SIM_API_KEY__"
TS_MIN = "0001-01-01T00:00:00+01:00"  # year 0 once in UTC: out of Python's datetime range
TS_MAX = "9999-12-31T23:59:59Z"
# Just past u64, just below i64, and far past both.
WIDE_INTS: tuple[int, int, int] = (2**64, -(2**63) - 1, 10**30)
MAX_POISON_DEPTH = 1024  # orjson's limit: deeper, the truth itself could not be parsed

MAX_MENTIONSAPI_ID = 256
_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

T = TypeVar("T")


def _key(*parts: object) -> bytes:
    # Length-prefixed so ("a|b", "c") and ("a", "b|c") never collide.
    out = bytearray()
    for part in parts:
        raw = str(part).encode("utf-8", "surrogatepass")
        out += b"%d:" % len(raw)
        out += raw
    return bytes(out)


def _digest(*parts: object) -> bytes:
    return hashlib.sha256(_key(*parts)).digest()


def _unit(*parts: object) -> float:
    """A float in [0, 1) from the hash of ``parts``."""
    return (int.from_bytes(_digest(*parts)[:8], "big") >> 11) / float(1 << 53)


def _base32(digest: bytes, length: int = 26) -> str:
    n = int.from_bytes(digest, "big")
    chars = []
    for _ in range(length):
        chars.append(_CROCKFORD[n & 31])
        n >>= 5
    # ULID-like: the first character of a 26-char ULID is at most "7".
    chars[-1] = _CROCKFORD[n & 7]
    return "".join(reversed(chars))


def _uuid(digest: bytes) -> str:
    b = bytearray(digest[:16])
    b[6] = (b[6] & 0x0F) | 0x40  # version 4
    b[8] = (b[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Rng:
    """Counter-mode sha256 stream: unlike random.Random it is stable across Python versions."""

    __slots__ = ("_base", "_buf", "_counter")

    def __init__(self, *parts: object) -> None:
        self._base = hashlib.sha256(_key(*parts))
        self._counter = 0
        self._buf: list[int] = []

    def _next64(self) -> int:
        if not self._buf:
            h = self._base.copy()
            h.update(self._counter.to_bytes(8, "big"))
            self._counter += 1
            self._buf = list(struct.unpack(">4Q", h.digest()))
        return self._buf.pop()

    def random(self) -> float:
        return (self._next64() >> 11) / float(1 << 53)

    def below(self, n: int) -> int:
        # Modulo bias is ~n/2**64: irrelevant for the small n used here.
        return self._next64() % n

    def randint(self, a: int, b: int) -> int:
        return a + self.below(b - a + 1)

    def uniform(self, a: float, b: float) -> float:
        return a + (b - a) * self.random()

    def chance(self, p: float) -> bool:
        return self.random() < p

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.below(len(seq))]

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        pool = list(seq)
        k = min(k, len(pool))
        for i in range(k):
            j = i + self.below(len(pool) - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:k]

    def uuid(self) -> str:
        return _uuid(self._next64().to_bytes(8, "big") + self._next64().to_bytes(8, "big"))

    def hex(self, nbytes: int) -> str:
        return b"".join(self._next64().to_bytes(8, "big") for _ in range(nbytes // 8 + 1)).hex()[
            : nbytes * 2
        ]


# --------------------------------------------------------------------------- content pools

# Deliberately messy: Unicode, CJK, Cyrillic, emoji, apostrophes and double quotes.
BRANDS: tuple[str, ...] = (
    "Supabase",
    "Neon",
    "PlanetScale",
    "Aiven",
    "Crunchy Data",
    "Render",
    "Fly.io",
    "DigitalOcean",
    "HubSpot",
    "Pipedrive",
    "Zoho CRM",
    "Acme Corp",
    "Notion",
    "Café Crème",
    "数据库Pro",
    "🚀 RocketDB",
    'O\'Reilly "Media"',
    "Ñandú Labs",
    "Müller & Söhne",
    "Zürich Analytics",
    "東京クラウド",
    "Самолёт Tech",
    "Björk Cloud",
    "Straße Software",
    "🔥 Blaze CRM",
    "Crème Brûlée Data",
    "São Paulo Systems",
    "Łódź Labs",
    "naïve-db",
    "L'Atelier Ω",
)

# Other spellings models give some of those brands: case, accents, spacing, a
# legal or product suffix. A person groups each with its brand (`brands suggest`
# must too, and nothing else: tests/analytics/test_catalog_reports.py).
BRAND_VARIANTS: dict[str, tuple[str, ...]] = {
    "HubSpot": ("Hubspot", "HubSpot CRM", "HubSpot, Inc."),
    "Supabase": ("supabase", "Supabase Inc."),
    "PlanetScale": ("Planetscale", "PLANETSCALE"),
    "DigitalOcean": ("Digital Ocean", "DigitalOcean LLC"),
    "Café Crème": ("Cafe Creme", "CAFÉ CRÈME"),
    "Zoho CRM": ("Zoho", "ZOHO CRM"),
    "Acme Corp": ("ACME Corporation", "Acme"),
    "Fly.io": ("Fly", "fly.io"),
    "Müller & Söhne": ("Muller & Sohne", "Müller & Söhne GmbH"),
}
_VARIANT_RATE = 0.15


def spelling(brand: str, *where: object) -> str:
    """How one answer (`where`) spells `brand`: now and then a variant.

    Drawn from a stream of its own, so the other draws of a body stay as they were.
    """
    variants = BRAND_VARIANTS.get(brand)
    if not variants:
        return brand
    rng = _Rng("spelling", brand, *where)
    return rng.choice(variants) if rng.chance(_VARIANT_RATE) else brand


_TOPICS: tuple[str, ...] = (
    "managed PostgreSQL hosting",
    "CRM software for startups",
    "espresso machines under $500",
    "project management tools",
    "vector databases",
    "email marketing platforms",
    "data observability",
    "headless CMS options",
)

_INTROS: tuple[str, ...] = (
    "Here are the most frequently recommended options for {topic} in 2026:",
    "When it comes to {topic}, a few names come up again and again.",
    "Short answer: it depends on your budget — but for {topic} these stand out.",
    "Based on recent reviews and community discussion, the top picks for {topic} are:",
    "I looked at what people on Reddit, G2 and Hacker News say about {topic}.",
)

_DESCRIPTIONS: tuple[str, ...] = (
    "known for a generous free tier and fast onboarding.",
    "praised for “rock-solid” reliability, though pricing can climb quickly.",
    'a newer option; users call it "surprisingly good" for the price.',
    "strong EU data-residency story (GDPR ✓, SOC 2 ✓).",
    "great docs, mediocre support — at least according to G2 reviews.",
    "often recommended for teams with fewer than 10 people.",
    "pricing starts at $29/mo (≈ €27), with usage-based add-ons.",
    "the enterprise default, but overkill if you're just starting out.",
    "has a steep learning curve; power users love it anyway 💪.",
    "recently raised prices, which annoyed a lot of long-time customers.",
)

_OUTROS: tuple[str, ...] = (
    "Ultimately, the best choice depends on your workload and team size.",
    "I'd start with {brand} and re-evaluate after three months.",
    "Note: prices change frequently — check each vendor's pricing page.",
    "If you only pick one, {brand} is the safest bet right now.",
)

_CRITERIA: tuple[str, ...] = (
    "pricing transparency",
    "support quality",
    "API ergonomics",
    "uptime",
    "ease of migration",
    "integrations",
    "documentation",
    "security posture",
)

_DOMAINS: tuple[tuple[str, str], ...] = (
    ("reddit.com", "Reddit"),
    ("g2.com", "G2"),
    ("capterra.com", "Capterra"),
    ("news.ycombinator.com", "Hacker News"),
    ("medium.com", "Medium"),
    ("dev.to", "DEV Community"),
    ("stackoverflow.com", "Stack Overflow"),
    ("github.com", "GitHub"),
    ("en.wikipedia.org", "Wikipedia"),
    ("techcrunch.com", "TechCrunch"),
    ("forbes.com", "Forbes"),
    ("youtube.com", "YouTube"),
    ("supabase.com", "Supabase"),
    ("neon.tech", "Neon"),
    ("hubspot.com", "HubSpot"),
    ("bücher.de", "Bücher"),
    ("zapier.com", "Zapier"),
    ("nytimes.com", "The New York Times"),
)

_SLUGS: tuple[str, ...] = (
    "best-{t}-2026",
    "r/SaaS/comments/{h}/best_{t}/",
    "blog/{t}-pricing-update",
    "wiki/Caf%C3%A9_{t}",
    "questions/{n}/which-{t}-should-i-use",
    "compare/{t}?utm_source=chatgpt.com",
    "reviews/{t}#pricing",
    "watch?v={h}",
)

_PROVIDERS: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-4o-2024-11-20", "gpt-4o-mini-2024-07-18", "gpt-4.1-2025-04-14"),
    "anthropic": (
        "claude-3-5-sonnet-20241022",
        "claude-sonnet-4-20250514",
        "claude-3-5-haiku-20241022",
    ),
    "google": ("gemini-1.5-pro-002", "gemini-2.0-flash-001", "gemini-2.5-pro"),
    "perplexity": ("sonar", "sonar-pro", "sonar-reasoning"),
}

_ML_MODELS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet",
    "gemini-1.5-pro",
    "perplexity-sonar",
    "google-ai-overview",
    "copilot",
)

_COUNTRIES: tuple[tuple[str, str], ...] = (
    ("US", "en"),
    ("GB", "en"),
    ("DE", "de"),
    ("FR", "fr"),
    ("ES", "es"),
    ("BR", "pt"),
    ("JP", "ja"),
    ("IN", "en"),
)

_MA_FAILURES: tuple[tuple[str, str], ...] = (
    ("provider_error", "All upstream providers failed to respond."),
    ("timeout", "The job exceeded the 15 minute processing window."),
    ("content_policy", "The prompt was rejected by a provider's content policy."),
    ("upstream_rate_limited", "Upstream provider rate limit exceeded; job abandoned."),
)


def _iso_ms(dt: datetime) -> str:
    """``2026-06-08T10:15:31.123Z``: the vendors' timestamp format."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def _slug(text: str) -> str:
    return "-".join(w for w in re.sub(r"[^a-z0-9]+", " ", text.lower()).split())[:60]


# --------------------------------------------------------------------------- dataset


class Dataset:
    """Deterministic answers for both vendors, keyed by ``(seed, vendor, id)``."""

    def __init__(
        self,
        seed: int = 0,
        anchor: datetime | None = None,
        max_pending_polls: int = 2,
        poison: Mapping[str, Collection[str]] | None = None,
        poison_depth: int = 1000,
    ) -> None:
        if anchor is None:
            anchor = datetime.now(UTC).replace(second=0, microsecond=0)
        elif anchor.tzinfo is None:
            raise ValueError("anchor must be timezone-aware")
        if max_pending_polls < 0:
            raise ValueError("max_pending_polls must be >= 0")
        if not 3 <= poison_depth <= MAX_POISON_DEPTH:
            raise ValueError(f"poison_depth must be in [3, {MAX_POISON_DEPTH}]")
        self._poison: dict[str, str] = {}
        self._forbidden: frozenset[str] = frozenset()
        for kind, ids in (poison or {}).items():
            if kind not in POISON_KINDS:
                raise ValueError(f"unknown poison kind {kind!r}; expected one of {POISON_KINDS}")
            if isinstance(ids, str):
                raise ValueError(f"poison[{kind!r}] must be a collection of ids, not a string")
            if kind == "forbidden_project":
                self._forbidden = frozenset(p.lower() for p in ids)
                continue
            for id in ids:
                # Both spellings: ask ids are verbatim, MentionLab UUIDs case-insensitive.
                for key in {id, _norm(MENTIONLAB, id)}:
                    if self._poison.setdefault(key, kind) != kind:
                        raise ValueError(f"id {id!r} is poisoned twice")
        self.poison_depth = poison_depth
        self.seed = seed
        self.anchor = anchor.astimezone(UTC)
        self.max_pending_polls = max_pending_polls
        self._projects = [_uuid(_digest(seed, "project", k)) for k in range(3)]
        # Per-instance caches: payloads are pure, so serving them from memory is exact.
        # Finals are bounded because ~25% of them carry 20-60 KB of content.
        self._final_bytes = lru_cache(maxsize=4096)(self._build_final_bytes)
        self._pending_bytes = lru_cache(maxsize=16384)(self._build_pending_bytes)

    # ---------------------------------------------------------------- ids

    def ask_ids(self, n: int, start: int = 0) -> list[str]:
        """MentionsAPI ask ids ``ask_<26 Crockford base32 chars>``."""
        return ["ask_" + _base32(_digest(self.seed, "ask", i)) for i in range(start, start + n)]

    def projects(self) -> list[str]:
        """The three MentionLab project ids of this seed."""
        return list(self._projects)

    def execution_ids(self, n: int, start: int = 0) -> list[tuple[str, str]]:
        """``(project_id, job_execution_id)`` pairs for MentionLab."""
        out = []
        for i in range(start, start + n):
            eid = _uuid(_digest(self.seed, "execution", i))
            out.append((self.project_of(eid), eid))
        return out

    def poison_ids(self, vendor: str, kind: str, n: int, start: int = 0) -> list[str]:
        """Fresh ids for poisoning with ``kind``, apart from ``ask_ids``/``execution_ids``.

        Listing them under ``poison`` is still what poisons them; these are only handy names.
        """
        vendor = _vendor(vendor)
        if kind not in POISON_KINDS:
            raise ValueError(f"unknown poison kind {kind!r}")
        digests = (_digest(self.seed, "poison", vendor, kind, i) for i in range(start, start + n))
        if vendor == MENTIONSAPI:
            return ["ask_" + _base32(d) for d in digests]
        return [_uuid(d) for d in digests]

    def poison_kind(self, vendor: str, id: str) -> str | None:
        """The poison served for this id, if any (``forbidden_project`` is per project)."""
        vendor = _vendor(vendor)
        return self._poison.get(_norm(vendor, id)) if self._poison else None

    def forbidden(self, vendor: str, project_id: str | None) -> bool:
        """Whether MentionLab answers 403 to every request in this project."""
        return (
            _vendor(vendor) == MENTIONLAB
            and project_id is not None
            and project_id.lower() in self._forbidden
        )

    def project_of(self, execution_id: str) -> str:
        """The project a MentionLab execution id belongs to (any string works)."""
        h = _digest(self.seed, MENTIONLAB, execution_id.lower(), "project")
        return self._projects[int.from_bytes(h[:8], "big") % len(self._projects)]

    # ---------------------------------------------------------------- fate

    def fate(self, vendor: str, id: str) -> str:
        """The id's destiny; ids the vendor would reject as malformed are ``rejected``."""
        vendor = _vendor(vendor)
        if not _valid_id(vendor, id):
            return "rejected"
        if self.poison_kind(vendor, id) is not None:
            return "succeeded" if vendor == MENTIONSAPI else "success"
        u = _unit(self.seed, vendor, _norm(vendor, id), "fate")
        for name, upper in _FATES[vendor]:
            if u < upper:
                return name
        return _FATES[vendor][-1][0]

    def pending_polls(self, vendor: str, id: str) -> int:
        """How many polls return a non-final state before the final answer.

        0 for error fates and when ``max_pending_polls`` is 0 (even for ``retried``: then the
        final body still says executionNumber 2); otherwise at least 1 for ``retried`` so that
        its ``retrying`` state is observable.
        """
        vendor = _vendor(vendor)
        fate = self.fate(vendor, id)
        if self.max_pending_polls == 0 or fate not in _POLLED_FATES:
            return 0
        h = _digest(self.seed, vendor, _norm(vendor, id), "pending")
        raw = int.from_bytes(h[:8], "big") % (self.max_pending_polls + 1)
        return max(1, raw) if fate == "retried" else raw

    # ---------------------------------------------------------------- responses

    def final_response(
        self,
        vendor: str,
        id: str,
        project_id: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """HTTP status and JSON body of the final answer (a fresh dict on every call)."""
        status, body = self.final_bytes(vendor, id, project_id)
        if self.poison_kind(vendor, id) == "wide_int":
            # orjson reads integers wider than 64 bits as floats; the stdlib keeps them exact.
            return status, json.loads(body)
        return status, orjson.loads(body)

    def final_bytes(
        self,
        vendor: str,
        id: str,
        project_id: str | None = None,
    ) -> tuple[int, bytes]:
        """Like :meth:`final_response`, serialized and cached (what the app serves)."""
        vendor = _vendor(vendor)
        # Only a wrong or forbidden project changes the answer; keying the rest as None
        # shares one entry.
        special = self._wrong_project(vendor, id, project_id) or self.forbidden(vendor, project_id)
        project = project_id.lower() if special and project_id is not None else None
        return self._final_bytes(vendor, _norm(vendor, id), project)

    def pending_response(
        self,
        vendor: str,
        id: str,
        poll_number: int,
    ) -> tuple[int, dict[str, Any]]:
        """Non-final answer for 1-based ``poll_number`` (queued/processing, pending/retrying)."""
        status, body = self.pending_bytes(vendor, id, poll_number)
        return status, orjson.loads(body)

    def pending_bytes(self, vendor: str, id: str, poll_number: int) -> tuple[int, bytes]:
        """Like :meth:`pending_response`, serialized and cached."""
        vendor = _vendor(vendor)
        if vendor == MENTIONSAPI:
            state = "queued" if poll_number <= 1 else "processing"
        else:
            retrying = self.fate(vendor, id) == "retried" and poll_number >= self.pending_polls(
                vendor, id
            )
            state = "retrying" if retrying else "pending"
        return self._pending_bytes(vendor, _norm(vendor, id), state)

    def plan(self, vendor: str, id: str, project_id: str | None = None) -> tuple[str, int]:
        """``(fate, pending_polls)`` as seen by a caller in ``project_id``.

        For MentionLab with a ``project_id`` that is not the id's project, the fate is
        ``unknown`` (the vendor answers 404) and there are no pending polls.
        """
        vendor = _vendor(vendor)
        if self.forbidden(vendor, project_id):
            return "forbidden", 0
        if self._wrong_project(vendor, id, project_id):
            return "unknown", 0
        return self.fate(vendor, id), self.pending_polls(vendor, id)

    def truth(
        self,
        vendor: str,
        id: str,
        project_id: str | None = None,
    ) -> dict[str, Any]:
        """What the simulator will eventually answer for this id (for tests and benchmarks).

        ``poison`` names the poison kind served for it, or is None. The body is the real
        payload: for key_echo it holds ``KEY_PLACEHOLDER`` where the caller's key goes; for
        retry_after, gzip2 and drip it is the answer those responses wrap or delay.
        """
        fate, polls = self.plan(vendor, id, project_id)
        status, body = self.final_response(vendor, id, project_id)
        return {
            "fate": fate,
            "pending_polls": polls,
            "status": status,
            "poison": self._truth_poison(vendor, id, project_id),
            "body": body,
        }

    def truth_bytes(
        self, vendor: str, id: str, project_id: str | None = None, api_key: str | None = None
    ) -> bytes:
        """:meth:`truth` as JSON, the body spliced in as served (some bodies are deeper or
        have wider integers than orjson writes); ``api_key`` fills key_echo's placeholder."""
        fate, polls = self.plan(vendor, id, project_id)
        status, body = self.final_bytes(vendor, id, project_id)
        if api_key is not None:
            body = fill_key(body, api_key)
        head = orjson.dumps(
            {
                "fate": fate,
                "pending_polls": polls,
                "status": status,
                "poison": self._truth_poison(vendor, id, project_id),
            }
        )
        return b"".join((head[:-1], b',"body":', body, b"}"))

    def _truth_poison(self, vendor: str, id: str, project_id: str | None) -> str | None:
        if self.forbidden(vendor, project_id):
            return "forbidden_project"
        return self.poison_kind(vendor, id)

    def canonical_id(self, vendor: str, id: str) -> str:
        """The id as the dataset keys it (MentionLab UUIDs are case-insensitive)."""
        return _norm(_vendor(vendor), id)

    def request_id(self, *parts: object) -> str:
        """A deterministic ``req_…`` id for ``parts`` (used for app-generated errors)."""
        return "req_" + _base32(_digest(self.seed, "request", *parts))

    # ---------------------------------------------------------------- builders

    def _wrong_project(self, vendor: str, id: str, project_id: str | None) -> bool:
        return (
            vendor == MENTIONLAB
            and project_id is not None
            and _valid_id(vendor, id)
            and project_id.lower() != self.project_of(id)
        )

    def _request_id(self, vendor: str, id: str, label: str) -> str:
        return "req_" + _base32(_digest(self.seed, vendor, id, "request", label))

    def _build_pending_bytes(self, vendor: str, id: str, state: str) -> tuple[int, bytes]:
        if vendor == MENTIONSAPI:
            body = {"request_id": self._request_id(vendor, id, state), "id": id, "status": state}
            return 202, orjson.dumps(body)
        return 200, orjson.dumps(self._mentionlab_body(id, state))

    def _build_final_bytes(
        self,
        vendor: str,
        id: str,
        project_id: str | None,
    ) -> tuple[int, bytes]:
        status, body = (
            self._mentionsapi_final(id)
            if vendor == MENTIONSAPI
            else self._mentionlab_final(id, project_id)
        )
        kind = self.poison_kind(vendor, id)
        if status != 200 or kind not in BODY_POISONS:
            return status, orjson.dumps(body)
        return status, self._poisoned(vendor, id, kind, body)

    def _poisoned(self, vendor: str, id: str, kind: str, body: dict[str, Any]) -> bytes:
        """A succeeded body carrying poison ``kind``; everything else in it stays valid."""
        rng = _Rng(self.seed, vendor, id, "poison", kind)
        ma = vendor == MENTIONSAPI
        if kind == "nul":
            (_nul_mentionsapi if ma else _nul_mentionlab)(rng, body)
        elif kind in ("ts_min", "ts_max"):
            value = TS_MIN if kind == "ts_min" else TS_MAX
            # MentionsAPI documents no timestamp: an undocumented extra is where it shows up.
            body["createdAt" if ma or kind == "ts_max" else "initiatedAt"] = value
        elif kind == "key_echo":
            _key_echo(id, body, ma)
        raw = orjson.dumps(body)
        # orjson writes neither of these two, so they are spliced in as bytes.
        if kind == "wide_int":
            extra = b',"x_snowflake":%d,"x_counters":[%d,%d]' % WIDE_INTS
            return raw[:-1] + extra + b"}"
        if kind == "deep":
            lists = self.poison_depth - 2  # inside the body and the x_tree object
            return b"".join((raw[:-1], b',"x_tree":{"a":', b"[" * lists, b"]" * lists, b"}}"))
        return raw

    # MentionsAPI ---------------------------------------------------------

    def _mentionsapi_final(self, id: str) -> tuple[int, dict[str, Any]]:
        v = MENTIONSAPI
        rid = self._request_id(v, id, "final")
        fate = self.fate(v, id)
        if fate == "rejected":
            message = (
                "Missing or oversized id parameter (length > 256)."
                if not _valid_id(v, id)
                else "Malformed ask id."
            )
            return 400, {
                "error": {"code": "invalid_request", "message": message},
                "request_id": rid,
            }
        if fate == "unknown":
            return 404, {
                "error": {"code": "not_found", "message": "No /v1/ask response with that id."},
                "request_id": rid,
            }
        if fate == "expired":
            return 410, {
                "error": {
                    "code": "expired",
                    "message": "This response is older than the 30-day retention window.",
                },
                "retention_days": 30,
                "request_id": rid,
            }
        rng = _Rng(self.seed, v, id, "body")
        if fate == "failed":
            body: dict[str, Any] = {"request_id": rid, "id": id, "status": "failed"}
            if not rng.chance(0.30):  # docs: a missing error means provider_error
                code, message = rng.choice(_MA_FAILURES)
                body["error"] = {"code": code, "message": message}
            if rng.chance(0.15):
                body["x_trace"] = {"span_id": rng.hex(8), "region": "us-east-1"}
            return 200, body
        return 200, _mentionsapi_success(rng, id, rid)

    # MentionLab ----------------------------------------------------------

    def _mentionlab_final(self, id: str, project_id: str | None) -> tuple[int, dict[str, Any]]:
        v = MENTIONLAB
        if self.forbidden(v, project_id):
            return 403, FORBIDDEN_BODY
        if not _valid_id(v, id):
            return 400, {
                "statusCode": 400,
                "message": "Validation failed (uuid is expected)",
                "error": "Bad Request",
            }
        fate = self.fate(v, id)
        if fate == "unknown" or self._wrong_project(v, id, project_id):
            return 404, {
                "statusCode": 404,
                "message": "Job execution not found",
                "error": "Not Found",
            }
        if fate == "rejected":
            return 400, {
                "statusCode": 400,
                "message": "Job execution id is not valid for this organisation",
                "error": "Bad Request",
            }
        return 200, self._mentionlab_body(id, "failed" if fate == "failed" else "success")

    def _mentionlab_body(self, id: str, state: str) -> dict[str, Any]:
        """Full documented shape; ``state`` is pending, retrying, success or failed."""
        v = MENTIONLAB
        project = self.project_of(id)
        rng = _Rng(self.seed, v, id, "body")
        retried = self.fate(v, id) == "retried"
        initiated = self.anchor - timedelta(
            seconds=rng.randint(180, 3 * 86400), milliseconds=rng.below(1000)
        )
        created = initiated + timedelta(seconds=rng.randint(1, 90), milliseconds=rng.below(1000))
        # Drawn unconditionally so pending and final bodies consume the stream identically.
        retry_delay = timedelta(minutes=rng.randint(2, 15))
        final = state in ("success", "failed")
        if retried and final:
            # The retry writes a new response row a few minutes later.
            created += retry_delay
        country, language = rng.choice(_COUNTRIES)
        # Decide every messy flag before branching so pending and final bodies agree on ids.
        omit_query = rng.chance(0.10)
        omit_language = rng.chance(0.10)
        ai_response = rng.uuid()
        # Executions share a small pool of jobs per project, as real scheduled jobs do.
        job_id = _uuid(_digest(self.seed, "job", project, rng.below(12)))
        query_id = _uuid(_digest(self.seed, "query", project, rng.below(40)))
        model = rng.choice(_ML_MODELS)
        body: dict[str, Any] = {
            "jobExecutionId": id,
            "aiResponseId": ai_response,
            "jobId": job_id,
            "initiatedAt": _iso_ms(initiated),
            "createdAt": _iso_ms(created),
            "model": model,
            "status": state,
            "executionNumber": 2 if retried and final else 1,
            "hasSources": False,
            "hasShopping": False,
            "sources": [],
            "entities": [],
        }
        if not omit_query:
            body["queryId"] = query_id
        body["country"] = country
        if not omit_language:
            body["language"] = language
        if state != "success":
            return body

        content = _Rng(self.seed, v, id, "content")
        sources = [_source(content) for _ in range(content.randint(0, 9))]
        if sources and content.chance(0.11):  # same url twice in one list
            sources.append(dict(content.choice(sources)))
        primary = BRANDS[
            int.from_bytes(_digest(self.seed, "primary", project)[:8], "big") % len(BRANDS)
        ]
        brands = content.sample(BRANDS, content.randint(0, 7))
        if content.chance(0.6) and primary not in brands:
            brands.insert(content.below(len(brands) + 1), primary)
        entities = []
        for brand in brands:
            entity: dict[str, Any] = {
                # The key names the entity whatever its display name says.
                "displayKey": _uuid(_digest(self.seed, "entity", brand)),
                "displayName": spelling(brand, self.seed, id),
                "isPrimary": brand == primary,
            }
            if not content.chance(0.15):
                entity["sentimentScore"] = round(content.uniform(0.0, 100.0), 1)
            entities.append(entity)
        body["hasSources"] = bool(sources)
        body["hasShopping"] = content.chance(0.12)
        body["sources"] = sources
        body["entities"] = entities
        if content.chance(0.16):  # unknown extra fields the client must ignore
            spot = content.below(3)
            if spot == 1 and sources:
                content.choice(sources)["x_position"] = content.randint(1, 10)
            elif spot == 2 and entities:
                content.choice(entities)["x_aliases"] = ["alias", content.choice(BRANDS)]
            else:
                body["x_trace"] = {"span_id": content.hex(8), "shard": content.randint(1, 64)}
        return body


# --------------------------------------------------------------------------- helpers

FORBIDDEN_BODY: dict[str, Any] = {
    "statusCode": 403,
    "message": "Forbidden resource",
    "error": "Forbidden",
}


def fill_key(body: bytes, api_key: str) -> bytes:
    """A key_echo body with the caller's key where the placeholder is."""
    return body.replace(KEY_PLACEHOLDER.encode(), orjson.dumps(api_key)[1:-1])


def _with_nul(text: str, at: int) -> str:
    at = min(max(1, at), len(text))
    return f"{text[:at]}\x00{text[at:]}"


def _nul_mentionsapi(rng: _Rng, body: dict[str, Any]) -> None:
    """U+0000 in an answer text, a brand name and a citation title."""
    provider = body["providers"][0]
    provider["content"] = _with_nul(provider["content"], len(provider["content"]) // 2)
    mentions = body["brand_mentions"]
    if not mentions:
        mentions.append(
            {
                "brand": "Acme Corp",
                "provider": provider["provider"],
                "rank": 0,
                "sentiment": "neutral",
                "context": "Acme Corp is mentioned once.",
            }
        )
    mentions[0]["brand"] = _with_nul(mentions[0]["brand"], 1)
    cites = [c for p in body["providers"] for c in p["citations"] if "title" in c]
    if not cites:
        cite = _citation(rng, "nul bytes")
        provider["citations"].append(cite)
        body["citations"].append(dict(cite))
        cites = [cite]
    url, title = cites[0]["url"], cites[0]["title"]
    # Every copy of that citation, so the top-level list stays the providers' union.
    for c in [*body["citations"], *(c for p in body["providers"] for c in p["citations"])]:
        if c["url"] == url and c.get("title") == title:
            c["title"] = _with_nul(title, 5)


def _nul_mentionlab(rng: _Rng, body: dict[str, Any]) -> None:
    """U+0000 at the end of the model name (a C string's terminator) and inside a brand."""
    body["model"] += "\x00"
    if not body["entities"]:
        body["entities"].append(
            {
                "displayKey": rng.uuid(),
                "displayName": "Acme Corp",
                "isPrimary": False,
                "sentimentScore": 50.0,
            }
        )
    entity = body["entities"][0]
    entity["displayName"] = _with_nul(entity["displayName"], 1)


def _key_echo(id: str, body: dict[str, Any], mentionsapi: bool) -> None:
    """The caller's key (as a placeholder) in a stored text field and an extra field."""
    if mentionsapi:
        provider = body["providers"][0]
        provider["content"] += f"\n\n<!-- served for Authorization: Bearer {KEY_PLACEHOLDER} -->"
        body["x_debug"] = {"authorization": f"Bearer {KEY_PLACEHOLDER}"}
        return
    url = f"https://api.mentionlab.io/api/v1/job-executions/{id}?x-api-key={KEY_PLACEHOLDER}"
    body["sources"].append({"domain": "api.mentionlab.io", "url": url})
    body["hasSources"] = True
    body["x_debug"] = {"x-api-key": KEY_PLACEHOLDER}


def _vendor(vendor: str) -> str:
    v = vendor.lower()
    if v not in VENDORS:
        raise ValueError(f"unknown vendor {vendor!r}; expected one of {VENDORS}")
    return v


def _valid_id(vendor: str, id: str) -> bool:
    if vendor == MENTIONSAPI:
        return 0 < len(id) <= MAX_MENTIONSAPI_ID
    return bool(_UUID_RE.match(id))


def _norm(vendor: str, id: str) -> str:
    # UUIDs are case-insensitive; ask ids are opaque and kept verbatim.
    return id.lower() if vendor == MENTIONLAB and _valid_id(vendor, id) else id


def _host(rng: _Rng, domain: str) -> tuple[str, str]:
    """(domain field, url host) with the occasional ``www.`` or odd casing."""
    roll = rng.random()
    if roll < 0.08:
        domain = "www." + domain
        return domain, domain
    if roll < 0.14:
        mixed = domain[:1].upper() + domain[1:]
        return mixed, mixed.upper() if rng.chance(0.5) else mixed
    return domain, domain


def _url(rng: _Rng, host: str, topic: str) -> str:
    template = rng.choice(_SLUGS)
    path = template.format(t=_slug(topic), h=rng.hex(4), n=rng.randint(10_000, 79_999_999))
    return f"https://{host}/{path}"


def _source(rng: _Rng) -> dict[str, Any]:
    domain, host = _host(rng, rng.choice(_DOMAINS)[0])
    return {"domain": domain, "url": _url(rng, host, rng.choice(_TOPICS))}


def _citation(rng: _Rng, topic: str) -> dict[str, Any]:
    base, site = rng.choice(_DOMAINS)
    domain, host = _host(rng, base)
    title = rng.choice(
        (
            f"Best {topic} in 2026? : r/SaaS",
            f"{topic.title()} | {site}",
            f"Top 10 {topic} — reviews & pricing",
            f'"{topic}" compared: what actually matters',
            f"{site} · {topic} (Überblick)",
        )
    )
    return {"url": _url(rng, host, topic), "domain": domain, "title": title}


def _content(rng: _Rng, topic: str, brands: list[str], long: bool) -> tuple[str, dict[str, str]]:
    """Markdown-ish answer text, and for each brand the sentence that mentions it."""
    lines = [rng.choice(_INTROS).format(topic=topic), ""]
    contexts: dict[str, str] = {}
    for i, brand in enumerate(brands, start=1):
        line = f"{i}. **{brand}** — {rng.choice(_DESCRIPTIONS)}"
        lines.append(line)
        contexts.setdefault(brand, line[len(f"{i}. ") :])
    if not brands:
        lines.append("There is no clear winner; most teams build this in-house.")
    lines += ["", rng.choice(_OUTROS).format(brand=brands[0] if brands else "a spreadsheet")]
    text = "\n".join(lines)
    if long:
        # 20-60 KB: long answers stress size limits and TEXT columns.
        target = rng.randint(20_000, 60_000)
        parts = [text]
        size = len(text.encode())
        k = 0
        while size < target:
            k += 1
            brand = rng.choice(brands) if brands else "Option A"
            para = (
                f"\n\n### Detail {k}: {rng.choice(_CRITERIA)}\n"
                f"{brand} scores {rng.randint(1, 10)}/10 here. {rng.choice(_DESCRIPTIONS)} "
                f"Compared with the alternatives, reviewers mention “{rng.choice(_CRITERIA)}” "
                f"most often (n={rng.randint(3, 900)})."
            )
            para_size = len(para.encode())
            if size + para_size > 60_000:
                break
            parts.append(para)
            size += para_size
        text = "".join(parts)
    return text, contexts


def _context(sentence: str) -> str:
    return sentence if len(sentence) <= 200 else sentence[:199] + "…"


def _mentionsapi_success(rng: _Rng, id: str, rid: str) -> dict[str, Any]:
    """A documented ``status: succeeded`` body with realistic mess sprinkled in."""
    omit_status = rng.chance(0.05)
    no_mentions = rng.chance(0.08)
    dup_url = rng.chance(0.08)  # plus ~3% natural repeats from similar slugs
    dup_mention = not no_mentions and rng.chance(0.11)
    repeat_brand = not no_mentions and rng.chance(0.10)
    extra_field = rng.chance(0.16)
    missing_optional = rng.chance(0.11)
    cached = rng.chance(0.2)
    topic = rng.choice(_TOPICS)

    providers: list[dict[str, Any]] = []
    mentions: list[dict[str, Any]] = []
    for name in rng.sample(tuple(_PROVIDERS), rng.randint(1, 4)):
        brands = [] if no_mentions else rng.sample(BRANDS, rng.randint(0, 6))
        if dup_mention and not brands and not mentions:
            brands = rng.sample(BRANDS, 2)
        text, contexts = _content(rng, topic, brands, long=rng.chance(0.10))
        n_cites = rng.randint(2, 8) if name == "perplexity" else rng.randint(0, 4)
        cites = [_citation(rng, topic) for _ in range(n_cites)]
        output_tokens = max(40, len(text) // 4 + rng.randint(-20, 40))
        providers.append(
            {
                "provider": name,
                "model": rng.choice(_PROVIDERS[name]),
                "content": text,
                "latency_ms": rng.randint(15, 90) if cached else rng.randint(400, 9000),
                "tokens": {"input": rng.randint(20, 220), "output": output_tokens},
                "citations": cites,
            }
        )
        for rank, brand in enumerate(brands):
            mentions.append(
                {
                    "brand": brand,
                    "provider": name,
                    "rank": rank,
                    "sentiment": rng.choice(("positive",) * 6 + ("neutral",) * 3 + ("negative",)),
                    "context": _context(contexts[brand]),
                }
            )
        if repeat_brand and brands:
            # The same brand again further down the answer, at a different rank.
            brand = brands[0]
            mentions.append(
                {
                    "brand": brand,
                    "provider": name,
                    "rank": len(brands),
                    "sentiment": "neutral",
                    "context": _context(f"As mentioned, {brand} remains a solid pick."),
                }
            )
            repeat_brand = False
    if dup_mention and mentions:
        dup = dict(rng.choice(mentions))
        mentions.insert(mentions.index(dup) + 1, dup)
    for mention in mentions:
        # One spelling per brand in an ask: repeats and duplicates stay what they were.
        mention["brand"] = spelling(mention["brand"], id)

    # Top-level citations: the union of the providers' lists, first occurrence wins.
    seen: set[str] = set()
    citations: list[dict[str, Any]] = []
    for p in providers:
        for c in p["citations"]:
            if c["url"] not in seen:
                seen.add(c["url"])
                citations.append(dict(c))
    if dup_url:
        owners = [p["citations"] for p in providers if p["citations"]]
        if not owners:
            providers[0]["citations"].append(_citation(rng, topic))
            citations.append(dict(providers[0]["citations"][0]))
            owners = [providers[0]["citations"]]
        target = rng.choice([*owners, citations])
        twin = dict(rng.choice(target))
        if rng.chance(0.5):
            twin["title"] = twin["title"] + " (updated)"
        target.append(twin)
    if missing_optional:
        with_cites = [c for p in providers for c in p["citations"]]
        if with_cites and rng.chance(0.5):
            rng.choice(with_cites).pop("title", None)
        else:
            rng.choice(providers).pop("tokens", None)

    n = len(providers)
    our_price = 0 if cached else 2 * n + rng.randint(0, 3)
    upstream = 0 if cached else max(1, our_price // 3)
    body: dict[str, Any] = {"request_id": rid, "id": id}
    if not omit_status:
        body["status"] = "succeeded"
    body.update(
        {
            "cached": cached,
            "cache_tier": rng.choice(("hit", "semantic")) if cached else "miss",
            "providers": providers,
            "brand_mentions": mentions,
            "citations": citations,
            "usage": {
                "billable_units": n,
                "latency_ms": max(p["latency_ms"] for p in providers) + rng.randint(3, 250),
                "cost_cents": our_price,
                "cost_breakdown": {
                    "our_price_cents": our_price,
                    "upstream_cost_cents_estimate": upstream,
                    "margin_cents": our_price - upstream,
                    "by_provider": [],
                },
            },
        }
    )
    if extra_field:
        spot = rng.below(4)
        if spot == 1:
            rng.choice(providers)["x_finish_reason"] = rng.choice(("stop", "length"))
        elif spot == 2 and mentions:
            rng.choice(mentions)["x_confidence"] = round(rng.random(), 3)
        elif spot == 3 and citations:
            rng.choice(citations)["x_rank_score"] = round(rng.random(), 3)
        else:
            body["x_trace"] = {"span_id": rng.hex(8), "region": "eu-west-1", "sampled": True}
    return body
