"""YAML settings: defaults, every problem reported at once with its path, did-you-mean."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from iiif_shim.base.errors import ConfigError
from iiif_shim.config.settings import default_config_path, load_settings, parse_settings


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "shim.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def problems(tmp_path: Path, text: str) -> list[tuple[str, str]]:
    (tmp_path / "images").mkdir(exist_ok=True)
    with pytest.raises(ConfigError) as err:
        load_settings(write(tmp_path, text))
    return err.value.problems


def test_embedded_default_is_valid() -> None:
    settings = load_settings(default_config_path())
    assert settings.server.port == 8182 and settings.iiif.prefix == "/iiif"
    assert settings.iiif.max_width == 12000 and settings.iiif.tile_size == 512
    assert (default_config_path().parent / "images" / "chart.jpg").exists()


def test_defaults_and_relative_root(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    settings = load_settings(
        write(
            tmp_path,
            """
        backends:
          samples: {type: files, root: ./images}
          masters: {type: http, url: "http://legacy.example.org/masters/{id}"}
        routes:
          - {match: "^ms/(?P<rest>[^/]+)$", backend: masters, id: "{rest}"}
          - {backend: samples}
    """,
        )
    )
    assert settings.server.host == "127.0.0.1" and settings.server.public_url is None
    assert settings.server.trust_forwarded is False
    assert (settings.iiif.max_area, settings.iiif.max_height) == (100_000_000, 12000)
    assert settings.backends["samples"].root == tmp_path / "images"
    assert settings.backends["masters"].timeout == 30.0
    assert settings.routes[0].match is not None and settings.routes[0].id == "{rest}"
    assert settings.warnings == ()


def test_three_mistakes_reported_together(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        """
        server: {port: 8182, publik_url: "http://x"}
        backends:
          archive: {type: http}
          samples: {type: files, root: ./images}
        routes:
          - {backend: sampels}
    """,
    )
    assert ("server.publik_url", "unknown key; did you mean 'public_url'?") in found
    assert ("backends.archive.url", "required") in found
    assert ("routes[0].backend", "no backend named 'sampels'; did you mean 'samples'?") in found
    assert len(found) == 3


@pytest.mark.parametrize(
    ("yaml_text", "path", "fragment"),
    [
        ("iiif: {prefix: iiif}", "iiif.prefix", "start with '/'"),
        ("iiif: {prefix: /iiif/}", "iiif.prefix", "trailing"),
        ("iiif: {max_width: -5}", "iiif.max_width", "at least 1"),
        ("iiif: {max_width: null, max_height: 100}", "iiif.max_height", "max_width"),
        ("iiif: {tile_size: big}", "iiif.tile_size", "whole number"),
        ("server: {port: 70000}", "server.port", "0 to 65535"),
        ("server: {trust_forwarded: 'yes'}", "server.trust_forwarded", "true or false"),
        ("server: {public_url: 'ftp://x'}", "server.public_url", "http"),
        ("cache: {info_ttl: -1}", "cache.info_ttl", "at least 0"),
        ("landing: {identifiers: chart}", "landing.identifiers", "list"),
        ("colour: 1", "colour", "unknown key"),
    ],
)
def test_single_problems(tmp_path: Path, yaml_text: str, path: str, fragment: str) -> None:
    found = problems(
        tmp_path,
        yaml_text + "\nbackends: {s: {type: files, root: images}}\nroutes: [{backend: s}]\n",
    )
    assert any(p == path and fragment in m for p, m in found), found


@pytest.mark.parametrize(
    ("backends", "routes", "path", "fragment"),
    [
        (
            "{a: {type: file, root: images}}",
            "[{backend: a}]",
            "backends.a.type",
            "did you mean 'files'",
        ),
        ("{a: {root: images}}", "[{backend: a}]", "backends.a.type", "required"),
        ("{a: {type: files, root: nowhere}}", "[{backend: a}]", "backends.a.root", "not a folder"),
        ("{a: {type: http, url: 'http://{id}/x'}}", "[{backend: a}]", "backends.a.url", "host"),
        ("{a: {type: http, url: 'legacy/{id}'}}", "[{backend: a}]", "backends.a.url", "http://"),
        (
            "{a: {type: http, url: 'http://h/{page}'}}",
            "[{backend: a}]",
            "routes[0].match",
            "{page}",
        ),
        (
            "{a: {type: files, root: images}}",
            "[{backend: a, match: '('}]",
            "routes[0].match",
            "regular expression",
        ),
        (
            "{a: {type: files, root: images}}",
            "[{backend: a, id: '{rest}'}]",
            "routes[0].id",
            "{rest}",
        ),
        (
            "{a: {type: files, root: images}}",
            "[{backend: a}, {backend: a, match: x}]",
            "routes[1]",
            "unreachable",
        ),
        (
            "{a: {type: files, root: images}}",
            "[{backend: a, rights: 'https://creativecommons.org/licenses/by/4.0/'}]",
            "routes[0].rights",
            "http://",
        ),
        ("{}", "[]", "backends", "at least one"),
        (
            "{t: {type: template, info: {url: 'http://h/m?{id}', width: {json: w}, height: "
            "{json: h}}, image: {url: 'http://h/i?{id}&s={width}', size: keep_aspect}}}",
            "[{backend: t, match: '^(?P<width>.+)$'}]",
            "routes[0].match",
            "would be hidden",
        ),
    ],
)
def test_backend_and_route_problems(
    tmp_path: Path, backends: str, routes: str, path: str, fragment: str
) -> None:
    found = problems(tmp_path, f"backends: {backends}\nroutes: {routes}\n")
    assert any(p == path and fragment in m for p, m in found), found


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    found = problems(tmp_path, "server:\n  port: [8182\n")
    assert "line" in found[0][1] and "not valid YAML" in found[0][1]


def test_unused_backend_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    settings = parse_settings(
        {
            "backends": {
                "a": {"type": "files", "root": "images"},
                "b": {"type": "files", "root": "images"},
            },
            "routes": [{"backend": "a"}],
        },
        tmp_path,
    )
    assert settings.warnings == (("backends.b", "no route uses this backend"),)


_PRESENTED = "backends: {s: {type: files, root: ./images}, h: {type: http, url: 'http://h/{id}'}}\n"


@pytest.mark.parametrize(
    ("routes", "presentation", "path", "fragment"),
    [
        ("[{backend: s}]", "sources: {x: {type: folders}}", "presentation.sources.x.type",
         "did you mean 'folder'"),
        ("[{backend: s}]", "sources: {x: {type: folder, backend: h}}",
         "presentation.sources.x.backend", "a `files` backend"),
        ("[{match: '^a', backend: h}, {backend: s, id: 'x/{id}'}]",
         "sources: {x: {type: folder, backend: s}}", "presentation.sources.x.backend",
         "passes identifiers unchanged"),
        ("[{backend: s}]", "sources: {x: {type: folder, backend: nope}}",
         "presentation.sources.x.backend", "no backend named"),
        ("[{backend: s}]", "sources: {x: {type: csv, path: a.csv, columns: {object: o}}}",
         "presentation.sources.x.columns.image", "required"),
        ("[{backend: s}]", "sources: {x: {type: json, url: 'http://c/{object}', "
         "fields: {images: $.i}, max_bytes: 2048}}", "presentation.sources.x.max_bytes",
         "not used"),
        ("[{backend: s}]", "language: 'english language'", "presentation.language", "BCP 47"),
        ("[{backend: s}]", "provider: {homepage: 'ftp://x'}", "presentation.provider.label",
         "required"),
        ("[{backend: s}]", "pdf_max_pages: 0", "presentation.pdf_max_pages", "1 to"),
        ("[{backend: s}]", "sources: {'a b': {type: folder, backend: s}}",
         "presentation.sources.a b", "letters, digits"),
    ],
)  # fmt: skip
def test_presentation_problems(
    tmp_path: Path, routes: str, presentation: str, path: str, fragment: str
) -> None:
    found = problems(tmp_path, f"{_PRESENTED}routes: {routes}\npresentation: {{{presentation}}}\n")
    assert any(p == path and fragment in m for p, m in found), found


def test_viewer_settings_are_checked(tmp_path: Path) -> None:
    found = problems(
        tmp_path,
        f"{_PRESENTED}routes: [{{backend: s}}]\n"
        "viewers: {default: tify, external: {Theseus: 'https://t.example/?m=nothing'}}\n",
    )
    assert {p for p, _ in found} >= {"viewers.default", "viewers.external"}, found


def test_a_budget_split_too_thin_between_processes_is_a_warning(tmp_path: Path) -> None:
    body = "backends:\n  local: {type: files, root: .}\nroutes:\n  - {backend: local}\n"
    thin = tmp_path / "thin.yaml"
    thin.write_text("server: {processes: 16, memory_budget: 536870912}\n" + body)
    warned = [w for w in load_settings(thin).warnings if w[0] == "server.memory_budget"]
    assert warned and "each gets 32 MB" in warned[0][1]
    enough = tmp_path / "enough.yaml"
    enough.write_text("server: {processes: 2, memory_budget: 536870912}\n" + body)
    assert not [w for w in load_settings(enough).warnings if w[0] == "server.memory_budget"]


def test_a_route_naming_no_policy_is_reported_beside_the_auth_sections_own_problems(
    tmp_path: Path,
) -> None:
    """A problem inside ``auth`` (here an htpasswd file that is not there) does not hide a
    route whose ``access`` names no policy: both come in one report."""
    found = problems(
        tmp_path,
        """
backends: {a: {type: files, root: ./images}}
routes:
  - {match: "^x/", backend: a, access: staf}
  - backend: a
auth:
  secret: "0123456789abcdef0123456789abcdef-settings"
  policies:
    staff: {kind: login, label: Staff, users: {htpasswd: missing.htpasswd}}
""",
    )
    keys = [key for key, _ in found]
    assert "auth.policies.staff.users.htpasswd" in keys
    assert ("routes[0].access", "no policy 'staf' under auth.policies (staff)") in found


@pytest.mark.parametrize(
    "dsn",
    ["postgresql://u:hunter2secret@[::1/db", "postgresql://u:hunter2secret@db:port/x"],
)
def test_a_malformed_postgres_url_is_a_problem_that_never_shows_it(
    tmp_path: Path, dsn: str
) -> None:
    found = problems(
        tmp_path,
        f"""
backends: {{a: {{type: files, root: ./images}}}}
routes: [{{backend: a}}]
search: {{postgres: "{dsn}"}}
""",
    )
    assert [key for key, _ in found] == ["search.postgres"]
    assert "not a valid URL" in found[0][1] and "hunter2" not in repr(found)


def test_a_search_folder_the_index_cannot_be_kept_in_is_a_problem(tmp_path: Path) -> None:
    """``search.folder`` is tried as the index would use it: one under ``/proc`` (which says
    it is writable, and is to root) or behind a file cannot be made; a new one is fine, and
    trying it leaves nothing behind."""
    (tmp_path / "a-file").write_text("")
    config = "backends: {a: {type: files, root: ./images}}\nroutes: [{backend: a}]\n"
    for folder, said in [("/proc/nope/search", "cannot be made"),
                         ("a-file/search", "a-file is not a folder")]:  # fmt: skip
        found = problems(tmp_path, f"{config}search: {{folder: {folder}}}\n")
        assert [key for key, _ in found] == ["search.folder"], found
        assert said in found[0][1], found
    before = sorted(tmp_path.iterdir())
    settings = load_settings(write(tmp_path, f"{config}search: {{folder: new/search}}\n"))
    assert settings.search.folder == tmp_path / "new" / "search"
    assert sorted(tmp_path.iterdir()) == before  # tried, then removed
    (tmp_path / "kept").mkdir()
    load_settings(write(tmp_path, f"{config}search: {{folder: kept}}\n"))
    assert list((tmp_path / "kept").iterdir()) == []
