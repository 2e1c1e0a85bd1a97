use sea_orm_migration::prelude::*;

/// A user's e-mail and OIDC identity (issuer and subject), for single sign-on to the dashboard
/// (SPEC §5): one identity belongs to at most one user.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column a statement: SQLite alters one column at a time.
        for col in [
            ColumnDef::new(Users::Email).string_len(320).null().to_owned(),
            ColumnDef::new(Users::OidcIssuer).string_len(300).null().to_owned(),
            ColumnDef::new(Users::OidcSubject).string_len(255).null().to_owned(),
        ] {
            let mut col = col;
            manager.alter_table(Table::alter().table(Users::Table).add_column(&mut col).to_owned()).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("idx_users_identity")
                    .table(Users::Table)
                    .col(Users::OidcIssuer)
                    .col(Users::OidcSubject)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("idx_users_email").table(Users::Table).col(Users::Email).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name("idx_users_email").table(Users::Table).to_owned()).await?;
        manager.drop_index(Index::drop().name("idx_users_identity").table(Users::Table).to_owned()).await?;
        for col in [Users::OidcSubject, Users::OidcIssuer, Users::Email] {
            manager.alter_table(Table::alter().table(Users::Table).drop_column(col).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Email,
    OidcIssuer,
    OidcSubject,
}
