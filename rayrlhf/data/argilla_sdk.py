"""A labelling dataset folder (:mod:`rayrlhf.data.labelling`) as Argilla SDK objects, and on a
server: ``rg.Settings``, ``rg.Record`` and, given a URL and API key, ``rg.Dataset.create()``
followed by ``records.log``.

The SDK (``argilla`` 2.x, installed by ``launch/setup.sh``) asks the server who the user is as
soon as a client exists, and its settings objects need a client: building them needs a server
that answers ``/api/v1/me``. Imported only by ``rayrlhf label --argilla-url``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rayrlhf.data.labelling import read_records


def client(api_url: str, api_key: str) -> Any:
    """An Argilla client (it becomes the SDK's default one)."""
    import argilla as rg

    return rg.Argilla(api_url=api_url, api_key=api_key)


def sdk_settings(folder: str | Path) -> Any:
    """``rg.Settings`` read from the folder's ``settings.json``."""
    import argilla as rg

    return rg.Settings.from_json(Path(folder) / "settings.json")


def sdk_records(folder: str | Path) -> list[Any]:
    """``rg.Record`` objects of the folder's records (ids kept, every other key a field)."""
    import argilla as rg

    return [
        rg.Record(id=r["id"], fields={k: v for k, v in r.items() if k != "id"})
        for r in read_records(folder)
    ]


def push(
    folder: str | Path, api_url: str, api_key: str, name: str, workspace: str | None = None
) -> Any:
    """Create dataset ``name`` on the server with the folder's settings and log its records."""
    import argilla as rg

    rg_client = client(api_url, api_key)
    dataset = rg.Dataset(
        name=name, workspace=workspace, settings=sdk_settings(folder), client=rg_client
    )
    dataset.create()
    dataset.records.log(records=sdk_records(folder))
    return dataset
