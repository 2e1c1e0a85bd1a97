use sea_orm_migration::prelude::*;

/// Worker tokens (SPEC §7): the broker provider a token may register workers for. A token with
/// one may do nothing else.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Tokens::Table)
                    .add_column(ColumnDef::new(Tokens::WorkerProvider).string_len(64).null())
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Tokens::Table).drop_column(Tokens::WorkerProvider).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Tokens {
    Table,
    WorkerProvider,
}
