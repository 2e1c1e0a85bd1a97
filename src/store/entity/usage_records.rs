use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "usage_records")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub request_id: String,
    pub created_at: i64,
    pub node: String,
    pub user_id: Option<i64>,
    pub token_id: Option<i64>,
    pub route: String,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub status: i32,
    pub outcome: String,
    pub stream: bool,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub cached_tokens: i64,
    pub cache_write_tokens: i64,
    pub estimated: bool,
    pub cost_usd: f64,
    pub latency_ms: i64,
    pub ttft_ms: Option<i64>,
    pub cache_hit: bool,
    pub routing: Option<String>,
    pub usage_source: String,
    pub partial: bool,
    pub parent_request_id: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
