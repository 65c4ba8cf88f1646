use std::collections::{BTreeSet, HashSet};

use serde_json::{Value, json};

use super::*;
use crate::http::{Access, routes};

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut found = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            found.push((method.clone(), path.clone(), op));
        }
    }
    found
}

fn response(name: &str) -> Value {
    json!({ "$ref": format!("#/components/responses/{name}") })
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
fn every_route_is_documented_and_nothing_else_is() {
    let doc = document();
    let served: BTreeSet<(String, String)> = routes()
        .iter()
        .map(|r| (r.method.to_ascii_lowercase(), r.path.to_owned()))
        .collect();
    let documented: BTreeSet<(String, String)> = operations(&doc)
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect();
    assert_eq!(
        served.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "routes without `#[utoipa::path]` in the OpenApi derive's `paths(...)`"
    );
    assert_eq!(
        documented.difference(&served).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "operations that are not routes (method or path differ from the table)"
    );
    for route in routes() {
        let op = &doc["paths"][route.path][route.method.to_ascii_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{} {} has no 2xx response",
            route.method,
            route.path
        );
        assert_eq!(responses["default"], response("Error"));
    }
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
fn it_is_an_openapi_3_1_document_whose_references_resolve() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["title"], "Mamba Host Panel API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    for name in [
        "Error",
        "User",
        "Tenant",
        "Member",
        "Server",
        "Backup",
        "Node",
        "ServerState",
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
            let ok = responses
                .as_object()
                .unwrap()
                .iter()
                .find(|(s, _)| s.starts_with('2'));
            let headers = &ok.unwrap().1["headers"];
            assert!(headers["X-RateLimit-Remaining"].is_object(), "{what}");
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
        let templated: Vec<&str> = routes::path_parameters(route.path).collect();
        assert_eq!(declared, templated, "{what}");
    }
    let rate_limited = &doc["components"]["responses"]["RateLimited"];
    assert!(rate_limited["headers"]["Retry-After"].is_object());
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
}

#[test]
fn enums_follow_authz_and_the_stored_states() {
    use crate::db::entities::states::{ServerState, names};
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
    assert_eq!(
        schemas["ServerState"]["enum"],
        json!(names::<ServerState>())
    );
}

#[test]
fn bodies_refusing_unknown_fields_say_so() {
    let doc = document();
    let schemas = &doc["components"]["schemas"];
    for name in [
        "NewTenant",
        "NewServer",
        "ServerPatch",
        "NewTemplate",
        "Limits",
        "Power",
    ] {
        assert_eq!(
            schemas[name]["additionalProperties"],
            json!(false),
            "{name}"
        );
    }
    assert_eq!(
        schemas["Register"]["properties"]["email"]["format"],
        "email"
    );
    assert_eq!(
        schemas["NewInvitation"]["properties"]["email"]["format"],
        "email"
    );
    let variables = &schemas["NewTemplate"]["properties"]["variables"];
    assert_eq!(
        variables["uniqueItems"], true,
        "a name declared twice is refused"
    );
    assert_eq!(variables["maxItems"], 32);
    let one_of = &schemas["MfaLogin"]["allOf"][1]["oneOf"];
    let required: Vec<&Value> = one_of
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["required"])
        .collect();
    assert_eq!(required, [&json!(["code"]), &json!(["recovery_code"])]);
    let optional = &doc["paths"]["/api/admin/nodes/{id}/join-tokens"]["post"]["requestBody"];
    assert_eq!(
        optional["required"],
        Value::Null,
        "the body may be left out"
    );
    assert_eq!(
        optional["content"]["application/json"]["schema"],
        json!({ "$ref": "#/components/schemas/NewJoinToken" }),
        "but is never null"
    );
}

#[test]
fn creates_link_to_what_they_made() {
    let doc = document();
    let created = &doc["paths"]["/api/tenants/{tid}/servers"]["post"]["responses"]["201"];
    let link = &created["links"]["get_api_tenants_tid_servers_sid"];
    assert_eq!(link["operationId"], "get_api_tenants_tid_servers_sid");
    assert_eq!(link["parameters"]["sid"], "$response.body#/id");
    assert_eq!(link["parameters"]["tid"], "$request.path.tid");
    let power = &doc["paths"]["/api/tenants/{tid}/servers/{sid}/power"]["post"]["responses"]["202"];
    let link = &power["links"]["get_api_tenants_tid_servers_sid_commands_cid"];
    assert_eq!(link["parameters"]["cid"], "$response.body#/command_id");
    let member = &doc["paths"]["/api/tenants/{tid}/members"]["post"]["responses"]["201"];
    let link = &member["links"]["delete_api_tenants_tid_members_uid"];
    assert_eq!(link["parameters"]["uid"], "$response.body#/user_id");
}
