//! `templates`: what a server runs, defined by platform admins.

use sea_orm::entity::prelude::*;

/// One template.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "templates")]
pub struct Model {
    /// A UUID.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Unique; what tenants choose by.
    pub name: String,
    /// The program, executed directly (never through a shell).
    pub command: String,
    /// JSON array of argument strings with `{{VAR}}` placeholders.
    pub args: Json,
    /// JSON array of `{name, pattern, default?}`.
    pub variables: Json,
    /// When it was made.
    pub created_at: DateTimeUtc,
    /// Console input to its servers is audited without its content.
    pub sensitive_input: bool,
    /// JSON `{memory_mb, cpu_percent, max_processes, open_files, disk_mb}`; absent fields take
    /// the platform defaults.
    pub limits: Option<Json>,
}

/// No relations declared.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
