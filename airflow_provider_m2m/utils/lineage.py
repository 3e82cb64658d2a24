"""
OpenLineage: what the operators read and write, reported the way official providers report it.

Each operator's ``get_openlineage_facets_on_complete`` builds its datasets here. The platform is a dataset
whose namespace is the connection's scheme, host and port (never a login, password or path) and whose name is
the API call, with a ``dataSource`` facet; files are named as Airflow's common-io provider names them
(namespace ``file`` or ``s3://bucket``, name the key). Everything OpenLineage is imported inside the functions:
the ``openlineage`` extra is optional, and the OpenLineage provider calls these only when it is installed.
Files that DAG tasks read or write through ObjectStoragePath (the fleet file, the report) are reported by
Airflow's own hook-level lineage.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit


def platform_namespace(base_url: str) -> str:
    """``scheme://host[:port]`` of a platform URL: credentials, path and query never reach lineage."""
    parts = urlsplit(base_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}"


def platform_dataset(base_url: str, call: str) -> Any:
    """The platform API ``call`` (e.g. ``query_imei``) at ``base_url`` as an OpenLineage dataset."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from openlineage.client.generated.datasource_dataset import DatasourceDatasetFacet

    namespace = platform_namespace(base_url)
    return Dataset(
        namespace=namespace, name=call, facets={"dataSource": DatasourceDatasetFacet(name=namespace, uri=namespace)}
    )


def file_dataset(uri: str) -> Any:
    """An object-storage file (``file://``, ``s3://``...) as an OpenLineage dataset."""
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(uri)
    return Dataset(namespace=path.namespace or "file", name=path.key)


def operator_lineage(inputs: Iterable[Any] = (), outputs: Iterable[Any] = ()) -> Any:
    """The ``OperatorLineage`` an operator returns to the OpenLineage provider."""
    from airflow.providers.openlineage.extractors import OperatorLineage

    return OperatorLineage(inputs=list(inputs), outputs=list(outputs))
