"""Progressive listings (jettui extension): lsAsync with pageSize, read with getRequestPage.

Called through jettui.api against a real server on loopback, as the commander does.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from jettui.api import APIInterface, CommandError
from jettui.constants import LS_TYPE_DIRECTORY, LS_TYPE_REGULAR
from tests.helpers import ServerThread, running_server


@pytest.fixture
def api(server: ServerThread):
    with server.api() as api:
        api.server.auth("alice", "alice-pw")
        yield api


def read_pages(
    api: APIInterface, request: dict[str, Any], max_entries: int = 10_000, offset: int = 0
) -> list[dict[str, Any]]:
    """Every page of a progressive request from ``offset`` on, in order."""
    pages = []
    while True:
        page = api.server.getRequestPage(request, offset, max_entries)
        assert page["offset"] == offset
        assert page["requestId"] == request["requestId"]
        assert len(page["files"]) <= max_entries
        pages.append(page)
        offset += len(page["files"])
        if page["done"]:
            return pages
        assert page["files"], "a page that is not the last one holds entries"


def entries(pages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for page in pages for entry in page["files"]]


def make_dir(path: Path, files: int, dirs: int) -> None:
    path.mkdir()
    for i in range(files):
        # Mixed case, so the order is visibly case-folded: "B-..." sorts between "a-..." and "c-...".
        (path / f"{'aBc'[i % 3]}-{i:05d}.dat").write_bytes(b"x" * (i % 7))
    for i in range(dirs):
        (path / f"{'Dd'[i % 2]}ir-{i:04d}").mkdir()
    (path / ".hidden").write_text("h")


def folded_order(files: list[dict[str, Any]]) -> list[str]:
    dirs = sorted((f["name"] for f in files if f["type"] == LS_TYPE_DIRECTORY), key=str.casefold)
    others = sorted((f["name"] for f in files if f["type"] != LS_TYPE_DIRECTORY), key=str.casefold)
    return dirs + others


def test_pages_hold_the_whole_listing_in_folded_order(api: APIInterface, tmp_path: Path) -> None:
    big = tmp_path / "big"
    make_dir(big, files=2_400, dirs=120)
    seed = api.server.getRequestResult(api.server.lsAsync(str(big)))
    request = api.server.lsAsync(str(big), pageSize=100)
    assert request["requestId"] and set(request) >= {"requestId", "status"}
    pages = read_pages(api, request, max_entries=700)
    files = entries(pages)
    assert len(pages) >= 4  # 2,521 entries at most 700 a page
    assert all(page["expected"] == 2_521 for page in pages)
    # The same entries as the seed listing, directories first, then by case-folded name.
    assert sorted(files, key=lambda f: f["name"]) == sorted(seed["files"], key=lambda f: f["name"])
    assert [f["name"] for f in files] == folded_order(seed["files"])
    assert files[0]["type"] == LS_TYPE_DIRECTORY and files[-1]["type"] == LS_TYPE_REGULAR
    # The seed call still answers with the whole listing, in the same order as the pages.
    assert api.server.getRequestResult(request) == {"path": str(big), "files": files}
    # A page past the end of a finished listing is empty and done.
    assert api.server.getRequestPage(request, len(files)) == {
        "requestId": request["requestId"],
        "offset": len(files),
        "files": [],
        "expected": 2_521,
        "done": True,
    }


def test_first_page_then_the_rest(api: APIInterface, tmp_path: Path) -> None:
    big = tmp_path / "big"
    make_dir(big, files=3_000, dirs=0)
    request = api.server.lsAsync(str(big), pageSize=50)
    first = api.server.getRequestPage(request, 0, 50)
    assert len(first["files"]) == 50
    assert [f["name"] for f in first["files"]] == sorted((f["name"] for f in first["files"]), key=str.casefold)
    rest = read_pages(api, request, max_entries=100_000, offset=50)
    names = [f["name"] for f in first["files"]] + [f["name"] for page in rest for f in page["files"]]
    assert len(names) == len(set(names)) == 3_001
    assert names == sorted(names, key=str.casefold)


def test_wait_for_end_answers_once_the_listing_is_whole(api: APIInterface, tmp_path: Path) -> None:
    big = tmp_path / "big"
    make_dir(big, files=3_000, dirs=10)
    request = api.server.lsAsync(str(big), pageSize=20)
    first = api.server.getRequestPage(request, 0, 20)
    rest = api.server.getRequestPage(request, len(first["files"]), 200_000, waitForEnd=True)
    # Everything else in one answer: the request had ended before the page was cut.
    assert rest["done"] and len(first["files"]) + len(rest["files"]) == 3_011
    assert api.server.getRequestStatus(request)["status"] == "success"
    with pytest.raises(CommandError, match="'waitForEnd' must be bool"):
        api.server.getRequestPage(request, 0, 10, "yes")
    failed = api.server.lsAsync(str(tmp_path / "missing"), pageSize=10)
    with pytest.raises(CommandError, match="(?i)no such|not exist|not found"):
        api.server.getRequestPage(failed, 0, 10, waitForEnd=True)


def test_small_and_odd_listings(api: APIInterface, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    data = os.urandom(5_000)
    (tmp_path / "f").write_bytes(data)
    # An empty directory: one empty, finished page.
    pages = read_pages(api, api.server.lsAsync(str(tmp_path / "empty"), pageSize=10))
    assert [(p["files"], p["expected"], p["done"]) for p in pages] == [([], 0, True)]
    # A file, and directory=True: the single entry of the path itself.
    pages = read_pages(api, api.server.lsAsync(str(tmp_path / "f"), pageSize=10))
    assert len(pages) == 1  # a listing that fits the first page is done with it
    assert [(f["name"], f["size"]) for f in entries(pages)] == [("f", 5_000)]
    files = entries(read_pages(api, api.server.lsAsync(str(tmp_path / "empty"), directory=True, pageSize=10)))
    assert [(f["name"], f["type"]) for f in files] == [("empty", LS_TYPE_DIRECTORY)]
    # Hashes are computed per page.
    pages = read_pages(api, api.server.lsAsync(str(tmp_path), calculateHashType="MD5", pageSize=1))
    hashes = {f["name"]: f["hash"] for f in entries(pages)}
    assert hashes["empty"] == "" and hashes["f"] == hashlib.md5(data).hexdigest()


def test_errors_come_through_the_pages(api: APIInterface, tmp_path: Path) -> None:
    request = api.server.lsAsync(str(tmp_path / "missing"), pageSize=10)
    with pytest.raises(CommandError, match="(?i)no such|not exist|not found"):
        api.server.getRequestPage(request)
    with pytest.raises(CommandError, match="(?i)no such|not exist|not found"):
        api.server.getRequestResult(request)


def test_the_entry_limit_applies_to_pages(tmp_path: Path) -> None:
    big = tmp_path / "big"
    make_dir(big, files=30, dirs=0)
    with running_server(max_ls_entries=20) as st:
        st.add_user("alice", "alice-pw")
        with st.api() as api:
            api.server.auth("alice", "alice-pw")
            request = api.server.lsAsync(str(big), pageSize=5)
            with pytest.raises(CommandError, match="more than 20 entries"):
                read_pages(api, request)
            with pytest.raises(CommandError, match="more than 20 entries"):
                api.server.getRequestResult(request)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pageSize": 0}, "pageSize must be from 1 to 100000 entries"),
        ({"pageSize": -5}, "pageSize must be from 1 to 100000 entries"),
        ({"pageSize": 100_001}, "pageSize must be from 1 to 100000 entries"),
        ({"pageSize": "10"}, "'pageSize' must be"),
        ({"pageSize": 2.5}, "'pageSize' must be"),
    ],
)
def test_page_size_is_checked(api: APIInterface, tmp_path: Path, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        api.server.lsAsync(str(tmp_path), **kwargs)
    # The same checks on the server, for clients that skip the client-side ones.
    with pytest.raises(CommandError, match=message):
        api.client.request("server.lsAsync", {"path": str(tmp_path), **kwargs})


def test_get_request_page_is_checked(api: APIInterface, server: ServerThread, tmp_path: Path) -> None:
    paged = api.server.lsAsync(str(tmp_path), pageSize=10)
    with pytest.raises(CommandError, match="offset must not be negative"):
        api.server.getRequestPage(paged, -1)
    with pytest.raises(CommandError, match="maxEntries must be from 1 to 200000"):
        api.server.getRequestPage(paged, 0, 0)
    with pytest.raises(CommandError, match="maxEntries must be from 1 to 200000"):
        api.server.getRequestPage(paged, 0, 200_001)
    with pytest.raises(CommandError, match="'offset' must be int"):
        api.server.getRequestPage(paged, "0")
    with pytest.raises(CommandError, match="request 999999 not found"):
        api.server.getRequestPage(999_999)
    plain = api.server.lsAsync(str(tmp_path))
    with pytest.raises(CommandError, match="has no pages; only lsAsync with pageSize publishes them"):
        api.server.getRequestPage(plain)
    # Requests belong to their owner: another user cannot read the pages.
    with server.api() as other:
        other.server.auth("bob", "bob-pw")
        with pytest.raises(CommandError, match="not found"):
            other.server.getRequestPage(paged)
    assert read_pages(api, paged)[-1]["done"]
