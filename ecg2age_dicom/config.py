"""The one typed settings object, built once at start-up and passed down.

Sources, lowest priority first: built-in defaults, the TOML file (``--config``, default
``config/ecg2age.toml`` when present), then environment variables named
``ECG2AGE__SECTION__KEY`` (for example ``ECG2AGE__LISTENER__PORT=11113``). Every key is
optional; unknown keys and bad values stop start-up with a :class:`ConfigError` that names the
key and the file. No other module reads the environment.
"""

from __future__ import annotations

import sys
from datetime import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ecg2age_dicom.errors import ConfigError, Ecg2AgeError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG_PATH = Path("config/ecg2age.toml")
SEND_BACK_TO_SENDER = "@sender"
"""``[sr] send_to`` name meaning: the destination whose AE title called us with the ECG."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def check_ae_title(value: str) -> str:
    """An AE title without padding; 1-16 characters, no backslash (PS3.5 AE VR)."""
    if not 0 < len(value.strip()) <= 16 or "\\" in value:
        raise ValueError("an AE title is 1 to 16 characters, without backslash")
    return value.strip()


class TLSSettings(_Section):
    """``[listener.tls]`` and ``[web.tls]``: TLS for incoming connections (PEM files)."""

    cert: Path
    key: Path
    ca: Path | None = None
    require_client_cert: bool = False


class ListenerSettings(_Section):
    """``[listener]``: the C-STORE SCP that receives ECGs."""

    ae_title: str = "ECG2AGE"
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=1, le=65535)
    allowed_calling_ae_titles: list[str] = []
    max_associations: int = Field(10, ge=1)
    max_pdu_bytes: int = Field(65536, ge=0)  # 0: unlimited
    max_instance_bytes: int = Field(50_000_000, ge=1)
    acse_timeout_s: float = Field(30.0, gt=0)  # TLS handshake, then the A-ASSOCIATE-RQ
    dimse_timeout_s: float = Field(30.0, gt=0)
    network_timeout_s: float = Field(60.0, gt=0)  # silence between PDUs, and to finish one
    tls: TLSSettings | None = None

    @field_validator("allowed_calling_ae_titles")
    @classmethod
    def _allowed(cls, values: list[str]) -> list[str]:
        return [check_ae_title(value) for value in values]

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return check_ae_title(value)


class StorageSettings(_Section):
    """``[storage]``: the results database and the spool of received and produced files."""

    database_url: str = "sqlite:///var/ecg2age.sqlite3"
    spool_dir: Path = Path("var/spool")
    retention_days: float = Field(30.0, gt=0)  # delivered work is removed from the spool after


class ModelSettings(_Section):
    """``[model]``: which model card to load and how to batch."""

    card: Path = Path("model_zoo/ECG2Age-PTBXL/model.toml")
    batch_size: int = Field(32, ge=1, le=1024)
    max_batch_wait_ms: int = Field(50, ge=0, le=60_000)
    verify_sha256: bool = True
    intra_op_threads: int = Field(0, ge=0)
    inter_op_threads: int = Field(0, ge=0)
    # "auto": a GPU when TensorFlow sees one, else the CPU; "cpu": never a GPU; "gpu": refuse
    # to start without one (needs TensorFlow's CUDA build: README, "Models").
    device: Literal["auto", "cpu", "gpu"] = "auto"


class SRSettings(_Section):
    """``[sr]``: where Structured Reports go."""

    send_to: list[str] = ["PACS"]
    sop_class: Literal["comprehensive", "enhanced", "comprehensive3d"] = "comprehensive"


class ReportSettings(_Section):
    """``[report]``: which report objects are made for each ECG (SR, PDF, the page's image),
    and the page's paper."""

    outputs: list[Literal["sr", "pdf", "sc"]] = ["sr", "pdf"]
    paper: Literal["A4", "letter"] = "A4"

    @field_validator("outputs")
    @classmethod
    def _outputs(cls, kinds: list[str]) -> list[str]:
        if not kinds:
            raise ValueError("names no object: every scored ECG needs a report")
        if len(set(kinds)) != len(kinds):
            raise ValueError("names an object twice")
        return kinds


class Destination(_Section):
    """One ``[[destinations]]`` entry: a DICOM node that receives reports."""

    name: str = Field(min_length=1)
    ae_title: str
    host: str
    port: int = Field(ge=1, le=65535)
    tls: bool = False
    tls_ca: Path | None = None  # CA bundle to verify the destination (default: system CAs)

    @field_validator("ae_title")
    @classmethod
    def _ae_title(cls, value: str) -> str:
        return check_ae_title(value)


class Source(Destination):
    """One ``[[sources]]`` entry: a PACS that ``backfill`` queries (C-FIND, Study Root) and
    retrieves ECGs from: by C-MOVE to ``[listener] ae_title`` (the PACS must know that AE
    title's address) or by C-GET over the query's own association."""

    retrieve: Literal["move", "get"] = "move"


def parse_window(text: str) -> tuple[time, time]:
    """``"HH:MM-HH:MM"`` as (start, end); an end before the start runs past midnight."""
    try:
        start, end = (time.fromisoformat(part.strip()) for part in text.split("-"))
    except ValueError:
        raise ValueError(f"{text!r} is not a time window HH:MM-HH:MM") from None
    if start == end:
        raise ValueError(f"{text!r} is empty: give an end that differs from its start")
    return start, end


class BackfillSettings(_Section):
    """``[backfill]``: how politely ``backfill`` works through a source."""

    max_per_minute: int = Field(600, ge=1, le=60_000)  # instances retrieved, evenly spaced
    max_concurrent: int = Field(2, ge=1, le=16)  # retrieve associations open at once
    # Local times when the source may be queried and retrieved from, e.g. ["19:00-07:00"]
    # (past midnight); empty: at any time. Outside them, backfill waits.
    windows: list[str] = []
    # Retrieved ECGs not yet scored by the running service, before more are retrieved.
    max_backlog: int = Field(64, ge=1)
    # Retrieved ECGs none of which gets scored for this long stop the backfill: the service
    # (its workers) is not running on this database.
    stall_timeout_s: float = Field(600.0, gt=0)

    @field_validator("windows")
    @classmethod
    def _windows(cls, values: list[str]) -> list[str]:
        for value in values:
            parse_window(value)
        return values

    def parsed_windows(self) -> list[tuple[time, time]]:
        return [parse_window(value) for value in self.windows]


class PipelineSettings(_Section):
    """``[pipeline]``: the workers that turn received ECGs into reports."""

    workers: int = Field(1, ge=0, le=16)  # processes; 0: receive only (workers run elsewhere)
    claim_timeout_s: float = Field(120.0, gt=0)  # a dead worker's claims return after this
    poll_interval_s: float = Field(0.5, gt=0)
    stop_timeout_s: float = Field(30.0, gt=0)  # a worker still running after this is killed
    worker_niceness: int = Field(10, ge=0, le=19)  # senders wait on the listener, not on workers


class DeliverySettings(_Section):
    """``[delivery]``: the retry policy for sending reports."""

    max_attempts: int = Field(10, ge=1)
    initial_backoff_s: float = Field(5.0, gt=0)
    max_backoff_s: float = Field(600.0, gt=0)
    interval_s: float = Field(1.0, gt=0)  # how often due deliveries are looked for
    connect_timeout_s: float = Field(10.0, gt=0)  # TCP (and TLS) connection to a destination
    acse_timeout_s: float = Field(30.0, gt=0)  # its answer to our association request
    dimse_timeout_s: float = Field(30.0, gt=0)  # its answer to each C-STORE
    network_timeout_s: float = Field(60.0, gt=0)  # silence on an open association

    @model_validator(mode="after")
    def _backoff_order(self) -> DeliverySettings:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("max_backoff_s must be >= initial_backoff_s")
        return self


def _default_destinations() -> list[Destination]:
    # A local test PACS (e.g. DCMTK storescp on 11113) so that the defaults start as they are.
    return [Destination(name="PACS", ae_title="PACS", host="127.0.0.1", port=11113)]


class WebSettings(_Section):
    """``[web]``: the operations console beside the DICOM listener (pages behind a login),
    ``/healthz`` and ``/readyz`` (JSON, no login, no PHI) and ``/metrics`` (Prometheus)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    metrics_public: bool = False  # GET /metrics without a login
    # Signs the session cookies; made (32 random bytes, mode 0600) at the first start.
    secret_key_file: Path = Path("var/web-secret.key")
    session_hours: float = Field(8.0, gt=0, le=24 * 7)
    # Failed logins in a row before a user is locked out; each lockout doubles, from
    # lockout_minutes up to a day.
    max_failed_logins: int = Field(5, ge=1, le=100)
    lockout_minutes: float = Field(5.0, gt=0)
    tls: TLSSettings | None = None  # HTTPS (and Secure cookies); ca + require_client_cert too


class Settings(BaseSettings):
    """Every setting of ecg2age-dicom; see ``config/ecg2age.toml`` for the documented example."""

    model_config = SettingsConfigDict(
        env_prefix="ECG2AGE__",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    listener: ListenerSettings = ListenerSettings()
    storage: StorageSettings = StorageSettings()
    model: ModelSettings = ModelSettings()
    sr: SRSettings = SRSettings()
    report: ReportSettings = ReportSettings()
    destinations: list[Destination] = Field(default_factory=_default_destinations)
    pipeline: PipelineSettings = PipelineSettings()
    delivery: DeliverySettings = DeliverySettings()
    web: WebSettings = WebSettings()
    sources: list[Source] = []
    backfill: BackfillSettings = BackfillSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file's values arrive as init arguments; the environment overrides them.
        return (env_settings, init_settings)

    def destination(self, name: str, calling_ae_title: str) -> Destination | None:
        """The ``[[destinations]]`` entry a report goes to: the one named ``name``, or for
        "@sender" the one whose AE title sent the ECG; None when there is none. Resolved at
        each delivery, so that a destination added later serves a ``resend``."""
        if name == SEND_BACK_TO_SENDER:
            return next((d for d in self.destinations if d.ae_title == calling_ae_title), None)
        return next((d for d in self.destinations if d.name == name), None)

    def source_names(self) -> list[str]:
        return [source.name for source in self.sources]

    def source(self, name: str) -> Source:
        """The ``[[sources]]`` entry named ``name``.

        Raises
        ------
        ConfigError
            There is none.
        """
        for source in self.sources:
            if source.name == name:
                return source
        raise ConfigError(
            f"no [[sources]] entry is named {name!r} (defined: "
            f"{', '.join(self.source_names()) or 'none'})"
        )

    @model_validator(mode="after")
    def _names_known(self) -> Settings:
        names = [destination.name for destination in self.destinations]
        for section, entries in (("destinations", names), ("sources", self.source_names())):
            duplicates = sorted({name for name in entries if entries.count(name) > 1})
            if duplicates:
                raise ValueError(f"{section}: name(s) {', '.join(duplicates)} defined twice")
        unknown = [n for n in self.sr.send_to if n != SEND_BACK_TO_SENDER and n not in names]
        if unknown:
            raise ValueError(
                f"sr.send_to names {', '.join(unknown)} but no [[destinations]] entry has that "
                f"name (defined: {', '.join(names) or 'none'}; '{SEND_BACK_TO_SENDER}' means "
                "the sender)"
            )
        return self


def read_toml(path: Path, what: str, error: type[Ecg2AgeError]) -> dict[str, Any]:
    """A TOML file's content; ``error`` (naming ``what`` and the path) when it cannot be read."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise error(f"{what} {path} cannot be read as TOML: {exc}") from None


def describe_problems(error: ValidationError) -> list[str]:
    """Each validation problem as "dotted.key: message" ("unknown key" for extra keys)."""
    problems = []
    for problem in error.errors():
        key = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        message = "unknown key" if problem["type"] == "extra_forbidden" else problem["msg"]
        problems.append(f"{key}: {message}")
    return problems


def load_settings(path: Path | None = None) -> Settings:
    """Build the settings from ``path`` (or the default file when present) and the environment.

    Parameters
    ----------
    path:
        A TOML file. ``None`` means ``config/ecg2age.toml`` if it exists, else defaults only.

    Raises
    ------
    ConfigError
        The file is missing or not TOML, or a key is unknown or has a bad value.
    """
    if path is None and DEFAULT_CONFIG_PATH.is_file():
        path = DEFAULT_CONFIG_PATH
    data: dict[str, Any] = {}
    source = str(path) if path is not None else "built-in defaults"
    if path is not None:
        data = read_toml(Path(path), "configuration file", ConfigError)
    try:
        return Settings(**data)
    except ValidationError as exc:
        raise ConfigError(
            f"invalid configuration in {source} (or its ECG2AGE__ environment overrides):\n"
            + "\n".join(f"  {problem}" for problem in describe_problems(exc))
        ) from None
