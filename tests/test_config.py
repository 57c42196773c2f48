"""pyproxy.config: defaults <- pyproxy.toml <- PYPROXY_* environment <- CLI flags."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest

from pyproxy import config
from pyproxy.config import ConfigError, find_config_file, load_settings
from pyproxy.config_values import available_cores
from pyproxy.settings import DEFAULT_UPSTREAM, Settings

ROOT = Path(__file__).resolve().parent.parent
GiB = 1024**3


# every test in an empty directory (the repository's own ./pyproxy.toml is not read) and
# without PYPROXY_* variables
pytestmark = pytest.mark.usefixtures("isolated_cwd")


def write_toml(directory: Path, text: str, name: str = "pyproxy.toml") -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def one_line(exc: ConfigError) -> str:
    message = str(exc)
    assert message and "\n" not in message, repr(message)
    return message


# ---- defaults ----


def test_defaults() -> None:
    settings = load_settings(None, None, environ={})
    assert settings == Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.workers == available_cores()
    assert settings.data_dir == Path("pyproxy-data")
    assert settings.base_url == ""
    assert settings.page_max_age == 0
    assert settings.upstream_url == DEFAULT_UPSTREAM
    assert settings.upstream_timeout == 30.0
    assert settings.upstream_page_ttl == 600
    assert settings.upstream_index_ttl == 3600
    assert settings.upstream_ca_bundle == ""
    assert settings.offline is False
    assert settings.cache_max_size == 10 * GiB
    assert settings.merge == ()
    assert settings.max_upload_size == 100 * 1024**2
    assert settings.reserved_prefixes == ()
    assert settings.log_level == "info"
    assert not settings.private_only


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_empty_upstream_means_private_only() -> None:
    assert load_settings(None, {"upstream_url": ""}, environ={}).private_only


# ---- every key of the file, the environment and the CLI ----

# (section, key) -> (TOML literal, environment text, expected field value); data_dir is absolute here
SAMPLES: dict[tuple[str, str], tuple[str, str, Any]] = {
    ("server", "host"): ('"0.0.0.0"', "0.0.0.0", "0.0.0.0"),
    ("server", "port"): ("9000", "9000", 9000),
    ("server", "workers"): ("4", "4", 4),
    ("server", "data_dir"): ('"/srv/pyproxy"', "/srv/pyproxy", Path("/srv/pyproxy")),
    ("server", "base_url"): ('"https://packages.example.com"', "https://packages.example.com",
                             "https://packages.example.com"),
    ("server", "page_max_age"): ("60", "60", 60),
    ("server", "trust_forwarded"): ('["127.0.0.1", "10.1.2.3/8"]', "127.0.0.1, 10.1.2.3/8",
                                    ("127.0.0.1/32", "10.0.0.0/8")),
    ("server", "shutdown_grace"): ("5", "5", 5.0),
    ("server", "header_timeout"): ("2.5", "2.5", 2.5),
    ("server", "keepalive_timeout"): ("9", "9", 9.0),
    ("server", "max_connections"): ("64", "64", 64),
    ("upstream", "url"): ('"http://127.0.0.1:9999/simple/"', "http://127.0.0.1:9999/simple/",
                          "http://127.0.0.1:9999/simple/"),
    ("upstream", "timeout"): ("2.5", "2.5", 2.5),
    ("upstream", "deadline"): ("90", "90", 90.0),
    ("upstream", "min_rate"): ('"1MiB/s"', "1 MiB / s", 2**20),
    ("upstream", "rate_window"): ("10", "10", 10.0),
    ("upstream", "page_memory"): ('"64MiB"', "64MiB", 64 * 1024**2),
    ("upstream", "page_ttl"): ("5", "5", 5),
    ("upstream", "index_ttl"): ("7", "7", 7),
    ("upstream", "ca_bundle"): ("CA", "CA", "CA"),  # replaced by a real file in the tests
    ("upstream", "files_from"): ('["cdn.example.com", "files.example.com:8443"]',
                                 "cdn.example.com, files.example.com:8443",
                                 ("cdn.example.com", "files.example.com:8443")),
    ("upstream", "offline"): ("true", "true", True),
    ("upstream", "warm_up"): ("false", "false", False),
    ("upstream", "warm_up_concurrency"): ("2", "2", 2),
    ("upstream", "warm_up_budget"): ("0", "0", 0),
    ("upstream", "warm_up_metadata"): ("false", "off", False),
    ("upstream", "warm_up_downloads"): ("false", "off", False),
    ("upstream", "warm_up_max_file_size"): ('"8MiB"', "8MiB", 8 * 1024**2),
    ("server", "min_free_space"): ('"1GiB"', "1GiB", GiB),
    ("cache", "max_size"): ('"2GiB"', "2GiB", 2 * GiB),
    ("cache", "local_max_size"): ('"512MiB"', "512MiB", 512 * 1024**2),
    ("storage", "database"): ('"postgresql://pyproxy@db.internal:5432/pyproxy"',
                              "postgresql://pyproxy@db.internal:5432/pyproxy",
                              "postgresql://pyproxy@db.internal:5432/pyproxy"),
    ("storage", "objects"): ('"s3://pyproxy-blobs/prod"', "s3://pyproxy-blobs/prod",
                             "s3://pyproxy-blobs/prod"),
    ("storage", "s3_endpoint"): ('"http://minio.internal:9000"', "http://minio.internal:9000",
                                 "http://minio.internal:9000"),
    ("storage", "node_url"): ('"http://10.0.0.5:8080"', "http://10.0.0.5:8080",
                              "http://10.0.0.5:8080"),
    ("overlay", "merge"): ('["foo", "bar-baz"]', "foo, bar-baz", ("foo", "bar-baz")),
    ("uploads", "max_file_size"): ('"5MB"', "5MB", 5_000_000),
    ("uploads", "reserved_prefixes"): ('["acme-", "Corp_"]', "acme-, Corp_", ("acme-", "corp-")),
    ("log", "level"): ('"DEBUG"', "Debug", "debug"),  # in any case
    ("log", "format"): ('"Json"', "JSON", "json"),
    ("auth", "read"): ('"Authenticated"', "AUTHENTICATED", "authenticated"),
    ("auth", "password_threads"): ("2", "2", 2),
    ("auth", "password_queue"): ("0", "0", 0),
    ("auth", "password_failures_per_minute"): ("30", "30", 30),
    ("policy", "min_age"): ('"7d"', "7d", "7d"),
    ("policy", "not_after"): ('"2026-11-20T00:00:00Z"', "2026-11-20T00:00:00Z",
                              "2026-11-20T00:00:00Z"),
    # a comma inside a specifier does not split the environment's list
    ("policy", "exempt"): ('["certifi", "mypkg>=2,<3"]', "certifi, mypkg>=2,<3",
                           ("certifi", "mypkg>=2,<3")),
    ("policy", "deny"): ('["evil-pkg", "urllib3>=1,<1.26.5"]', "evil-pkg, urllib3>=1,<1.26.5",
                         ("evil-pkg", "urllib3>=1,<1.26.5")),
    ("policy", "allow_only"): ('["requests", "Flask>=3"]', "requests,Flask>=3",
                               ("requests", "Flask>=3")),
    ("policy", "missing_upload_time"): ('"Deny"', "DENY", "deny"),  # in any case
}


def test_samples_cover_every_setting() -> None:
    assert set(SAMPLES) == set(config._TOML_KEYS)
    # [[upstreams]] is an array of tables, not a key: tests/test_upstream_settings.py
    fields = {f.name for f in dataclasses.fields(Settings)} - {"upstreams"}
    assert set(config._TOML_KEYS.values()) == fields


def _sample(key: tuple[str, str], tmp_path: Path) -> tuple[str, str, Any]:
    toml_value, env_value, expected = SAMPLES[key]
    if key == ("upstream", "ca_bundle"):
        bundle = tmp_path / "ca.pem"
        bundle.write_text("-----BEGIN CERTIFICATE-----\n")
        return f'"{bundle}"', str(bundle), str(bundle)
    return toml_value, env_value, expected


# a cluster's database, bucket and node URL are set together: each sample of one comes with
# the environment's samples of the others
CLUSTER = {("storage", "database"), ("storage", "objects"), ("storage", "node_url")}


def _companions(key: tuple[str, str]) -> dict[str, str]:
    if key not in CLUSTER:
        return {}
    return {f"PYPROXY_{s}_{k}".upper(): SAMPLES[(s, k)][1] for s, k in CLUSTER - {key}}


@pytest.mark.parametrize("key", list(SAMPLES), ids=lambda k: ".".join(k))
def test_file_sets_each_key(key: tuple[str, str], tmp_path: Path) -> None:
    toml_value, _, expected = _sample(key, tmp_path)
    path = write_toml(tmp_path, f"[{key[0]}]\n{key[1]} = {toml_value}\n")
    settings = load_settings(str(path), None, environ=_companions(key))
    field = config._TOML_KEYS[key]
    assert getattr(settings, field) == expected
    # and nothing else moved
    reset = {config._TOML_KEYS[k]: getattr(Settings(), config._TOML_KEYS[k])
             for k in {key} | (CLUSTER if key in CLUSTER else set())}
    assert dataclasses.replace(settings, **reset) == Settings()


@pytest.mark.parametrize("key", list(SAMPLES), ids=lambda k: ".".join(k))
def test_environment_sets_each_key(key: tuple[str, str], tmp_path: Path) -> None:
    _, env_value, expected = _sample(key, tmp_path)
    variable = f"PYPROXY_{key[0]}_{key[1]}".upper()
    settings = load_settings(None, None, environ={variable: env_value, **_companions(key)})
    assert getattr(settings, config._TOML_KEYS[key]) == expected


@pytest.mark.parametrize("key", list(SAMPLES), ids=lambda k: ".".join(k))
def test_cli_sets_each_key_as_text(key: tuple[str, str], tmp_path: Path) -> None:
    _, env_value, expected = _sample(key, tmp_path)
    field = config._TOML_KEYS[key]
    settings = load_settings(None, {field: env_value}, environ=_companions(key))
    assert getattr(settings, field) == expected


def test_workers_auto_is_one_per_core(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nworkers = 'auto'\n")
    assert load_settings(str(path), None, environ={}).workers == available_cores()
    assert load_settings(None, None, environ={"PYPROXY_SERVER_WORKERS": "AUTO"}).workers == \
        available_cores()
    assert load_settings(None, {"workers": "auto"}, environ={}).workers == available_cores()
    assert load_settings(None, {"workers": "1"}, environ={}).workers == 1


def test_workers_are_bounded_per_core(tmp_path: Path) -> None:
    most = config.WORKERS_PER_CORE * available_cores()
    assert load_settings(None, {"workers": str(most)}, environ={}).workers == most
    path = write_toml(tmp_path, "[server]\nworkers = 100000\n")
    with pytest.raises(ConfigError, match=rf"server.workers: 100000 is more than 8 per core \({most} on"):
        load_settings(str(path), None, environ={})


def test_layers_file_then_environment_then_cli(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\nport = 9001\nhost = '10.0.0.1'\nworkers = 3\n")
    environ = {"PYPROXY_SERVER_PORT": "9002", "PYPROXY_SERVER_HOST": "10.0.0.2"}
    only_file = load_settings(str(path), None, environ={})
    assert (only_file.port, only_file.host, only_file.workers) == (9001, "10.0.0.1", 3)
    with_env = load_settings(str(path), None, environ=environ)
    assert (with_env.port, with_env.host, with_env.workers) == (9002, "10.0.0.2", 3)
    with_cli = load_settings(str(path), {"port": 9003, "host": None}, environ=environ)
    assert (with_cli.port, with_cli.host, with_cli.workers) == (9003, "10.0.0.2", 3)


def test_environment_can_clear_the_upstream(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[upstream]\nurl = 'http://127.0.0.1:9999/simple/'\n")
    settings = load_settings(str(path), None, environ={"PYPROXY_UPSTREAM_URL": ""})
    assert settings.private_only


def test_os_environ_is_the_default_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYPROXY_SERVER_WORKERS", "5")
    assert load_settings().workers == 5


def test_unrelated_environment_is_ignored() -> None:
    settings = load_settings(None, None, environ={"PYPROXY": "x", "PORT": "1", "PYPROXY_CONFIGX": "y"})
    assert settings == Settings()
    # PYPROXY_* names of no [section]: the tests' own switches, the file's name
    assert load_settings(None, None, environ={
        "PYPROXY_SLOW_TESTS": "1", "PYPROXY_TEST_BIG_MB": "5", "PYPROXY_CONFIG": "",
        "PYPROXY_BOGUS_X": "1", "pyproxy_server_port": "1",
    }) == Settings()


@pytest.mark.parametrize(
    ("variable", "said"),
    [
        # a key no [section] has is refused as the file refuses it: a typo must not pass silently
        ("PYPROXY_SERVER_BOGUS", "PYPROXY_SERVER_BOGUS: unknown setting server.bogus"),
        ("PYPROXY_SERVER_PROT", "server.prot (did you mean PYPROXY_SERVER_PORT?)"),
        ("PYPROXY_UPSTREAM_TIMOUT", "(did you mean PYPROXY_UPSTREAM_TIMEOUT?)"),
        ("PYPROXY_CACHE_MAXSIZE", "(did you mean PYPROXY_CACHE_MAX_SIZE?)"),
        ("PYPROXY_POLICY_", "PYPROXY_POLICY_: unknown setting"),
        ("PYPROXY_Server_Port", "the names are upper case: PYPROXY_SERVER_PORT"),
        ("PYPROXY_UPSTREAMS_GPU_URL", "[[upstreams]] are set in pyproxy.toml only"),
    ],
)
def test_unknown_environment_settings_are_refused(variable: str, said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, None, environ={variable: "1", "PYPROXY_SERVER_PORT": "9000"})
    assert said in one_line(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("YES", True), (" on ", True),
     ("false", False), ("0", False), ("No", False), ("off", False)],
)
def test_boolean_text(text: str, expected: bool) -> None:
    assert load_settings(None, None, environ={"PYPROXY_UPSTREAM_OFFLINE": text}).offline is expected


def test_merge_list_text_ignores_blanks() -> None:
    settings = load_settings(None, None, environ={"PYPROXY_OVERLAY_MERGE": " a ,, b,"})
    assert settings.merge == ("a", "b")
    assert load_settings(None, None, environ={"PYPROXY_OVERLAY_MERGE": ""}).merge == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("yes", True), ("false", False), ("", False), ("0", False),
     ("::1", ("::1/128",)), ("127.0.0.1,172.16.0.0/12", ("127.0.0.1/32", "172.16.0.0/12"))],
)
def test_trust_forwarded_text(text: str, expected: object) -> None:
    settings = load_settings(None, None, environ={"PYPROXY_SERVER_TRUST_FORWARDED": text})
    assert settings.trust_forwarded == expected


@pytest.mark.parametrize(("toml_value", "expected"), [("true", True), ("false", False), ("[]", False)])
def test_trust_forwarded_in_the_file(toml_value: str, expected: bool, tmp_path: Path) -> None:
    path = write_toml(tmp_path, f"[server]\ntrust_forwarded = {toml_value}\n")
    assert load_settings(str(path), None, environ={}).trust_forwarded is expected


@pytest.mark.parametrize(
    "url", ["https://packages.example.com", "https://packages.example.com/", "http://10.0.0.1:8080",
            "http://[::1]:8080/"],
)
def test_base_url_is_an_origin(url: str) -> None:
    assert load_settings(None, {"base_url": url}, environ={}).base_url == url


def test_float_accepts_an_integer(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[upstream]\ntimeout = 5\n")
    settings = load_settings(str(path), None, environ={})
    assert settings.upstream_timeout == 5.0 and isinstance(settings.upstream_timeout, float)


@pytest.mark.parametrize("host", ["", "0.0.0.0", "::", "::1", "fe80::1%eth0", "localhost",
                                  "pyproxy_1.internal", "10.0.0.1"])
def test_hosts_to_listen_on(host: str) -> None:
    assert load_settings(None, {"host": host}, environ={}).host == host


@pytest.mark.parametrize(
    "url", ["https://user:pa%40ss@mirror.example.com/simple/", "http://[::1]:8080/simple/",
            "https://b\u00fccher.example/simple/", "http://127.0.0.1:65535", "http://a_b:1/?x#y"],
)
def test_upstream_urls_with_a_valid_host(url: str) -> None:
    assert load_settings(None, {"upstream_url": url}, environ={}).upstream_url == url


def test_size_may_be_a_whole_float(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[cache]\nmax_size = 1e9\n[upstream]\npage_memory = 1024.0\n")
    settings = load_settings(str(path), None, environ={})
    assert (settings.cache_max_size, settings.upstream_page_memory) == (10**9, 1024)


def test_largest_values_are_taken(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[cache]\nmax_size = '1000000TB'\n[policy]\nmin_age = '36500d'\n"
                                f"[upstream]\npage_ttl = {2**63 - 1}\ntimeout = 1e300\n")
    settings = load_settings(str(path), None, environ={})
    assert (settings.cache_max_size, settings.upstream_page_ttl) == (10**18, 2**63 - 1)
    assert (settings.policy_min_age, settings.upstream_timeout) == ("36500d", 1e300)


def test_port_zero_picks_a_free_port() -> None:
    assert load_settings(None, {"port": 0}, environ={}).port == 0


# ---- data_dir ----


def test_data_dir_is_relative_to_the_config_file(tmp_path: Path) -> None:
    etc = tmp_path / "etc" / "pyproxy"
    etc.mkdir(parents=True)
    path = write_toml(etc, "[server]\ndata_dir = 'data'\n")
    assert load_settings(str(path), None, environ={}).data_dir == etc / "data"
    nested = write_toml(etc, "[server]\ndata_dir = '../var/cache'\n", "nested.toml")
    assert load_settings(str(nested), None, environ={}).data_dir == etc / "../var/cache"


def test_data_dir_given_relative_config_path(tmp_path: Path) -> None:
    sub = Path.cwd() / "conf"
    sub.mkdir()
    write_toml(sub, "[server]\ndata_dir = 'data'\n")
    assert load_settings("conf/pyproxy.toml", None, environ={}).data_dir == Path("conf/data")


def test_data_dir_absolute_and_home(tmp_path: Path) -> None:
    path = write_toml(tmp_path, f"[server]\ndata_dir = '{tmp_path / 'abs'}'\n")
    assert load_settings(str(path), None, environ={}).data_dir == tmp_path / "abs"
    home = write_toml(tmp_path, "[server]\ndata_dir = '~/pyproxy'\n", "home.toml")
    assert load_settings(str(home), None, environ={}).data_dir == Path("~/pyproxy").expanduser()


def test_data_dir_from_environment_or_cli_is_relative_to_cwd(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server]\ndata_dir = 'from-file'\n")
    env = load_settings(str(path), None, environ={"PYPROXY_SERVER_DATA_DIR": "from-env"})
    assert env.data_dir == Path("from-env")
    cli = load_settings(str(path), {"data_dir": "from-cli"}, environ={})
    assert cli.data_dir == Path("from-cli")


# ---- sizes ----


@pytest.mark.parametrize(
    ("toml_value", "expected"), [('"10GiB"', 10 * GiB), ('"500 MB"', 500 * 1000**2), ("1024", 1024)]
)
def test_sizes_in_the_file(toml_value: str, expected: int, tmp_path: Path) -> None:
    path = write_toml(tmp_path, f"[cache]\nmax_size = {toml_value}\n[uploads]\nmax_file_size = {toml_value}\n")
    settings = load_settings(str(path), None, environ={})
    assert settings.cache_max_size == expected
    assert settings.max_upload_size == expected


# ---- bad values: one line that names the setting ----


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[server]\nhots = 'x'\n", "server.hots"),  # unknown key
        ("[srever]\nhost = 'x'\n", "srever.host"),  # unknown section
        ("port = 8080\n", "port"),  # a key outside any table
        ("[server]\nport = '8080'\n", "server.port"),  # wrong type
        ("[server]\nport = 80.5\n", "server.port"),
        ("[server]\nport = true\n", "server.port"),
        ("[server]\nport = 70000\n", "server.port"),  # out of range
        ("[server]\nport = 65536\n", "server.port"),
        ("[server]\nport = -1\n", "server.port"),
        ("[server]\nworkers = 0\n", "server.workers"),
        ("[server]\nworkers = 'many'\n", "server.workers"),
        ("[server]\nworkers = true\n", "server.workers"),
        ("[storage]\ndatabase = 'mysql://db/x'\nobjects = 's3://abc'\nnode_url = 'http://a:1'\n",
         "storage.database"),
        ("[storage]\ndatabase = 'postgresql://db/x'\nobjects = '/srv/blobs'\n"
         "node_url = 'http://a:1'\n", "storage.objects"),
        ("[storage]\ndatabase = 'postgresql://db/x'\nobjects = 's3://Big_Bucket'\n"
         "node_url = 'http://a:1'\n", "storage.objects"),
        ("[storage]\ndatabase = 'postgresql://db/x'\nnode_url = 'http://a:1'\n", "storage.objects"),
        ("[storage]\nobjects = 's3://abc'\n", "storage.database"),
        ("[storage]\ndatabase = 'postgresql://db/x'\nobjects = 's3://abc'\n", "storage.node_url"),
        ("[storage]\ndatabase = 'postgresql://db/x'\nobjects = 's3://abc'\n"
         "node_url = '10.0.0.5:8080'\n", "storage.node_url"),
        ("[storage]\ns3_endpoint = 'minio:9000'\n", "storage.s3_endpoint"),
        ("[cache]\nlocal_max_size = 'lots'\n", "cache.local_max_size"),
        ("[server]\nmax_connections = 0\n", "server.max_connections"),
        ("[server]\nheader_timeout = 0\n", "server.header_timeout"),
        ("[log]\nlevel = 'verbose'\n", "log.level"),
        ("[log]\nlevel = 3\n", "log.level"),
        ("[log]\nformat = 'xml'\n", "log.format"),
        ("[auth]\nread = 'everyone'\n", "auth.read"),
        ("[auth]\nread = true\n", "auth.read"),
        ("[auth]\npassword_threads = 0\n", "auth.password_threads"),
        ("[auth]\npassword_failures_per_minute = -1\n", "auth.password_failures_per_minute"),
        ("[server]\nlog_level = 'info'\n", "server.log_level"),  # now [log] level
        ("[server]\nhost = 1\n", "server.host"),
        ("[server]\ndata_dir = ''\n", "server.data_dir"),
        ("[server]\ndata_dir = 5\n", "server.data_dir"),
        ("[server]\nbase_url = 'packages.example.com'\n", "server.base_url"),
        ("[server]\nbase_url = 'https://packages.example.com/pypi'\n", "server.base_url"),
        ("[server]\nbase_url = 'https://\"><b>/'\n", "server.base_url"),
        ("[server]\ntrust_forwarded = 'yes'\n", "server.trust_forwarded"),
        ("[server]\ntrust_forwarded = ['nginx']\n", "server.trust_forwarded"),
        ("[server]\ntrust_forwarded = [1]\n", "server.trust_forwarded"),
        ("[server]\nshutdown_grace = 0\n", "server.shutdown_grace"),
        ("[server]\npage_max_age = -5\n", "server.page_max_age"),
        ("[upstream]\nurl = 'ftp://127.0.0.1/simple/'\n", "upstream.url"),  # bad URL
        ("[upstream]\nurl = 'http://'\n", "upstream.url"),
        ("[upstream]\nurl = 'not a url'\n", "upstream.url"),
        ("[upstream]\ntimeout = 0\n", "upstream.timeout"),
        ("[upstream]\ntimeout = 'soon'\n", "upstream.timeout"),
        ("[upstream]\noffline = 'yes'\n", "upstream.offline"),
        ("[upstream]\ndeadline = 0\n", "upstream.deadline"),
        ("[upstream]\nmin_rate = 'fast'\n", "upstream.min_rate"),
        ("[upstream]\nmin_rate = '10kB/h'\n", "upstream.min_rate"),
        ("[upstream]\nmin_rate = -1\n", "upstream.min_rate"),
        ("[upstream]\nrate_window = 0\n", "upstream.rate_window"),
        ("[upstream]\nwarm_up_concurrency = 0\n", "upstream.warm_up_concurrency"),
        ("[upstream]\nwarm_up_budget = -1\n", "upstream.warm_up_budget"),
        ("[upstream]\nwarm_up = 'soon'\n", "upstream.warm_up"),
        ("[upstream]\npage_memory = 'lots'\n", "upstream.page_memory"),
        ("[upstream]\nfiles_from = 'cdn.example.com'\n", "upstream.files_from"),
        ("[upstream]\nfiles_from = ['https://cdn.example.com']\n", "upstream.files_from"),
        ("[upstream]\nfiles_from = ['cdn.example.com/packages/']\n", "upstream.files_from"),
        ("[upstream]\nfiles_from = ['cdn.example.com:99999']\n", "upstream.files_from"),
        ("[upstream]\nfiles_from = ['ftp://cdn.example.com']\n", "upstream.files_from"),
        ("[upstream]\nfiles_from = ['u:p@cdn.example.com']\n", "upstream.files_from"),
        ("[upstream]\nca_bundle = '/nonexistent/ca.pem'\n", "upstream.ca_bundle"),
        ("[cache]\nmax_size = 'huge'\n", "cache.max_size"),
        ("[cache]\nmax_size = -1\n", "cache.max_size"),
        ("[overlay]\nmerge = 'foo'\n", "overlay.merge"),
        ("[overlay]\nmerge = [1, 2]\n", "overlay.merge"),
        ("[uploads]\nmax_file_size = 0\n", "uploads.max_file_size"),
        ("[uploads]\nmax_file_size = '10 parsecs'\n", "uploads.max_file_size"),
        ("[uploads]\nreserved_prefixes = 'acme-'\n", "uploads.reserved_prefixes"),
        ("[uploads]\nreserved_prefixes = ['']\n", "uploads.reserved_prefixes"),
        ("[uploads]\nreserved_prefixes = ['-acme']\n", "uploads.reserved_prefixes"),
        ("[uploads]\nreserved_prefixes = ['acme/']\n", "uploads.reserved_prefixes"),
        ("[uploads]\nreserved_prefixes = ['\u0430cme-']\n", "uploads.reserved_prefixes"),
        ("[policy]\nmin_age = 7\n", "policy.min_age"),
        ("[policy]\nmissing_upload_time = 'ignore'\n", "policy.missing_upload_time"),
        ("[policy]\nexempt = 'certifi'\n", "policy.exempt"),
        # nan and inf are no timeouts: every timer built on one fails
        ("[upstream]\ntimeout = nan\n", "upstream.timeout"),
        ("[upstream]\ntimeout = inf\n", "upstream.timeout"),
        ("[upstream]\ndeadline = nan\n", "upstream.deadline"),
        ("[upstream]\ndeadline = inf\n", "upstream.deadline"),
        ("[upstream]\nrate_window = -inf\n", "upstream.rate_window"),
        ("[server]\nshutdown_grace = inf\n", "server.shutdown_grace"),
        ("[server]\nheader_timeout = nan\n", "server.header_timeout"),
        ("[server]\nkeepalive_timeout = inf\n", "server.keepalive_timeout"),
        ("[upstream]\ntimeout = 1" + "0" * 400 + "\n", "upstream.timeout"),  # no float holds it
        ("[upstream]\npage_ttl = 99999999999999999999\n", "upstream.page_ttl"),
        # sizes: whole bytes, at most an exabyte
        ("[cache]\nmax_size = 1.5\n", "cache.max_size: 1.5 is not a whole number of bytes"),
        ("[cache]\nmax_size = nan\n", "cache.max_size"),
        ("[cache]\nmax_size = [1]\n", "cache.max_size"),
        ("[cache]\nmax_size = '99999999999999999999999TiB'\n", "cache.max_size: "),
        ("[cache]\nmax_size = 99999999999999999999\n", "the largest size"),
        ("[upstream]\nmin_rate = '99999999999999999999TB/s'\n", "upstream.min_rate"),
        ("[upstream]\nmin_rate = 2.5\n", "upstream.min_rate"),
        ("[policy]\nmin_age = '99999999999999999999d'\n", "policy.min_age: "),
        ("[policy]\nnot_after = '9999-12-31T23:00:00-05:00'\n", "policy.not_after: "),
        # URLs the HTTP client cannot parse, or whose port no socket has
        ("[upstream]\nurl = 'http://[::1/simple/'\n", "upstream.url"),
        ("[upstream]\nurl = 'http://[::1'\n", "upstream.url"),
        ("[upstream]\nurl = 'http://[::g]/simple/'\n", "upstream.url"),
        ("[upstream]\nurl = 'http://127.0.0.1:99999/simple/'\n", "upstream.url"),
        ("[upstream]\nurl = 'http://127.0.0.1:0/simple/'\n", "upstream.url"),
        ("[upstream]\nurl = 'http://host name/simple/'\n", "upstream.url"),
        ("[server]\nbase_url = 'http://[::1'\n", "server.base_url"),
        ("[server]\nbase_url = 'http://packages.example.com:65536'\n", "server.base_url"),
        ("[storage]\ns3_endpoint = 'http://[::1:9000'\n", "storage.s3_endpoint"),
        ("[storage]\ns3_endpoint = 'http://minio:99999'\n", "storage.s3_endpoint"),
        ("[storage]\ndatabase = 'postgresql://db/x'\nobjects = 's3://abc'\n"
         "node_url = 'http://[::1'\n", "storage.node_url"),
        ("[storage]\ndatabase = 'postgresql://db/x'\nobjects = 's3://abc'\n"
         "node_url = 'http://10.0.0.5:80800'\n", "storage.node_url"),
        ("[upstream]\nfiles_from = ['[::1']\n", "upstream.files_from"),
        # what the socket cannot bind to
        ("[server]\nhost = '\u00ff'\n", "server.host"),
        ("[server]\nhost = 'not a host!!'\n", "server.host"),
        ("[server]\nhost = '[::1]'\n", "server.host"),
        ("[server]\nhost = '127.0.0.1:8080'\n", "server.host"),
        ('[server]\nhost = "a\\u0000b"\n', "server.host"),  # a NUL
    ],
)
def test_bad_file_values(text: str, named: str, tmp_path: Path) -> None:
    path = write_toml(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), None, environ={})
    assert named in one_line(caught.value)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("min_age = '7x'", 'policy.min_age: \'7x\' is not a duration such as "7d"'),
        ("min_age = 'd7'", "policy.min_age: 'd7' is not a duration"),
        ("min_age = '7d and more'", "is not a duration"),
        ("not_after = 'next tuesday'", "policy.not_after: 'next tuesday' is not a time such as"),
        ("not_after = '2026-11-20T00:00:00'", "has no time zone: end it with \"Z\""),
        ("not_after = '2026-13-01'", "policy.not_after: '2026-13-01' is not a time"),
        ("exempt = ['certifi<<1']", "policy.exempt: 'certifi<<1' is not a name or a PEP 508"),
        ("exempt = ['requests[socks]']", "only a name and version specifiers are allowed"),
        ("exempt = ['foo; python_version < \"3.9\"']", "policy.exempt:"),
        ("exempt = ['pkg @ https://example.invalid/pkg.whl']", "policy.exempt:"),
        ("exempt = ['']", "policy.exempt:"),
        ("deny = ['urllib3<<1']", "policy.deny: 'urllib3<<1' is not a name or a PEP 508"),
        ("deny = ['evil-pkg', 3]", "policy.deny: expected a list of names or specifiers"),
        ("allow_only = ['pkg @ https://example.invalid/pkg.whl']", "policy.allow_only:"),
        ("allow_only = 'requests'", "policy.allow_only: expected a list"),
    ],
)
def test_bad_policy_values_say_what_is_wrong(text: str, said: str, tmp_path: Path) -> None:
    path = write_toml(tmp_path, f"[policy]\n{text}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), None, environ={})
    assert said in one_line(caught.value)


def test_policy_values_are_read_the_same_from_the_environment() -> None:
    settings = load_settings(None, None, environ={
        "PYPROXY_POLICY_MIN_AGE": " 1d12h ", "PYPROXY_POLICY_NOT_AFTER": "2026-11-20",
        "PYPROXY_POLICY_EXEMPT": "a>=1, <2,b , c~=1.4",
    })
    assert settings.policy_min_age == "1d12h"
    assert settings.policy_not_after == "2026-11-20"
    assert settings.policy_exempt == ("a>=1,<2", "b", "c~=1.4")
    assert load_settings(None, None, environ={"PYPROXY_POLICY_EXEMPT": ""}).policy_exempt == ()


def test_ca_bundle_must_be_a_file_not_a_directory(tmp_path: Path) -> None:
    path = write_toml(tmp_path, f"[upstream]\nca_bundle = '{tmp_path}'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), None, environ={})
    assert "upstream.ca_bundle" in one_line(caught.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PYPROXY_SERVER_PORT", "eighty"),
        ("PYPROXY_SERVER_PORT", "99999"),
        ("PYPROXY_SERVER_WORKERS", "0"),
        ("PYPROXY_LOG_LEVEL", "loud"),
        ("PYPROXY_LOG_FORMAT", "xml"),
        ("PYPROXY_AUTH_READ", "users"),
        ("PYPROXY_UPSTREAM_URL", "127.0.0.1:9999"),
        ("PYPROXY_UPSTREAM_OFFLINE", "maybe"),
        ("PYPROXY_UPSTREAM_TIMEOUT", "-1"),
        ("PYPROXY_UPSTREAM_CA_BUNDLE", "/nonexistent/ca.pem"),
        ("PYPROXY_CACHE_MAX_SIZE", "lots"),
        ("PYPROXY_UPLOADS_MAX_FILE_SIZE", "0"),
        ("PYPROXY_UPLOADS_RESERVED_PREFIXES", "acme-, a b"),
        ("PYPROXY_SERVER_TRUST_FORWARDED", "maybe"),
        ("PYPROXY_SERVER_TRUST_FORWARDED", "127.0.0.1, 300.1.1.1"),
        ("PYPROXY_SERVER_SHUTDOWN_GRACE", "forever"),
        ("PYPROXY_POLICY_MIN_AGE", "a week"),
        ("PYPROXY_POLICY_NOT_AFTER", "yesterday"),
        ("PYPROXY_POLICY_EXEMPT", "certifi, ==1.0"),  # a specifier without a name
        ("PYPROXY_POLICY_DENY", "evil-pkg, ~="),
        ("PYPROXY_POLICY_ALLOW_ONLY", "requests[socks]"),
        ("PYPROXY_POLICY_MISSING_UPLOAD_TIME", "first_seen"),
        ("PYPROXY_UPSTREAM_TIMEOUT", "nan"),
        ("PYPROXY_UPSTREAM_TIMEOUT", "inf"),
        ("PYPROXY_UPSTREAM_DEADLINE", "-Infinity"),
        ("PYPROXY_UPSTREAM_TIMEOUT", "1e400"),
        ("PYPROXY_SERVER_SHUTDOWN_GRACE", "NaN"),
        ("PYPROXY_UPSTREAM_PAGE_TTL", "99999999999999999999"),
        ("PYPROXY_CACHE_MAX_SIZE", "99999999999999999999999TiB"),
        ("PYPROXY_POLICY_MIN_AGE", "99999999999999999999d"),
        ("PYPROXY_UPSTREAM_URL", "http://[::1"),
        ("PYPROXY_UPSTREAM_URL", "http://127.0.0.1:99999/simple/"),
        ("PYPROXY_STORAGE_S3_ENDPOINT", "http://[::1"),
        ("PYPROXY_SERVER_HOST", "\udcff"),  # $'\xff' as os.environ decodes it
        ("PYPROXY_SERVER_HOST", "no such host!"),
    ],
)
def test_bad_environment_values(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, None, environ={variable: value})
    message = one_line(caught.value)
    section, key = variable.removeprefix("PYPROXY_").lower().split("_", 1)
    assert variable in message or f"{section}.{key}" in message


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"port": "http"}, "port"),
        ({"port": 123456}, "server.port"),
        ({"workers": 0}, "server.workers"),
        ({"log_level": "chatty"}, "--log-level"),
        ({"log_format": "yaml"}, "--log-format"),
        ({"upstream_url": "file:///tmp/index"}, "upstream.url"),
        ({"upstream_url": "http://[::1/simple/"}, "upstream.url"),
        ({"upstream_url": "http://127.0.0.1:99999/simple/"}, "upstream.url"),
        ({"host": "\udcff"}, "server.host"),
        ({"host": "no such host!"}, "server.host"),
    ],
)
def test_bad_cli_values(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, overrides, environ={})
    assert named in one_line(caught.value)


def test_invalid_toml(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[server\nport = 1\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), None, environ={})
    message = one_line(caught.value)
    assert str(path) in message and "TOML" in message


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings(str(missing), None, environ={})
    assert str(missing) in one_line(caught.value)
    with pytest.raises(ConfigError):
        load_settings(None, None, environ={"PYPROXY_CONFIG": str(missing)})


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    # a directory where the file should be: an OSError other than FileNotFoundError
    directory = tmp_path / "dir.toml"
    directory.mkdir()
    with pytest.raises(ConfigError) as caught:
        load_settings(str(directory), None, environ={})
    assert str(directory) in one_line(caught.value)


def test_invalid_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b"[server]\nhost = '\xe9'\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(str(path), None, environ={})
    assert str(path) in one_line(caught.value)


# ---- which file ----


def test_find_config_file_order(monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = Path.cwd()
    assert find_config_file(None, {}) is None
    write_toml(cwd, "")
    assert find_config_file(None, {}) == Path("pyproxy.toml")
    assert find_config_file(None, {"PYPROXY_CONFIG": "/etc/env.toml"}) == Path("/etc/env.toml")
    assert find_config_file("/etc/cli.toml", {"PYPROXY_CONFIG": "/etc/env.toml"}) == Path("/etc/cli.toml")
    # empty values count as not given
    assert find_config_file("", {"PYPROXY_CONFIG": ""}) == Path("pyproxy.toml")


def test_a_directory_named_pyproxy_toml_is_not_a_config_file() -> None:
    (Path.cwd() / "pyproxy.toml").mkdir()
    assert find_config_file(None, {}) is None


def test_load_settings_reads_the_found_file(tmp_path: Path) -> None:
    write_toml(Path.cwd(), "[server]\nport = 1111\n")
    env_file = write_toml(tmp_path, "[server]\nport = 2222\n", "env.toml")
    cli_file = write_toml(tmp_path, "[server]\nport = 3333\n", "cli.toml")
    assert load_settings(None, None, environ={}).port == 1111
    assert load_settings(None, None, environ={"PYPROXY_CONFIG": str(env_file)}).port == 2222
    assert load_settings(str(cli_file), None, environ={"PYPROXY_CONFIG": str(env_file)}).port == 3333


# ---- the shipped pyproxy.toml ----


def test_shipped_pyproxy_toml_is_the_defaults() -> None:
    shipped = ROOT / "pyproxy.toml"
    settings = load_settings(str(shipped), None, environ={})
    assert settings.data_dir == ROOT / "data"
    assert dataclasses.replace(settings, data_dir=Settings().data_dir) == Settings()


def test_shipped_pyproxy_toml_lists_every_setting() -> None:
    text = (ROOT / "pyproxy.toml").read_text(encoding="utf-8")
    document = tomllib.loads(text)
    present = {(section, key) for section, table in document.items() for key in table}
    # every setting is written out, except the upstream URL which is left commented out
    assert present == set(config._TOML_KEYS) - {("upstream", "url")}
    lines = [line.strip() for line in text.splitlines()]
    assert any(line.startswith("# url =") for line in lines)
    assert 'url = ""' in text  # the private-only form is explained


def test_shipped_pyproxy_toml_is_found_from_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert find_config_file(None, {}) == Path("pyproxy.toml")
    assert load_settings(None, None, environ={}).data_dir == Path("data")



def test_shipped_cluster_toml_is_a_valid_cluster() -> None:
    settings = load_settings(str(ROOT / "config" / "cluster.toml"), None, environ={})
    assert settings.storage_database.startswith("postgresql://")
    assert settings.storage_objects.startswith("s3://")
    assert settings.storage_node_url and settings.workers == available_cores()
