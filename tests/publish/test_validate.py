"""pyproxy.upload: the legacy upload checks, with the exact messages twine shows the user."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from pyproxy.model import NormalizedName, version_of
from pyproxy.publish.rejections import (
    MAX_FORM_BYTES,
    UploadRejected,
    file_part_rejected,
    missing_file,
)
from pyproxy.publish.validate import UploadForm, validate_form
from pyproxy.publish.validate_file import validate_file
from tests.dists import core_metadata, form_fields_for, make_sdist, make_wheel

SEE = "See https://packaging.python.org/specifications/core-metadata for more information."
# more digits than int() converts (sys.get_int_max_str_digits): packaging raises a bare ValueError
HUGE = "9" * 5000
HUGE_SHOWN = "9" * 30 + "..." + "9" * 30
Fields = dict[str, list[str]]


def computed(path: Path) -> dict[str, str]:
    data = path.read_bytes()
    return {
        "sha256": hashlib.sha256(data).hexdigest(),
        "blake2_256": hashlib.blake2b(data, digest_size=32).hexdigest(),
        "md5": hashlib.md5(data).hexdigest(),
    }


@pytest.fixture(scope="module")
def wheel_fields(tmp_path_factory: pytest.TempPathFactory) -> Fields:
    directory = tmp_path_factory.mktemp("wheel")
    return form_fields_for(make_wheel(directory, "foo", "1.0"))


def rejected(fields: Fields) -> UploadRejected:
    with pytest.raises(UploadRejected) as caught:
        validate_form(fields)
    return caught.value


def changed(fields: Fields, **changes: list[str] | None) -> Fields:
    """A copy with fields replaced (a list) or removed (None); `__` in a key stands for ':'."""
    result = {key: list(values) for key, values in fields.items()}
    for key, values in changes.items():
        key = key.replace("__", ":")
        if values is None:
            result.pop(key, None)
        else:
            result[key] = values
    return result


# ----------------------------------------------------------------------------------------- form


def test_twine_form_for_a_wheel_is_accepted(wheel_fields: Fields) -> None:
    form = validate_form(wheel_fields)
    assert form == UploadForm(
        name="foo",
        project=NormalizedName("foo"),
        version="1.0",
        filetype="bdist_wheel",
        pyversion="py3",
        digests={
            "sha256": wheel_fields["sha256_digest"][0],
            "blake2_256": wheel_fields["blake2_256_digest"][0],
        },
        requires_python=None,
        summary="A test package",
        fields={
            "metadata_version": ("2.1",),
            "name": ("foo",),
            "version": ("1.0",),
            "summary": ("A test package",),
        },
    )


def test_repeated_fields_are_kept_as_lists(tmp_path: Path) -> None:  # A5
    extra = (
        "Classifier: Programming Language :: Python\nClassifier: Private :: Do Not Upload\n"
        "Project-URL: Home, https://example.com\nProject-URL: Source, https://example.com/src\n"
        "Platform: linux\nPlatform: win32\nProvides-Extra: cli\nKeywords: a,b\n"
    )
    wheel = make_wheel(
        tmp_path,
        "My.Pkg",
        "1.0",
        requires_dist=["attrs>=22", "click; extra == 'cli'"],
        requires_python=">=3.9",
        extra_metadata=extra,
    )
    form = validate_form(form_fields_for(wheel))
    assert form.name == "My.Pkg" and form.project == "my-pkg"
    assert form.requires_python == ">=3.9"
    assert form.fields["classifiers"] == (
        "Programming Language :: Python",
        "Private :: Do Not Upload",
    )
    assert form.fields["project_urls"] == (
        "Home, https://example.com",
        "Source, https://example.com/src",
    )
    assert form.fields["platform"] == ("linux", "win32")
    assert form.fields["requires_dist"] == ("attrs>=22", "click; extra == 'cli'")
    assert form.fields["keywords"] == ("a, b",)
    assert "sha256_digest" not in form.fields and ":action" not in form.fields


def test_sdist_form_defaults_pyversion_to_source(tmp_path: Path) -> None:  # A15
    fields = changed(form_fields_for(make_sdist(tmp_path, "foo", "1.0")), pyversion=None)
    form = validate_form(fields)
    assert (form.filetype, form.pyversion) == ("sdist", "source")


@pytest.mark.parametrize(
    ("changes", "status", "message"),
    [
        # A2
        ({"protocol_version": ["2"]}, 400, "Unknown protocol version."),
        ({"protocol_version": [""]}, 400, "Unknown protocol version."),
        # A4
        ({"__action": None}, 400, "Missing ':action' field."),
        ({"__action": [""]}, 400, "Missing ':action' field."),
        ({"__action": ["remove_pkg"]}, 400, "Unsupported ':action' field: 'remove_pkg'."),
        (
            {"__action": ["x\r\nSet-Cookie: a=b"]},
            400,
            "Unsupported ':action' field: 'x\\r\\nSet-Cookie: a=b'.",
        ),
        (
            {"__action": ["submit"]},
            410,
            "Project pre-registration is no longer required or supported, upload your files instead.",
        ),
        (
            {"__action": ["submit_pkg_info"]},
            410,
            "Project pre-registration is no longer required or supported, upload your files instead.",
        ),
        (
            {"__action": ["doc_upload"]},
            410,
            "Uploading documentation is no longer supported, we recommend using https://readthedocs.org/.",
        ),
        # A12, A13 (and A7: "UNKNOWN" is no value)
        (
            {"name": None},
            400,
            f"'' is an invalid value for Name. Error: This field is required. {SEE}",
        ),
        (
            {"name": [""]},
            400,
            f"'' is an invalid value for Name. Error: This field is required. {SEE}",
        ),
        (
            {"name": ["UNKNOWN"]},
            400,
            f"'' is an invalid value for Name. Error: This field is required. {SEE}",
        ),
        (
            {"name": ["foo-"]},
            400,
            "'foo-' is an invalid value for Name. Error: Start and end with a letter or numeral "
            f"containing only ASCII numeric and '.', '_' and '-'. {SEE}",
        ),
        (
            {"name": ["föo"]},
            400,
            "'föo' is an invalid value for Name. Error: Start and end with a letter or numeral "
            f"containing only ASCII numeric and '.', '_' and '-'. {SEE}",
        ),
        (
            {"name": ["foo\n"]},
            400,
            "'foo\\n' is an invalid value for Name. Error: Start and end with a letter or numeral "
            f"containing only ASCII numeric and '.', '_' and '-'. {SEE}",
        ),
        (
            {"name": ["a" * 40 + "!" + "b" * 40]},
            400,
            f"'{'a' * 30}...{'b' * 30}' is an invalid value for Name. Error: Start and end with a "
            f"letter or numeral containing only ASCII numeric and '.', '_' and '-'. {SEE}",
        ),
        # A14
        ({"filetype": None}, 400, "Invalid value for filetype. Error: This field is required."),
        (
            {"filetype": ["bdist_egg"]},
            400,
            "Invalid value for filetype. Error: Use a known file type.",
        ),
        # A15
        (
            {"pyversion": None},
            400,
            "Invalid value for pyversion. Error: Python version is required for binary distribution uploads.",
        ),
        (
            {"filetype": ["sdist"], "pyversion": ["py3"]},
            400,
            "Invalid value for pyversion. Error: Use 'source' as Python version for an sdist.",
        ),
        # A16
        (
            {"sha256_digest": None, "blake2_256_digest": None},
            400,
            "Error: Include at least one message digest.",
        ),
        (
            {"sha256_digest": [" "], "blake2_256_digest": None},
            400,
            "Error: Include at least one message digest.",
        ),
        (
            {"sha256_digest": ["abc"]},
            400,
            "Invalid value for sha256_digest. Error: Use a valid, hex-encoded, SHA256 message digest.",
        ),
        (
            {"sha256_digest": ["a" * 63 + "g"]},
            400,
            "Invalid value for sha256_digest. Error: Use a valid, hex-encoded, SHA256 message digest.",
        ),
        (
            {"blake2_256_digest": ["z" * 64]},
            400,
            "Invalid value for blake2_256_digest. Error: Use a valid, hex-encoded, BLAKE2 message digest.",
        ),
        # A17
        ({"metadata_version": None}, 400, f"None is not a valid metadata version. {SEE}"),
        ({"metadata_version": ["-1"]}, 400, f"'-1' is not a valid metadata version. {SEE}"),
        # A18
        ({"version": None}, 400, f"'version' is a required field. {SEE}"),
        ({"version": [""]}, 400, f"'version' is a required field. {SEE}"),
        ({"version": ["dog"]}, 400, f"'dog' is invalid for 'version'. {SEE}"),
        ({"version": ["1.0.dev.a1"]}, 400, f"'1.0.dev.a1' is invalid for 'version'. {SEE}"),
        *(
            (
                {"version": [version]},
                400,
                f"'{shown}' is invalid for 'version': a number in it has more than 4300 digits. {SEE}",
            )
            for version, shown in (
                (HUGE, HUGE_SHOWN),
                (f"1.{HUGE}", "1." + "9" * 28 + "..." + "9" * 30),
                (f"{HUGE}!1.0", "9" * 30 + "..." + "9" * 26 + "!1.0"),
                (f"1.0.post{HUGE}", "1.0.post" + "9" * 22 + "..." + "9" * 30),
                (f"1.0+{HUGE}", "1.0+" + "9" * 26 + "..." + "9" * 30),
            )
        ),
        (
            {"requires_python": [f">={HUGE}"]},
            400,
            f"'>={'9' * 28}...{'9' * 30}' is invalid for 'requires-python': a number in it has"
            f" more than 4300 digits. {SEE}",
        ),
        (
            {"requires_dist": ["bar", f"baz>={HUGE}"]},
            400,
            f"'baz>={'9' * 25}...{'9' * 30}' is invalid for 'requires-dist': a number in it has"
            f" more than 4300 digits. {SEE}",
        ),
        # in the metadata's order: metadata-version first, and the version before the rest
        (
            {"version": [HUGE], "metadata_version": ["9"]},
            400,
            f"'9' is not a valid metadata version. {SEE}",
        ),
        (
            {"version": [HUGE], "summary": ["a\nb"]},
            400,
            f"'{HUGE_SHOWN}' is invalid for 'version': a number in it has more than 4300 digits. {SEE}",
        ),
        # A20
        ({"summary": ["s" * 513]}, 400, f"'summary' field must be 512 characters or less. {SEE}"),
        ({"summary": ["one\ntwo"]}, 400, f"'summary' must be a single line. {SEE}"),
        # A21, the part this private index keeps
        (
            {"metadata_version": ["2.4"], "license": ["MIT"], "license_expression": ["MIT"]},
            400,
            "License is deprecated when License-Expression is present. Only License-Expression "
            f"should be present. {SEE}",
        ),
        # other metadata
        ({"requires_dist": ["foo bar"]}, 400, f"'foo bar' is invalid for 'requires-dist'. {SEE}"),
        ({"requires_python": ["3.8"]}, 400, f"'3.8' is invalid for 'requires-python'. {SEE}"),
        ({"name": ["foo", "bar"]}, 400, f"'name' has invalid data. {SEE}"),
        ({"keywords": ["a", "b"]}, 400, f"'keywords' has invalid data. {SEE}"),
        (
            {"project_urls": ["Home, https://a.example", "Home, https://b.example"]},
            400,
            f"'project_urls' has invalid data. {SEE}",
        ),
        (
            {"project_urls": [f"{'L' * 33}, https://example.com"]},
            400,
            f"'{'L' * 33}' must be 32 characters or less. {SEE}",
        ),
        (
            {"provides_dist": ["foo bar"]},
            400,
            f"'foo bar' is invalid: Expected semicolon (after name with no version specifier) or end. {SEE}",
        ),
        (
            {"metadata_version": ["2.2"], "dynamic": ["Name"]},
            400,
            f"'name' is not allowed as a dynamic field. {SEE}",
        ),
        (
            {"license_expression": ["MIT"]},
            400,
            f"license-expression introduced in metadata version 2.4, not 2.1. {SEE}",
        ),
        # md5 is checked like the others (the public index does not, and fails on non-ASCII)
        *(
            (
                {"md5_digest": [value]},
                400,
                "Invalid value for md5_digest. Error: Use a valid, hex-encoded, MD5 message digest.",
            )
            for value in ("\u00e9" * 32, "not even hex", "0" * 31, "0" * 64, "\uff10" * 32)
        ),
        # A23: metadata-version, then name, then version, then alphabetical
        (
            {"name": ["foo-"], "filetype": None},
            400,
            "'foo-' is an invalid value for Name. Error: Start and end with a letter or numeral "
            f"containing only ASCII numeric and '.', '_' and '-'. {SEE}",
        ),
        (
            {"filetype": None, "blake2_256_digest": ["nope"]},
            400,
            "Invalid value for blake2_256_digest. Error: Use a valid, hex-encoded, BLAKE2 message digest.",
        ),
        (
            {"filetype": ["egg"], "sha256_digest": ["nope"]},
            400,
            "Invalid value for filetype. Error: Use a known file type.",
        ),
        (
            {"version": ["dog"], "metadata_version": ["9"]},
            400,
            f"'9' is not a valid metadata version. {SEE}",
        ),
        ({"version": ["dog"], "summary": ["a\nb"]}, 400, f"'dog' is invalid for 'version'. {SEE}"),
        (
            {"requires_python": ["3.8"], "requires_dist": ["x y"]},
            400,
            f"'x y' is invalid for 'requires-dist'. {SEE}",
        ),
        # the form is checked before the metadata
        (
            {"version": ["dog"], "filetype": None},
            400,
            "Invalid value for filetype. Error: This field is required.",
        ),
        # the action before everything
        (
            {"__action": ["doc_upload"], "protocol_version": ["2"], "name": None},
            410,
            "Uploading documentation is no longer supported, we recommend using https://readthedocs.org/.",
        ),
        # the protocol version before the form
        ({"protocol_version": ["2"], "name": None}, 400, "Unknown protocol version."),
    ],
)
def test_form_rejections(
    wheel_fields: Fields, changes: dict[str, list[str] | None], status: int, message: str
) -> None:
    error = rejected(changed(wheel_fields, **changes))
    assert (error.status, error.message) == (status, message)
    assert "\r" not in error.message and "\n" not in error.message


@pytest.mark.parametrize(
    "changes",
    [
        {"protocol_version": None},  # absent means "1"
        {"version": ["1.0+local"]},  # policy: local versions allowed
        {
            "requires_dist": ["bar @ https://example.com/bar-1.0.tar.gz"]
        },  # policy: direct URLs allowed
        {"classifiers": ["Not :: A :: Real :: Classifier"]},  # policy: classifiers unchecked
        {"summary": ["s" * 512]},
        {"summary": ["UNKNOWN"], "home_page": ["UNKNOWN"], "license": [" UNKNOWN "]},  # A7
        {
            "md5_digest": ["d41d8cd98f00b204e9800998ecf8427e"],
            "sha256_digest": None,
            "blake2_256_digest": None,
        },
        {"sha256_digest": ["A" * 64]},
        {"comment": ["built by CI"], "attestations": ["[]"], "unknown_field": ["x"]},  # ignored
        {"metadata_version": ["2.4"], "license_expression": ["MIT"], "license_file": ["LICENSE"]},
        {"name": ["Foo.Bar_baz-9"]},
    ],
)
def test_form_acceptances(wheel_fields: Fields, changes: dict[str, list[str] | None]) -> None:
    validate_form(changed(wheel_fields, **changes))


def test_unknown_values_are_dropped(wheel_fields: Fields) -> None:  # A7
    form = validate_form(changed(wheel_fields, summary=["UNKNOWN"], home_page=["UNKNOWN"]))
    assert form.summary is None
    assert "summary" not in form.fields and "home_page" not in form.fields


def test_supplied_digests_are_lowercased(wheel_fields: Fields) -> None:
    form = validate_form(changed(wheel_fields, sha256_digest=["AB" * 32], md5_digest=["CD" * 16]))
    assert form.digests == {
        "sha256": "ab" * 32,
        "blake2_256": wheel_fields["blake2_256_digest"][0],
        "md5": "cd" * 16,
    }


def test_a_lone_string_is_one_value(wheel_fields: Fields) -> None:
    fields: dict[str, object] = {key: values[0] for key, values in wheel_fields.items()}
    assert validate_form(fields).name == "foo"  # type: ignore[arg-type]


def test_a_multidict_keeps_every_value(wheel_fields: Fields) -> None:
    from multidict import MultiDict

    pairs = [(key, value) for key, values in wheel_fields.items() for value in values]
    pairs += [("classifiers", "A :: B"), ("classifiers", "C :: D"), ("summary", "UNKNOWN")]
    form = validate_form(MultiDict(pairs))
    assert form.fields["classifiers"] == ("A :: B", "C :: D")
    assert form.fields["summary"] == ("A test package",)


def test_helpers_for_the_handler() -> None:  # A6, A22
    assert (file_part_rejected("summary").status, file_part_rejected("summary").message) == (
        400,
        "summary: Should not be a tuple.",
    )
    assert missing_file().message == "Upload payload does not have a file."


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("bad\r\nthing", "bad\\x0d\\x0athing"),
        ("tab\there", "tab\\x09here"),
        ("x" * 2000, "x" * 997 + "..."),
    ],
)
def test_messages_are_single_line_and_bounded(given: str, message: str) -> None:  # A43
    assert UploadRejected(given).message == message


def test_reason_phrase_is_latin_1() -> None:
    error = UploadRejected("'ünï€' is bad")
    assert error.message == "'ünï€' is bad"
    assert error.reason == "'ünï?' is bad"


# ----------------------------------------------------------------------------------------- file


def validated_form_for(path: Path, **changes: list[str] | None) -> UploadForm:
    return validate_form(changed(form_fields_for(path), **changes))


def form_for(model: Path, upload: Path, **changes: list[str] | None) -> UploadForm:
    """The form twine sends for `model`, with the digests of the file actually uploaded."""
    digests = computed(upload)
    return validated_form_for(
        model,
        sha256_digest=[digests["sha256"]],
        blake2_256_digest=[digests["blake2_256"]],
        **changes,
    )


def junk(directory: Path) -> Path:
    directory.mkdir()
    path = directory / "junk"
    path.write_bytes(b"junk" * 100)
    return path


def file_rejected(
    form: UploadForm,
    path: Path,
    filename: str | None = None,
    content_type: str | None = "application/octet-stream",
    digests: dict[str, str] | None = None,
) -> UploadRejected:
    with pytest.raises(UploadRejected) as caught:
        validate_file(form, filename or path.name, content_type, path, digests or computed(path))
    assert "\r" not in caught.value.message and "\n" not in caught.value.message
    return caught.value


def test_valid_wheel(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "foo", "1.0", requires_python=">=3.9, <4", summary="Foo!")
    result = validate_file(
        validated_form_for(wheel), wheel.name, "application/octet-stream", wheel, computed(wheel)
    )
    assert result.filename == "foo-1.0-py3-none-any.whl"
    assert result.filetype == "bdist_wheel"
    assert result.version == "1.0"
    assert result.core_metadata == core_metadata(
        "foo", "1.0", requires_python=">=3.9, <4", summary="Foo!"
    )
    assert result.requires_python == ">=3.9, <4"  # as written, not re-ordered
    assert result.summary == "Foo!"


@pytest.mark.parametrize(
    ("filename", "dist_info"),
    [
        ("Foo_Bar-1.0-py3-none-any.whl", "Foo_Bar-1.0"),  # setuptools before 75.8
        ("foo_bar-1.0-py3-none-any.whl", "Foo_Bar-1.0"),
        ("Foo_Bar-1.0-py3-none-any.whl", "foo_bar-1.0"),
    ],
)
def test_wheel_names_not_yet_normalised_are_accepted(
    tmp_path: Path, filename: str, dist_info: str
) -> None:
    wheel = make_wheel(tmp_path, "Foo.Bar", "1.0", filename=filename, dist_info=dist_info)
    form = validated_form_for(wheel, name=["Foo.Bar"])
    result = validate_file(form, wheel.name, "application/octet-stream", wheel, computed(wheel))
    assert result.filename == filename
    assert result.core_metadata.startswith(b"Metadata-Version")


def test_valid_sdist(tmp_path: Path) -> None:
    sdist = make_sdist(tmp_path, "My.Pkg", "01.0", requires_python=">=3.10")
    assert sdist.name == "my_pkg-01.0.tar.gz"
    renamed = sdist.rename(tmp_path / "my_pkg-1.0.tar.gz")
    result = validate_file(
        validated_form_for(renamed), renamed.name, "application/gzip", renamed, computed(renamed)
    )
    assert (result.filetype, result.version, result.requires_python) == ("sdist", "1.0", ">=3.10")
    assert result.core_metadata.startswith(b"Metadata-Version: 2.1\nName: My.Pkg\nVersion: 01.0\n")


def test_local_version_wheel_is_accepted(tmp_path: Path) -> None:  # A19, policy
    wheel = make_wheel(tmp_path, "foo", "1.0+build.7")
    result = validate_file(
        validated_form_for(wheel), wheel.name, "application/octet-stream", wheel, computed(wheel)
    )
    assert result.version == "1.0+build.7"


def test_any_platform_tag_is_accepted(tmp_path: Path) -> None:  # A30, policy
    wheel = make_wheel(
        tmp_path, "foo", "1.0", python_tag="cp312", abi_tag="cp312", platform_tag="linux_x86_64"
    )
    form = validated_form_for(wheel)
    assert form.pyversion == "cp312"
    validate_file(form, wheel.name, "application/octet-stream", wheel, computed(wheel))


def test_version_spelled_differently_in_filename_is_accepted(tmp_path: Path) -> None:
    wheel = make_wheel(
        tmp_path, "foo", "1.0.0", filename="foo-1.0-py3-none-any.whl", dist_info="foo-1.0"
    )
    form = validated_form_for(wheel)
    assert (
        validate_file(form, wheel.name, "application/zip", wheel, computed(wheel)).version
        == "1.0.0"
    )


@pytest.fixture()
def wheel(tmp_path: Path) -> Path:
    return make_wheel(tmp_path, "foo", "1.0")


PEP_527 = "https://www.python.org/dev/peps/pep-0527"


@pytest.mark.parametrize(
    ("filename", "message"),
    [
        # A24
        (
            "foo\x00-1.0-py3-none-any.whl",
            "Cannot upload a file with non-printable characters (ordinals 0-31)"
            " or the DEL character (ordinal 127) in the name.",
        ),
        (
            "foo-1.0-py3-none-any.whl\n",
            "Cannot upload a file with non-printable characters (ordinals 0-31)"
            " or the DEL character (ordinal 127) in the name.",
        ),
        (
            "foo\x7f-1.0-py3-none-any.whl",
            "Cannot upload a file with non-printable characters (ordinals 0-31)"
            " or the DEL character (ordinal 127) in the name.",
        ),
        # a byte that is not UTF-8 in the part's filename: aiohttp makes it a lone surrogate
        ("foo-1.0-py3-none-\udcff.whl", "Cannot upload a file whose name is not valid UTF-8."),
        ("../\udcff.whl", "Cannot upload a file whose name is not valid UTF-8."),
        # A25
        ("../foo-1.0-py3-none-any.whl", "Cannot upload a file with '/' or '\\' in the name."),
        ("dir\\foo-1.0-py3-none-any.whl", "Cannot upload a file with '/' or '\\' in the name."),
        (
            "f" * 240 + "-1.0-py3-none-any.whl",
            f"Filename is too long: '{'f' * 240}-1.0-py3-none-any.whl'",
        ),
        # A26
        (
            "foo-1.0.egg",
            f"Invalid file extension: Use .tar.gz or .whl extension. See {PEP_527}"
            " and https://peps.python.org/pep-0715/ for more information",
        ),
        (
            "foo-1.0.tar.bz2",
            f"Invalid file extension: Use .tar.gz or .whl extension. See {PEP_527}"
            " and https://peps.python.org/pep-0715/ for more information",
        ),
        (
            ".whl",
            f"Invalid file extension: Use .tar.gz or .whl extension. See {PEP_527}"
            " and https://peps.python.org/pep-0715/ for more information",
        ),
        (
            "foo-1.0.zip",
            "Invalid file extension: pyproxy accepts sdists only as .tar.gz, not .zip."
            " See https://peps.python.org/pep-0625/ for more information.",
        ),
        # A27
        (
            "foo-1.0.tar.gz",
            f"Invalid file extension: Extension .tar.gz is invalid for filetype bdist_wheel."
            f" See {PEP_527} for more information.",
        ),
        (
            "foo-1.0-py3-none-any.WHL",
            f"Invalid file extension: Extension .WHL is invalid for filetype bdist_wheel."
            f" See {PEP_527} for more information.",
        ),
    ],
)
def test_wheel_filename_rejections(wheel: Path, filename: str, message: str) -> None:
    assert file_rejected(validated_form_for(wheel), wheel, filename=filename).message == message


def test_sdist_with_wheel_extension(tmp_path: Path) -> None:  # A27
    sdist = make_sdist(tmp_path, "foo", "1.0")
    error = file_rejected(validated_form_for(sdist), sdist, filename="foo-1.0-py3-none-any.whl")
    assert error.message == (
        f"Invalid file extension: Extension .whl is invalid for filetype sdist. See {PEP_527} for more information."
    )


def test_zip_sdist_gets_pyproxy_message(tmp_path: Path) -> None:  # A26, pyproxy policy
    sdist = make_sdist(tmp_path, "foo", "1.0")
    error = file_rejected(validated_form_for(sdist), sdist, filename="foo-1.0.zip")
    assert error.message == (
        "Invalid file extension: pyproxy accepts sdists only as .tar.gz, not .zip. "
        "See https://peps.python.org/pep-0625/ for more information."
    )


@pytest.mark.parametrize("content_type", ["image/png", "IMAGE/gif"])
def test_content_type_rejections(wheel: Path, content_type: str | None) -> None:  # A31
    error = file_rejected(validated_form_for(wheel), wheel, content_type=content_type)
    assert error.message == "Invalid distribution file."


@pytest.mark.parametrize(
    # None and "": uv publish sends the file part without a Content-Type
    "content_type", ["application/octet-stream", "application/zip", "text/plain", None, ""]
)
def test_content_type_acceptances(wheel: Path, content_type: str | None) -> None:
    validate_file(validated_form_for(wheel), wheel.name, content_type, wheel, computed(wheel))


@pytest.mark.parametrize(
    "form_changes",
    [
        {"sha256_digest": ["0" * 64]},
        {"blake2_256_digest": ["0" * 64]},
        {"md5_digest": ["0" * 32]},
    ],
)
def test_digest_mismatch(wheel: Path, form_changes: dict[str, list[str] | None]) -> None:  # A32
    error = file_rejected(validated_form_for(wheel, **form_changes), wheel)
    assert (
        error.message
        == "The digest supplied does not match a digest calculated from the uploaded file."
    )


def test_digests_compare_case_insensitively(wheel: Path) -> None:  # A32
    digests = computed(wheel)
    form = validated_form_for(
        wheel,
        sha256_digest=[digests["sha256"].upper()],
        md5_digest=[digests["md5"].upper()],
    )
    upper = {algorithm: value.upper() for algorithm, value in digests.items()}
    validate_file(form, wheel.name, "application/octet-stream", wheel, upper)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        # A33
        (junk, "Invalid distribution file. File is not a zipfile"),
        (
            lambda d: make_wheel(d, "foo", "1.0", omit={"WHEEL"}),
            "Invalid distribution file. WHEEL not found at foo-1.0.dist-info/WHEEL",
        ),
        (
            lambda d: make_wheel(d, "foo", "1.0", extra_members={"../../evil.pth": b"import os"}),
            "Invalid distribution file. ZIP archive not accepted: Unsafe member path '../../evil.pth'.",
        ),
        # A34
        (
            lambda d: make_wheel(d, "foo", "1.0", omit={"RECORD"}),
            "Wheel 'foo-1.0-py3-none-any.whl' does not contain the required RECORD file: foo-1.0.dist-info/RECORD",
        ),
        (
            lambda d: make_wheel(d, "foo", "1.0", omit={"METADATA"}),
            "Wheel 'foo-1.0-py3-none-any.whl' does not contain the required METADATA file: foo-1.0.dist-info/METADATA",
        ),
        (
            lambda d: make_wheel(
                d, "foo", "1.0", extra_members={"foo-1.0.dist-info/entry_points.txt": b"nonsense"}
            ),
            "Wheel 'foo-1.0-py3-none-any.whl' has invalid entry points defined in the entry_points.txt file",
        ),
        # pip refuses a wheel with a second .dist-info
        (
            lambda d: make_wheel(
                d, "foo", "1.0", extra_members={"bar-2.0.dist-info/METADATA": core_metadata("bar", "2.0")}
            ),
            "Wheel 'foo-1.0-py3-none-any.whl' has more than one .dist-info directory"
            " ('bar-2.0.dist-info', 'foo-1.0.dist-info'); installers take only wheels with exactly one.",
        ),
        # oversize METADATA
        (
            lambda d: make_wheel(
                d, "foo", "1.0", metadata=core_metadata("foo", "1.0") + b"X: " + b"x" * 24 * 2**20
            ),
            "Invalid distribution file. foo-1.0.dist-info/METADATA is larger than 24 MiB",
        ),
        # pyproxy's own check: the file's metadata names the form's project and version
        (
            lambda d: make_wheel(d, "foo", "1.0", metadata=core_metadata("bar", "1.0")),
            "The metadata in 'foo-1.0-py3-none-any.whl' names 'bar' 1.0, but the upload form says 'foo' 1.0.",
        ),
        (
            lambda d: make_wheel(d, "foo", "1.0", metadata=core_metadata("Foo", "1.1")),
            "The metadata in 'foo-1.0-py3-none-any.whl' names 'Foo' 1.1, but the upload form says 'foo' 1.0.",
        ),
        (
            lambda d: make_wheel(
                d, "foo", "1.0", metadata=b"Metadata-Version: 2.1\nVersion: 1.0\n"
            ),
            "The metadata in 'foo-1.0-py3-none-any.whl' is invalid: 'name' is a required field.",
        ),
        (
            lambda d: make_wheel(d, "foo", "1.0", requires_python="3.8"),
            "The metadata in 'foo-1.0-py3-none-any.whl' is invalid: '3.8' is invalid for 'requires-python'.",
        ),
        # numbers past int()'s digit limit: packaging would raise a bare ValueError
        (
            lambda d: make_wheel(d, "foo", "1.0", metadata=core_metadata("foo", HUGE)),
            "The metadata in 'foo-1.0-py3-none-any.whl' is invalid: its 'version' cannot be read"
            " (a number in it has more than 4300 digits).",
        ),
        (
            lambda d: make_wheel(d, "foo", "1.0", requires_python=f">={HUGE}"),
            "The metadata in 'foo-1.0-py3-none-any.whl' is invalid: its 'requires-python' cannot"
            " be read (a number in it has more than 4300 digits).",
        ),
    ],
)
def test_wheel_content_rejections(
    tmp_path: Path, build: Callable[[Path], Path], message: str
) -> None:
    bad = build(tmp_path / "bad")
    form = form_for(make_wheel(tmp_path / "good", "foo", "1.0"), bad)
    error = file_rejected(form, bad, filename="foo-1.0-py3-none-any.whl")
    assert error.message == message


def test_a_description_as_long_as_the_form_takes_fits_in_the_wheel(tmp_path: Path) -> None:
    """The file's own metadata cap never refuses what the form limit let through."""
    description = "d" * MAX_FORM_BYTES
    metadata = core_metadata("foo", "1.0") + b"\n" + description.encode()
    wheel = make_wheel(tmp_path, "foo", "1.0", metadata=metadata)
    form = validated_form_for(wheel, description=[description])
    result = validate_file(form, wheel.name, "application/octet-stream", wheel, computed(wheel))
    assert result.core_metadata == metadata


def test_metadata_equal_after_normalisation_is_accepted(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "foo", "1.0", metadata=core_metadata("FOO", "1.0.0"))
    form = validate_form(changed(form_fields_for(wheel), name=["foo"], version=["1.0"]))
    validate_file(form, wheel.name, "application/octet-stream", wheel, computed(wheel))


@pytest.mark.parametrize(
    ("form_changes", "wheel_args", "message"),
    [
        (
            {},
            {"filename": "foo-1.0-py3-none.whl"},
            "Invalid wheel filename (wrong number of parts): 'foo-1.0-py3-none'",
        ),
        (
            {},
            {"filename": "foo-1.x-py3-none-any.whl", "dist_info": "foo-1.x"},
            "Invalid wheel filename (invalid version): 'foo-1.x-py3-none-any'",
        ),
        (
            {"name": ["Foo.Bar"]},
            {"filename": "bar-1.0-py3-none-any.whl", "dist_info": "bar-1.0"},
            "Start filename for 'Foo.Bar' with 'foo_bar'.",
        ),
        (
            {"version": ["1.1"]},
            {},
            "Version in filename should be '1.1' not '1.0'.",
        ),
        (
            {"version": ["01.1"]},
            {},
            "Version in filename should be '1.1' not '1.0'.",
        ),
    ],
)
def test_wheel_name_rejections(  # A28
    tmp_path: Path, form_changes: dict[str, list[str]], wheel_args: dict[str, str], message: str
) -> None:
    wheel = make_wheel(tmp_path, "foo", "1.0", **wheel_args)  # type: ignore[arg-type]
    form = validated_form_for(wheel, **form_changes)
    assert file_rejected(form, wheel).message == message


def test_wheel_name_checks_run_before_the_record_check(tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path, "foo", "1.0", omit={"RECORD", "METADATA"})
    form = form_for(make_wheel(tmp_path / "good", "foo", "1.0"), wheel, version=["2.0"])
    assert file_rejected(form, wheel).message == "Version in filename should be '2.0' not '1.0'."


@pytest.mark.parametrize(
    ("name", "version", "filename", "message"),
    [
        ("foo", "1.0", "foo.tar.gz", "Invalid source distribution filename: foo.tar.gz"),
        ("foo", "1.0", "foo-1.x.tar.gz", "Invalid source distribution filename: foo-1.x.tar.gz"),
        ("foo", "1.0", "bar-1.0.tar.gz", "Start filename for 'foo' with 'foo'."),
        ("Foo.Bar", "1.0", "foo-1.0.tar.gz", "Start filename for 'Foo.Bar' with 'foo_bar'."),
        # the name part may be a legacy spelling, but only of the project, in ASCII
        (
            "Kelvin",
            "1.0",
            "\u212aelvin-1.0.tar.gz",
            "Filename '\u212aelvin-1.0.tar.gz' is invalid, should be 'kelvin-1.0.tar.gz'.",
        ),
        ("my-pkg", "1.0", "mypkg-1.0.tar.gz", "Start filename for 'my-pkg' with 'my_pkg'."),
        # the version part must be the normalised release
        (
            "foo",
            "1.0",
            "foo-2.0.tar.gz",
            "Filename 'foo-2.0.tar.gz' is invalid, should be 'foo-1.0.tar.gz'.",
        ),
        (
            "foo",
            "01.0",
            "foo-01.0.tar.gz",
            "Filename 'foo-01.0.tar.gz' is invalid, should be 'foo-1.0.tar.gz'.",
        ),
        (
            "foo",
            "1.0-1",
            "foo-1.0-1.tar.gz",
            "Filename 'foo-1.0-1.tar.gz' is invalid, should be 'foo-1.0.post1.tar.gz'.",
        ),
    ],
)
def test_sdist_name_rejections(  # A29
    tmp_path: Path, name: str, version: str, filename: str, message: str
) -> None:
    sdist = make_sdist(tmp_path, name, version, filename=filename)
    assert file_rejected(validated_form_for(sdist), sdist).message == message


@pytest.mark.parametrize(
    ("name", "version", "filename"),
    [
        ("my-pkg", "1.0", "my-pkg-1.0.tar.gz"),  # setuptools before 69.3
        ("my_pkg", "1.0", "my_pkg-1.0.tar.gz"),
        ("My.Pkg", "1.0rc1", "My.Pkg-1.0rc1.tar.gz"),
        ("my-pkg", "1.0.post2", "my--pkg-1.0.post2.tar.gz"),
        ("foo-2", "3.0", "foo-2-3.0.tar.gz"),
        ("my-pkg", "1.0+corp.1", "my-pkg-1.0+corp.1.tar.gz"),
    ],
)
def test_legacy_sdist_names_are_accepted_and_kept(  # A29, policy
    tmp_path: Path, name: str, version: str, filename: str
) -> None:
    sdist = make_sdist(tmp_path, name, version, filename=filename)
    result = validate_file(
        validated_form_for(sdist), sdist.name, "application/gzip", sdist, computed(sdist)
    )
    assert (result.filename, result.filetype, result.version) == (filename, "sdist", version)
    # the rest of pyproxy reads the release from the filename alone
    assert version_of(result.filename) == result.version


def truncated(path: Path, keep: int) -> Path:
    path.write_bytes(path.read_bytes()[:keep])
    return path


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda d: make_sdist(d, "foo", "1.0", top_level="other", omit_pkg_info=True),
            "Invalid distribution file. PKG-INFO not found at other/PKG-INFO",
        ),
        (
            lambda d: make_sdist(d, "foo", "1.0", omit_pkg_info=True),
            "Invalid distribution file. PKG-INFO not found at foo-1.0/PKG-INFO",
        ),
        (
            lambda d: make_sdist(d, "foo", "1.0", extra_members={"second-1.0/setup.py": b""}),
            "Invalid distribution file. Incorrect number of top-level directories in sdist",
        ),
        (
            lambda d: make_sdist(d, "foo", "1.0", extra_members={"foo-1.0/../../etc/x": b""}),
            "Invalid distribution file. tar archive not accepted: Unsafe member path 'foo-1.0/../../etc/x'.",
        ),
        (lambda d: make_wheel(d, "foo", "1.0"), "Invalid distribution file. File is not a tarfile"),
        (
            lambda d: truncated(make_sdist(d, "foo", "1.0"), 60),  # inside the first header
            "Invalid distribution file. tar archive not accepted: The archive is truncated or corrupt.",
        ),
        (
            lambda d: make_sdist(d, "foo", "1.0", pkg_info=core_metadata("foo", "2.0")),
            "The metadata in 'foo-1.0.tar.gz' names 'foo' 2.0, but the upload form says 'foo' 1.0.",
        ),
    ],
)
def test_sdist_content_rejections(
    tmp_path: Path, build: Callable[[Path], Path], message: str
) -> None:
    bad = build(tmp_path / "bad")
    form = form_for(make_sdist(tmp_path, "foo", "1.0"), bad)
    assert file_rejected(form, bad, filename="foo-1.0.tar.gz").message == message


def test_symlink_in_sdist_is_refused(tmp_path: Path) -> None:
    import gzip
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        data = core_metadata("foo", "1.0")
        info = tarfile.TarInfo("foo-1.0/PKG-INFO")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("foo-1.0/setup.py")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    sdist = tmp_path / "foo-1.0.tar.gz"
    sdist.write_bytes(gzip.compress(buffer.getvalue()))
    error = file_rejected(validated_form_for(sdist), sdist)
    assert error.message == (
        "Invalid distribution file. tar archive not accepted: Link member 'foo-1.0/setup.py' is not allowed."
    )
