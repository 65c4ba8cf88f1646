//! The OpenAPI schema of a server's variables, which serde keeps as a JSON map: written by
//! hand because it is one of two shapes per variable.

use std::borrow::Cow;

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::{PartialSchema, ToSchema};

/// A secret's name, as `crate::secrets::validate_name` checks it.
pub const SECRET_NAME: &str = "^[A-Za-z0-9_.-]{1,64}$";

/// A template variable's name, as `crate::templates` checks it.
pub const VARIABLE_NAME: &str = "^[A-Z][A-Z0-9_]{0,63}$";

/// The schema of a server's variables: the template's variable names to a string of at most
/// [`crate::templates::MAX_VALUE_BYTES`] bytes or `{"secret": name}`, a reference to one of
/// the tenant's secrets.
pub struct ServerVariables;

impl PartialSchema for ServerVariables {
    fn schema() -> RefOr<Schema> {
        let literal = ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(crate::templates::MAX_VALUE_BYTES));
        let secret = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property(
                "secret",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(SECRET_NAME)),
            )
            .required("secret")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(
                "Values of the template's variables: a string, or a reference to one of the \
                 tenant's secrets.",
            ))
            .property_names(Some(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(VARIABLE_NAME)),
            ))
            .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::OneOf(
                OneOfBuilder::new().item(literal).item(secret).build(),
            )))))
            .into()
    }
}

impl ToSchema for ServerVariables {
    fn name() -> Cow<'static, str> {
        "ServerVariables".into()
    }
}
