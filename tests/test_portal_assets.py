"""The hosted page /portal, its assets and the component file: served by the service from the
package, with no inline script or style, revalidated by ETag."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import httpx
import pytest

pytestmark = pytest.mark.both_backends  # the same behaviour on serve and dev


class Inline(HTMLParser):
    """What a strict Content-Security-Policy would refuse in a page: inline scripts, inline
    styles, event-handler attributes, and anything loaded from another origin."""

    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        named = dict(attrs)
        if tag == "script":
            if not named.get("src"):
                self.problems.append("inline <script>")
            self._in_script = True
        if tag == "style":
            self.problems.append("<style> element")
        for name, value in attrs:
            if name == "style" or name.startswith("on"):
                self.problems.append(f"{name}= attribute on <{tag}>")
            if name in {"src", "href"} and value and re.match(r"^(https?:)?//", value):
                self.problems.append(f"{tag} loads {value} from another origin")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.problems.append("script text")


async def test_the_hosted_page_loads_its_script_and_style_from_the_service_only(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/portal")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["referrer-policy"] == "no-referrer"
    checker = Inline()
    checker.feed(response.text)
    assert checker.problems == []
    assert '<script type="module" src="/portal/assets/portal.js">' in response.text
    assert "<m2m-api-tokens>" in response.text


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/portal/assets/portal.js", "text/javascript; charset=utf-8"),
        ("/portal/assets/portal.css", "text/css; charset=utf-8"),
        ("/m2m-api-tokens.js", "text/javascript; charset=utf-8"),
    ],
)
async def test_assets_are_served_with_their_type_and_revalidated_by_etag(
    client: httpx.AsyncClient, path: str, media_type: str
) -> None:
    first = await client.get(path)
    again = await client.get(path, headers={"If-None-Match": first.headers["etag"]})

    assert first.status_code == 200
    assert first.headers["content-type"] == media_type
    assert first.headers["cache-control"] == "no-cache"
    assert again.status_code == 304
    assert again.content == b""


async def test_the_component_and_page_scripts_write_no_markup_from_data(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/m2m-api-tokens.js", "/portal/assets/portal.js"):
        source = (await client.get(path)).text
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", source)
        assert not re.search(r"\beval\(|new Function\(", source)


async def test_an_unknown_asset_is_404(client: httpx.AsyncClient) -> None:
    for path in ("/portal/assets/nope.js", "/portal/assets/..%2Fportal.html"):
        response = await client.get(path)
        assert response.status_code == 404, path
