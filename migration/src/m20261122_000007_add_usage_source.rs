use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(UsageRecords::Table)
                    .add_column(ColumnDef::new(UsageRecords::UsageSource).string_len(16).not_null().default("reported"))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(UsageRecords::Table)
                    .add_column(ColumnDef::new(UsageRecords::Partial).boolean().not_null().default(false))
                    .to_owned(),
            )
            .await?;
        let update = Query::update()
            .table(UsageRecords::Table)
            .value(UsageRecords::UsageSource, "estimated")
            .and_where(Expr::col(UsageRecords::Estimated).eq(true))
            .to_owned();
        manager.exec_stmt(update).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(Table::alter().table(UsageRecords::Table).drop_column(UsageRecords::Partial).to_owned())
            .await?;
        manager
            .alter_table(Table::alter().table(UsageRecords::Table).drop_column(UsageRecords::UsageSource).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum UsageRecords {
    Table,
    UsageSource,
    Partial,
    Estimated,
}
