//! OpenAPI links from each create to the operations on what it made, read off the route table:
//! a `POST` (or `PUT`) at `P` that answers JSON links to every route under `P/{x}` whose other
//! parameters it has itself, `x` taken from the answer's `id` (`user_id` for members); a power
//! action or a restore links to the command it started (`command_id`); a `PUT` that creates
//! (secrets) links to the other methods of its path. Clients and schemathesis's stateful phase
//! follow them: create → read → update → delete.

use std::collections::BTreeMap;

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::{OpenApi, RefOr};

use super::routes::{operation_id, path_parameters};
use crate::http::Route;

/// Adds the links to the 2xx responses of every create of `openapi`.
pub(super) fn add(openapi: &mut OpenApi) {
    let routes = crate::http::routes();
    for source in routes.iter().filter(|r| matches!(r.method, "POST" | "PUT")) {
        let links = links_of(source, &routes);
        if links.is_empty() {
            continue;
        }
        let Some(operation) = operation_mut(openapi, source) else {
            continue;
        };
        for (status, response) in operation.responses.responses.iter_mut() {
            if !status.starts_with('2') {
                continue;
            }
            if let RefOr::T(response) = response {
                for (name, link) in &links {
                    response.links.insert(name.clone(), RefOr::T(link.clone()));
                }
            }
        }
    }
}

/// The links of `source`: the target's operation id → the link.
fn links_of(source: &Route, routes: &[Route]) -> BTreeMap<String, utoipa::openapi::link::Link> {
    let known: Vec<&str> = path_parameters(source.path).collect();
    let mut links = BTreeMap::new();
    for target in routes {
        // A create under what was made (a member, a server of a new tenant) is not an act on
        // it: its 404 may be about its own input (an unknown user), not the parent.
        let creates = target.method == "POST"
            && routes
                .iter()
                .any(|r| r.method == "GET" && r.path == target.path);
        if target == source || creates {
            continue;
        }
        let Some((new, field)) = made_by(source, target) else {
            continue;
        };
        let mut link = LinkBuilder::new().operation_id(operation_id(target));
        let mut complete = true;
        for name in path_parameters(target.path) {
            if Some(name) == new {
                link = link.parameter(name, format!("$response.body#/{field}"));
            } else if known.contains(&name) {
                link = link.parameter(name, format!("$request.path.{name}"));
            } else {
                complete = false;
            }
        }
        if complete {
            let description = format!("{} {} on what this made", target.method, target.path);
            links.insert(operation_id(target), link.description(description).build());
        }
    }
    links
}

/// Whether `target` acts on what `source` made: the new path parameter (none when the source's
/// own path names it) and the field of the answer that holds it.
fn made_by(source: &Route, target: &Route) -> Option<(Option<&'static str>, &'static str)> {
    let commands = ["/power", "/restore"];
    if commands.iter().any(|end| source.path.ends_with(end)) {
        let server = source.path.find("/servers/{sid}")? + "/servers/{sid}".len();
        let command = format!("{}/commands/{{cid}}", &source.path[..server]);
        return (target.path == command).then_some((Some("cid"), "command_id"));
    }
    if source.method == "PUT" {
        return (target.path == source.path).then_some((None, ""));
    }
    let rest = target.path.strip_prefix(source.path)?.strip_prefix("/{")?;
    let name = &rest[..rest.find('}')?];
    let name = path_parameters(target.path).find(|p| *p == name)?;
    let field = if name == "uid" { "user_id" } else { "id" };
    Some((Some(name), field))
}

/// utoipa 5 writes a link's fields in snake case (`operation_id`); OpenAPI spells them in
/// camel case (`operationId`), which is what clients and schemathesis read.
pub(super) fn spell_as_openapi(document: &mut serde_json::Value) {
    use serde_json::Value;
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(Value::as_object_mut) else {
            continue;
        };
        for link in links.values_mut().filter_map(Value::as_object_mut) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("operation_ref", "operationRef"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_owned(), value);
                }
            }
        }
    }
}

fn operation_mut<'a>(openapi: &'a mut OpenApi, route: &Route) -> Option<&'a mut Operation> {
    let item = openapi.paths.paths.get_mut(route.path)?;
    match route.method {
        "POST" => item.post.as_mut(),
        "PUT" => item.put.as_mut(),
        _ => None,
    }
}
