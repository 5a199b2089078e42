"""Node settings: environment variables prefixed ``IDIS_`` or a TOML settings file.

Built once at startup and passed down; nothing reads the environment anywhere else.  Nested
sections use ``__`` in variable names (``IDIS_CACHE__MAX_ENTRIES=500000``).  A settings file
named by ``IDIS_SETTINGS_FILE`` supplies defaults that environment variables override.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from resolver.codecs.dns_names import normalise_zone

UNSAFE_SCHEMES = frozenset({"javascript", "vbscript", "data", "blob", "file"})
"""URL schemes the web proxy never redirects to, whatever the settings: they run code in the
browser, on the page of whoever sent the link, or read the user's own files."""

Role = Literal["top-level", "dr", "secondary", "enterprise", "recursive"]


class SettingsError(Exception):
    """A setting is invalid; the message names it and says why."""


def parse_address(text: str) -> tuple[str, int]:
    """``"127.0.0.1:8000"`` or ``"[::1]:8000"`` → (host, port)."""
    host, colon, port = text.rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT with a port from 1 to 65535")
    return host.strip("[]"), int(port)


class CacheSettings(BaseModel):
    max_entries: int = Field(200_000, ge=0, description="answers kept in each worker's memory")
    max_ttl: float = Field(86400.0, gt=0, description="cap on how long any answer is reused")
    negative_ttl: float = Field(5.0, ge=0, description="how long a not-found is remembered")
    redis_timeout: float = Field(0.1, gt=0, description="seconds before Redis counts as down")
    prefix_records: int = Field(
        100_000,
        ge=0,
        description="a top-level or DR node's prefix records kept in each worker's memory; "
        "with more, all are read from the database (see resolver/prefix_records.py)",
    )


class LimitSettings(BaseModel):
    """What one HTTP client may take of a node (enforced by nodes/http/limits.py); the caps on
    connections hold in each worker process."""

    max_request_line_bytes: int = Field(
        8192, ge=256, description="longest request target (path and query); longer: 414"
    )
    max_header_bytes: int = Field(
        32768, ge=1024, description="request line and header fields together; more: 431"
    )
    max_headers: int = Field(100, ge=8, description="header fields in one request; more: 431")
    head_timeout: float = Field(
        10.0, gt=0, description="seconds for a request's head to arrive from its first byte; 408"
    )
    body_timeout: float = Field(
        60.0, gt=0, description="seconds for a request's body to arrive after its head; 408"
    )
    keep_alive_timeout: float = Field(
        5.0, gt=0, description="seconds an idle connection stays open, before and between requests"
    )
    max_connections: int = Field(
        4096, ge=1, description="open connections of each worker process; more are refused 503"
    )
    max_connections_per_source: int = Field(
        256, ge=1, description="open connections from one IP address, in each worker; then 503"
    )


class ChangeLogSettings(BaseModel):
    """Following and pruning the registry's change log (nodes/changefeed.py)."""

    poll_interval: float = Field(
        0.1, gt=0, le=10, description="seconds between a process's reads of the change log"
    )
    retention: float = Field(
        7 * 86400.0,
        gt=0,
        description="seconds a change stays in the log; a feed consumer further behind "
        "re-synchronises from a snapshot",
    )
    prune_interval: float = Field(60.0, gt=0, description="seconds between prunes of the log")


class MirrorSettings(BaseModel):
    """Mirroring another node's registry through its HTTP change feed (nodes/mirror.py)."""

    source: str | None = Field(None, description="base URL of the node mirrored here")
    secret: str | None = Field(None, description="the source's change-feed secret")

    @field_validator("source", mode="after")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value

    @model_validator(mode="after")
    def _needs_secret(self) -> MirrorSettings:
        if self.source and not self.secret:
            raise ValueError("mirror.secret is needed to follow mirror.source")
        return self


class FederationSettings(BaseModel):
    """How this node finds, and is found by, the rest of the hierarchy."""

    site_url: str | None = Field(None, description="base URL others reach this node at")
    top_level: list[str] = Field(default_factory=list, description="top-level base URLs")
    secret: str | None = Field(
        None, description="secret of this node's HTTP change feed (user 'federation')"
    )
    allow_recursion: bool = Field(False, description="resolve referrals for clients that ask")
    stale_ttl: float = Field(300.0, ge=0, description="serve answers this long past expiry")
    upstream_timeout: float = Field(1.0, gt=0, description="seconds before a peer counts down")
    early_requests: bool = Field(
        True,
        description="on a prefix referral, ask the referred site for the handle first, "
        "before the prefix record (see resolver/walk.py)",
    )
    # Enterprise prefix allocation (registry/enterprise.py): approving writes 0.NA/PREFIX at the
    # top level as the holder 300:0.NA/PARENT of this node's prefix, with this secret.
    holder_secret_file: Path | None = Field(
        None, description="file holding the secret of 300:0.NA/PREFIX for this node's prefix"
    )

    @field_validator("secret")
    @classmethod
    def _strong(cls, value: str | None) -> str | None:
        from registry.secrets import weakness

        problem = weakness(value) if value else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("site_url", "top_level", mode="after")
    @classmethod
    def _urls(cls, value: str | list[str] | None) -> str | list[str] | None:
        for url in [value] if isinstance(value, str) else value or []:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value


class ThrottleSettings(BaseModel):
    """Rate limits (nodes/throttle.py), each in the ``limits`` library's notation:
    ``"10/minute;100/hour"`` means at most 10 in any minute and 100 in any hour."""

    identity: str = Field(
        "10/minute;100/hour", description="failed authentications per identity (handle)"
    )
    source: str = Field(
        "30/minute;300/hour",
        description="failed authentications (handle identities and the federation secret) "
        "per client address",
    )
    apply_source: str = Field(
        "10/hour;50/day", description="anonymous enterprise applications per client address"
    )
    apply_prefix: str = Field(
        "100/hour;1000/day", description="enterprise applications per parent prefix"
    )
    session_source: str = Field(
        "60/minute;600/hour", description="native session setups (opCode 400) per client address"
    )
    pending_applications: int = Field(
        1000, ge=1, description="pending enterprise applications at most, per parent prefix"
    )

    @field_validator("identity", "source", "apply_source", "apply_prefix")
    @classmethod
    def _limits(cls, value: str) -> str:
        from nodes.throttle import parse_limits

        parse_limits(value)
        return value


class QuotaSettings(BaseModel):
    """Quotas (registry/quotas.py), answered with IDIS codes 603/604/605 (HTTP 429); every
    limit 0 (the default) is off."""

    resolutions_per_prefix: int = Field(0, ge=0, description="resolutions a day per prefix")
    resolutions_per_identity: int = Field(
        0, ge=0, description="authenticated resolutions a day per identity"
    )
    registrations_per_prefix: int = Field(0, ge=0, description="handles under one prefix")
    registrations_per_identity: int = Field(0, ge=0, description="handles one identity creates")
    prefixes_per_prefix: int = Field(0, ge=0, description="derived prefixes under one prefix")
    prefixes_per_identity: int = Field(0, ge=0, description="prefixes one identity creates")
    flush_seconds: float = Field(
        1.0, gt=0, description="how often workers share their resolution counts"
    )


class Gs1Settings(BaseModel):
    """The GS1 Digital Link resolver on the HTTP port (nodes/gs1/), off while ``prefix`` is
    unset."""

    prefix: str | None = Field(
        None, description="the idis prefix whose identifiers hold the GS1 keys' links"
    )
    root: str | None = Field(
        None, description="the resolver's public base URL (default: the federation site URL)"
    )
    name: str = Field("idis GS1-Conformant resolver", description="name in its description file")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str | None) -> str | None:
        if value == "":
            return None
        if value is not None and "/" in value:
            raise ValueError(f"{value!r} is a handle prefix, without a slash")
        return value

    @field_validator("root")
    @classmethod
    def _root(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/") if value else None


class StatsSettings(BaseModel):
    """National statistics (registry/usage.py, nodes/stats/): counting per prefix and UTC day,
    reporting upward to the top level, and the top level's figures."""

    enabled: bool = Field(
        True, description="count registrations and resolutions per homed prefix and day"
    )
    flush_interval: float = Field(
        5.0, gt=0, description="seconds between a worker's flushes of its counts to the database"
    )
    report_interval: float = Field(
        60.0,
        gt=0,
        description="seconds between reports to the top level (IDIS_FEDERATION__"
        "TOP_LEVEL, signed in with IDIS_FEDERATION__HOLDER_SECRET_FILE)",
    )
    report_days: int = Field(
        7, ge=1, le=366, description="UTC days each report covers (late counts are corrected)"
    )
    report_timeout: float = Field(10.0, gt=0, description="seconds before a report attempt fails")


class NationalSettings(BaseModel):
    """The national tier's registry as Patroni runs it (``idis national ...``)."""

    patroni: list[str] = Field(
        default_factory=list, description="Patroni REST API URLs of the cluster's members"
    )


class ConsoleSettings(BaseModel):
    """The federation console (``/console`` and ``GET /api/console``, nodes/console/)."""

    enabled: bool = Field(True, description="serve /console and /api/console")
    auth: bool = Field(
        False,
        description="require an operator's credentials (an administrator of a prefix homed "
        "here, or the federation secret) for the console, as /api/stats does",
    )
    sites: list[str] = Field(
        default_factory=list,
        description="base URLs of the other sites of this node's tier, whose /readyz the "
        "console shows (the national tier's top-level and DR sites)",
    )
    refresh: float = Field(
        2.0, ge=0.5, le=60, description="seconds between the console's looks at what it shows"
    )

    @field_validator("sites", mode="after")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return [url.rstrip("/") for url in value]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IDIS_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Path("idis-data")
    database_url: str = Field("", description="sqlite:///FILE or postgresql://USER@HOST:PORT/DB")
    database_read_url: str | None = Field(
        None,
        description="where reads go when writes go elsewhere: the site's own member of a "
        "replicated cluster, while database_url names every member with "
        "target_session_attrs=read-write",
    )
    database_timeout: float = Field(
        5.0, gt=0, description="seconds to connect to the database, and for a read"
    )
    database_write_timeout: float = Field(
        15.0,
        gt=0,
        description="seconds a write is waited for before answering code 3 (outcome unknown; "
        "the write itself is never cancelled)",
    )
    ready_max_lag: float = Field(
        30.0, ge=0, description="replication lag beyond which /readyz says not ready"
    )
    redis_url: str | None = None
    http: str = "127.0.0.1:8000"
    handle: str = Field(
        "127.0.0.1:2641",
        description="where the native Handle protocol listens (TCP and UDP); empty: off",
    )
    handle_key_file: Path | None = Field(
        None,
        description="the site's RSA private key (PEM, made by `idis site keygen`); default "
        "<data dir>/site-key.pem, used when it exists",
    )
    secret_key_file: Path | None = Field(
        None,
        description="the 32-byte key that encrypts HS_SECKEY secrets at rest, outside the "
        "database; default <data dir>/secret.key, made (mode 0600) on first use",
    )
    handle_max_connections: int = Field(
        1024, ge=1, description="native TCP connections each worker keeps open at most"
    )
    handle_idle_timeout: float = Field(
        60.0, gt=0, description="seconds a native TCP connection may stay silent"
    )
    dns: str | None = Field(
        None, description="HOST:PORT to serve DNS on (UDP and TCP); off if unset"
    )
    dns_zone: str = Field("idis.example", description="the DNS zone identifiers are named under")
    workers: int = Field(1, ge=1, le=64)
    role: Role = "secondary"
    name: str = "idis"
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    redirect_schemes: tuple[str, ...] = Field(
        ("mailto",),
        description="URL schemes the web proxy redirects to besides http and https",
    )
    migrate_on_start: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = Field(
        "text", description="text: readable lines with ISO timestamps; json: one object a line"
    )
    access_log: bool = Field(False, description="one log line per HTTP request")
    metrics: bool = Field(
        True, description="count requests for /metrics (false: the doors count nothing)"
    )
    cache: CacheSettings = CacheSettings()
    limits: LimitSettings = LimitSettings()
    federation: FederationSettings = FederationSettings()
    throttle: ThrottleSettings = ThrottleSettings()
    quota: QuotaSettings = QuotaSettings()
    gs1: Gs1Settings = Gs1Settings()
    change_log: ChangeLogSettings = ChangeLogSettings()
    mirror: MirrorSettings = MirrorSettings()
    national: NationalSettings = NationalSettings()
    stats: StatsSettings = StatsSettings()
    console: ConsoleSettings = ConsoleSettings()

    @field_validator("http")
    @classmethod
    def _address(cls, value: str) -> str:
        parse_address(value)
        return value

    @field_validator("handle")
    @classmethod
    def _handle_address(cls, value: str) -> str:
        if value:
            parse_address(value)
        return value

    @field_validator("redirect_schemes")
    @classmethod
    def _schemes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        schemes = tuple(scheme.lower() for scheme in value)
        for scheme in schemes:
            if not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
                raise ValueError(f"{scheme!r} is not a URL scheme")
            if scheme in UNSAFE_SCHEMES:
                raise ValueError(f"{scheme}: URLs are never safe to redirect a browser to")
        return schemes

    @field_validator("dns")
    @classmethod
    def _dns_address(cls, value: str | None) -> str | None:
        if not value:
            return None
        parse_address(value)
        return value

    @field_validator("dns_zone")
    @classmethod
    def _zone(cls, value: str) -> str:
        return normalise_zone(value)

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

    @field_validator("database_read_url")
    @classmethod
    def _read_database(cls, value: str | None) -> str | None:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value or None

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, value: str | None) -> str | None:
        if value == "":
            return None
        if value is not None and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            object.__setattr__(
                self, "database_url", f"sqlite:///{(self.data_dir / 'idis.db').resolve()}"
            )
        return self

    @property
    def address(self) -> tuple[str, int]:
        return parse_address(self.http)

    @property
    def handle_address(self) -> tuple[str, int] | None:
        """Where the native Handle listeners bind, or None when they are off."""
        return parse_address(self.handle) if self.handle else None

    @property
    def site_key_path(self) -> Path:
        return self.handle_key_file or self.data_dir / "site-key.pem"

    @property
    def secret_key_path(self) -> Path:
        return self.secret_key_file or self.data_dir / "secret.key"

    @property
    def site_url(self) -> str:
        """The base URL of this node as other nodes reach it."""
        if self.federation.site_url:
            return self.federation.site_url.rstrip("/")
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        settings_file = os.environ.get("IDIS_SETTINGS_FILE")
        if settings_file:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=settings_file))
        return tuple(sources)


def read_secret_file(path: str) -> str:
    """The secret a ``--secret-file`` option names (whitespace stripped).

    Raises :class:`SettingsError` naming the file and what is wrong with it; a missing file's
    message says how to make one.
    """
    try:
        secret = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise SettingsError(
            f"--secret-file {path}: no such file (make one: idis secret new > {path})"
        ) from None
    except (OSError, UnicodeDecodeError) as error:
        raise SettingsError(f"--secret-file {path}: {error}") from None
    if not secret:
        raise SettingsError(f"--secret-file {path} is empty")
    return secret


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment (and settings file), with explicit overrides on top.

    Raises :class:`SettingsError` naming each bad setting and why it is bad.
    """
    settings_file = os.environ.get("IDIS_SETTINGS_FILE")
    if settings_file and not Path(settings_file).is_file():
        raise SettingsError(f"IDIS_SETTINGS_FILE: no such file {settings_file!r}")
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        problems = []
        for item in error.errors():
            if item["loc"]:
                loc = [str(p) for p in item["loc"]]
                name = "IDIS_" + "__".join(loc).upper()
                origin = _origin(name, loc, settings_file, overrides)
                problems.append(f"{name} ({origin}): {item['msg']}")
            else:  # a rule across several settings names them in its message
                problems.append(item["msg"].removeprefix("Value error, "))
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None
    except ValueError as error:  # e.g. a settings file that is not TOML
        where = f" in IDIS_SETTINGS_FILE {settings_file}" if settings_file else ""
        raise SettingsError(f"invalid settings{where}: {error}") from None


def _origin(name: str, loc: list[str], settings_file: str | None, overrides: Any) -> str:
    """Where the bad value came from, so the message says which place to fix."""
    if len(loc) == 1 and overrides.get(loc[0]) is not None:
        return "command-line option"
    if any(key.upper() == name for key in os.environ):
        return "environment"
    if settings_file:
        import tomllib

        try:
            table: Any = tomllib.loads(Path(settings_file).read_text(encoding="utf-8"))
            for key in loc:
                table = table[key]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        else:
            return f"{settings_file}, key {'.'.join(loc)}"
    return "default"
