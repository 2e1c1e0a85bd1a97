use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tokens::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Tokens::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Tokens::UserId).big_integer().not_null())
                    .col(ColumnDef::new(Tokens::Name).string_len(128).not_null())
                    .col(ColumnDef::new(Tokens::TokenHash).string_len(64).not_null().unique_key())
                    .col(ColumnDef::new(Tokens::DisplayPrefix).string_len(16).not_null())
                    .col(ColumnDef::new(Tokens::Routes).text().null())
                    .col(ColumnDef::new(Tokens::QuotaUsd).double().null())
                    .col(ColumnDef::new(Tokens::Rpm).big_integer().null())
                    .col(ColumnDef::new(Tokens::Tpm).big_integer().null())
                    .col(ColumnDef::new(Tokens::ExpiresAt).big_integer().null())
                    .col(ColumnDef::new(Tokens::Revoked).boolean().not_null())
                    .col(ColumnDef::new(Tokens::LastUsedAt).big_integer().null())
                    .col(ColumnDef::new(Tokens::CreatedAt).big_integer().not_null())
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_tokens_user")
                            .from(Tokens::Table, Tokens::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("idx_tokens_user").table(Tokens::Table).col(Tokens::UserId).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Tokens::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    Id,
    UserId,
    Name,
    TokenHash,
    DisplayPrefix,
    Routes,
    QuotaUsd,
    Rpm,
    Tpm,
    ExpiresAt,
    Revoked,
    LastUsedAt,
    CreatedAt,
}
