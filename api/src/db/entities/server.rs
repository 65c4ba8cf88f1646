//! `servers`: a tenant's process on a node, made from a template.

use sea_orm::entity::prelude::*;

/// One server.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "servers")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// The owning tenant.
    pub tenant_id: String,
    /// The node it lives on.
    pub node_id: String,
    /// Shown to people.
    pub name: String,
    /// The template it was made from.
    pub template_id: String,
    /// JSON object of the template's variables, validated.
    pub variables: Json,
    /// The last state its node reported (`installing` until the node has it).
    pub state: super::states::ServerState,
    /// Why it is in that state, as the node said.
    pub state_reason: Option<String>,
    /// The port allocated to it, if any.
    pub port: Option<i32>,
    /// When it was made.
    pub created_at: DateTimeUtc,
    /// When it last changed.
    pub updated_at: DateTimeUtc,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
