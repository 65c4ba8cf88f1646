//! Templates: what a server runs. A program, an argument list with `{{VAR}}` placeholders, and
//! the variables tenants fill in, each with a validation pattern and an optional default.
//!
//! Values are checked against their pattern (matched whole) and substituted into arguments in
//! one pass: a value becomes part of exactly one argument, is never re-expanded, and nothing
//! ever goes through a shell. The same values are given to the process as environment.

use std::collections::BTreeMap;

use chrono::Utc;
use regex::Regex;
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::db::entities::template;

/// The placeholder (and environment variable) holding the port allocated to the server.
pub const BUILTIN_PORT: &str = "SERVER_PORT";
/// The longest value a variable may hold, in bytes.
pub const MAX_VALUE_BYTES: usize = 4096;
const MAX_ARGS: usize = 64;
const MAX_VARIABLES: usize = 32;
const MAX_PATTERN_BYTES: usize = 512;

/// A declared variable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    /// `[A-Z][A-Z0-9_]{0,63}`; referenced as `{{NAME}}`.
    #[schema(pattern = "^[A-Z][A-Z0-9_]{0,63}$")]
    pub name: String,
    /// A regular expression the whole value must match.
    #[schema(max_length = 512, format = "regex")]
    pub pattern: String,
    /// Used when the server does not set the variable; must match the pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// `POST /api/admin/templates`.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTemplate {
    /// Unique, `[a-z0-9][a-z0-9._-]{0,63}`.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub name: String,
    /// The program: an absolute path or a name looked up in `/usr/local/bin:/usr/bin:/bin`,
    /// without spaces.
    #[schema(min_length = 1, max_length = 1024)]
    pub command: String,
    /// Arguments, each one argument, with `{{VAR}}` placeholders.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub args: Vec<String>,
    /// Declared variables (names unique).
    #[serde(default)]
    #[schema(schema_with = unique_variables)]
    pub variables: Vec<Variable>,
    /// Console input to its servers is audited without its content (passwords typed into a
    /// game console, say).
    #[serde(default)]
    pub sensitive_input: bool,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
}

/// The schema of [`NewTemplate::variables`]: at most 32, no two alike (a name declared twice
/// is refused).
fn unique_variables() -> utoipa::openapi::schema::Array {
    use utoipa::ToSchema;
    let variable = utoipa::openapi::Ref::from_schema_name(Variable::name());
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(variable)
        .max_items(Some(MAX_VARIABLES))
        .unique_items(true)
        .build()
}

/// What a server made from a template may use. Absent fields take the platform defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Memory, MiB (the process is killed, `crashed` with reason `oom`, beyond it).
    #[schema(minimum = 16, maximum = 1_048_576)]
    pub memory_mb: u64,
    /// CPU, percent of one core.
    #[schema(minimum = 1, maximum = 6400)]
    pub cpu_percent: u32,
    /// Processes and threads.
    #[schema(minimum = 8, maximum = 65536)]
    pub max_processes: u32,
    /// Open files per process.
    #[schema(minimum = 64, maximum = 1_048_576)]
    pub open_files: u64,
    /// The server directory's size, MiB; a server over it does not start.
    #[schema(minimum = 1, maximum = 16_777_216)]
    pub disk_mb: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_mb: 1024,
            cpu_percent: 100,
            max_processes: 256,
            open_files: 4096,
            disk_mb: 10 * 1024,
        }
    }
}

impl Limits {
    fn validate(&self) -> Result<(), Error> {
        let ok = (16..=1 << 20).contains(&self.memory_mb)
            && (1..=6400).contains(&self.cpu_percent)
            && (8..=65536).contains(&self.max_processes)
            && (64..=1 << 20).contains(&self.open_files)
            && (1..=1 << 24).contains(&self.disk_mb);
        if ok {
            Ok(())
        } else {
            Err(Error::Invalid(
                "limits: memory_mb 16..1048576, cpu_percent 1..6400, max_processes 8..65536, open_files 64..1048576, disk_mb 1..16777216".into(),
            ))
        }
    }
}

/// A server's variables, checked: literal values, and references to the tenant's secrets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// Variable → value.
    pub values: BTreeMap<String, String>,
    /// Variable → the name of the secret holding its value.
    pub secrets: BTreeMap<String, String>,
}

/// A template read back from the database (as platform admins see it, with its command line).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
#[schema(as = AdminTemplate)]
pub struct Template {
    /// The row's id.
    #[schema(format = Uuid)]
    pub id: String,
    /// Its name.
    pub name: String,
    /// The program.
    pub command: String,
    /// The argument templates.
    pub args: Vec<String>,
    /// The variables.
    pub variables: Vec<Variable>,
    /// See [`NewTemplate::sensitive_input`].
    pub sensitive_input: bool,
    /// Resource limits.
    pub limits: Limits,
}

/// The program, arguments, environment and limits of a server, ready for its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded {
    /// Resource limits.
    pub limits: Limits,
    /// The program.
    pub program: String,
    /// Arguments, each exactly one.
    pub args: Vec<String>,
    /// The variables, as environment.
    pub env: BTreeMap<String, String>,
}

impl TryFrom<template::Model> for Template {
    type Error = Error;

    fn try_from(row: template::Model) -> Result<Template, Error> {
        let corrupt = |e: serde_json::Error| {
            Error::internal(format!("template {} is stored corrupt: {e}", row.name))
        };
        let limits = match &row.limits {
            Some(limits) => serde_json::from_value(limits.clone()).map_err(corrupt)?,
            None => Limits::default(),
        };
        Ok(Template {
            args: serde_json::from_value(row.args.clone()).map_err(corrupt)?,
            variables: serde_json::from_value(row.variables.clone()).map_err(corrupt)?,
            limits,
            id: row.id,
            name: row.name,
            command: row.command,
            sensitive_input: row.sensitive_input,
        })
    }
}

fn valid_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('A'..='Z'))
        && name.len() <= 64
        && chars.all(|c| matches!(c, 'A'..='Z' | '0'..='9' | '_'))
}

/// Variable names a template may not declare: the dynamic loader's and glibc's variables, the
/// interpreter start-up hooks, and what Wings sets itself. A server's variables reach only its
/// own unprivileged process, never a root helper; refusing these too keeps a template from
/// steering a program's loading at all.
const RESERVED_VARIABLES: [&str; 31] = [
    "GCONV_PATH",
    "GETCONF_DIR",
    "GLIBC_TUNABLES",
    "HOSTALIASES",
    "LOCALDOMAIN",
    "LOCPATH",
    "NIS_PATH",
    "NLSPATH",
    "RESOLV_HOST_CONF",
    "RES_OPTIONS",
    "TZDIR",
    "PYTHONSTARTUP",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONINSPECT",
    "PERL5LIB",
    "PERL5OPT",
    "PERLLIB",
    "RUBYOPT",
    "RUBYLIB",
    "NODE_OPTIONS",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "BASH_ENV",
    "ENV",
    "SHELLOPTS",
    "BASHOPTS",
    "IFS",
    "PATH",
    "HOME",
];

/// Whether `name` is a loader or interpreter hook (or Wings' own) that no template may set.
pub fn reserved_variable(name: &str) -> bool {
    name.starts_with("LD_")
        || name.starts_with("MALLOC_")
        || name.starts_with("WINGS_")
        || RESERVED_VARIABLES.contains(&name)
}

fn valid_template_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '0'..='9'))
        && name.len() <= 64
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '.' | '_' | '-'))
}

/// Compiles `pattern` so that it must match a whole value.
fn whole(pattern: &str) -> Result<Regex, Error> {
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(Error::Invalid(format!(
            "a pattern is at most {MAX_PATTERN_BYTES} bytes"
        )));
    }
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::Invalid(format!("pattern {pattern:?} does not compile: {e}")))
}

/// The `{{NAME}}` placeholders of `arg`, in order. Unclosed braces are an error.
fn placeholders(arg: &str) -> Result<Vec<&str>, Error> {
    let mut found = Vec::new();
    let mut rest = arg;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| Error::Invalid(format!("argument {arg:?} has an unclosed {{{{")))?;
        found.push(&after[..end]);
        rest = &after[end + 2..];
    }
    Ok(found)
}

impl NewTemplate {
    /// Checks every rule; the message names what is wrong.
    pub fn validate(&self) -> Result<(), Error> {
        if !valid_template_name(&self.name) {
            return Err(Error::Invalid(
                "name must match [a-z0-9][a-z0-9._-]{0,63}".into(),
            ));
        }
        let command = self.command.as_str();
        if command.is_empty()
            || command.len() > 1024
            || command.chars().any(|c| c.is_control() || c.is_whitespace())
            || (command.contains('/') && !command.starts_with('/'))
        {
            return Err(Error::Invalid(
                "command must be an absolute path or a program name, without spaces".into(),
            ));
        }
        if self.args.len() > MAX_ARGS || self.args.iter().any(|a| a.len() > MAX_VALUE_BYTES) {
            return Err(Error::Invalid(format!(
                "at most {MAX_ARGS} arguments of at most {MAX_VALUE_BYTES} bytes each"
            )));
        }
        if self.args.iter().any(|a| a.contains('\0')) {
            return Err(Error::Invalid("arguments cannot contain NUL".into()));
        }
        self.limits.validate()?;
        if self.variables.len() > MAX_VARIABLES {
            return Err(Error::Invalid(format!("at most {MAX_VARIABLES} variables")));
        }
        for (i, variable) in self.variables.iter().enumerate() {
            if !valid_variable_name(&variable.name) {
                return Err(Error::Invalid(format!(
                    "variable name {:?} must match [A-Z][A-Z0-9_]{{0,63}}",
                    variable.name
                )));
            }
            if reserved_variable(&variable.name) {
                return Err(Error::Invalid(format!(
                    "variable name {} is a loader or interpreter hook (or set by Wings) and cannot be declared",
                    variable.name
                )));
            }
            if self.variables[..i].iter().any(|v| v.name == variable.name) {
                return Err(Error::Invalid(format!(
                    "variable {} is declared twice",
                    variable.name
                )));
            }
            let pattern = whole(&variable.pattern)?;
            if let Some(default) = &variable.default
                && !pattern.is_match(default)
            {
                return Err(Error::Invalid(format!(
                    "the default of {} does not match its pattern",
                    variable.name
                )));
            }
        }
        for arg in &self.args {
            for name in placeholders(arg)? {
                if name != BUILTIN_PORT && !self.variables.iter().any(|v| v.name == name) {
                    return Err(Error::Invalid(format!(
                        "argument {arg:?} uses {{{{{name}}}}}, which is not a declared variable"
                    )));
                }
            }
        }
        Ok(())
    }
}

impl Template {
    /// Validates the values a server gives (`given`), fills in defaults, and returns every
    /// variable's value, and apart from them the variables that refer to a tenant's secret
    /// (`{"secret": "NAME"}`), whose values are checked when they are read ([`Template::check`]).
    /// Unknown names, other non-string values, values over 4 KiB or not matching their
    /// pattern, and missing variables without a default are refused; messages never hold a
    /// value.
    pub fn resolve(
        &self,
        given: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Resolved, Error> {
        if let Some(unknown) = given
            .keys()
            .find(|k| !self.variables.iter().any(|v| &v.name == *k))
        {
            return Err(Error::Invalid(format!(
                "template {} has no variable {unknown:?}",
                self.name
            )));
        }
        let mut resolved = Resolved::default();
        for variable in &self.variables {
            let value = match given.get(&variable.name) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(serde_json::Value::Object(reference))
                    if reference.len() == 1 && reference.contains_key("secret") =>
                {
                    let name = reference["secret"].as_str().ok_or_else(|| {
                        Error::Invalid(format!(
                            "variable {}: a secret is named by a string",
                            variable.name
                        ))
                    })?;
                    resolved
                        .secrets
                        .insert(variable.name.clone(), name.to_owned());
                    continue;
                }
                Some(_) => {
                    return Err(Error::Invalid(format!(
                        "variable {} must be a string or {{\"secret\": \"NAME\"}}",
                        variable.name
                    )));
                }
                None => variable.default.clone().ok_or_else(|| {
                    Error::Invalid(format!("variable {} is required", variable.name))
                })?,
            };
            self.check(&variable.name, &value)?;
            resolved.values.insert(variable.name.clone(), value);
        }
        Ok(resolved)
    }

    /// Checks one variable's value: at most 4 KiB, no NUL, matching its pattern whole.
    pub fn check(&self, name: &str, value: &str) -> Result<(), Error> {
        let variable = self
            .variables
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| Error::Invalid(format!("no variable {name}")))?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(Error::Invalid(format!(
                "variable {name} is over {MAX_VALUE_BYTES} bytes"
            )));
        }
        if value.contains('\0') || !whole(&variable.pattern)?.is_match(value) {
            return Err(Error::Invalid(format!(
                "variable {name} does not match its pattern {:?}",
                variable.pattern
            )));
        }
        Ok(())
    }

    /// The program, arguments and environment for `values` (from [`Template::resolve`]).
    pub fn expand(&self, values: &BTreeMap<String, String>) -> Expanded {
        let args = self
            .args
            .iter()
            .map(|arg| {
                let mut out = String::with_capacity(arg.len());
                let mut rest = arg.as_str();
                while let Some(start) = rest.find("{{") {
                    out.push_str(&rest[..start]);
                    let after = &rest[start + 2..];
                    match after.find("}}") {
                        Some(end) => {
                            if let Some(value) = values.get(&after[..end]) {
                                out.push_str(value);
                            }
                            rest = &after[end + 2..];
                        }
                        None => {
                            out.push_str(&rest[start..]);
                            rest = "";
                        }
                    }
                }
                out.push_str(rest);
                out
            })
            .collect();
        Expanded {
            limits: self.limits,
            program: self.command.clone(),
            args,
            env: values.clone(),
        }
    }
}

/// Stores a validated template; its name must be unused.
pub async fn create(db: &DatabaseConnection, new: NewTemplate) -> Result<Template, Error> {
    new.validate()?;
    let row = template::ActiveModel {
        id: Set(crate::tenancy::new_id()),
        name: Set(new.name.clone()),
        command: Set(new.command.clone()),
        args: Set(serde_json::json!(new.args)),
        variables: Set(serde_json::json!(new.variables)),
        created_at: Set(Utc::now()),
        sensitive_input: Set(new.sensitive_input),
        limits: Set(Some(serde_json::json!(new.limits))),
    }
    .insert(db)
    .await
    .map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => {
            Error::Conflict(format!("a template named {} exists", new.name))
        }
        _ => Error::Db(e),
    })?;
    Template::try_from(row)
}

/// One page of templates, by name.
pub async fn page(
    db: &DatabaseConnection,
    query: &crate::pagination::PageQuery,
) -> Result<crate::pagination::Page<Template>, Error> {
    let page = crate::pagination::fetch(
        db,
        template::Entity::find(),
        template::Column::Name,
        sea_orm::Order::Asc,
        query,
        |t| t.name.clone(),
    )
    .await?;
    Ok(crate::pagination::Page {
        items: page
            .items
            .into_iter()
            .map(Template::try_from)
            .collect::<Result<_, _>>()?,
        next_cursor: page.next_cursor,
    })
}

/// Every template, by name.
pub async fn list(db: &DatabaseConnection) -> Result<Vec<Template>, Error> {
    use sea_orm::QueryOrder;
    template::Entity::find()
        .order_by_asc(template::Column::Name)
        .all(db)
        .await?
        .into_iter()
        .map(Template::try_from)
        .collect()
}

/// The template named `name`.
pub async fn by_name(db: &DatabaseConnection, name: &str) -> Result<Option<Template>, Error> {
    template::Entity::find()
        .filter(template::Column::Name.eq(name))
        .one(db)
        .await?
        .map(Template::try_from)
        .transpose()
}

/// The template with id `id`.
pub async fn by_id(db: &DatabaseConnection, id: &str) -> Result<Option<Template>, Error> {
    template::Entity::find_by_id(id)
        .one(db)
        .await?
        .map(Template::try_from)
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn echo() -> NewTemplate {
        NewTemplate {
            name: "echo".into(),
            command: "/bin/echo".into(),
            args: vec!["--motd={{MOTD}}".into(), "{{MOTD}}{{MOTD}}".into()],
            variables: vec![Variable {
                name: "MOTD".into(),
                pattern: "(?s).*".into(),
                default: Some("hi".into()),
            }],
            sensitive_input: false,
            limits: Limits::default(),
        }
    }

    fn stored(new: NewTemplate) -> Template {
        new.validate().unwrap();
        Template {
            id: "t".into(),
            name: new.name,
            command: new.command,
            args: new.args,
            variables: new.variables,
            sensitive_input: new.sensitive_input,
            limits: new.limits,
        }
    }

    #[test]
    fn hostile_values_stay_one_argument_and_are_never_reexpanded() {
        let t = stored(echo());
        for hostile in ["; rm -rf /", "$(id)", "a\nb", "`id`", "{{MOTD}}", "' \" \\"] {
            let given = json!({ "MOTD": hostile });
            let values = t.resolve(given.as_object().unwrap()).unwrap().values;
            let expanded = t.expand(&values);
            assert_eq!(expanded.args.len(), 2);
            assert_eq!(expanded.args[0], format!("--motd={hostile}"));
            assert_eq!(expanded.args[1], format!("{hostile}{hostile}"));
            assert_eq!(expanded.env["MOTD"], hostile);
        }
    }

    #[test]
    fn values_are_checked_whole_against_their_pattern() {
        let mut new = echo();
        new.variables[0].pattern = "[a-z]+".into();
        new.variables[0].default = None;
        let t = stored(new);
        let resolve = |v: serde_json::Value| t.resolve(v.as_object().unwrap());
        assert!(resolve(json!({"MOTD": "hello"})).is_ok());
        for bad in [
            json!({"MOTD": "hello world"}),
            json!({"MOTD": "abc\n"}),
            json!({"MOTD": "x".repeat(10 * 1024)}),
            json!({"MOTD": 5}),
            json!({"MOTD": {"secret": 5}}),
            json!({"MOTD": {"secret": "a", "x": 1}}),
            json!({}),
            json!({"MOTD": "ok", "OTHER": "x"}),
        ] {
            assert!(
                matches!(resolve(bad.clone()), Err(Error::Invalid(_))),
                "{bad} must be refused"
            );
        }
    }

    #[test]
    fn secret_references_are_kept_apart() {
        let t = stored(echo());
        let given = json!({"MOTD": {"secret": "motd"}});
        let resolved = t.resolve(given.as_object().unwrap()).unwrap();
        assert_eq!(resolved.secrets["MOTD"], "motd");
        assert!(!resolved.values.contains_key("MOTD"));
    }

    #[test]
    fn templates_are_validated() {
        let mut bad = echo();
        bad.args.push("{{NOPE}}".into());
        assert!(bad.validate().is_err(), "undeclared placeholder");
        let mut bad = echo();
        bad.variables[0].pattern = "(".into();
        assert!(bad.validate().is_err(), "pattern that does not compile");
        let mut bad = echo();
        bad.variables[0].pattern = "[0-9]+".into();
        assert!(bad.validate().is_err(), "default not matching");
        let mut bad = echo();
        bad.command = "sh -c".into();
        assert!(bad.validate().is_err(), "command with a space");
        let mut bad = echo();
        bad.name = "Bad Name".into();
        assert!(bad.validate().is_err(), "name");
        let mut bad = echo();
        bad.args.push("{{MOTD".into());
        assert!(bad.validate().is_err(), "unclosed placeholder");
    }
}
