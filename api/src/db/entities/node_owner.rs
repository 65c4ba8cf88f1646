//! `node_owners`: which panel replica holds a node's stream (see the fleet module of `nodes`).

use sea_orm::entity::prelude::*;

/// One node's holder.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "node_owners")]
pub struct Model {
    /// The node.
    #[sea_orm(primary_key, auto_increment = false)]
    pub node_id: String,
    /// The replica holding its stream.
    pub replica_id: String,
    /// Raised by one on every admitted stream: a holder with a lower one is stale (fenced).
    pub epoch: i64,
    /// The hold ends here unless renewed.
    pub lease_until: DateTimeUtc,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
