"""[[upstreams]] (pyproxy/upstream_settings.py): parsing, the checks that refuse a bad routing
table at start-up, name patterns and the file-host allow list."""

from __future__ import annotations

from pathlib import Path

import pytest

from pyproxy.config import ConfigError, load_settings
from pyproxy.model import NormalizedName
from pyproxy.upstream_settings import NamePatterns, UpstreamSettings, parse_upstreams

pytestmark = pytest.mark.usefixtures("isolated_cwd")

GPU = """
[[upstreams]]
name = "gpu"
url = "https://user:pw@gpu-wheels.example.test/simple/"
projects = ["torch", "Torch_Vision", "nvidia-*"]
files_from = ["Files.Example.Test", "cdn.example.test:8443", "[::1]:9000"]
timeout = 5
page_ttl = 60
index_ttl = 120
offline = true
min_age = "0d"
exempt = ["torch==2.1.0"]
"""


def load(tmp_path: Path, text: str) -> tuple[UpstreamSettings, ...]:
    path = tmp_path / "pyproxy.toml"
    path.write_text(text, encoding="utf-8")
    return load_settings(str(path), None, environ={}).upstreams


def refused(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_an_upstream_with_every_setting(tmp_path: Path) -> None:
    (gpu,) = load(tmp_path, GPU)
    assert gpu.name == "gpu"
    assert gpu.url == "https://user:pw@gpu-wheels.example.test/simple/"
    assert gpu.projects == ("torch", "torch-vision", "nvidia-*")  # normalised
    assert gpu.files_from == ("files.example.test", "cdn.example.test:8443", "[::1]:9000")
    assert (gpu.timeout, gpu.page_ttl, gpu.index_ttl, gpu.offline) == (5.0, 60, 120, True)
    # the [policy] overrides, kept for the policy wrapper
    assert gpu.policy == (("min_age", "0d"), ("exempt", ("torch==2.1.0",)))


def test_defaults_are_those_of_upstream(tmp_path: Path) -> None:
    (gpu,) = load(tmp_path, '[[upstreams]]\nname = "gpu"\nurl = "http://127.0.0.1:1/simple/"\n'
                            'projects = ["torch"]\n')
    assert (gpu.files_from, gpu.timeout, gpu.page_ttl, gpu.index_ttl) == ((), 30.0, 600, 3600)
    assert (gpu.ca_bundle, gpu.offline, gpu.policy) == ("", False, ())


def test_no_upstreams_by_default(tmp_path: Path) -> None:
    assert load(tmp_path, "[upstream]\ntimeout = 5\n") == ()


def test_routes_keep_the_default_upstream_and_are_not_private_only(tmp_path: Path) -> None:
    path = tmp_path / "pyproxy.toml"
    path.write_text('[upstream]\nurl = ""\n' + GPU.replace("offline = true", ""))
    settings = load_settings(str(path), None, environ={})
    assert settings.upstream_url == "" and not settings.private_only


BASE = '[[upstreams]]\nname = "gpu"\nurl = "http://127.0.0.1:1/simple/"\nprojects = ["torch"]\n'


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (BASE + BASE, "upstreams.gpu: two upstreams have this name"),
        (BASE.replace('"gpu"', '"default"'), "reserved for [upstream]"),
        (BASE.replace('"gpu"', '"GPU wheels"'), "upstreams[0].name"),
        (BASE.replace('name = "gpu"\n', ""), "upstreams[0].name"),
        (BASE.replace('url = "http://127.0.0.1:1/simple/"\n', ""), "upstreams.gpu.url"),
        (BASE.replace("http://127.0.0.1:1/simple/", "ftp://host/simple/"), "upstreams.gpu.url"),
        (BASE.replace('projects = ["torch"]\n', ""), "upstreams.gpu.projects: missing"),
        (BASE.replace('["torch"]', "[]"), "upstreams.gpu.projects: empty"),
        (BASE.replace('["torch"]', '"torch"'), "upstreams.gpu.projects: expected a list"),
        (BASE.replace('"torch"', '"torch["'), "'torch[' is not a project name or a glob"),
        (BASE.replace('"torch"', '"nvidia/*"'), "'nvidia/*' is not a project name"),
        (BASE.replace('"torch"', '"-torch"'), "'-torch' is not a project name"),
        (BASE.replace('"torch"', '""'), "'' is not a project name"),
        (BASE.replace('"torch"', '"tørch"'), "'tørch' is not a project name"),
        (BASE + 'files_from = ["http://cdn/"]\n', "upstreams.gpu.files_from: 'http://cdn/'"),
        (BASE + 'files_from = ["cdn:99999"]\n', "upstreams.gpu.files_from: 'cdn:99999'"),
        (BASE + 'files_from = ["::1"]\n', "upstreams.gpu.files_from: '::1'"),
        (BASE + "timeout = 0\n", "upstreams.gpu.timeout: must be positive"),
        (BASE + "timeout = nan\n", "upstreams.gpu.timeout: nan is not a number of seconds"),
        (BASE + "timeout = inf\n", "upstreams.gpu.timeout: inf is not a number of seconds"),
        (BASE + "timeout = 1" + "0" * 400 + "\n", "upstreams.gpu.timeout: "),
        (BASE + "index_ttl = 99999999999999999999\n", "upstreams.gpu.index_ttl: "),
        (BASE.replace("127.0.0.1:1", "[::1"), "upstreams.gpu.url"),
        (BASE.replace("127.0.0.1:1", "127.0.0.1:99999"), "upstreams.gpu.url"),
        (BASE.replace("127.0.0.1:1", "u:p@[::1:1"), "upstreams.gpu.url"),
        (BASE + 'files_from = ["[::1"]\n', "upstreams.gpu.files_from: '[::1'"),
        (BASE + 'min_age = "99999999999999999999d"\n', "upstreams.gpu.min_age: "),
        (BASE + "page_ttl = -1\n", "upstreams.gpu.page_ttl"),
        (BASE + 'offline = "yes"\n', "upstreams.gpu.offline: expected true or false"),
        (BASE + 'ca_bundle = "/nonexistent/ca.pem"\n', "upstreams.gpu.ca_bundle"),
        (BASE + "min_age = 7\n", "upstreams.gpu.min_age: expected a string"),
        (BASE + 'deny = "evil"\n', "upstreams.gpu.deny: expected a list"),
        (BASE + 'min_age = "7x"\n', "upstreams.gpu.min_age: '7x' is not a duration"),
        (BASE + 'not_after = "yesterday"\n', "upstreams.gpu.not_after: "),
        (BASE + 'deny = ["urllib3<<1"]\n', "upstreams.gpu.deny: 'urllib3<<1'"),
        (BASE + 'missing_upload_time = "maybe"\n', "upstreams.gpu.missing_upload_time: "),
        (BASE + "merge = []\n", "upstreams.gpu.merge: unknown setting"),
        ("[upstreams]\nname = 'gpu'\n", "upstreams: expected [[upstreams]] tables"),
    ],
)
def test_bad_upstreams_are_refused_naming_the_setting(
    tmp_path: Path, text: str, named: str
) -> None:
    message = refused(tmp_path, text)
    assert named in message, message
    assert str(tmp_path / "pyproxy.toml") in message


def test_a_name_goes_to_one_upstream_only(tmp_path: Path) -> None:
    other = BASE.replace('"gpu"', '"cpu"').replace("127.0.0.1:1", "127.0.0.1:2")
    message = refused(tmp_path, BASE + other)
    assert "upstreams.cpu.projects: 'torch' is already routed to upstream 'gpu'" in message
    # also in another spelling, and when an earlier glob takes it
    message = refused(tmp_path, BASE.replace('"torch"', '"nvidia-*"')
                      + other.replace('"torch"', '"NVIDIA_cudnn"'))
    assert "'nvidia-cudnn' is already routed to upstream 'gpu'" in message


def test_a_later_glob_may_overlap_an_earlier_one_first_match_wins() -> None:
    first = {"name": "a", "url": "http://127.0.0.1:1/", "projects": ["nvidia-*"]}
    second = {"name": "b", "url": "http://127.0.0.1:2/", "projects": ["nvidia-cu*", "cuda"]}
    a, b = parse_upstreams([first, second])
    assert a.claims(NormalizedName("nvidia-cudnn")) and b.claims(NormalizedName("nvidia-cudnn"))


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("torch", "torch", True),
        ("torch", "torchvision", False),
        ("nvidia-*", "nvidia-cudnn-cu12", True),
        ("nvidia-*", "nvidia", False),
        ("torch?", "torch2", True),
        ("torch?", "torch", False),
        ("*-cu12", "nvidia-nccl-cu12", True),
        ("jax.lib", "jax-lib", True),  # patterns are normalised like names
    ],
)
def test_name_patterns(pattern: str, name: str, matches: bool) -> None:
    (route,) = parse_upstreams([{"name": "a", "url": "http://127.0.0.1:1/", "projects": [pattern]}])
    assert route.claims(NormalizedName(name)) is matches
    assert NamePatterns(route.projects).matches(NormalizedName(name)) is matches


@pytest.mark.parametrize(
    ("file_url", "allowed"),
    [
        ("https://gpu-wheels.example.test/files/torch.whl", True),  # the index's own host
        ("https://gpu-wheels.example.test:444/files/torch.whl", True),
        ("https://files.example.test/torch.whl", True),  # "host": any port
        ("https://files.example.test:8000/torch.whl", True),
        ("https://cdn.example.test:8443/torch.whl", True),  # "host:port": that port only
        ("https://cdn.example.test/torch.whl", False),
        ("http://[::1]:9000/torch.whl", True),
        ("http://[::1]:9001/torch.whl", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("http://127.0.0.1:6379/", False),
        ("https://files.example.test.evil.test/torch.whl", False),
    ],
)
def test_file_hosts(tmp_path: Path, file_url: str, allowed: bool) -> None:
    (gpu,) = load(tmp_path, GPU)
    assert gpu.allows_file_host(file_url) is allowed
