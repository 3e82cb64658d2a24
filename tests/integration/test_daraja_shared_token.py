"""
Daraja's one-live-token rule ("each request invalidates the previous token"), enforced by the sandbox, against the
token every worker shares through the metadata DB: separate processes under one Airflow home, threads, the REST
API's view of the Variable, and a script without a metadata DB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import DARAJA_SECRET

from airflow_provider_m2m.hooks import daraja_token_store as token_store
from airflow_provider_m2m.hooks.daraja import DarajaHook, clear_token_cache

# One worker of a deployment: check its numbers, say so, wait for the go, check them again.
WORKER = """
import sys, time
from pathlib import Path
from airflow_provider_m2m.hooks.daraja import DarajaHook

numbers, ready, go = sys.argv[1].split(","), Path(sys.argv[2]), Path(sys.argv[3])
hook = DarajaHook()
for number in numbers:
    assert hook.check_sim_swap(number).error is None
ready.touch()
while not go.exists():
    time.sleep(0.05)
for number in numbers:
    assert hook.check_sim_swap(number).error is None
print("checked", 2 * len(numbers))
"""


@pytest.fixture
def shared(sb, airflow_db):
    """The session's metadata DB exists; no token is cached or stored before or after the test."""
    clear_token_cache()
    yield sb
    clear_token_cache()


def _key(sb) -> str:
    creds = sb.credentials
    return token_store.variable_key(sb.url, creds["daraja_key"], creds["daraja_secret"])


def _start(tmp_path: Path, name: str, numbers: list[str], env: dict | None = None) -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    args = [",".join(numbers), str(tmp_path / f"{name}.ready"), str(tmp_path / "go")]
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for(paths: list[Path], procs: list[subprocess.Popen], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for proc in procs:
            assert proc.poll() is None, proc.communicate()[0][-3000:]
        assert time.monotonic() < deadline, "the workers did not get through their first checks"
        time.sleep(0.1)


def test_two_processes_share_one_token_and_renew_a_refused_one_once(shared, tmp_path):
    """Two workers under one Airflow home: 1 token for both; after Daraja drops it, 1 renewal for both."""
    sb = shared
    numbers = list(sb.fleet.swaps)[:20]
    procs = [_start(tmp_path, name, numbers[i::2]) for i, name in enumerate(("a", "b"))]
    _wait_for([tmp_path / "a.ready", tmp_path / "b.ready"], procs)
    app = sb.credentials["daraja_key"]
    assert sb.stats()["tokens_issued_per_app"] == {app: 1}, "the two workers fetched a token each"

    sb.revoke_tokens()  # Daraja drops the live token (as a token fetched elsewhere would)
    (tmp_path / "go").touch()
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [out[-3000:] for out in outputs]
    assert [out.strip().splitlines()[-1] for out in outputs] == ["checked 20", "checked 20"]
    stats = sb.stats()
    assert stats["tokens_issued_per_app"] == {app: 2}, "a refused token is renewed once for everyone"
    assert stats["by_status"][401] == 2  # each worker's first call after the drop, then never again
    assert stats["by_command"]["checkATI"] == 2 * len(numbers) + 2
    issued = sb.issued_tokens()[-2:]
    for out in outputs:
        assert DARAJA_SECRET not in out and not any(token in out for token in issued)

    # The store holds the live token, as JSON with its expiry; a new hook in this process takes it from there.
    record = token_store.read(_key(sb))
    assert record["access_token"] == issued[-1] and record["renewing"] is None
    assert record["expires_at"] > time.time() + 3000
    assert DarajaHook().get_access_token() == issued[-1]
    assert sb.stats()["tokens_issued_per_app"] == {app: 2}


def test_threads_with_their_own_hooks_fetch_once_and_a_stale_store_is_renewed_once(shared):
    """Eight hooks on eight threads, then a token refused by Daraja: one token request each time."""
    import threading

    sb = shared
    numbers = list(sb.fleet.swaps)[:8]
    sb.configure(latency=0.1)
    errors: list[BaseException] = []

    def screen(number: str) -> None:
        try:
            hook = DarajaHook()
            hook.fetch_connection()
            assert hook.check_sim_swap(number).error is None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    for round_ in (1, 2):
        threads = [threading.Thread(target=screen, args=(n,)) for n in numbers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert errors == [] and sb.stats()["tokens_issued"] == round_
        sb.revoke_tokens()
    assert sb.stats()["by_status"][401] <= len(numbers)


def test_the_rest_api_shows_the_shared_token_masked(shared):
    """The Variable as the REST API (and the UI) serialise it: no token in clear."""
    from airflow.api_fastapi.core_api.datamodels.variables import VariableResponse
    from airflow.models import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    sb = shared
    token = DarajaHook().get_access_token()
    key = _key(sb)
    assert "access_token" in key and sb.credentials["daraja_key"] not in key
    with create_session() as session:
        variable = session.scalars(select(Variable).where(Variable.key == key)).one()
        shown = VariableResponse.model_validate(variable).model_dump(by_alias=True)
    assert json.loads(variable.val)["access_token"] == token  # what the store holds
    assert token not in json.dumps(shown, default=str) and "***" in shown["value"], shown


def test_a_script_without_a_metadata_db_keeps_the_token_in_its_process(shared, tmp_path):
    """No metadata DB at all: the hook still works, with the token cached in its process, and says so."""
    sb = shared
    empty = tmp_path / "no-db"
    empty.mkdir()
    env = {"AIRFLOW_HOME": str(empty), "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{empty / 'none.db'}"}
    (tmp_path / "go").touch()
    proc = _start(tmp_path, "alone", list(sb.fleet.swaps)[:3], env)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 0, out[-3000:]
    assert "checked 6" in out
    assert "No Airflow metadata DB to share the Daraja access token" in out
    assert sb.stats()["tokens_issued"] == 1
    assert not any(token in out for token in sb.issued_tokens())


def _peer_token(sb) -> str:
    """A token fetched by another worker of the deployment (which Daraja's rule makes the only live one)."""
    import requests

    creds = sb.credentials
    r = requests.get(
        f"{sb.url}/oauth/v1/generate",
        params={"grant_type": "client_credentials"},
        auth=(creds["daraja_key"], creds["daraja_secret"]),
        timeout=10,
    )
    assert r.status_code == 200
    return r.json()["access_token"]


def test_a_worker_waits_for_a_peers_renewal_instead_of_renewing_again(shared):
    """A peer holds the renewal lease: this worker polls the store and takes the peer's token, fetching none."""
    sb = shared
    key = _key(sb)
    token_store.write(key, {"renewing": {"holder": "peer", "until": time.time() + 20}})
    peer = _peer_token(sb)

    def peer_finishes() -> None:
        time.sleep(1.0)
        token_store.write(key, {"access_token": peer, "expires_at": time.time() + 3599, "lifetime": 3599})

    import threading

    finisher = threading.Thread(target=peer_finishes)
    finisher.start()
    started = time.monotonic()
    token = DarajaHook().get_access_token()
    finisher.join()
    assert token == peer and 0.9 <= time.monotonic() - started < 10
    assert sb.stats()["tokens_issued"] == 1  # the peer's only
    assert DarajaHook().check_sim_swap(list(sb.fleet.swaps)[0]).error is None


def test_a_lease_whose_holder_died_is_taken_over_when_it_runs_out(shared):
    sb = shared
    token_store.write(_key(sb), {"renewing": {"holder": "a worker that died", "until": time.time() + 1.5}})
    started = time.monotonic()
    token = DarajaHook().get_access_token()
    assert 1.4 <= time.monotonic() - started < 10
    assert sb.stats()["tokens_issued"] == 1 and token == sb.issued_tokens()[-1]
    assert token_store.read(_key(sb))["renewing"] is None
