"""mongrate.ini (section ``[mongrate]``) and command-line overrides.

Values support ``%(here)s`` (the ini file's directory) and ``${ENV_VAR}``; an unset
variable is an error rather than an empty string, so a typo cannot point a migration
at the wrong server.
"""

from __future__ import annotations

import configparser
import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from mongrate.errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

#: Every setting's default, in the one place they are written: the Config fields, the ini
#: reader and the file ``mongrate init`` writes all take them from here.
DEFAULTS: dict[str, object] = {
    "script_location": "versions",
    "file_template": "%(rev)s_%(slug)s",
    "prepend_sys_path": ".",
    "version_collection": "mongrate_version",
    "log_collection": "mongrate_log",
    "lock_collection": "mongrate_lock",
    "undo_collection": "mongrate_undo",
    "backups_collection": "mongrate_backups",
    "lock_lease_seconds": 30.0,
    "batch_size": 1000,
    "schema": "",
    "databases": "",
    "jobs": 1,
    "write_strategy": "auto",
}
#: Seconds a command waits for another run's lock (``--lock-timeout``).
DEFAULT_LOCK_TIMEOUT = 60.0
COLLECTION_KEYS = ("version_collection", "log_collection", "lock_collection",
                   "undo_collection", "backups_collection")


@dataclass(frozen=True)
class Config:
    """Everything a command needs to know; build with :func:`load_config`."""

    url: str | None = None
    database: str | None = None
    script_location: Path = Path(str(DEFAULTS["script_location"]))
    file_template: str = str(DEFAULTS["file_template"])
    version_collection: str = str(DEFAULTS["version_collection"])
    log_collection: str = str(DEFAULTS["log_collection"])
    lock_collection: str = str(DEFAULTS["lock_collection"])
    undo_collection: str = str(DEFAULTS["undo_collection"])
    backups_collection: str = str(DEFAULTS["backups_collection"])
    lock_lease_seconds: float = float(DEFAULTS["lock_lease_seconds"])  # type: ignore[arg-type]
    batch_size: int = int(DEFAULTS["batch_size"])  # type: ignore[call-overload]
    #: schema.yaml (absolute), or None when no declared schema is configured
    schema: Path | None = None
    #: glob patterns of the databases fleet commands run on (empty: just ``database``)
    databases: tuple[str, ...] = ()
    jobs: int = int(DEFAULTS["jobs"])  # type: ignore[call-overload]
    write_strategy: str = str(DEFAULTS["write_strategy"])
    prepend_sys_path: tuple[Path, ...] = ()
    config_file: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_collection_names({k: getattr(self, k) for k in COLLECTION_KEYS})

    def with_overrides(self, **changes: object) -> Config:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def database_name(self) -> str:
        """The database to migrate: the URL's path wins over ``database``. ConfigError if
        there is none, or if MongoDB would refuse it (before anything connects)."""
        from_url = database_from_url(self.url) if self.url else None
        name = from_url or self.database
        if not name:
            raise ConfigError(
                "no database named: put one in the URL path (mongodb://host/NAME) "
                "or set 'database' in [mongrate]"
            )
        problem = database_name_problem(name)
        if problem:
            where = ("in the URL's path" if from_url else
                     f"('database' in [mongrate] of {self.config_file or 'the config'})")
            raise ConfigError(f"database name {name!r} {where} {problem}: {DATABASE_NAME_RULE}")
        return name

    def require_url(self) -> str:
        if not self.url:
            raise ConfigError(
                "no server URL: set 'url' in [mongrate] of the config, $MONGRATE_URL, or --url"
            )
        return self.url


def split_patterns(value: str) -> tuple[str, ...]:
    """``databases`` in the ini: names or globs separated by commas, spaces or lines."""
    return tuple(p for p in re.split(r"[\s,]+", value) if p)


def collection_name_problem(name: object) -> str | None:
    """Why MongoDB would refuse ``name`` as a collection name, or None."""
    if not isinstance(name, str) or not name.strip():
        return "is empty"
    if name != name.strip():
        return "has spaces around it"
    for bad, what in (("$", "'$'"), ("\0", "a NUL character"), ("..", "'..'")):
        if bad in name:
            return f"contains {what}"
    if name.startswith(".") or name.endswith("."):
        return "starts or ends with '.'"
    if name.startswith("system."):
        return "starts with 'system.', which MongoDB reserves"
    return None


#: What to do about a database name MongoDB refuses.
DATABASE_NAME_RULE = ("a database name is 1 to 63 bytes without / \\ . \" $, spaces or NUL "
                      "(a URL's path names only the database); rename it")
_DATABASE_NAME_BAD = {"/": "'/'", "\\": "'\\\\'", ".": "'.'", " ": "a space", '"': "'\"'",
                      "$": "'$'", "\0": "a NUL character"}


def database_name_problem(name: object) -> str | None:
    """Why MongoDB (and pymongo) would refuse ``name`` as a database name, or None."""
    if not isinstance(name, str) or not name:
        return "is empty"
    for bad, what in _DATABASE_NAME_BAD.items():
        if bad in name:
            return f"contains {what}"
    size = len(name.encode("utf-8", "surrogateescape"))
    if size > 63:
        return f"is {size} bytes long, and MongoDB allows at most 63"
    return None


def check_collection_names(names: dict[str, object]) -> None:
    """Each of mongrate's collections needs a valid name of its own (ConfigError naming the key)."""
    seen: dict[object, str] = {}
    for key, name in names.items():
        problem = collection_name_problem(name)
        if problem:
            raise ConfigError(f"'{key}' = {name!r} {problem}: give it a valid collection name")
        if name in seen:
            raise ConfigError(
                f"'{key}' and '{seen[name]}' are both {name!r}: each of mongrate's collections "
                "needs its own name"
            )
        seen[name] = key


def database_from_url(url: str) -> str | None:
    """The database named in a MongoDB URL's path, or None."""
    path = urlsplit(url).path.lstrip("/")
    return path or None


def redact(url: str) -> str:
    """``url`` without its password, for messages (the user name stays). Works on
    MongoDB's several-host URLs too, which ``urlsplit`` cannot take apart."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    cred, at, hosts = netloc.rpartition("@")
    if not at or ":" not in cred:
        return url
    return f"{scheme}{sep}{cred.split(':', 1)[0]}:***@{hosts}{slash}{tail}"


def with_database(url: str, name: str) -> str:
    """``url`` with its path set to ``name`` (query string and credentials kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))


def _expand_env(value: str, key: str, path: Path) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in os.environ:
            raise ConfigError(f"{path}: '{key}' uses ${{{name}}} but that environment variable is not set")
        return os.environ[name]

    return _ENV_RE.sub(sub, value)


def load_config(path: str | os.PathLike | None = None, *, required: bool = True) -> Config:
    """Read ``path`` (else ``$MONGRATE_CONFIG``, else ``./mongrate.ini``).

    With ``required=False`` a missing default file yields the built-in defaults (so
    ``--url`` alone is enough for commands that need no scripts).
    """
    explicit = path is not None or "MONGRATE_CONFIG" in os.environ
    path = Path(path or os.environ.get("MONGRATE_CONFIG") or "mongrate.ini")
    if not path.exists():
        if required or explicit:
            raise ConfigError(
                f"config file {path} not found: run 'mongrate init DIR' or pass -c/--config"
            )
        return Config()
    here = path.resolve().parent
    parser = configparser.ConfigParser(defaults={"here": str(here)})
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path}: cannot parse: {first}") from None
    if not parser.has_section("mongrate"):
        raise ConfigError(f"{path}: no [mongrate] section; see README 'Configuration'")
    section = parser["mongrate"]
    values: dict[str, str] = {}
    for key in section:
        if key == "here":
            continue
        try:
            raw = section.get(key)
        except configparser.Error as exc:
            raise ConfigError(f"{path}: bad value for '{key}': {str(exc).splitlines()[0]}") from None
        values[key] = _expand_env(raw, key, path)

    def number(key: str, default: float, kind: type, minimum: float) -> float:
        if key not in values:
            return default
        try:
            v = kind(values.pop(key))
        except ValueError:
            raise ConfigError(f"{path}: '{key}' must be a number") from None
        if not math.isfinite(v) or v < minimum:
            raise ConfigError(f"{path}: '{key}' must be a number >= {minimum:g}")
        return v

    script_location = Path(values.pop("script_location", str(DEFAULTS["script_location"])))
    if not script_location.is_absolute():
        script_location = here / script_location
    prepend = tuple(
        (p if p.is_absolute() else here / p)
        for p in (Path(x) for x in values.pop("prepend_sys_path", str(DEFAULTS["prepend_sys_path"])).split() if x)
    )
    schema_value = values.pop("schema", str(DEFAULTS["schema"])).strip()
    schema = (here / schema_value) if schema_value else None
    databases = split_patterns(values.pop("databases", str(DEFAULTS["databases"])))
    names = {
        k: values.pop(k)
        for k in COLLECTION_KEYS
        if k in values
    }
    try:
        # defaults first, so a clash is reported on the key this file sets
        check_collection_names({**{k: DEFAULTS[k] for k in COLLECTION_KEYS if k not in names},
                                **names})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    config = Config(
        url=values.pop("url", None) or None,
        database=values.pop("database", None) or None,
        script_location=script_location,
        file_template=values.pop("file_template", str(DEFAULTS["file_template"])),
        lock_lease_seconds=number("lock_lease_seconds", Config.lock_lease_seconds, float, 1.0),
        batch_size=int(number("batch_size", Config.batch_size, int, 1)),
        schema=schema,
        databases=databases,
        jobs=int(number("jobs", Config.jobs, int, 1)),
        write_strategy=_choice(path, "write_strategy", values.pop("write_strategy", None),
                               ("auto", "in_place", "rewrite")),
        prepend_sys_path=prepend,
        config_file=path.resolve(),
        extra=values,
        **names,
    )
    if values:
        import sys

        print(f"mongrate: warning: {path}: unknown setting(s) {', '.join(sorted(values))} "
              "in [mongrate] (typo?)", file=sys.stderr)
    return config


def _choice(path: Path, key: str, value: str | None, choices: tuple[str, ...]) -> str:
    if value is None:
        return str(DEFAULTS[key])
    value = value.strip()
    if value not in choices:
        raise ConfigError(f"{path}: '{key}' must be one of {', '.join(choices)}, not {value!r}")
    return value


def ini_text(*, url: str, database: str, scripts: str = str(DEFAULTS["script_location"])) -> str:
    """The ``mongrate.ini`` that ``mongrate init`` writes: every setting at its default."""
    def esc(value: object) -> str:
        return str(value).replace("%", "%%")

    d = {k: esc(v) for k, v in DEFAULTS.items()}
    lease = f"{float(DEFAULTS['lock_lease_seconds']):g}"  # type: ignore[arg-type]
    return f"""[mongrate]
# Server and database. ${{VAR}} reads the environment; a database named in the URL path wins.
url = {esc(url)}
database = {esc(database)}
# Where revision files live (relative to this file).
script_location = {esc(scripts)}
# New revision file names: %%(rev)s, %%(slug)s, %%(year)d, %%(month).2d, %%(day).2d ...
file_template = {d["file_template"]}
# Folders put on sys.path before revisions are imported.
prepend_sys_path = {d["prepend_sys_path"]}
# Collections mongrate owns.
version_collection = {d["version_collection"]}
log_collection = {d["log_collection"]}
lock_collection = {d["lock_collection"]}
undo_collection = {d["undo_collection"]}
backups_collection = {d["backups_collection"]}
# Lease of the migration lock; a live run renews it every third of this.
lock_lease_seconds = {lease}
# Documents per batch for op helpers.
batch_size = {d["batch_size"]}
# Declared indexes, validators and options, for 'revision --autogenerate' and 'check'
# (e.g. schema.yaml, relative to this file); empty: none.
schema = {d["schema"]}
# Run upgrade/downgrade/current/check/stamp on every database matching these names or
# globs (e.g. tenant_*), each with its own version collection and lock; empty: just
# the one database above. --jobs at a time.
databases = {d["databases"]}
jobs = {d["jobs"]}
# How data helpers write: auto (detected once per run), in_place or rewrite.
write_strategy = {d["write_strategy"]}
"""
