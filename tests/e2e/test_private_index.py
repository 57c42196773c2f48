"""End to end: real twine, pip and uv against a private-only `pyproxy serve` subprocess.

Project names carry a per-run suffix so nothing but pyproxy can satisfy them, and every client runs
isolated from this machine's pip configuration (tests/e2e/clients.py).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import threading
import time
import uuid
from pathlib import Path

from tests.dists import make_sdist, make_wheel, underscored
from tests.e2e.clients import (
    RawResponse,
    describe,
    file_entries,
    get,
    import_from_target,
    listed_filenames,
    output,
    partial_upload_file_bytes,
    pip_install,
    raw_upload,
    start_partial_upload,
    twine_upload,
    uv_pip_install,
    uv_publish,
)

RUN = uuid.uuid4().hex[:6]


def pname(stem: str) -> str:
    """A project name no other index can have."""
    return f"e2e-{stem}-{RUN}"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def file_gets(server, filename: str, agent: str) -> int | None:
    return server.requests("GET", re.escape(filename) + "$", 200, agent=agent)


def assert_from_pyproxy(proc, server, filename: str, agent: str, gets_before: int | None
                        ) -> None:
    """The client fetched `filename` from this server. Client side: pip -vv logs each urllib3
    request ('http://127.0.0.1:P "GET /files/.../F HTTP/1.1" 200 N'), uv -v logs 'GET request
    for: URL'. Server side (when it writes an access log): one more 200 GET of the file."""
    text = output(proc)
    pip_line = re.escape(server.url) + r' "GET /\S*' + re.escape(filename) + r'\S* HTTP/1\.1" 200'
    uv_line = r"GET request for: " + re.escape(server.url) + r"/\S*" + re.escape(filename)
    assert re.search(pip_line, text) or re.search(uv_line, text), (
        f"no download of {filename} from {server.url} in the client's log:{describe(proc)}"
    )
    deadline = time.monotonic() + 3  # the access line is written just after the response
    while True:
        after = file_gets(server, filename, agent)
        if gets_before is None or after is None or after > gets_before:
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    if gets_before is not None and after is not None:
        assert after > gets_before, (
            f"the server's access log shows no GET of {filename} by {agent}:{describe(proc)}\n"
            f"--- server stderr ---\n{server.stderr_text()[-5000:]}"
        )


def assert_already_exists(resp: RawResponse) -> None:
    assert resp.status == 400, f"expected 400 File already exists, got {resp}"
    assert resp.reason.startswith("File already exists"), f"reason phrase: {resp}"
    assert resp.body.lstrip().startswith("File already exists"), f"body: {resp}"


# ---------------------------------------------------------------------------------------------
# shared server


def test_upload_with_twine_then_install_with_pip_and_uv(pyproxy_server, tmp_path):
    server = pyproxy_server
    name = pname("hello")
    module = underscored(name)
    wheel = make_wheel(tmp_path / "dist", name, "1.0")
    sdist = make_sdist(tmp_path / "dist", name, "1.0")

    twine_upload(server.upload_url, [wheel, sdist], server.user, server.password)

    entries = file_entries(server.simple_url, name)
    assert sorted(entries) == sorted([wheel.name, sdist.name])
    for path in (wheel, sdist):
        entry = entries[path.name]
        assert entry["hashes"]["sha256"] == sha256(path), entry
        served = get(entry["url"].split("#")[0])
        assert served.status == 200, f"GET {entry['url']}: {served}"
        assert served.content == path.read_bytes(), f"{path.name}: served bytes differ"
    html = get(server.simple_url + f"{name}/", accept="text/html")
    assert html.status == 200 and wheel.name in html.body and sdist.name in html.body, str(html)

    target = tmp_path / "pip-target"
    before = file_gets(server, wheel.name, "pip/")
    proc = pip_install(server.simple_url, name, target=target, extra_args=["-vv"])
    assert_from_pyproxy(proc, server, wheel.name, "pip/", before)
    assert import_from_target(target, module) == "1.0"

    target = tmp_path / "uv-target"
    before = file_gets(server, wheel.name, "uv/")
    proc = uv_pip_install(server.simple_url, name, target=target, extra_args=["-v"])
    assert_from_pyproxy(proc, server, wheel.name, "uv/", before)
    assert import_from_target(target, module) == "1.0"


def test_dependency_is_pulled_through_pyproxy(pyproxy_server, tmp_path):
    server = pyproxy_server
    lib, app = pname("lib"), pname("app")
    lib_wheel = make_wheel(tmp_path / "dist", lib, "1.2")
    app_wheel = make_wheel(tmp_path / "dist", app, "1.0", requires_dist=[f"{lib}>=1"])
    twine_upload(server.upload_url, [lib_wheel, app_wheel], server.user, server.password)

    target = tmp_path / "pip-target"
    before = file_gets(server, lib_wheel.name, "pip/")
    proc = pip_install(server.simple_url, app, target=target, extra_args=["-vv"])
    assert_from_pyproxy(proc, server, lib_wheel.name, "pip/", before)
    assert import_from_target(target, underscored(app)) == "1.0"
    assert import_from_target(target, underscored(lib)) == "1.2"

    target = tmp_path / "uv-target"
    before = file_gets(server, lib_wheel.name, "uv/")
    proc = uv_pip_install(server.simple_url, app, target=target, extra_args=["-v"])
    assert_from_pyproxy(proc, server, lib_wheel.name, "uv/", before)
    assert import_from_target(target, underscored(lib)) == "1.2"


def test_reupload_identical_ok_different_bytes_refused(pyproxy_server, tmp_path):
    server = pyproxy_server
    name = pname("dup")
    wheel = make_wheel(tmp_path / "a", name, "1.0")
    sdist = make_sdist(tmp_path / "a", name, "1.0")
    twine_upload(server.upload_url, [wheel, sdist], server.user, server.password)

    # plain re-upload of the same bytes: a no-op success (twine >= 6.2 has no --skip-existing here)
    twine_upload(server.upload_url, [wheel, sdist], server.user, server.password)
    assert sorted(listed_filenames(server.simple_url, name)) == sorted([wheel.name, sdist.name])

    other_wheel = make_wheel(tmp_path / "b", name, "1.0", summary="different bytes")
    other_sdist = make_sdist(tmp_path / "b", name, "1.0", summary="different bytes")
    assert other_wheel.name == wheel.name and sha256(other_wheel) != sha256(wheel)
    assert other_sdist.name == sdist.name and sha256(other_sdist) != sha256(sdist)

    proc = twine_upload(server.upload_url, [other_wheel], server.user, server.password,
                        check=False)
    assert proc.returncode != 0, f"twine accepted different bytes:{describe(proc)}"
    assert "File already exists" in output(proc), describe(proc)

    for path in (other_wheel, other_sdist):
        resp = raw_upload(server.upload_url, path, server.user, server.password)
        assert_already_exists(resp)

    entries = file_entries(server.simple_url, name)
    assert sorted(entries) == sorted([wheel.name, sdist.name])
    assert entries[wheel.name]["hashes"]["sha256"] == sha256(wheel)
    assert entries[sdist.name]["hashes"]["sha256"] == sha256(sdist)


def test_upload_without_credentials_is_challenged(pyproxy_server, tmp_path):
    server = pyproxy_server
    wheel = make_wheel(tmp_path, pname("anon"), "1.0")
    resp = raw_upload(server.upload_url, wheel, None, None)
    assert resp.status == 401, str(resp)
    assert resp.headers.get("www-authenticate", "").lower().startswith("basic"), resp.headers
    resp = raw_upload(server.upload_url, wheel, server.user, "wrong-password")
    assert resp.status in (401, 403), str(resp)
    assert listed_filenames(server.simple_url, pname("anon")) == []


def test_token_upload_and_revoke(pyproxy_server, tmp_path):
    server = pyproxy_server
    name = pname("tok")
    token = server.create_token(server.user)
    first = make_wheel(tmp_path, name, "1.0")
    twine_upload(server.upload_url, [first], "__token__", token)
    assert listed_filenames(server.simple_url, name) == [first.name]

    revoke = server.cli("token", "revoke", token, check=False)
    assert revoke.returncode == 0, f"token revoke failed:{describe(revoke)}"

    second = make_wheel(tmp_path, name, "1.1")
    proc = twine_upload(server.upload_url, [second], "__token__", token, check=False)
    assert proc.returncode != 0, f"revoked token still accepted:{describe(proc)}"
    resp = raw_upload(server.upload_url, second, "__token__", token)
    assert resp.status in (401, 403), str(resp)
    assert listed_filenames(server.simple_url, name) == [first.name]


def test_upload_needs_a_grant_on_someone_elses_project(pyproxy_server, tmp_path):
    server = pyproxy_server
    name = pname("owned")
    bob, bob_pw = f"bob{RUN}", "bob-secret-pw"
    server.add_user(bob, bob_pw)

    first = make_wheel(tmp_path, name, "1.0")
    twine_upload(server.upload_url, [first], server.user, server.password)

    wheel = make_wheel(tmp_path, name, "1.1")
    resp = raw_upload(server.upload_url, wheel, bob, bob_pw)
    assert resp.status == 403, str(resp)
    assert name in f"{resp.reason} {resp.body}", f"403 does not name the project: {resp}"
    proc = twine_upload(server.upload_url, [wheel], bob, bob_pw, check=False)
    assert proc.returncode != 0 and "HTTPError: 403" in output(proc), describe(proc)

    server.cli("grant", name, bob)
    twine_upload(server.upload_url, [wheel], bob, bob_pw)
    assert sorted(listed_filenames(server.simple_url, name)) == sorted([first.name, wheel.name])


def test_yanked_version_is_skipped_unless_pinned(pyproxy_server, tmp_path):
    server = pyproxy_server
    name = pname("yank")
    module = underscored(name)
    old = make_wheel(tmp_path, name, "1.0")
    new = make_wheel(tmp_path, name, "2.0")
    twine_upload(server.upload_url, [old, new], server.user, server.password)

    server.cli("yank", name, "2.0", "--reason", "bad")

    entries = file_entries(server.simple_url, name)
    assert entries[new.name].get("yanked") == "bad", entries[new.name]
    assert entries[old.name].get("yanked", False) is False, entries[old.name]

    target = tmp_path / "unpinned"
    proc = pip_install(server.simple_url, name, target=target)
    assert import_from_target(target, module) == "1.0", describe(proc)

    target = tmp_path / "pinned"
    proc = pip_install(server.simple_url, f"{name}==2.0", target=target)
    assert import_from_target(target, module) == "2.0", describe(proc)

    target = tmp_path / "uv-unpinned"
    proc = uv_pip_install(server.simple_url, name, target=target)
    assert import_from_target(target, module) == "1.0", describe(proc)


def test_uv_publish(pyproxy_server, tmp_path):
    server = pyproxy_server
    name = pname("uvpub")
    wheel = make_wheel(tmp_path / "a", name, "1.0")
    uv_publish(server.upload_url, [wheel], server.user, server.password)
    entries = file_entries(server.simple_url, name)
    assert list(entries) == [wheel.name]
    assert entries[wheel.name]["hashes"]["sha256"] == sha256(wheel)

    # identical re-publish without a check URL: the server's idempotency makes it succeed
    uv_publish(server.upload_url, [wheel], server.user, server.password)
    assert listed_filenames(server.simple_url, name) == [wheel.name]

    # different bytes under the published name, no check URL: the server refuses
    other = make_wheel(tmp_path / "b", name, "1.0", summary="different bytes")
    proc = uv_publish(server.upload_url, [other], server.user, server.password, check=False)
    assert proc.returncode != 0 and "File already exists" in output(proc), describe(proc)
    assert file_entries(server.simple_url, name)[wheel.name]["hashes"]["sha256"] == sha256(wheel)


def test_uv_publish_check_url_skips_what_the_index_has(pyproxy_server, tmp_path):
    server = pyproxy_server
    name = pname("uvcheck")
    wheel = make_wheel(tmp_path / "a", name, "1.0")
    twine_upload(server.upload_url, [wheel], server.user, server.password)

    # uv reads the simple page, finds the identical file and does not upload it again
    posts = server.requests("POST")
    proc = uv_publish(server.upload_url, [wheel], server.user, server.password,
                      check_url=server.simple_url)
    assert f"{wheel.name} already exists, skipping" in output(proc), describe(proc)
    assert listed_filenames(server.simple_url, name) == [wheel.name]
    assert server.requests("POST") == posts, "uv publish --check-url still POSTed the file"

    # same filename, different bytes: uv sees the mismatch on the index and refuses
    other = make_wheel(tmp_path / "b", name, "1.0", summary="different bytes")
    proc = uv_publish(server.upload_url, [other], server.user, server.password,
                      check_url=server.simple_url, check=False)
    assert proc.returncode != 0 and "do not match" in output(proc), describe(proc)
    assert file_entries(server.simple_url, name)[wheel.name]["hashes"]["sha256"] == sha256(wheel)


# ---------------------------------------------------------------------------------------------
# dedicated servers


def _post_all_at_once(jobs: list[tuple[str, Path, str, str]]) -> list[RawResponse | Exception]:
    """Run raw uploads (url, path, user, password) in threads released by one barrier."""
    barrier = threading.Barrier(len(jobs))
    results: list[RawResponse | Exception] = [RuntimeError("not run")] * len(jobs)

    def worker(i: int) -> None:
        url, path, user, password = jobs[i]
        try:
            barrier.wait(10)
            results[i] = raw_upload(url, path, user, password, timeout=30)
        except Exception as exc:  # report, don't hide
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_two_servers_one_data_dir_concurrent_uploads(pyproxy_factory, tmp_path):
    first = pyproxy_factory.start()
    second = pyproxy_factory.start(first.data_dir, user=first.user, password=first.password)
    user, password = first.user, first.password
    name = pname("race")

    problems: list[str] = []
    wheels = []
    for i in range(8):
        wheel = make_wheel(tmp_path / f"r{i}", name, f"1.0.{i}")
        wheels.append(wheel)
        jobs = [(s.upload_url, wheel, user, password) for s in (first, second, first, second)]
        for (url, _, _, _), result in zip(jobs, _post_all_at_once(jobs), strict=True):
            if isinstance(result, Exception) or result.status != 200:
                problems.append(f"round {i} {url}: {result!r}")
    assert not problems, "identical concurrent uploads must all answer 200:\n" + "\n".join(problems)

    # different bytes, same filename, at the same moment: one wins, the other is refused
    mine = make_wheel(tmp_path / "x", name, "2.0", summary="first server")
    theirs = make_wheel(tmp_path / "y", name, "2.0", summary="second server")
    results = _post_all_at_once([(first.upload_url, mine, user, password),
                                 (second.upload_url, theirs, user, password)])
    assert all(isinstance(r, RawResponse) for r in results), results
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 400], f"expected one 200 and one 400: {results}"
    loser = next(r for r in results if r.status == 400)
    assert_already_exists(loser)
    winner = mine if results[0].status == 200 else theirs

    expected = sorted([w.name for w in wheels] + [mine.name])
    for server in (first, second):
        listed = listed_filenames(server.simple_url, name)
        assert sorted(listed) == expected, f"{server}: {listed}"
        entries = file_entries(server.simple_url, name)
        assert entries[mine.name]["hashes"]["sha256"] == sha256(winner)
        for wheel in wheels:
            assert entries[wheel.name]["hashes"]["sha256"] == sha256(wheel)

    for server in (first, second):
        log = server.stderr_text()
        assert "database is locked" not in log, f"{server}:\n{log}"
    for server in (first, second):
        log = server.stderr_text()
        assert "Traceback" not in log, f"{server} logged a traceback:\n{log}"


# database side files, and each server's own Prometheus value files (fresh at every start)
# not the store: database side files, metrics, and the project list rendered when the harness
# asks for /simple/ (a disposable cache)
_DB_NOISE = re.compile(r"(-wal|-shm|-journal|\.log|\.lock|\.pid)$|^metrics/|^cache/lists/")
_TEMP = re.compile(r"(^|/)(tmp|temp|incoming)/|\.(part|tmp|partial)$")


def _new_temp_files(root: Path, before: dict[str, int]) -> dict[str, int]:
    """The temp-area files (path -> size) that were not there `before`."""
    return {path: size for path, size in _tree(root).items()
            if path not in before and _TEMP.search(path)}


def _tree(root: Path) -> dict[str, int]:
    """Relative path -> size of every file under root (hidden ones included)."""
    return {
        str(p.relative_to(root)): p.stat().st_size
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _report(label: str, before: dict[str, int], after: dict[str, int]) -> str:
    added = {k: v for k, v in after.items() if k not in before}
    removed = sorted(set(before) - set(after))
    changed = {k: (before[k], v) for k, v in after.items() if k in before and before[k] != v}
    return f"{label}: added={added} removed={removed} size-changed={changed}"


def test_sigkill_during_upload_leaves_no_trace(pyproxy_factory, tmp_path):
    server = pyproxy_factory.start()
    user, password = server.user, server.password
    data_dir = server.data_dir
    name = pname("crash")
    # a known-good upload first, so the store is initialised before the snapshot
    twine_upload(server.upload_url, [make_wheel(tmp_path / "warm", pname("warm"), "1.0")],
                 user, password)

    blob = base64.b64encode(os.urandom(2_400_000)).decode()
    wheel = make_wheel(tmp_path / "big", name, "1.0", modules={
        f"{underscored(name)}/__init__.py": 'VERSION = "1.0"\n',
        f"{underscored(name)}/blob.py": f"DATA = '{blob}'\n",
    })
    assert wheel.stat().st_size > 1_500_000

    before = _tree(data_dir)
    sock = start_partial_upload(server.upload_url, wheel, user, password, fraction=0.5)
    sent = partial_upload_file_bytes(server.upload_url, wheel, user, password, fraction=0.5)
    try:
        # the server has read what was sent: its temp file holds all of it but what its reader
        # still holds back (the multipart reader keeps a 256 KiB chunk to look for the boundary)
        deadline = time.monotonic() + 10.0
        while (written := sum(_new_temp_files(data_dir, before).values())) < sent - 512 * 1024:
            assert time.monotonic() < deadline, (
                f"the upload's temp file holds {written} of the {sent} bytes sent")
            time.sleep(0.05)
        during = _tree(data_dir)
        leftovers = server.kill()
    finally:
        sock.close()
    assert not leftovers, f"processes left after SIGKILL: {leftovers}"
    after_kill = _tree(data_dir)

    restarted = pyproxy_factory.start(data_dir, user=user, password=password)
    # the start reclaims what the dead upload left (before it listens; give a slower one time)
    deadline = time.monotonic() + 5.0
    while _new_temp_files(data_dir, before) and time.monotonic() < deadline:
        time.sleep(0.05)
    after_restart = _tree(data_dir)
    report = "\n".join([
        f"data dir before: {before}",
        _report("during upload", before, during),
        _report("after SIGKILL", before, after_kill),
        _report("after restart", before, after_restart),
    ])
    print(report)

    assert wheel.name not in listed_filenames(restarted.simple_url, name), report
    new_files = [path for path in after_restart if path not in before
                 and not _DB_NOISE.search(path)]
    in_temp_area = [path for path in new_files if _TEMP.search(path)]
    in_store = [path for path in new_files if path not in in_temp_area]
    assert not in_store, f"the killed upload left files in the store: {in_store}\n{report}"
    # the restart reclaims the dead upload's temp file (nobody holds its lock any more)
    assert not in_temp_area, f"temp files left after restart: {in_temp_area}\n{report}"

    twine_upload(restarted.upload_url, [wheel], user, password)
    entries = file_entries(restarted.simple_url, name)
    assert list(entries) == [wheel.name]
    served = get(entries[wheel.name]["url"].split("#")[0])
    assert served.status == 200 and served.content == wheel.read_bytes(), str(served)[:300]
