"""The dashboard guard (search/dashboard.py): Host check against DNS rebinding, read-only by default.

No server and no network: the guarded optuna-dashboard WSGI app is called with environ dicts.
"""

from __future__ import annotations

import io
import json
from wsgiref.util import setup_testing_defaults

import optuna
import pytest
from optuna_dashboard import get_note

from budgetnas.search import cli
from budgetnas.search.report import dashboard
from budgetnas.search.study.storage import make_storage

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def study() -> optuna.Study:
    s = optuna.create_study(study_name="demo", storage=optuna.storages.InMemoryStorage())
    s.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    return s


def call(app, method: str, path: str, host: str | None, body: dict | None = None) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else b""
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(data),
               "CONTENT_LENGTH": str(len(data)), "CONTENT_TYPE": "application/json"}
    setup_testing_defaults(environ)  # fills what is missing, a Host from SERVER_NAME too: replaced here
    environ.pop("HTTP_HOST")
    if host is not None:
        environ["HTTP_HOST"] = host
    status = []
    out = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    return int(status[0].split()[0]), out


def exists(study: optuna.Study) -> bool:
    return study.study_name in [s.study_name for s in study._storage.get_all_studies()]


def test_foreign_host_is_refused_and_study_survives(study):
    app = dashboard.build_app(study._storage, writable=True)  # even writable: the Host check comes first
    for method, path in (("GET", "/api/studies"), ("DELETE", f"/api/studies/{study._study_id}")):
        for host in ("evil.example:8080", "evil.example", "127.0.0.1.evil.example:8080", "localhost.evil.example",
                     "127.0.0.1:8080,evil.example", None):
            status, body = call(app, method, path, host)
            assert status == 403, (method, host)
            assert b"Host" in body
    assert exists(study)


@pytest.mark.parametrize("host, lookalike", [("127.0.0.1:8080", "128.0.0.1:8080"),
                                             ("localhost:8080", "localhost.evil.example:8080"),
                                             ("LOCALHOST", "notlocalhost"), ("127.3.2.1:9", "127.3.2.1.nip.io:9")])
def test_loopback_host_can_read(study, host, lookalike):
    app = dashboard.build_app(study._storage)
    status, body = call(app, "GET", "/api/studies", host)
    assert status == 200
    assert json.loads(body)["study_summaries"][0]["study_name"] == "demo"
    assert call(app, "GET", "/api/studies", lookalike)[0] == 403


def test_ipv6_loopback_host_is_accepted(study):
    app = dashboard.build_app(study._storage, bind_host="::1")
    assert call(app, "GET", "/api/studies", "[::1]:8080")[0] == 200
    assert call(app, "GET", "/api/studies", "[::1]")[0] == 200
    assert call(app, "GET", "/api/studies", "[2001:db8::1]:8080")[0] == 403


def test_bound_non_loopback_host_is_accepted_exactly(study):
    app = dashboard.build_app(study._storage, bind_host="192.0.2.7")
    assert call(app, "GET", "/api/studies", "192.0.2.7:8080")[0] == 200
    assert call(app, "GET", "/api/studies", "localhost:8080")[0] == 200
    assert call(app, "GET", "/api/studies", "192.0.2.8:8080")[0] == 403


def test_read_only_by_default(study):
    app = dashboard.build_app(study._storage)
    sid, tid = study._study_id, study.trials[0]._trial_id
    for method, path, body in (("DELETE", f"/api/studies/{sid}", None),
                               ("delete", f"/api/studies/{sid}", None),  # Bottle upper-cases the method
                               ("POST", f"/api/studies/{sid}/rename", {"study_name": "renamed"}),
                               ("POST", "/api/studies", {"study_name": "new", "directions": ["minimize"]}),
                               ("PUT", f"/api/studies/{sid}/note", {"version": 1, "body": "hi"}),
                               ("PUT", f"/api/studies/{sid}/{tid}/note", {"version": 1, "body": "hi"})):
        status, text = call(app, method, path, "127.0.0.1:8080", body)
        assert status == 403, (method, path)
        assert b"read-only" in text
    assert exists(study)
    assert [s.study_name for s in study._storage.get_all_studies()] == ["demo"]
    assert get_note(study) == ""


def test_writable_lets_delete_through(study):
    app = dashboard.build_app(study._storage, writable=True)
    assert call(app, "DELETE", f"/api/studies/{study._study_id}", "evil.example:8080")[0] == 403  # Host check stays
    assert exists(study)
    assert call(app, "DELETE", f"/api/studies/{study._study_id}", "127.0.0.1:8080")[0] == 204
    assert not exists(study)


def test_allow_notes_lets_only_note_puts_through(study):
    app = dashboard.build_app(study._storage, allow_notes=True)
    sid, trial = study._study_id, study.trials[0]
    assert call(app, "PUT", f"/api/studies/{sid}/note", "localhost:8080", {"version": 1, "body": "study"})[0] == 204
    assert call(app, "PUT", f"/api/studies/{sid}/{trial._trial_id}/note", "localhost:8080",
                {"version": 1, "body": "trial"})[0] == 204
    assert get_note(study) == "study"
    assert get_note(optuna.Trial(study, trial._trial_id)) == "trial"
    for method, path in (("DELETE", f"/api/studies/{sid}"), ("POST", f"/api/studies/{sid}/note"),
                         ("PUT", f"/api/studies/{sid}/note/x"), ("POST", f"/api/studies/{sid}/rename")):
        status, text = call(app, method, path, "localhost:8080", {"study_name": "x", "version": 2, "body": "x"})
        assert status == 403, (method, path)
        assert b"only notes" in text
    assert exists(study)
    # and notes from a foreign Host are still refused
    assert call(app, "PUT", f"/api/studies/{sid}/note", "evil.example", {"version": 2, "body": "evil"})[0] == 403
    assert get_note(study) == "study"


def test_cli_serves_the_guarded_app_and_reports_bind_errors(monkeypatch, capsys):
    # a journal, not sqlite: in-process, make_storage's WAL pragmas for sqlite would outlive this test
    sid = optuna.create_study(study_name="s", storage=make_storage("journal:s.journal"))._study_id
    served = {}

    class FakeServer:  # bound, then Ctrl-C at once
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def serve_forever(self):
            raise KeyboardInterrupt

    def fake_bind(app, host, port):
        served.update(app=app, host=host, port=port)
        return FakeServer()

    monkeypatch.setattr(dashboard, "bind", fake_bind)
    cli.main(["dashboard", "--study", "s", "--storage", "journal:s.journal", "--port", "8123"])
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:8123/dashboard/studies/{sid} (read-only; Ctrl-C stops it)" in out
    assert out.rstrip().endswith("dashboard stopped")
    app = served["app"]
    assert isinstance(app, dashboard.Guard) and not app.writable and not app.allow_notes
    assert call(app, "DELETE", f"/api/studies/{sid}", "127.0.0.1:8123")[0] == 403
    assert call(app, "GET", "/api/studies", "evil.example:8123")[0] == 403

    cli.main(["dashboard", "--study", "s", "--storage", "journal:s.journal", "--writable"])
    assert served["app"].writable
    with pytest.raises(SystemExit):
        cli.main(["dashboard", "--study", "s", "--storage", "journal:s.journal", "--writable", "--allow-notes"])
    capsys.readouterr()

    def busy(app, host, port):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(dashboard, "bind", busy)
    with pytest.raises(SystemExit) as e:
        cli.main(["dashboard", "--study", "s", "--storage", "journal:s.journal"])
    assert e.value.code == cli.EXIT_USAGE
    assert capsys.readouterr().err == "budgetnas: error: cannot serve on 127.0.0.1:8080: Address already in use\n"


@pytest.mark.parametrize("header", ["[::1", "localhost:http", "localhost:80:80", "", "localhost:\uff18\uff10",
                                    "0x7f.0.0.1", "127.1", "[::1]x"])
def test_malformed_host_headers_are_refused(study, header):
    """Not guessed at, even where a browser would read them as loopback."""
    app = dashboard.build_app(study._storage)
    assert call(app, "GET", "/api/studies", header)[0] == 403
    assert call(app, "GET", "/api/studies", "localhost:")[0] == 200  # an empty port is valid (RFC 3986)
