//! The OpenAPI 3.1 description served at `GET /openapi.json`.
//!
//! Written by hand next to the route table in `api`; a test checks that both list the same
//! paths and methods, and that every documented operation is really served.

use serde_json::{Value, json};

use crate::error::ErrorCode;

/// The OpenAPI document of this server version.
pub(crate) fn document() -> Value {
    let codes: Vec<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
    let err = |description: &str| {
        json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
        })
    };
    let overloaded = json!({
        "description": "Queue full (`overloaded`): retry after the `Retry-After` seconds.",
        "headers": { "Retry-After": { "schema": { "type": "integer" } } },
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } }
    });
    let common_errors = |extra: Value| {
        let mut responses = json!({
            "401": err("Missing or wrong bearer token (`unauthorized`)."),
            "503": overloaded.clone(),
            "504": err("The request timed out (`timeout`)."),
            "500": err("Server-side failure (`internal`)."),
        });
        if let (Some(r), Some(extra)) = (responses.as_object_mut(), extra.as_object()) {
            r.extend(extra.clone());
        }
        responses
    };
    let image_errors = json!({
        "400": err("Not a PNG/JPEG image (`invalid_image`), or not at the model's input size \
                    (`wrong_size`): upload the perturbed image at the size `GET /v1/models` \
                    gives."),
        "413": err("Body over the limit (`payload_too_large`) or too many pixels \
                    (`image_too_large`)."),
        "415": err("Unsupported content type (`unsupported_media_type`)."),
        "408": err("The body did not arrive within `body_timeout_ms` (`body_timeout`)."),
    });
    let image_body = json!({ "type": "string", "format": "binary" });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Scrim cloud server",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Classifies images perturbed on the device by the Scrim SDK. Uploads \
                            must be at the model's input size. Errors are JSON objects \
                            `{\"error\": {\"code\", \"message\"}}` with a stable `code`."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": { "error": {
                        "type": "object",
                        "required": ["code", "message"],
                        "properties": {
                            "code": { "type": "string", "enum": codes },
                            "message": { "type": "string" }
                        }
                    }}
                },
                "LabelScore": {
                    "type": "object",
                    "required": ["label", "score"],
                    "properties": {
                        "label": { "type": "string" },
                        "score": { "type": "number", "minimum": 0, "maximum": 1 }
                    }
                },
                "Classification": {
                    "type": "object",
                    "required": ["labels", "model", "latency_ms"],
                    "properties": {
                        "labels": { "type": "array", "description": "Best first.",
                                    "items": { "$ref": "#/components/schemas/LabelScore" } },
                        "model": { "type": "string" },
                        "latency_ms": { "type": "number" }
                    }
                },
                "BatchClassification": {
                    "type": "object",
                    "required": ["results", "model", "latency_ms"],
                    "properties": {
                        "results": { "type": "array", "items": {
                            "type": "object",
                            "required": ["labels"],
                            "properties": {
                                "name": { "type": "string" },
                                "labels": { "type": "array",
                                            "items": { "$ref": "#/components/schemas/LabelScore" } }
                            }
                        }},
                        "model": { "type": "string" },
                        "latency_ms": { "type": "number" }
                    }
                },
                "Models": {
                    "type": "object",
                    "required": ["models"],
                    "properties": { "models": { "type": "array", "items": {
                        "type": "object",
                        "required": ["name", "role", "labels", "input", "normalization",
                                     "format_version"],
                        "properties": {
                            "name": { "type": "string" },
                            "role": { "type": "string", "enum": ["recognizer"] },
                            "task": { "type": ["string", "null"] },
                            "labels": { "type": "array", "items": { "type": "string" } },
                            "input": { "type": "object", "properties": {
                                "channels": { "type": "integer" },
                                "height": { "type": "integer" },
                                "width": { "type": "integer" }
                            }},
                            "normalization": { "type": "object", "properties": {
                                "mean": { "type": "array", "items": { "type": "number" } },
                                "std": { "type": "array", "items": { "type": "number" } }
                            }},
                            "key": { "type": ["object", "null"] },
                            "format_version": { "type": "integer" },
                            "run_name": { "type": ["string", "null"], "description":
                                "The training run the recognizer comes from (null for models \
                                 exported before run names existed)." },
                            "run_id": { "type": ["string", "null"], "description":
                                "The run's id (16 hex digits); the perturber co-trained with \
                                 this recognizer carries the same one. Null for older models." },
                            "level": { "type": "integer" },
                            "tiers": { "type": "array", "items": { "type": "string" } }
                        }
                    }},
                    "levels": { "type": "array", "items": {
                        "type": "object",
                        "required": ["level", "tiers"],
                        "properties": {
                            "level": { "type": "integer" },
                            "of": { "type": ["integer", "null"] },
                            "tiers": { "type": "array", "items": { "type": "string" } }
                        }
                    }}}
                },
                "Status": {
                    "type": "object",
                    "properties": { "status": { "type": "string" } }
                }
            }
        },
        "paths": {
            "/v1/classify": { "post": {
                "operationId": "classify",
                "summary": "Classify one perturbed image.",
                "security": [{ "bearer": [] }],
                "requestBody": { "required": true, "content": {
                    "image/png": { "schema": image_body },
                    "image/jpeg": { "schema": image_body }
                }},
                "responses": common_errors(json!({
                    "200": { "description": "Labels, best first.", "content": {
                        "application/json": {
                            "schema": { "$ref": "#/components/schemas/Classification" } } } },
                    "400": image_errors["400"],
                    "413": image_errors["413"],
                    "415": image_errors["415"],
                    "408": image_errors["408"],
                }))
            }},
            "/v1/classify/batch": { "post": {
                "operationId": "classifyBatch",
                "summary": "Classify several perturbed images: one multipart part per image \
                            (each image/png or image/jpeg). The whole request fails if one \
                            image is bad; the message names the image.",
                "security": [{ "bearer": [] }],
                "requestBody": { "required": true, "content": { "multipart/form-data": {
                    "schema": { "type": "object", "additionalProperties": image_body }
                }}},
                "responses": common_errors(json!({
                    "200": { "description": "One result per part, in order.", "content": {
                        "application/json": {
                            "schema": { "$ref": "#/components/schemas/BatchClassification" } } } },
                    "400": image_errors["400"],
                    "413": image_errors["413"],
                    "415": image_errors["415"],
                    "408": image_errors["408"],
                }))
            }},
            "/v1/models": { "get": {
                "operationId": "models",
                "summary": "The model the caller is served by: its manifest, without secrets.",
                "security": [{ "bearer": [] }],
                "responses": {
                    "200": { "description": "Models.", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Models" } } } },
                    "401": err("Missing or wrong bearer token (`unauthorized`).")
                }
            }},
            "/healthz": { "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process serves HTTP.",
                "responses": { "200": { "description": "Alive.", "content": {
                    "application/json": { "schema": { "$ref": "#/components/schemas/Status" } } } } }
            }},
            "/readyz": { "get": {
                "operationId": "readyz",
                "summary": "Readiness: the model is loaded and the server is not draining.",
                "responses": {
                    "200": { "description": "Ready.", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Status" } } } },
                    "503": { "description": "Shutting down.", "content": { "application/json": {
                        "schema": { "$ref": "#/components/schemas/Status" } } } }
                }
            }},
            "/metrics": { "get": {
                "operationId": "metrics",
                "summary": "Prometheus metrics (text exposition format 0.0.4).",
                "responses": { "200": { "description": "Metrics.", "content": {
                    "text/plain": { "schema": { "type": "string" } } } } }
            }},
            "/openapi.json": { "get": {
                "operationId": "openapi",
                "summary": "This document.",
                "responses": { "200": { "description": "OpenAPI 3.1.", "content": {
                    "application/json": { "schema": { "type": "object" } } } } }
            }}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::Route;

    fn documented() -> Vec<(String, String)> {
        let doc = document();
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for method in item.as_object().into_iter().flatten().map(|(m, _)| m) {
                out.push((path.clone(), method.to_ascii_uppercase()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn documents_exactly_the_route_table() {
        let mut routes: Vec<(String, String)> = Route::ALL
            .iter()
            .map(|r| (r.path().to_owned(), r.method().as_str().to_owned()))
            .collect();
        routes.sort();
        assert_eq!(documented(), routes);
    }

    #[test]
    fn authenticated_routes_declare_security() {
        let doc = document();
        for r in Route::ALL {
            let op = &doc["paths"][r.path()][r.method().as_str().to_ascii_lowercase()];
            assert_eq!(op["security"].is_array(), r.authenticated(), "{r:?}");
            assert!(op["responses"]["200"].is_object(), "{r:?}");
        }
        let codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
            ["code"]["enum"]
            .as_array()
            .map(Vec::len);
        assert_eq!(codes, Some(ErrorCode::ALL.len()));
    }
}
