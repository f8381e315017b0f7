"""The OpenAPI 3.1 document of the route table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import (
    BaseModel,
)

from lab_service.api_routes import PATH_TEXT, Route, path_params
from lab_service.api_schemas import KIT_ID, MAX_ID, ErrorView

# ---------------------------------------------------------------- OpenAPI

REF = "#/components/schemas/{model}"


@dataclass
class _Schemas:
    components: dict[str, Any] = field(default_factory=dict)

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        if model.__name__ not in self.components:
            schema = model.model_json_schema(ref_template=REF)
            self.components.update(schema.pop("$defs", {}))
            self.components[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}

    def response(self, spec: Any) -> dict[str, Any]:
        if isinstance(spec, list):
            return {"type": "array", "items": self.ref(spec[0])}
        if isinstance(spec, type) and issubclass(spec, BaseModel):
            return self.ref(spec)
        return spec or {}


def openapi(routes: tuple[Route, ...]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`."""
    schemas = _Schemas()
    error = {
        "description": "refused: the reason in one line",
        "content": {"application/json": {"schema": schemas.ref(ErrorView)}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.op.__name__,
            "responses": {
                str(route.status): {
                    "description": "OK",
                    "content": {route.media: {"schema": schemas.response(route.response)}},
                },
                "4XX": error,
                "5XX": error,
            },
        }
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID}
                if name.endswith("_id") and name != "kit_id"
                else PATH_TEXT.get(name, {"type": "string", "pattern": KIT_ID}),
            }
            for name in path_params(route.path)
        ]
        params += [
            {
                "name": q.name,
                "in": "query",
                "required": q.required,
                "description": q.description,
                "schema": q.schema or {"type": "boolean" if q.kind is bool else "string"},
            }
            for q in route.query
        ]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schemas.ref(route.body)}},
            }
        if route.public:
            op["security"] = []
        if route.admin:
            op["description"] = "Lab admins only."
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Smart City Lab service",
            "version": "1",
            "description": "Queue, bookings and sessions of the shared lab kits.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "'token <token>'",
                }
            },
        },
        "security": [{"token": []}],
    }
