use sea_orm_migration::prelude::*;

/// Rollups of usage by hour and by day × user × route × model (and by hour × route × model, for
/// the views of every user), kept as records are written, so
/// that no page or report scans `usage_records` (SPEC §5: pages stay fast with 10 M records);
/// and the indexes of the filters the usage pages use. Existing records are rolled up here.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The rollup tables, their bucket length (ms), and whether they keep the user dimension.
const TABLES: [(&str, i64, bool); 3] =
    [("usage_hourly", 3_600_000, true), ("usage_daily", 86_400_000, true), ("usage_hourly_all", 3_600_000, false)];

/// Upper bounds (ms, exclusive) of the latency histogram's buckets `l00`…`l21`; `l22` holds the
/// rest. The same bounds are in `src/store/rollups.rs`.
const BOUNDS: [i64; 22] =
    [1, 2, 5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 8000, 15000, 30000, 60000];

fn bucket_columns() -> Vec<String> {
    (0..=BOUNDS.len()).map(|i| format!("l{i:02}")).collect()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (table, span, per_user) in TABLES {
            let t = Alias::new(table);
            let mut create = Table::create();
            create.table(t.clone()).if_not_exists().col(ColumnDef::new(Alias::new("bucket")).big_integer().not_null());
            if per_user {
                create.col(ColumnDef::new(Alias::new("user_id")).big_integer().not_null());
            }
            create
                .col(ColumnDef::new(Alias::new("route")).string_len(300).not_null())
                .col(ColumnDef::new(Alias::new("model")).string_len(200).not_null())
                .col(ColumnDef::new(Alias::new("requests")).big_integer().not_null())
                .col(ColumnDef::new(Alias::new("errors")).big_integer().not_null())
                .col(ColumnDef::new(Alias::new("prompt_tokens")).big_integer().not_null())
                .col(ColumnDef::new(Alias::new("completion_tokens")).big_integer().not_null())
                .col(ColumnDef::new(Alias::new("cached_tokens")).big_integer().not_null())
                .col(ColumnDef::new(Alias::new("cache_write_tokens")).big_integer().not_null())
                .col(ColumnDef::new(Alias::new("cost_usd")).double().not_null())
                .col(ColumnDef::new(Alias::new("latency_sum_ms")).big_integer().not_null());
            for c in bucket_columns() {
                create.col(ColumnDef::new(Alias::new(c)).big_integer().not_null());
            }
            let mut pk = Index::create();
            pk.col(Alias::new("bucket"));
            if per_user {
                pk.col(Alias::new("user_id"));
            }
            create.primary_key(pk.col(Alias::new("route")).col(Alias::new("model")));
            manager.create_table(create.to_owned()).await?;
            if per_user {
                manager
                    .create_index(
                        Index::create()
                            .name(format!("idx_{table}_user"))
                            .table(t.clone())
                            .col(Alias::new("user_id"))
                            .col(Alias::new("bucket"))
                            .to_owned(),
                    )
                    .await?;
            }
            let histogram: Vec<String> = bucket_columns()
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    let lo = if i == 0 { None } else { BOUNDS.get(i - 1) };
                    let hi = BOUNDS.get(i);
                    match (lo, hi) {
                        (None, Some(h)) => format!("SUM(CASE WHEN latency_ms < {h} THEN 1 ELSE 0 END)"),
                        (Some(l), Some(h)) => {
                            format!("SUM(CASE WHEN latency_ms >= {l} AND latency_ms < {h} THEN 1 ELSE 0 END)")
                        }
                        (Some(l), None) => format!("SUM(CASE WHEN latency_ms >= {l} THEN 1 ELSE 0 END)"),
                        (None, None) => "0".to_owned(),
                    }
                })
                .collect();
            let (user_col, user_val) = if per_user { ("user_id, ", "COALESCE(user_id, 0), ") } else { ("", "") };
            let sql = format!(
                "INSERT INTO {table} (bucket, {user_col}route, model, requests, errors, prompt_tokens, \
                 completion_tokens, cached_tokens, cache_write_tokens, cost_usd, latency_sum_ms, {cols}) \
                 SELECT created_at - (created_at % {span}), {user_val}SUBSTR(route, 1, 300), \
                 COALESCE(SUBSTR(model, 1, 200), ''), COUNT(*), SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), \
                 SUM(prompt_tokens), SUM(completion_tokens), SUM(cached_tokens), SUM(cache_write_tokens), \
                 SUM(cost_usd), SUM(latency_ms), {histogram} FROM usage_records \
                 GROUP BY created_at - (created_at % {span}), {user_val}SUBSTR(route, 1, 300), \
                 COALESCE(SUBSTR(model, 1, 200), '')",
                cols = bucket_columns().join(", "),
                histogram = histogram.join(", "),
            );
            manager.get_connection().execute_unprepared(&sql).await?;
        }
        manager
            .create_index(
                Index::create()
                    .name("idx_usage_parent")
                    .table(UsageRecords::Table)
                    .col(UsageRecords::ParentRequestId)
                    .to_owned(),
            )
            .await?;
        for (name, col) in [
            ("idx_usage_route_time", UsageRecords::Route),
            ("idx_usage_model_time", UsageRecords::Model),
            ("idx_usage_token_time", UsageRecords::TokenId),
        ] {
            manager
                .create_index(
                    Index::create()
                        .name(name)
                        .table(UsageRecords::Table)
                        .col(col)
                        .col(UsageRecords::CreatedAt)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for name in ["idx_usage_route_time", "idx_usage_model_time", "idx_usage_token_time", "idx_usage_parent"] {
            manager.drop_index(Index::drop().name(name).table(UsageRecords::Table).to_owned()).await?;
        }
        for (table, _, _) in TABLES {
            manager.drop_table(Table::drop().table(Alias::new(table)).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum UsageRecords {
    Table,
    Route,
    Model,
    TokenId,
    CreatedAt,
    ParentRequestId,
}
