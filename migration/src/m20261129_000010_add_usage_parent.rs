use sea_orm_migration::prelude::*;

/// A selection call's record names the request it served (SPEC §3).
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(UsageRecords::Table)
                    .add_column(ColumnDef::new(UsageRecords::ParentRequestId).string_len(64).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(UsageRecords::Table).drop_column(UsageRecords::ParentRequestId).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum UsageRecords {
    Table,
    ParentRequestId,
}
