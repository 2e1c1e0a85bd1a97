use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(UsageRecords::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(UsageRecords::RequestId).string_len(36).not_null().primary_key())
                    .col(ColumnDef::new(UsageRecords::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(UsageRecords::Node).string_len(128).not_null())
                    .col(ColumnDef::new(UsageRecords::UserId).big_integer().null())
                    .col(ColumnDef::new(UsageRecords::TokenId).big_integer().null())
                    .col(ColumnDef::new(UsageRecords::Route).string_len(512).not_null())
                    .col(ColumnDef::new(UsageRecords::Provider).string_len(64).null())
                    .col(ColumnDef::new(UsageRecords::Model).string_len(256).null())
                    .col(ColumnDef::new(UsageRecords::Status).integer().not_null())
                    .col(ColumnDef::new(UsageRecords::Outcome).string_len(32).not_null())
                    .col(ColumnDef::new(UsageRecords::Stream).boolean().not_null())
                    .col(ColumnDef::new(UsageRecords::PromptTokens).big_integer().not_null())
                    .col(ColumnDef::new(UsageRecords::CompletionTokens).big_integer().not_null())
                    .col(ColumnDef::new(UsageRecords::CachedTokens).big_integer().not_null())
                    .col(ColumnDef::new(UsageRecords::Estimated).boolean().not_null())
                    .col(ColumnDef::new(UsageRecords::CostUsd).double().not_null())
                    .col(ColumnDef::new(UsageRecords::LatencyMs).big_integer().not_null())
                    .col(ColumnDef::new(UsageRecords::TtftMs).big_integer().null())
                    .col(ColumnDef::new(UsageRecords::CacheHit).boolean().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_usage_user_time")
                    .table(UsageRecords::Table)
                    .col(UsageRecords::UserId)
                    .col(UsageRecords::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_usage_time")
                    .table(UsageRecords::Table)
                    .col(UsageRecords::CreatedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(UsageRecords::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum UsageRecords {
    Table,
    RequestId,
    CreatedAt,
    Node,
    UserId,
    TokenId,
    Route,
    Provider,
    Model,
    Status,
    Outcome,
    Stream,
    PromptTokens,
    CompletionTokens,
    CachedTokens,
    Estimated,
    CostUsd,
    LatencyMs,
    TtftMs,
    CacheHit,
}
