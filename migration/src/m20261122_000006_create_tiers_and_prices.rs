use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tiers::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Tiers::Name).string_len(64).not_null().primary_key())
                    .col(ColumnDef::new(Tiers::Rpm).big_integer().null())
                    .col(ColumnDef::new(Tiers::Tpm).big_integer().null())
                    .col(ColumnDef::new(Tiers::MaxConcurrency).big_integer().null())
                    .col(ColumnDef::new(Tiers::MonthlyQuotaUsd).double().null())
                    .col(ColumnDef::new(Tiers::Routes).text().null())
                    .col(ColumnDef::new(Tiers::MaxTokens).big_integer().null())
                    .col(ColumnDef::new(Tiers::CreatedAt).big_integer().not_null())
                    .col(ColumnDef::new(Tiers::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(Prices::Table)
                    .if_not_exists()
                    .col(ColumnDef::new(Prices::Id).big_integer().not_null().auto_increment().primary_key())
                    .col(ColumnDef::new(Prices::Model).string_len(255).not_null())
                    // "" means every provider; a provider id overrides it for that provider.
                    .col(ColumnDef::new(Prices::Provider).string_len(64).not_null().default(""))
                    .col(ColumnDef::new(Prices::InputPerMillion).double().not_null())
                    .col(ColumnDef::new(Prices::OutputPerMillion).double().not_null())
                    .col(ColumnDef::new(Prices::CachedInputPerMillion).double().null())
                    .col(ColumnDef::new(Prices::Aliases).text().null())
                    .col(ColumnDef::new(Prices::UpdatedAt).big_integer().not_null())
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_prices_model_provider")
                    .table(Prices::Table)
                    .col(Prices::Model)
                    .col(Prices::Provider)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Quota spend is rebuilt per token from the usage records.
        manager
            .create_index(
                Index::create()
                    .name("idx_usage_token")
                    .table(UsageRecords::Table)
                    .col(UsageRecords::TokenId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("idx_usage_token").table(UsageRecords::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Prices::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Tiers::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Tiers {
    Table,
    Name,
    Rpm,
    Tpm,
    MaxConcurrency,
    MonthlyQuotaUsd,
    Routes,
    MaxTokens,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Prices {
    Table,
    Id,
    Model,
    Provider,
    InputPerMillion,
    OutputPerMillion,
    CachedInputPerMillion,
    Aliases,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum UsageRecords {
    Table,
    TokenId,
}
