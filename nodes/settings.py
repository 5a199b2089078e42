"""Node settings: environment variables prefixed ``IDIS_`` or a TOML settings file.

Built once at startup and passed down; nothing reads the environment anywhere else.  Nested
sections use ``__`` in variable names (``IDIS_CACHE__MAX_ENTRIES=500000``).  A settings file
named by ``IDIS_SETTINGS_FILE`` supplies defaults that environment variables override.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

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


class Peer(BaseModel):
    name: str
    url: str


class FederationSettings(BaseModel):
    """How this node finds, and is found by, the rest of the hierarchy."""

    site_url: str | None = Field(None, description="base URL others reach this node at")
    top_level: list[str] = Field(default_factory=list, description="top-level base URLs")
    peers: list[Peer] = Field(default_factory=list, description="top-level peers to replicate")
    secret: str | None = Field(None, description="shared secret of federation replication")
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

    @field_validator("site_url", "top_level", mode="after")
    @classmethod
    def _urls(cls, value: str | list[str] | None) -> str | list[str] | None:
        for url in [value] if isinstance(value, str) else value or []:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="IDIS_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Path("idis-data")
    database_url: str = Field("", description="sqlite:///FILE or postgresql://USER@HOST:PORT/DB")
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
    workers: int = Field(1, ge=1, le=64)
    role: Role = "secondary"
    name: str = "idis"
    max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024)
    migrate_on_start: bool = True
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    cache: CacheSettings = CacheSettings()
    federation: FederationSettings = FederationSettings()

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

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: str) -> str:
        if value and not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return value

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

    @model_validator(mode="after")
    def _federation(self) -> Settings:
        names = [peer.name for peer in self.federation.peers]
        if len(names) != len(set(names)):
            raise ValueError("federation.peers: peer names must be unique")
        if names and self.role in ("top-level", "dr") and not self.federation.secret:
            raise ValueError("federation.secret is needed to replicate with federation.peers")
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
                name = "IDIS_" + "__".join(str(p) for p in item["loc"]).upper()
                problems.append(f"{name}: {item['msg']}")
            else:  # a rule across several settings names them in its message
                problems.append(item["msg"].removeprefix("Value error, "))
        raise SettingsError("invalid settings:\n  " + "\n  ".join(problems)) from None
    except ValueError as error:  # e.g. a settings file that is not TOML
        raise SettingsError(f"invalid settings: {error}") from None
