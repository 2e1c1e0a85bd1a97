use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, Set,
};

use crate::store::StoreError;
use crate::store::entity::user_objects;
use crate::types::now_ms;

/// A provider, rotation or autoselect a user owns.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct UserObjectRow {
    /// Owner.
    pub user_id: i64,
    /// `provider`, `rotation` or `autoselect`.
    pub kind: String,
    /// Name in the owner's namespace.
    pub name: String,
    /// The object as JSON (no key).
    pub spec: String,
    /// A provider's sealed API key.
    #[serde(skip)]
    pub sealed_key: Option<String>,
}

impl From<user_objects::Model> for UserObjectRow {
    fn from(m: user_objects::Model) -> Self {
        Self { user_id: m.user_id, kind: m.kind, name: m.name, spec: m.spec, sealed_key: m.sealed_key }
    }
}

/// Creates or replaces an object.
pub async fn put_user_object(db: &impl ConnectionTrait, o: &UserObjectRow) -> Result<UserObjectRow, StoreError> {
    let now = now_ms();
    let existing = user_objects::Entity::find()
        .filter(user_objects::Column::UserId.eq(o.user_id))
        .filter(user_objects::Column::Kind.eq(o.kind.as_str()))
        .filter(user_objects::Column::Name.eq(o.name.as_str()))
        .one(db)
        .await?;
    let mut am = user_objects::ActiveModel {
        user_id: Set(o.user_id),
        kind: Set(o.kind.clone()),
        name: Set(o.name.clone()),
        spec: Set(o.spec.clone()),
        sealed_key: Set(o.sealed_key.clone()),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    };
    let saved = match existing {
        Some(old) => {
            am.id = Set(old.id);
            am.created_at = Set(old.created_at);
            am.update(db).await?
        }
        None => am.insert(db).await.map_err(StoreError::from_db)?,
    };
    Ok(saved.into())
}

/// One object of a user.
pub async fn find_user_object(
    db: &impl ConnectionTrait,
    user_id: i64,
    kind: &str,
    name: &str,
) -> Result<Option<UserObjectRow>, StoreError> {
    let row = user_objects::Entity::find()
        .filter(user_objects::Column::UserId.eq(user_id))
        .filter(user_objects::Column::Kind.eq(kind))
        .filter(user_objects::Column::Name.eq(name))
        .one(db)
        .await?;
    Ok(row.map(UserObjectRow::from))
}

/// A user's objects (all users' with `None`), by user, kind and name.
pub async fn list_user_objects(
    db: &impl ConnectionTrait,
    user_id: Option<i64>,
) -> Result<Vec<UserObjectRow>, StoreError> {
    let mut q = user_objects::Entity::find();
    if let Some(u) = user_id {
        q = q.filter(user_objects::Column::UserId.eq(u));
    }
    let rows = q
        .order_by_asc(user_objects::Column::UserId)
        .order_by_asc(user_objects::Column::Kind)
        .order_by_asc(user_objects::Column::Name)
        .all(db)
        .await?;
    Ok(rows.into_iter().map(UserObjectRow::from).collect())
}

/// Deletes an object; `NotFound` when there is none.
pub async fn delete_user_object(
    db: &impl ConnectionTrait,
    user_id: i64,
    kind: &str,
    name: &str,
) -> Result<(), StoreError> {
    let res = user_objects::Entity::delete_many()
        .filter(user_objects::Column::UserId.eq(user_id))
        .filter(user_objects::Column::Kind.eq(kind))
        .filter(user_objects::Column::Name.eq(name))
        .exec(db)
        .await?;
    if res.rows_affected == 0 { Err(StoreError::NotFound) } else { Ok(()) }
}

/// How many stored provider keys exist (a node without the master key refuses to start then).
pub async fn count_sealed_keys(db: &impl ConnectionTrait) -> Result<u64, StoreError> {
    Ok(user_objects::Entity::find().filter(user_objects::Column::SealedKey.is_not_null()).count(db).await?)
}
