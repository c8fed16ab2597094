//! The OpenAPI 3 document of `/openapi.json`: every route with its request and response
//! shapes, as `api.rs` defines them.

use serde_json::{json, Value};

fn post(summary: &str, request: Value, response: Value) -> Value {
    json!({"post": {
        "summary": summary,
        "requestBody": {"required": true, "content": {"application/json": {"schema": request}}},
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": response}}},
            "400": {"$ref": "#/components/responses/Error"},
            "401": {"$ref": "#/components/responses/Error"},
            "413": {"$ref": "#/components/responses/Error"},
            "422": {"$ref": "#/components/responses/Error"},
            "429": {"$ref": "#/components/responses/Error"},
            "504": {"$ref": "#/components/responses/Error"}
        }
    }})
}

fn get(summary: &str, content_type: &str, response: Value) -> Value {
    json!({"get": {
        "summary": summary,
        "responses": {"200": {"description": "OK", "content": {content_type: {"schema": response}}}}
    }})
}

pub(crate) fn document() -> Value {
    let strings = json!({"oneOf": [
        {"type": "string"},
        {"type": "array", "items": {"type": "string"}}
    ]});
    let text_or_pair =
        json!({"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 2});
    let predict_inputs = json!({"oneOf": [
        {"type": "string"},
        text_or_pair,
        {"type": "array", "items": text_or_pair}
    ]});
    let label_scores =
        json!({"type": "array", "items": {"$ref": "#/components/schemas/LabelScore"}});
    let generate_request = json!({"type": "object", "required": ["inputs"], "properties": {
        "inputs": {"type": "string"},
        "parameters": {"$ref": "#/components/schemas/GenerateParameters"},
        "model": {"type": "string"}
    }});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "hone serve", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Text Embeddings Inference and Text Generation Inference routes over hone's models"},
        "paths": {
            "/embed": post("Sentence embeddings (TEI)", json!({"type": "object", "required": ["inputs"], "properties": {
                "inputs": strings, "truncate": {"type": "boolean", "default": false},
                "normalize": {"type": "boolean", "default": true}, "model": {"type": "string"}}}),
                json!({"type": "array", "items": {"type": "array", "items": {"type": "number"}}})),
            "/predict": post("Sequence classification (TEI)", json!({"type": "object", "required": ["inputs"], "properties": {
                "inputs": predict_inputs, "truncate": {"type": "boolean", "default": false},
                "raw_scores": {"type": "boolean", "default": false}, "model": {"type": "string"}}}),
                json!({"oneOf": [label_scores, {"type": "array", "items": label_scores}]})),
            "/tokenize": post("Tokens with byte offsets (TEI)", json!({"type": "object", "required": ["inputs"], "properties": {
                "inputs": strings, "add_special_tokens": {"type": "boolean", "default": true}, "model": {"type": "string"}}}),
                json!({"type": "array", "items": {"type": "array", "items": {"$ref": "#/components/schemas/SimpleToken"}}})),
            "/ner": post("Entities with character offsets (hone)", json!({"type": "object", "required": ["inputs"], "properties": {
                "inputs": strings, "model": {"type": "string"}}}),
                json!({"type": "array", "items": {"$ref": "#/components/schemas/Entity"}})),
            "/generate": post("Text generation (TGI)", generate_request.clone(),
                json!({"type": "object", "properties": {"generated_text": {"type": "string"},
                       "details": {"$ref": "#/components/schemas/Details"}}})),
            "/generate_stream": {"post": {
                "summary": "Text generation as server-sent events (TGI)",
                "requestBody": {"required": true, "content": {"application/json": {"schema": generate_request}}},
                "responses": {"200": {"description": "one `data:` event per token; the last has generated_text and details",
                    "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/StreamResponse"}}}}}
            }},
            "/health": get("200 while serving, 503 while shutting down", "text/plain", json!({"type": "string"})),
            "/info": get("Models and limits", "application/json", json!({"type": "object"})),
            "/metrics": get("Prometheus metrics", "text/plain", json!({"type": "string"})),
            "/openapi.json": get("This document", "application/json", json!({"type": "object"}))
        },
        "components": {
            "schemas": {
                "LabelScore": {"type": "object", "properties": {"score": {"type": "number"}, "label": {"type": "string"}}},
                "SimpleToken": {"type": "object", "properties": {"id": {"type": "integer"}, "text": {"type": "string"},
                    "special": {"type": "boolean"}, "start": {"type": "integer", "nullable": true}, "stop": {"type": "integer", "nullable": true}}},
                "Entity": {"type": "object", "properties": {"entity_group": {"type": "string"}, "score": {"type": "number"},
                    "word": {"type": "string"}, "start": {"type": "integer"}, "end": {"type": "integer"}}},
                "GenerateParameters": {"type": "object", "properties": {
                    "do_sample": {"type": "boolean", "default": false}, "max_new_tokens": {"type": "integer", "default": 100},
                    "temperature": {"type": "number"}, "top_k": {"type": "integer"}, "top_p": {"type": "number"},
                    "stop": {"type": "array", "items": {"type": "string"}}, "seed": {"type": "integer"},
                    "details": {"type": "boolean", "default": false}, "return_full_text": {"type": "boolean", "default": false}}},
                "Details": {"type": "object", "properties": {
                    "finish_reason": {"type": "string", "enum": ["length", "eos_token", "stop_sequence"]},
                    "generated_tokens": {"type": "integer"}, "seed": {"type": "integer", "nullable": true}}},
                "StreamResponse": {"type": "object", "properties": {"index": {"type": "integer"},
                    "token": {"type": "object", "properties": {"id": {"type": "integer"}, "text": {"type": "string"},
                        "logprob": {"type": "number", "nullable": true}, "special": {"type": "boolean"}}},
                    "generated_text": {"type": "string", "nullable": true},
                    "details": {"$ref": "#/components/schemas/Details"}}},
                "Error": {"type": "object", "properties": {"error": {"type": "string"}, "error_type": {"type": "string"}}}
            },
            "responses": {"Error": {"description": "an error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        }
    })
}
