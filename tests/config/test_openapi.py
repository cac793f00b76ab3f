"""The OpenAPI schema and its docs pages are served from this server, no CDN."""

from __future__ import annotations

import re

import yaml


def test_the_schema_describes_the_usage_api(client, db):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    schema = yaml.safe_load(response.content)
    assert {"/api/v1/events", "/api/v1/quote", "/api/v1/usage"} <= set(schema["paths"])
    assert schema["components"]["securitySchemes"]["ApiKey"] == {
        "type": "http", "scheme": "bearer", "description": "An API key secret (mbk_…).",
    }
    usage_params = {p["name"] for p in schema["paths"]["/api/v1/usage"]["get"]["parameters"]}
    assert {"start", "end", "group_by"} <= usage_params
    event = schema["components"]["schemas"]["EventRequest"]["properties"]
    assert event["steps"]["maximum"] == 1000 and event["width"]["minimum"] == 64


def test_the_docs_page_loads_its_assets_locally(client, db):
    # (ReDoc is not served: its page pulls web fonts from Google.)
    for path in ("/api/docs/",):
        page = client.get(path).content.decode()
        assets = re.findall(r'(?:src|href)="([^"]+)"', page)
        assert assets, path
        assert all(not a.startswith(("http://", "https://", "//")) for a in assets), assets
        for asset in assets:
            if asset.startswith("/static/"):
                assert client.get(asset).status_code == 200, asset
