use std::time::Duration;

use migration::{Migrator, MigratorTrait};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbBackend};

use crate::store::StoreError;

/// Which database a store talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    Mysql,
}

/// A connection pool to the durable store.
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
}

impl Store {
    /// Connects; does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, StoreError> {
        let mut opts = ConnectOptions::new(url.to_owned());
        opts.max_connections(max_connections)
            .min_connections(0)
            .connect_timeout(Duration::from_secs(5))
            .acquire_timeout(Duration::from_secs(5))
            .sqlx_logging(false);
        let db = Database::connect(opts).await?;
        if db.get_database_backend() == DbBackend::Sqlite {
            // WAL lets readers run while the usage writer writes; it persists in the file.
            db.execute_unprepared("PRAGMA journal_mode=WAL").await?;
            db.execute_unprepared("PRAGMA foreign_keys=ON").await?;
        }
        Ok(Self { db })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        Migrator::up(&self.db, None).await?;
        Ok(())
    }

    /// Reverts every migration (tests only use this).
    pub async fn migrate_down(&self) -> Result<(), StoreError> {
        Migrator::down(&self.db, None).await?;
        Ok(())
    }

    /// Reverts the newest `steps` migrations (tests only use this).
    pub async fn rollback(&self, steps: u32) -> Result<(), StoreError> {
        Migrator::down(&self.db, Some(steps)).await?;
        Ok(())
    }

    /// The connection, for the functions of this module.
    pub fn conn(&self) -> &DatabaseConnection {
        &self.db
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.db.get_database_backend() {
            DbBackend::Postgres => Backend::Postgres,
            DbBackend::MySql => Backend::Mysql,
            _ => Backend::Sqlite,
        }
    }

    /// A cheap round trip, for `/ready`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.ping().await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(self) {
        let _ = self.db.close().await;
    }
}
