use std::collections::HashSet;

use serde_json::Value;

use super::*;
use crate::http::routes;

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            found.push((method.clone(), path.clone(), op));
        }
    }
    found
}

/// Every string under a `$ref` key anywhere in `value`.
fn refs(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("$ref", Value::String(target)) => found.push(target.clone()),
                    _ => refs(v, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[test]
fn every_route_is_described() {
    assert_eq!(
        undocumented(&routes()),
        Vec::<String>::new(),
        "add an arm to operations::describe (and any new path parameter to parameter_schema)"
    );
}

#[test]
fn every_route_is_an_operation_and_nothing_else_is() {
    let doc = document();
    let routes = routes();
    for route in &routes {
        let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
        assert!(op.is_object(), "{} {} missing", route.method, route.path);
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{} {} has no 2xx response",
            route.method,
            route.path
        );
        assert_eq!(responses["default"], response("Error"));
    }
    let listed = operations(&doc);
    assert_eq!(listed.len(), routes.len(), "one operation per route");
}

#[test]
fn operation_ids_are_unique() {
    let doc = document();
    let mut seen = HashSet::new();
    for (method, path, op) in operations(&doc) {
        let id = op["operationId"].as_str().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "{method} {path}: {id} twice");
    }
}

#[test]
fn it_is_an_openapi_3_document_whose_references_resolve() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.0.3");
    assert_eq!(doc["info"]["title"], "Mamba Host Panel API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["paths"].is_object());
    for name in [
        "Error", "User", "Tenant", "Member", "Server", "Backup", "Node",
    ] {
        assert!(doc["components"]["schemas"][name].is_object(), "{name}");
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let pointer = target.strip_prefix('#').unwrap();
        assert!(doc.pointer(pointer).is_some(), "{target} does not resolve");
    }
}

#[test]
fn access_shapes_security_parameters_and_errors() {
    let doc = document();
    for route in routes() {
        let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
        let what = format!("{} {}", route.method, route.path);
        let responses = &op["responses"];
        if route.access == Access::Public {
            assert_eq!(op["security"], json!([]), "{what}");
        } else {
            assert_eq!(op["security"], json!([{ "bearerAuth": [] }]), "{what}");
            assert_eq!(responses["401"], response("Unauthenticated"), "{what}");
            assert_eq!(responses["429"], response("RateLimited"), "{what}");
        }
        if let Access::Tenant(permissions) = route.access {
            assert_eq!(op["x-permissions"], json!(permissions), "{what}");
            for status in ["400", "403", "404"] {
                assert!(responses[status].is_object(), "{what}: {status}");
            }
        }
        if route.limit.is_some() {
            assert_eq!(responses["429"], response("RateLimited"), "{what}");
        }
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .map(|p| {
                p.iter()
                    .filter(|p| p["in"] == "path")
                    .map(|p| p["name"].as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        let templated: Vec<&str> = path_parameters(route.path).collect();
        assert_eq!(declared, templated, "{what}");
    }
    let components = &doc["components"];
    assert_eq!(
        components["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
}

#[test]
fn nullable_enums_admit_null() {
    fn check(value: &Value) {
        match value {
            Value::Object(map) => {
                if map.get("nullable") == Some(&Value::Bool(true))
                    && let Some(Value::Array(choices)) = map.get("enum")
                {
                    assert!(choices.contains(&Value::Null), "{value}");
                }
                map.values().for_each(check);
            }
            Value::Array(items) => items.iter().for_each(check),
            _ => {}
        }
    }
    check(&document());
}

#[test]
fn enums_follow_authz() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    assert_eq!(
        schemas["Role"]["enum"],
        json!(["owner", "admin", "support", "member"])
    );
    assert_eq!(
        schemas["Permission"]["enum"].as_array().unwrap().len(),
        authz::Permission::ALL.len()
    );
    assert!(
        schemas["Permission"]["enum"]
            .as_array()
            .unwrap()
            .contains(&json!("server:console"))
    );
}
