"""
The fleet file: a CSV on object storage with one SIM per row, read the same way everywhere.

The rule, in one place: line 1 is a header with exactly one ``iccid`` column, named in any case (``iccid``,
``ICCID``, ``Iccid``); any other columns are kept as they are. Every reader of a fleet or batch file
(``QueryImeiOperator(iccids_uri=...)``, the fleet audit's plan, the SMS run) goes through :func:`read_fleet`,
so a header without the column fails with the same message wherever the file is read, naming the file, line 1,
the rule and the header it found, before anything is sent. What each row's ICCID must look like is the
reader's own rule (:mod:`airflow_provider_m2m.protocol.iccid`).
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import closing

from airflow_provider_m2m.exceptions import InvalidRequestError

#: The key each row's ICCID is under, whatever the header's spelling.
ICCID = "iccid"


def fleet_columns(header: list[str], source: str) -> list[str]:
    """
    The header's columns with the ICCID column named ``iccid``.

    :param header: line 1 of the file, as read.
    :param source: how messages name the file, e.g. ``fleet file s3://fleet/fleet.csv``.
    :raises InvalidRequestError: no ``iccid`` column (in any case), or more than one.

    >>> fleet_columns(["ICCID", "asset_name"], "fleet file f.csv")
    ['iccid', 'asset_name']
    >>> fleet_columns(["sim", "asset_name"], "fleet file f.csv")
    Traceback (most recent call last):
        ...
    airflow_provider_m2m.exceptions.InvalidRequestError: fleet file f.csv line 1: the header has no iccid column \
(got sim,asset_name)
    """
    found = [n for n, name in enumerate(header) if name.casefold() == ICCID]
    if not found:
        raise InvalidRequestError(f"{source} line 1", "the header has no iccid column", ",".join(header) or "nothing")
    if len(found) > 1:
        raise InvalidRequestError(f"{source} line 1", "the header has more than one iccid column", ",".join(header))
    return [ICCID if n == found[0] else name for n, name in enumerate(header)]


def read_fleet_lines(uri: str, *, label: str = "fleet file") -> Generator[tuple[int, list[str]], None, None]:
    """
    Stream a fleet file as ``(line number, cells)``: first line 1, the header with the ICCID column named
    ``iccid`` (checked before anything else is yielded, also for a file without rows), then each row as
    :func:`~airflow_provider_m2m.utils.files.read_csv_lines` reads it (cells stripped, as many as the header's;
    blank lines skipped but counted, so a message names the line an editor shows).

    :param uri: the file's object-storage URI (``file://``, ``s3://``...).
    :param label: how messages name the file, before its URI: the argument that gave it (``iccids_uri``) or
        ``fleet file``.
    :raises InvalidRequestError: ``<label> <uri> line 1: the header has no iccid column (got <header>)``,
        ``<label> <uri>: no such file`` (a missing file is bad input: retrying cannot make it appear), or
        ``<label>: a file's URI is required`` (an empty URI, e.g. a param left blank).
    """
    from airflow_provider_m2m.utils.files import read_csv_lines

    if not uri or not str(uri).strip():
        raise InvalidRequestError(label, "a file's URI is required")
    source = f"{label} {uri}"
    lines = read_csv_lines(uri, lambda header: fleet_columns(header, source))
    with closing(lines):  # closes the file also when the caller stops early
        try:
            header = next(lines)  # opens the file and checks the header
        except FileNotFoundError:
            raise InvalidRequestError(source, "no such file: check the URI") from None
        yield header
        yield from lines


def read_fleet(uri: str, *, label: str = "fleet file") -> Generator[dict[str, str], None, None]:
    """
    :func:`read_fleet_lines`' rows as dicts, each SIM's ICCID under the key ``iccid``; the header is checked
    before the first row is yielded (also for a file without rows). Raises as :func:`read_fleet_lines`.
    """
    lines = read_fleet_lines(uri, label=label)
    with closing(lines):
        _, header = next(lines)
        for _, cells in lines:
            yield dict(zip(header, cells, strict=True))


def fleet_iccids(uri: str, *, label: str = "fleet file") -> Generator[str, None, None]:
    """
    The ICCIDs of a fleet file (other columns are ignored), each checked by the rule every list of ICCIDs
    follows (:func:`airflow_provider_m2m.protocol.iccid.validate`: spaces and dashes between groups go).
    Streamed: the first bad line raises before the rest is read.

    :param uri: the file's object-storage URI.
    :param label: how messages name the file (see :func:`read_fleet_lines`).
    :raises InvalidRequestError: as :func:`read_fleet_lines`, or naming the file, the line and the ICCID rule.
    """
    from airflow_provider_m2m.protocol import iccid as iccid_rules

    lines = read_fleet_lines(uri, label=label)
    with closing(lines):
        _, header = next(lines)
        at = header.index(ICCID)
        for line, cells in lines:
            try:
                yield iccid_rules.validate(cells[at])
            except InvalidRequestError as exc:  # named here, not per row: a batch file holds up to 250,000 lines
                raise InvalidRequestError(f"{label} {uri} line {line}: {exc.field}", exc.rule, exc.value) from None


__all__ = ["ICCID", "fleet_columns", "fleet_iccids", "read_fleet", "read_fleet_lines"]
