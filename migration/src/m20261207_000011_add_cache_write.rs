use sea_orm_migration::prelude::*;

/// Input tokens written to a provider's prompt cache, recorded and priced apart (SPEC §4).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(UsageRecords::Table)
                    .add_column(ColumnDef::new(UsageRecords::CacheWriteTokens).big_integer().not_null().default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Prices::Table)
                    .add_column(ColumnDef::new(Prices::CacheWritePerMillion).double().null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(Prices::Table).drop_column(Prices::CacheWritePerMillion).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter().table(UsageRecords::Table).drop_column(UsageRecords::CacheWriteTokens).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum UsageRecords {
    Table,
    CacheWriteTokens,
}

#[derive(DeriveIden)]
enum Prices {
    Table,
    CacheWritePerMillion,
}
