use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(UserObjects::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(UserObjects::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(UserObjects::UserId).big_integer().not_null())
                    // `provider`, `rotation` or `autoselect`.
                    .col(ColumnDef::new(UserObjects::Kind).string_len(16).not_null())
                    .col(ColumnDef::new(UserObjects::Name).string_len(64).not_null())
                    // The object as JSON, shaped like its configuration table (never a key).
                    .col(ColumnDef::new(UserObjects::Spec).text().not_null())
                    // A provider's API key, sealed with AES-256-GCM under the master key.
                    .col(ColumnDef::new(UserObjects::SealedKey).text().null())
                    .col(ColumnDef::new(UserObjects::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(UserObjects::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_user_objects")
                    .table(UserObjects::Table)
                    .col(UserObjects::UserId)
                    .col(UserObjects::Kind)
                    .col(UserObjects::Name)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(UserObjects::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum UserObjects {
    Table,
    Id,
    UserId,
    Kind,
    Name,
    Spec,
    SealedKey,
    CreatedAt,
    UpdatedAt,
}
