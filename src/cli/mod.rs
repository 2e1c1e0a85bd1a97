//! The command line: `serve`, `migrate`, `config check`, `user …`, `tier …`, `token …`,
//! `price …`, `cache purge`, each with text or `--json` output.
//!
//! Architecture Invariant: the only module (with `main`) that prints.
#![expect(clippy::print_stdout, clippy::print_stderr, reason = "the CLI's output is its interface")]

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use crate::config::{self, Settings};
use crate::control::{Control, ControlError, NewTokenRequest};
use crate::server::Application;
use crate::shared;
use crate::store::{PriceRow, Store, TierRow};
use crate::types::Role;

/// Switchyard: a clustered, multi-tenant LLM gateway.
#[derive(Parser, Debug)]
#[command(name = "switchyard", version, about)]
pub struct Cli {
    /// Configuration file (also `SWITCHYARD_CONFIG`).
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run a node.
    Serve,
    /// Apply database migrations.
    Migrate,
    /// Configuration commands.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage tiers (limits and quotas shared by their users).
    #[command(subcommand)]
    Tier(TierCommand),
    /// Manage the price table.
    #[command(subcommand)]
    Price(PriceCommand),
    /// The response cache.
    #[command(subcommand)]
    Cache(CacheCommand),
}

#[derive(Subcommand, Debug)]
enum CacheCommand {
    /// Stop serving cached answers of a user and/or a route (neither: all of them), on every
    /// node; with Redis configured, also remove them from it now.
    Purge {
        /// Only this user's entries (not those of `global` routes, which no user owns).
        #[arg(long)]
        user: Option<String>,
        /// Only this route's entries, named as a request names it (`coding` is
        /// `rotation/coding`; a user's own route with `--user`).
        #[arg(long)]
        route: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum TierCommand {
    /// Create or replace a tier. Absent limits are unlimited; 0 allows nothing.
    Set(TierSet),
    /// Show a tier.
    Get {
        /// Tier name.
        name: String,
    },
    /// List tiers.
    List,
    /// Delete a tier no user is on.
    Delete {
        /// Tier name.
        name: String,
    },
}

#[derive(Args, Debug)]
struct TierSet {
    /// Tier name.
    name: String,
    /// Requests per minute, per user.
    #[arg(long)]
    rpm: Option<i64>,
    /// Tokens per minute, per user.
    #[arg(long)]
    tpm: Option<i64>,
    /// Requests in flight, per user.
    #[arg(long)]
    concurrency: Option<i64>,
    /// USD per calendar month (UTC), per user.
    #[arg(long)]
    quota_usd: Option<f64>,
    /// Allowed route globs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    routes: Option<Vec<String>>,
    /// Largest `max_tokens` a request may ask for (also the default when it asks for none).
    #[arg(long)]
    max_tokens: Option<i64>,
}

#[derive(Subcommand, Debug)]
enum PriceCommand {
    /// Create or replace the price of a model (USD per 1M tokens).
    Set {
        /// Model name.
        model: String,
        /// USD per 1M input tokens.
        #[arg(long)]
        input: f64,
        /// USD per 1M output tokens.
        #[arg(long)]
        output: f64,
        /// USD per 1M cached input tokens (default: the input price).
        #[arg(long)]
        cached_input: Option<f64>,
        /// USD per 1M input tokens written to the prompt cache (default: the input price).
        #[arg(long)]
        cache_write: Option<f64>,
        /// Another name of the same model (repeatable or comma-separated).
        #[arg(long, value_delimiter = ',')]
        alias: Vec<String>,
        /// Only for this provider (default: every provider).
        #[arg(long, default_value = "")]
        provider: String,
    },
    /// Show the price of a model.
    Get {
        /// Model name.
        model: String,
        /// The provider-specific price.
        #[arg(long, default_value = "")]
        provider: String,
    },
    /// List prices.
    List,
    /// Delete the price of a model.
    Delete {
        /// Model name.
        model: String,
        /// The provider-specific price.
        #[arg(long, default_value = "")]
        provider: String,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Validate the configuration and print every problem.
    Check,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create a user.
    Create {
        /// Username.
        name: String,
        /// `admin` or `user`.
        #[arg(long, default_value = "user")]
        role: String,
        /// Tier name.
        #[arg(long)]
        tier: Option<String>,
        /// Read a password from standard input.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List users.
    List,
    /// Disable a user: all of their tokens stop working.
    Disable {
        /// Username.
        name: String,
    },
    /// Put a user on a tier (or off any tier with `--clear`).
    SetTier {
        /// Username.
        name: String,
        /// Tier name.
        tier: Option<String>,
        /// Take the user off any tier.
        #[arg(long, conflicts_with = "tier")]
        clear: bool,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token and print it once.
    Create(TokenCreate),
    /// List a user's tokens.
    List {
        /// Owner.
        #[arg(long)]
        user: String,
    },
    /// Revoke a token.
    Revoke {
        /// Token id.
        id: i64,
    },
}

#[derive(Args, Debug)]
struct TokenCreate {
    /// Owner.
    #[arg(long)]
    user: String,
    /// Label.
    #[arg(long, default_value = "default")]
    name: String,
    /// Allowed route globs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    routes: Option<Vec<String>>,
    /// Expiry (RFC 3339).
    #[arg(long)]
    expires: Option<String>,
    /// Quota in USD (0 allows nothing).
    #[arg(long)]
    quota_usd: Option<f64>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<i64>,
    /// Tokens per minute.
    #[arg(long)]
    tpm: Option<i64>,
    /// A worker token for this broker provider (the user's own, or for an admin a configured
    /// one): it only connects workers (`switchyard worker`).
    #[arg(long, value_name = "PROVIDER_ID")]
    worker: Option<String>,
}

/// Parses arguments and runs the command.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match &cli.command {
        Command::Config(ConfigCommand::Check) => config_check(&cli),
        Command::Serve => actix_web::rt::System::new().block_on(serve(&cli)),
        _ => rt.block_on(admin(&cli)),
    }
}

fn fail(cli: &Cli, message: &str) -> ExitCode {
    if cli.json {
        println!("{}", json!({"error": message}));
    } else {
        eprintln!("error: {message}");
    }
    ExitCode::FAILURE
}

fn load(cli: &Cli) -> Result<Settings, String> {
    config::load(cli.config.as_deref()).map_err(|e| e.to_string())
}

fn config_check(cli: &Cli) -> ExitCode {
    let problems = match config::load(cli.config.as_deref()) {
        Ok(s) => config::check(&s),
        Err(config::LoadError::Invalid(p)) => vec![p],
        Err(e) => return fail(cli, &e.to_string()),
    };
    if cli.json {
        println!("{}", json!({"ok": problems.is_empty(), "problems": problems}));
    } else if problems.is_empty() {
        println!("Configuration is valid.");
    } else {
        println!("{} problem(s):", problems.len());
        for p in &problems {
            println!("  {p}");
        }
    }
    if problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

async fn serve(cli: &Cli) -> ExitCode {
    let settings = match load(cli) {
        Ok(s) => s,
        Err(e) => return fail(cli, &e),
    };
    let telemetry = match crate::telemetry::init(&settings.log, &settings.telemetry) {
        Ok(t) => t,
        Err(e) => return fail(cli, &e),
    };
    let app = match Application::build(settings.clone()).await {
        Ok(a) => a,
        Err(e) => return fail(cli, &e.to_string()),
    };
    let base = settings
        .server
        .public_url
        .as_deref()
        .map(|u| u.trim_end_matches('/').to_owned())
        .unwrap_or_else(|| format!("http://{}:{}", settings.server.host, app.port()));
    let dashboard = format!("{base}/dashboard");
    if let Some(b) = &app.bootstrap {
        if cli.json {
            println!("{}", json!({"bootstrap": b, "port": app.port(), "dashboard": dashboard}));
        } else {
            println!("First start: created admin user `{}`.", b.username);
            println!("  dashboard:         {dashboard}");
            println!("  one-time password: {}", b.password);
            match &b.token {
                Some(t) => println!("  admin token:       {t}"),
                None => {
                    println!("  admin token:       the value of SWITCHYARD__BOOTSTRAP__ADMIN_TOKEN")
                }
            }
            println!("These are shown once. Store them now.");
        }
    }
    // The listening line comes last: a supervisor may stop reading once it has seen it.
    println!("Dashboard: {dashboard}");
    println!("Switchyard listening on http://{}:{}", settings.server.host, app.port());
    let result = app.run_until_stopped().await;
    // Spans of the last requests go out before the process does.
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(cli, &e.to_string()),
    }
}

async fn admin(cli: &Cli) -> ExitCode {
    let settings = match load(cli) {
        Ok(s) => s,
        Err(e) => return fail(cli, &e),
    };
    let store = match Store::connect(settings.database.url.expose(), settings.database.max_connections).await {
        Ok(s) => s,
        Err(e) => return fail(cli, &format!("cannot open the database: {e}")),
    };
    if let Err(e) = store.migrate().await {
        return fail(cli, &format!("cannot migrate the database: {e}"));
    }
    if matches!(cli.command, Command::Migrate) {
        if cli.json {
            println!("{}", json!({"migrated": true}));
        } else {
            println!("Database is up to date.");
        }
        return ExitCode::SUCCESS;
    }
    // Announce changes to running nodes when they share a Redis; otherwise they poll.
    let (shared, cache_store) = match &settings.redis.url {
        Some(url) => match shared::connect_with_cache(Some(url.expose()), &settings.redis.key_prefix, 1, 0).await {
            Ok((s, c)) => (s, Some(c)),
            Err(e) => return fail(cli, &format!("cannot reach redis: {e}")),
        },
        None => {
            let local: Arc<dyn shared::SharedState> = Arc::new(shared::MemoryShared::new());
            (local, None)
        }
    };
    let control = Control::new(store.clone(), Arc::clone(&shared)).with_providers(&settings.providers);
    let out = match &cli.command {
        Command::Cache(CacheCommand::Purge { user, route }) => {
            // Route names resolve as a request in the user's namespace (or among global routes)
            // would: `coding` is `rotation/coding`.
            let route = match route {
                Some(r) => match crate::catalog::Catalog::load(&settings, store, shared).await {
                    Ok(catalog) => {
                        let snapshot = catalog.snapshot();
                        let owner = user.as_deref().and_then(|u| snapshot.user(u)).map(|u| u.id);
                        match snapshot.canonical_route(owner, r) {
                            Some(canonical) => Some(canonical),
                            None => return fail(cli, &format!("no route `{r}` (a user's own route needs --user)")),
                        }
                    }
                    Err(e) => return fail(cli, &format!("cannot load the catalog: {e}")),
                },
                None => None,
            };
            cache_purge(cli, &control, cache_store, user.as_deref(), route.as_deref()).await
        }
        Command::User(c) => user(cli, &control, c).await,
        Command::Token(c) => token(cli, &control, c).await,
        Command::Tier(c) => tier(cli, &control, c).await,
        Command::Price(c) => price(cli, &control, c).await,
        _ => Ok(String::new()),
    };
    match out {
        Ok(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => fail(cli, &e.to_string()),
    }
}

async fn user(cli: &Cli, control: &Control, c: &UserCommand) -> Result<String, ControlError> {
    match c {
        UserCommand::Create { name, role, tier, password_stdin } => {
            let role = Role::parse(role)
                .ok_or_else(|| ControlError::Invalid(format!("unknown role `{role}`: use admin or user")))?;
            let password = if *password_stdin {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .map_err(|e| ControlError::Invalid(format!("cannot read the password: {e}")))?;
                Some(s.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let u = control.create_user(name, role, tier.as_deref(), password.as_deref()).await?;
            Ok(if cli.json {
                json!({"user": u}).to_string()
            } else {
                format!("Created user `{}` (id {}, {}).", u.username, u.id, u.role.as_str())
            })
        }
        UserCommand::List => {
            let users = control.list_users().await?;
            if cli.json {
                return Ok(json!({"users": users}).to_string());
            }
            let mut s = format!("{:<6} {:<24} {:<6} {:<10} {}", "ID", "USERNAME", "ROLE", "STATUS", "TIER");
            for u in users {
                s.push_str(&format!(
                    "\n{:<6} {:<24} {:<6} {:<10} {}",
                    u.id,
                    u.username,
                    u.role.as_str(),
                    u.status,
                    u.tier.unwrap_or_default()
                ));
            }
            Ok(s)
        }
        UserCommand::SetTier { name, tier, clear } => {
            if tier.is_none() && !clear {
                return Err(ControlError::Invalid("name a tier, or pass --clear".into()));
            }
            let u = control.set_user_tier(name, tier.as_deref()).await?;
            Ok(if cli.json {
                json!({"user": u}).to_string()
            } else {
                match &u.tier {
                    Some(t) => format!("User `{}` is on tier `{t}`.", u.username),
                    None => format!("User `{}` is on no tier.", u.username),
                }
            })
        }
        UserCommand::Disable { name } => {
            let u = control.disable_user(name).await?;
            Ok(if cli.json { json!({"user": u}).to_string() } else { format!("Disabled user `{}`.", u.username) })
        }
    }
}

async fn token(cli: &Cli, control: &Control, c: &TokenCommand) -> Result<String, ControlError> {
    match c {
        TokenCommand::Create(t) => {
            let expires_at = match &t.expires {
                Some(s) => Some(
                    chrono::DateTime::parse_from_rfc3339(s)
                        .map_err(|e| {
                            ControlError::Invalid(format!(
                                "--expires must be RFC 3339 (e.g. 2027-01-01T00:00:00Z): {e}"
                            ))
                        })?
                        .timestamp_millis(),
                ),
                None => None,
            };
            let req = NewTokenRequest {
                name: t.name.clone(),
                routes: t.routes.clone(),
                expires_at,
                quota_usd: t.quota_usd,
                rpm: t.rpm,
                tpm: t.tpm,
                worker: t.worker.clone(),
                ..NewTokenRequest::for_user(&t.user)
            };
            let (raw, row) = control.create_token(req).await?;
            Ok(if cli.json {
                json!({"token": raw, "id": row.id}).to_string()
            } else {
                format!("Created token {} for `{}`. It is shown once:\n{raw}", row.id, t.user)
            })
        }
        TokenCommand::List { user } => {
            let tokens = control.list_tokens(user).await?;
            if cli.json {
                return Ok(json!({"tokens": tokens}).to_string());
            }
            let mut s = format!("{:<6} {:<16} {:<12} {:<8} {}", "ID", "NAME", "PREFIX", "REVOKED", "EXPIRES");
            for t in tokens {
                let exp = t
                    .expires_at
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .map(|d| d.to_rfc3339())
                    .unwrap_or_else(|| "never".into());
                s.push_str(&format!("\n{:<6} {:<16} {:<12} {:<8} {exp}", t.id, t.name, t.display_prefix, t.revoked));
            }
            Ok(s)
        }
        TokenCommand::Revoke { id } => {
            let t = control.revoke_token(*id).await?;
            Ok(if cli.json { json!({"revoked": t.id}).to_string() } else { format!("Revoked token {}.", t.id) })
        }
    }
}

fn limit(v: Option<i64>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

async fn tier(cli: &Cli, control: &Control, c: &TierCommand) -> Result<String, ControlError> {
    let show = |t: &TierRow| {
        format!(
            "{:<16} rpm {:<8} tpm {:<10} concurrency {:<6} quota/month {:<10} max_tokens {:<8} routes {}",
            t.name,
            limit(t.rpm),
            limit(t.tpm),
            limit(t.max_concurrency),
            t.monthly_quota_usd.map_or_else(|| "-".into(), |q| format!("${q}")),
            limit(t.max_tokens),
            t.routes.as_ref().map_or_else(|| "*".into(), |r| r.join(","))
        )
    };
    match c {
        TierCommand::Set(t) => {
            let row = TierRow {
                name: t.name.clone(),
                rpm: t.rpm,
                tpm: t.tpm,
                max_concurrency: t.concurrency,
                monthly_quota_usd: t.quota_usd,
                routes: t.routes.clone(),
                max_tokens: t.max_tokens,
            };
            let saved = control.put_tier(&row).await?;
            Ok(if cli.json { json!({"tier": saved}).to_string() } else { format!("Saved tier:\n{}", show(&saved)) })
        }
        TierCommand::Get { name } => {
            let t = control.get_tier(name).await?;
            Ok(if cli.json { json!({"tier": t}).to_string() } else { show(&t) })
        }
        TierCommand::List => {
            let tiers = control.list_tiers().await?;
            Ok(if cli.json {
                json!({"tiers": tiers}).to_string()
            } else {
                tiers.iter().map(show).collect::<Vec<_>>().join("\n")
            })
        }
        TierCommand::Delete { name } => {
            control.delete_tier(name).await?;
            Ok(if cli.json { json!({"deleted": name}).to_string() } else { format!("Deleted tier `{name}`.") })
        }
    }
}

async fn price(cli: &Cli, control: &Control, c: &PriceCommand) -> Result<String, ControlError> {
    let show = |p: &PriceRow| {
        format!(
            "{:<32} {:<12} input ${}/1M  output ${}/1M  cached input {}  cache write {}  aliases {}",
            p.model,
            if p.provider.is_empty() { "*" } else { p.provider.as_str() },
            p.input_per_million,
            p.output_per_million,
            p.cached_input_per_million.map_or_else(|| "= input".into(), |c| format!("${c}/1M")),
            p.cache_write_per_million.map_or_else(|| "= input".into(), |c| format!("${c}/1M")),
            if p.aliases.is_empty() { "-".into() } else { p.aliases.join(",") }
        )
    };
    match c {
        PriceCommand::Set { model, input, output, cached_input, cache_write, alias, provider } => {
            let row = PriceRow {
                model: model.clone(),
                provider: provider.clone(),
                input_per_million: *input,
                output_per_million: *output,
                cached_input_per_million: *cached_input,
                cache_write_per_million: *cache_write,
                aliases: alias.clone(),
            };
            let saved = control.put_price(&row).await?;
            Ok(if cli.json { json!({"price": saved}).to_string() } else { format!("Saved price:\n{}", show(&saved)) })
        }
        PriceCommand::Get { model, provider } => {
            let p = control.get_price(model, provider).await?;
            Ok(if cli.json { json!({"price": p}).to_string() } else { show(&p) })
        }
        PriceCommand::List => {
            let prices = control.list_prices().await?;
            Ok(if cli.json {
                json!({"prices": prices}).to_string()
            } else {
                prices.iter().map(show).collect::<Vec<_>>().join("\n")
            })
        }
        PriceCommand::Delete { model, provider } => {
            control.delete_price(model, provider).await?;
            Ok(if cli.json {
                json!({"deleted": model}).to_string()
            } else {
                format!("Deleted the price of `{model}`.")
            })
        }
    }
}

async fn cache_purge(
    cli: &Cli,
    control: &Control,
    store: Option<Arc<dyn shared::cache::CacheStore>>,
    user: Option<&str>,
    route: Option<&str>,
) -> Result<String, ControlError> {
    let scope = control.purge_cache(user, route).await?;
    // Embedded nodes keep their cache in process: the mark reaches them with the catalog.
    let removed = match store {
        Some(s) => Some(s.cache_purge(scope).await.map_err(|e| ControlError::Invalid(e.to_string()))?),
        None => None,
    };
    let what = match (user, route) {
        (None, None) => "every cached answer".to_owned(),
        (Some(u), None) => format!("the cached answers of `{u}`"),
        (None, Some(r)) => format!("the cached answers of `{r}`"),
        (Some(u), Some(r)) => format!("the cached answers of `{u}` on `{r}`"),
    };
    Ok(if cli.json {
        json!({"purged": {"user": user, "route": route}, "removed": removed}).to_string()
    } else {
        match removed {
            Some(n) => format!("Purged {what}: {n} removed from Redis; no node serves them any more."),
            None => format!(
                "Purged {what}: nodes stop serving them at their next catalog reload (catalog.poll_interval_ms)."
            ),
        }
    })
}
