//! Lists as the contract shapes them: `?limit=&cursor=` → `{"items": [...], "next_cursor"}`.
//! Keyset pagination on a unique, ordered key, so pages stay stable while rows are added.

use sea_orm::{
    ColumnTrait, DatabaseConnection, EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect,
    Select,
};
use serde::Deserialize;

use crate::Error;

/// Items per page unless the client asks for another number.
const DEFAULT_LIMIT: u64 = 50;
/// The most items a page holds.
const MAX_LIMIT: u64 = 200;

/// `?limit=&cursor=`.
#[derive(Debug, Default, Clone, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Items per page, 1 to 200; 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u64>,
    /// The `next_cursor` of the previous page.
    #[param(max_length = 128)]
    pub cursor: Option<String>,
}

impl PageQuery {
    fn limit(&self) -> Result<u64, Error> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(n @ 1..=MAX_LIMIT) => Ok(n),
            Some(n) => Err(Error::Invalid(format!(
                "limit must be from 1 to {MAX_LIMIT}, not {n}"
            ))),
        }
    }
}

/// One page of rows and the cursor of the next, if there is one.
pub struct Page<M> {
    /// The rows.
    pub items: Vec<M>,
    /// Pass as `cursor` for the next page.
    pub next_cursor: Option<String>,
}

/// Fetches one page of `select`, ordered by the unique string column `key`.
pub async fn fetch<E, F>(
    db: &DatabaseConnection,
    select: Select<E>,
    key: E::Column,
    order: Order,
    query: &PageQuery,
    key_of: F,
) -> Result<Page<E::Model>, Error>
where
    E: EntityTrait,
    F: Fn(&E::Model) -> String,
{
    let limit = query.limit()?;
    let mut select = select;
    if let Some(cursor) = query.cursor.as_deref() {
        if cursor.len() > 128 {
            return Err(Error::Invalid("cursor is not one this API issued".into()));
        }
        select = match order {
            Order::Desc => select.filter(key.lt(cursor)),
            _ => select.filter(key.gt(cursor)),
        };
    }
    let mut items = select.order_by(key, order).limit(limit + 1).all(db).await?;
    let next_cursor = if items.len() as u64 > limit {
        items.truncate(limit as usize);
        items.last().map(key_of)
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}
