"""The OpenAPI document the node serves: a valid OpenAPI 3.1 document, generated from
the app itself, naming every route of it, and every request example in it
accepted by its model (and by the JSON schema the document gives for it)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from aienv.api.access import PEER_ROUTES
from aienv.api.app import routes_only
from aienv.api.openapi import Doc, build, routes


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return build(routes_only())


def test_it_is_a_valid_openapi_document(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"] == "3.1.0"


def test_every_route_of_the_app_is_in_it(document: dict[str, Any]) -> None:
    app = routes_only()
    listed = {(m.lower(), p) for p, ops in document["paths"].items() for m in ops}
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD"}  # fmt: skip
    served = {(m, f"{p}/{{file}}" if p.startswith("/ui") else p) for m, p in served}
    assert listed == served
    assert len(listed) >= 50


def test_every_operation_says_what_it_does_and_who_may(document: dict[str, Any]) -> None:
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (method, path)
            expected = "peer" if method == "get" and path in PEER_ROUTES else "admin"
            if path.startswith("/api/v1/member/"):
                expected = "member"  # signed by a paired node
            assert op["x-aienv-role"] == expected, (method, path)
            for name in [p["name"] for p in op.get("parameters", []) if p["in"] == "path"]:
                assert f"{{{name}}}" in path


def test_every_body_example_is_accepted_by_its_model_and_schema(
    document: dict[str, Any],
) -> None:
    examples = 0
    for _, _, route in routes(routes_only()):
        described = getattr(route.handler, "__openapi__", None)
        if not isinstance(described, Doc) or described.body is None:
            continue
        assert described.example is not None, f"{route.handler.__name__}: give an example"
        described.body.model_validate(described.example)
        jsonschema.validate(described.example, _standalone(described.body.__name__, document))
        examples += 1
    assert examples >= 10


def test_an_example_its_schema_refuses_is_caught(document: dict[str, Any]) -> None:
    """The check above can fail: an unknown key is refused by the model and the schema."""
    from pydantic import ValidationError

    from aienv.api.environments import Launch

    bad = {"workspace": "hello", "bogus": 1}
    with pytest.raises(ValidationError):
        Launch.model_validate(bad)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, _standalone("Launch", document))


def _standalone(name: str, document: dict[str, Any]) -> dict[str, Any]:
    """Component ``name`` as a JSON schema of its own, its references resolvable."""
    components = json.dumps(document["components"]["schemas"])
    defs = json.loads(components.replace("#/components/schemas/", "#/$defs/"))
    return {**defs[name], "$defs": defs}
