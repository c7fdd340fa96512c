"""The /items resource: CRUD through the real dependency, and the 4xx answers."""

from __future__ import annotations

import pytest
from httpx import AsyncClient


async def create(
    client: AsyncClient, name: str, description: str | None = None
) -> dict[str, object]:
    response = await client.post("/items", json={"name": name, "description": description})
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


async def test_create_returns_the_stored_item(client: AsyncClient) -> None:
    item = await create(client, "lamp", "a desk lamp")

    assert item["name"] == "lamp"
    assert item["description"] == "a desk lamp"
    fetched = await client.get(f"/items/{item['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == item


async def test_description_is_optional(client: AsyncClient) -> None:
    response = await client.post("/items", json={"name": "chair"})

    assert response.status_code == 201
    assert response.json()["description"] is None


async def test_text_is_stored_as_text_not_sql(client: AsyncClient) -> None:
    hostile = "x'); DROP TABLE items; --"
    item = await create(client, hostile, 'ünïcødé ✓ "quoted"')

    fetched = (await client.get(f"/items/{item['id']}")).json()
    assert fetched["name"] == hostile
    assert fetched["description"] == 'ünïcødé ✓ "quoted"'
    assert (await client.get("/items")).status_code == 200


async def test_list_pages_with_limit_and_offset(client: AsyncClient) -> None:
    ids = [(await create(client, f"item-{n}"))["id"] for n in range(5)]

    default = (await client.get("/items")).json()
    page = (await client.get("/items", params={"limit": 2, "offset": 1})).json()

    assert [item["id"] for item in default] == ids
    assert [item["id"] for item in page] == ids[1:3]


async def test_list_defaults_to_twenty_items(client: AsyncClient) -> None:
    for n in range(25):
        await create(client, f"item-{n}")

    assert len((await client.get("/items")).json()) == 20


async def test_delete_removes_the_item(client: AsyncClient) -> None:
    item = await create(client, "temporary")

    deleted = await client.delete(f"/items/{item['id']}")

    assert deleted.status_code == 204
    assert deleted.content == b""
    assert (await client.get(f"/items/{item['id']}")).status_code == 404


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_missing_item_is_404(client: AsyncClient, method: str) -> None:
    response = await client.request(method, "/items/424242")

    assert response.status_code == 404
    assert response.json() == {"detail": "item 424242 not found"}


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": 101}, {"limit": "ten"}, {"offset": -1}, {"limit": 2**63}],
    ids=["limit-0", "limit-101", "limit-text", "offset-negative", "limit-overflow"],
)
async def test_out_of_range_paging_is_422(
    client: AsyncClient, params: dict[str, int | str]
) -> None:
    assert (await client.get("/items", params=params)).status_code == 422


@pytest.mark.parametrize("item_id", ["0", "-1", "abc", str(2**31), str(2**64)])
async def test_invalid_item_id_is_422(client: AsyncClient, item_id: str) -> None:
    assert (await client.get(f"/items/{item_id}")).status_code == 422


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": ""},
        {"name": None},
        {"name": "x" * 201},
        {"name": "nul\x00byte"},
        {"name": "ok", "description": "d" * 2001},
        {"name": "ok", "unknown": 1},
    ],
    ids=[
        "missing-name",
        "empty-name",
        "null-name",
        "long-name",
        "nul-byte",
        "long-description",
        "unknown-field",
    ],
)
async def test_invalid_body_is_422(client: AsyncClient, body: dict[str, object]) -> None:
    assert (await client.post("/items", json=body)).status_code == 422


async def test_body_that_is_not_utf8_is_4xx(client: AsyncClient) -> None:
    response = await client.post(
        "/items", content=b'{"name": "\xff\xfe"}', headers={"content-type": "application/json"}
    )

    assert 400 <= response.status_code < 500


async def test_body_over_the_limit_is_413(client: AsyncClient) -> None:
    """MAX_BODY_BYTES (1 MiB by default): refused before it is read, not validated."""
    response = await client.post("/items", json={"name": "x" * 5_000_000})

    assert response.status_code == 413
